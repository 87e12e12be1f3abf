"""The status socket over real TCP: netcat-openbsd as monitoring scripts call it, raw sockets for
the odd clients. The server runs in its own process (tests/integration/control_server_app.py)."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from lab.wait import wait_until
from synch.control.protocol import ControlProtocol, StatusSnapshot
from synch.control.server import ControlServer
from synch.states import Monitor, Service, SyncState
from tests.helpers.serverapp import ServerApp, spawn, spawner

STATUS = b'[{"Timestamp":"20190522181925","Monitor":"Stable","Sync":"Synced","Service":"Normal"}]\n'
TOKEN_ERROR = b"Token error. Bye bye!\n"
ACTION_ERROR = b"Action error. Bye bye!\n"
REPLY_TIMEOUT = 15.0  # generous: the machine is shared; only a hang should ever reach it
APP = "tests.integration.control_server_app"


@pytest.fixture
def start_server() -> Iterator[Callable[..., ServerApp]]:
    with spawner(timeout=REPLY_TIMEOUT) as start:
        yield lambda *args: start(APP, *args)


@pytest.fixture(scope="module")
def server() -> Iterator[ServerApp]:
    running = spawn(
        APP,
        "--token",
        "token1",
        "--admintoken",
        "admin-secret",
        "--fixed-time",
        "20190522181925",
        "--idle-timeout",
        "60",  # longer than any client waits: a request must never need the deadline
        timeout=REPLY_TIMEOUT,
    )
    try:
        yield running
    finally:
        if running.proc.poll() is None:
            running.stop()


def nc(port: int, data: bytes, *flags: str) -> bytes:
    """netcat-openbsd: -N half-closes after stdin's end (without it, nc waits for the server)."""
    result = subprocess.run(
        ["nc", *flags, "-w", "10", "127.0.0.1", str(port)],
        input=data,
        capture_output=True,
        timeout=REPLY_TIMEOUT,
        check=True,
    )
    return result.stdout


def ask(port: int, data: bytes, half_close: bool = True) -> bytes:
    """Send `data`, optionally half-close, and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return read_all(sock)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


# --- what monitoring scripts do ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "flags"),
    [
        (b"GetStatus(token1)\n", ("-N",)),  # echo ... | nc -N
        (b"GetStatus(token1)\r\n", ("-N",)),
        (b"GetStatus(token1)", ("-N",)),  # printf, no newline
        (b"GetStatus(token1)\n", ()),  # plain nc: the server's close ends it
        (b"GetStatus(token1)", ()),  # neither newline nor half-close: ")" ends the request
        (b"GetStatus(token1)\n", ("-q", "1")),
        (b"GetStatus(token1)", ("-C", "-N")),
        (b"  GetStatus(token1)  \n", ("-N",)),
        (b"GetStatus(admin-secret)\n", ("-N",)),
    ],
)
def test_nc_get_status_is_byte_exact(
    server: ServerApp, data: bytes, flags: tuple[str, ...]
) -> None:
    assert nc(server.port, data, *flags) == STATUS


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GetStatus(wrong)\n", TOKEN_ERROR),
        (b"GetStatus()\n", TOKEN_ERROR),
        (b"GetStatus\n", TOKEN_ERROR),
        (b"Reboot(token1)\n", ACTION_ERROR),
        (b"Failover(token1)\n", TOKEN_ERROR),  # the normal token cannot administer
        (b"GetDetails(token1)\n", b'{"Version":"test","Syncs":0,"Forced":false}\n'),
    ],
)
def test_nc_replies(server: ServerApp, data: bytes, expected: bytes) -> None:
    assert nc(server.port, data, "-N") == expected


def test_real_clock_timestamp(start_server: Callable[..., ServerApp]) -> None:
    running = start_server("--token", "t")
    before = time.strftime("%Y%m%d%H%M%S")
    reply = nc(running.port, b"GetStatus(t)\n", "-N")
    after = time.strftime("%Y%m%d%H%M%S")
    stamp = json.loads(reply)[0]["Timestamp"]
    assert before <= stamp <= after
    assert reply == STATUS.replace(b"20190522181925", stamp.encode())


def test_admin_actions(start_server: Callable[..., ServerApp]) -> None:
    running = start_server("--token", "t", "--admintoken", "adm", "--fixed-time", "20190522181925")
    port = running.port
    assert ask(port, b"Failover(adm)\n") == b'{"ok":true,"Service":"Failover","Forced":true}\n'
    assert ask(port, b"GetStatus(t)\n") == STATUS.replace(b"Normal", b"Failover")
    assert ask(port, b"Auto(adm)\r\n") == b'{"ok":true,"Service":"Normal","Forced":false}\n'
    assert ask(port, b"Sync(adm)\n") == b'{"ok":true,"Sync":"Synced","Runs":1}\n'
    assert ask(port, b"Sync(t)\n") == TOKEN_ERROR
    running.stop()
    assert running.counters["token_errors"] == 1


def test_admin_actions_without_admintoken(start_server: Callable[..., ServerApp]) -> None:
    running = start_server("--token", "t")
    for action in (b"Failover", b"Normal", b"Auto", b"Sync"):
        assert ask(running.port, action + b"(t)\n") == TOKEN_ERROR
        assert ask(running.port, action + b"()\n") == TOKEN_ERROR


# --- many clients, silent clients ----------------------------------------------------------------


def test_hundred_clients_at_once(server: ServerApp) -> None:
    cases = [
        (b"GetStatus(token1)\n", STATUS),
        (b"GetStatus(bad)\r\n", TOKEN_ERROR),
        (b"Nope(token1)\n", ACTION_ERROR),
        (b"GetStatus(admin-secret)", STATUS),
    ]
    barrier = threading.Barrier(100, timeout=REPLY_TIMEOUT)

    def client(i: int) -> bool:
        request, expected = cases[i % len(cases)]
        with socket.create_connection(("127.0.0.1", server.port), timeout=REPLY_TIMEOUT) as s:
            barrier.wait()  # all connected before anyone speaks
            s.sendall(request)
            return read_all(s) == expected

    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(client, range(100)))
    assert results == [True] * 100


def _is_closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_silent_clients_do_not_delay_others_and_are_dropped(
    start_server: Callable[..., ServerApp],
) -> None:
    idle = 4.0
    running = start_server(
        "--token", "t", "--fixed-time", "20190522181925", "--idle-timeout", str(idle)
    )
    silent = [socket.create_connection(("127.0.0.1", running.port)) for _ in range(20)]
    try:
        assert ask(running.port, b"GetStatus(t)\n") == STATUS
        # The good client had its answer while every silent one was still connected.
        assert not any(_is_closed_by_peer(s) for s in silent)
        wait_until(
            lambda: all(_is_closed_by_peer(s) for s in silent),
            timeout=idle + REPLY_TIMEOUT,
            message="silent clients not dropped after the idle timeout",
        )
    finally:
        for s in silent:
            s.close()
    running.stop()
    assert running.counters["idle_drops"] == 20
    assert running.counters["requests"] == 1  # the silent ones got no reply at all


def test_partial_request_is_answered_at_the_deadline(
    start_server: Callable[..., ServerApp],
) -> None:
    running = start_server("--token", "t", "--idle-timeout", "1")
    with socket.create_connection(("127.0.0.1", running.port), timeout=REPLY_TIMEOUT) as sock:
        sock.sendall(b"GetStatus(t")  # never finished, never half-closed
        assert read_all(sock) == TOKEN_ERROR


# --- hostile input ------------------------------------------------------------------------------


def _garbage_then_read(port: int, data: bytes) -> bytes | None:
    """The reply, or None if the server reset the connection while we were still sending."""
    try:
        return ask(port, data)
    except TimeoutError:
        raise  # a hang is a failure
    except OSError:  # reset, broken pipe, not connected
        return None


@pytest.mark.parametrize(
    "data",
    [
        b"A" * 10240,
        bytes(range(256)) * 40,
        b"\x00" * 300,
        b"\xff\xfe" + "GetStatus(token1)".encode("utf-16-le"),
        b"GetStatus(token1" + b"x" * 10240 + b")\n",
        b"(" * 5000,
        b"\n" * 300,
    ],
    ids=["10k-letters", "10k-binary", "nuls", "utf16", "long-token", "parens", "newlines"],
)
def test_garbage_is_refused_and_the_server_answers_afterwards(
    server: ServerApp, data: bytes
) -> None:
    reply = _garbage_then_read(server.port, data)
    assert reply in (TOKEN_ERROR, ACTION_ERROR, b"", None)
    assert ask(server.port, b"GetStatus(token1)\n") == STATUS


def test_large_garbage_gets_the_reply_not_a_reset(server: ServerApp) -> None:
    # The server drains what it did not read before closing, so the reply survives.
    assert ask(server.port, b"Z" * 10240) == TOKEN_ERROR


def test_connect_and_close_gets_nothing(server: ServerApp) -> None:
    with socket.create_connection(("127.0.0.1", server.port)):
        pass
    assert ask(server.port, b"") == b""  # connect, half-close at once: no reply, just closed
    assert ask(server.port, b"GetStatus(token1)\n") == STATUS


def test_client_reset_does_not_hurt(server: ServerApp) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.sendall(b"GetSta")
    sock.close()  # RST
    assert ask(server.port, b"GetStatus(token1)\n") == STATUS


def test_split_request(server: ServerApp) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=REPLY_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in (b"Get", b"Status(tok", b"en1", b")\r\n"):
            sock.sendall(part)
        assert read_all(sock) == STATUS


# --- in-process API ----------------------------------------------------------------------------


class _Backend:
    def status(self) -> StatusSnapshot:
        return StatusSnapshot(Monitor.INIT, SyncState.INIT, Service.INIT)

    def details(self) -> dict[str, object]:
        return {}

    def force(self, service: Service) -> None:
        pass

    def auto(self) -> None:
        pass

    def sync_now(self) -> dict[str, object]:
        return {}


def test_bind_failure_names_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = ControlServer(ControlProtocol("t", None, _Backend()), "127.0.0.1", port)
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
            server.start()


def test_port_before_start_is_an_error() -> None:
    server = ControlServer(ControlProtocol("t", None, _Backend()), "127.0.0.1", 0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
