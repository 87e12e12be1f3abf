"""The SIP OPTIONS probe and the uplink check on real sockets (loopback): what each answer,
silence or refusal counts as, and that every check ends within its timeout. The probe runs as
in the daemon, monkey-patched, in a subprocess; the fake servers run in threads here."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lab.ports import free_port
from tests.unit import sip_scenarios as scenarios
from tests.unit.fake_ami import run_scenario

Reply = Callable[[bytes, int], list[bytes]]  # (request, how many came before) -> datagrams


def answer(request: bytes, status: str = "401 Unauthorized", **changes: str) -> bytes:
    """The answer to `request` that a server would send (its Via, Call-ID, CSeq, From, To)."""
    head = request.decode().split("\r\n\r\n", 1)[0].split("\r\n")[1:]
    keep = [h for h in head if h.split(":", 1)[0] in ("Via", "Call-ID", "CSeq", "From", "To")]
    text = "\r\n".join([f"SIP/2.0 {status}", *keep, "Server: fake", "Content-Length: 0", "", ""])
    for old, new in changes.items():
        text = re.sub(old, new, text)
    return text.encode()


@contextmanager
def udp_server(reply: Reply) -> Iterator[tuple[int, list[bytes]]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65535)
            except TimeoutError:
                continue
            for datagram in reply(data, len(seen)):
                sock.sendto(datagram, peer)
            seen.append(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], seen
    finally:
        stop.set()
        thread.join()
        sock.close()


@contextmanager
def tcp_server(reply: Callable[[bytes], list[bytes]], close: bool = False) -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if close:
                    continue
                for part in reply(data):
                    conn.sendall(part)
                stop.wait(1.5)  # keep the connection open: the client decides when it is done

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def probe(port: int, **args: Any) -> dict[str, Any]:
    return run_scenario(scenarios.probe, port, args)


# -- UDP --------------------------------------------------------------------------------------


def test_udp_any_answer_is_a_success_and_the_request_is_well_formed() -> None:
    with udp_server(lambda req, n: [answer(req)]) as (port, seen):
        out = probe(port, user="2001")
    assert out["Result"] == "success" and out["Answer"] == "401 Unauthorized"
    assert out["Error"] == ""
    request = seen[0].decode()
    assert request.startswith(f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n")
    assert "From: <sip:2001@127.0.0.1>" in request


def test_udp_503_is_a_failure_naming_the_answer() -> None:
    with udp_server(lambda req, n: [answer(req, "503 Service Unavailable")]) as (port, _):
        out = probe(port)
    assert out["Result"] == "failure"
    assert "answered 503 Service Unavailable" in out["Error"]


def test_udp_strays_and_garbage_are_ignored_until_the_answer() -> None:
    def reply(req: bytes, n: int) -> list[bytes]:
        return [
            b"\x00garbage",
            answer(req, "200 OK", **{"branch=z9hG4bK": "branch=z9hG4bKx"}),
            answer(req, "200 OK", **{"Call-ID: ": "Call-ID: other"}),
            answer(req, "404 Nope"),
        ]

    with udp_server(reply) as (port, _):  # fmt: skip
        out = probe(port)
    assert (out["Result"], out["Answer"]) == ("success", "404 Nope")


def test_udp_lost_request_is_sent_again_after_t1() -> None:
    with udp_server(lambda req, n: [] if n == 0 else [answer(req, "200 OK")]) as (port, seen):
        out = probe(port, timeout=2.0)
    assert out["Result"] == "success"
    assert len(seen) == 2 and seen[0] == seen[1]  # the same transaction, sent again
    assert 0.4 <= out["seconds"] < 1.5


def test_udp_silence_is_an_error_within_the_timeout() -> None:
    with udp_server(lambda req, n: []) as (port, seen):
        out = probe(port, timeout=0.6)
    assert out["Result"] == "error"
    assert "no answer within 0.6 s" in out["Error"]
    assert out["wall"] < 0.6 + 0.5
    assert len(seen) == 2  # once, and once again at 0.5 s


def test_udp_nothing_listening_is_refused_at_once() -> None:
    out = probe(free_port("udp"), timeout=3.0)
    assert out["Result"] == "error"
    assert "refused (ICMP port unreachable)" in out["Error"]
    assert out["wall"] < 1.0


# -- TCP --------------------------------------------------------------------------------------


def test_tcp_answer_after_a_stray_message_with_a_body() -> None:
    def reply(req: bytes) -> list[bytes]:
        stray = (
            answer(
                req,
                "200 OK",
                **{"Call-ID: ": "Call-ID: other", "Content-Length: 0": "Content-Length: 5"},
            )
            + b"hello"
        )
        return [stray[:30], stray[30:] + answer(req, "405 Method Not Allowed")]

    with tcp_server(reply) as port:  # fmt: skip
        out = probe(port, transport="tcp")
    assert (out["Result"], out["Answer"]) == ("success", "405 Method Not Allowed")


def test_tcp_refused_closed_garbage_and_endless_head_are_errors() -> None:
    out = probe(free_port("tcp"), transport="tcp")
    assert out["Result"] == "error" and "connection refused" in out["Error"]
    with tcp_server(lambda req: [], close=True) as port:
        out = probe(port, transport="tcp")
    assert out["Result"] == "error" and "closed without an answer" in out["Error"]
    with tcp_server(lambda req: [b"HTTP/1.1 400 Bad Request\r\n\r\n"]) as port:
        out = probe(port, transport="tcp")
    assert out["Result"] == "error" and "not a SIP answer" in out["Error"]
    with tcp_server(lambda req: [b"x" * 70000]) as port:
        out = probe(port, transport="tcp")
    assert out["Result"] == "error" and "longer than 65535 bytes" in out["Error"]


def test_tcp_silence_is_an_error_within_the_timeout() -> None:
    with tcp_server(lambda req: []) as port:
        out = probe(port, transport="tcp", timeout=0.5)
    assert out["Result"] == "error" and "no answer within 0.5 s" in out["Error"]
    assert out["wall"] < 1.0


def test_tls_to_a_plain_tcp_server_fails_as_tls() -> None:
    with tcp_server(lambda req: [b"SIP/2.0 200 OK\r\n\r\n"]) as port:
        out = probe(port, transport="tls", timeout=1.0)
    assert out["Result"] == "error"
    assert "TLS failed" in out["Error"] or "no answer within" in out["Error"]


# -- the uplink check -------------------------------------------------------------------------


@contextmanager
def full_listener() -> Iterator[int]:
    """A TCP port whose accept queue is full: the kernel drops new SYNs silently (a target
    that does not answer), without leaving loopback."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_uplink_accepted_or_refused_both_mean_up() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        out = run_scenario(scenarios.uplink, 0, {"ports": [listener.getsockname()[1]]})
    assert out["Result"] == "success" and "accepted" in out["Answer"]
    out = run_scenario(scenarios.uplink, 0, {"ports": [free_port("tcp")]})
    assert out["Result"] == "success" and "refused (it answered)" in out["Answer"]


def test_uplink_down_when_no_target_answers_in_time_and_up_when_one_does() -> None:
    with full_listener() as silent:
        out = run_scenario(scenarios.uplink, 0, {"ports": [silent], "timeout": 0.5})
        assert out["Result"] == "error"
        assert "no answer within 0.5 s" in out["Error"]
        assert out["wall"] < 1.2
        # One silent target and one that answers: up, without waiting for the silent one.
        out = run_scenario(scenarios.uplink, 0, {"ports": [silent, free_port("tcp")],
                                                 "timeout": 2.0})  # fmt: skip
        assert out["Result"] == "success"
        assert out["wall"] < 1.5
