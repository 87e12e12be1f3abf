"""The /metrics server over real sockets on 127.0.0.1, in this process (gevent sockets, no
monkey patching): one bounded request per connection, per-client and total caps at accept."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import gevent
import pytest
from gevent import socket as gsocket

from synch.metrics import Metrics
from synch.metrics_http import MAX_HEAD, MetricsHttpServer

REQUEST_SECONDS = 1.0
BOUND = 10.0  # generous: only a connection that is never closed should ever reach it


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(metrics: Metrics) -> Iterator[MetricsHttpServer]:
    srv = MetricsHttpServer(metrics, "127.0.0.1", 0, max_connections=4, per_client=2,
                            request_seconds=REQUEST_SECONDS)  # fmt: skip
    srv.start()
    yield srv
    srv.stop()


def connect(server: MetricsHttpServer, source: str = "127.0.0.1") -> gsocket.socket:
    sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(BOUND)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", server.port))
    return sock


def read_all(sock: gsocket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def rejected(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "synch_connections_rejected_total", {"listener": "metrics", "reason": reason}
    )
    assert value is not None
    return value


def scrape(server: MetricsHttpServer, source: str = "127.0.0.1") -> bytes:
    with connect(server, source) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        return read_all(sock)


def test_one_request_per_connection_then_close(server: MetricsHttpServer) -> None:
    with connect(server) as sock:
        # Two pipelined requests: only the first is answered, then the server closes.
        sock.sendall(b"GET /metrics HTTP/1.1\r\n\r\n" * 2)
        raw = read_all(sock)
    assert raw.count(b"HTTP/1.1 200 OK") == 1 and b"synch_build_info" in raw


def test_an_idle_or_trickling_client_is_closed_at_the_request_deadline(
    server: MetricsHttpServer,
) -> None:
    idle = connect(server)
    trickler = connect(server, "127.0.0.2")
    started = time.monotonic()
    closed_while_trickling = False
    for byte in b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 100:  # one byte each 0.1 s: 10+ s
        try:
            trickler.sendall(bytes([byte]))
        except OSError:
            closed_while_trickling = True
            break
        gevent.sleep(0.1)
        if time.monotonic() - started > BOUND:
            break
    assert closed_while_trickling or trickler.recv(1) == b""
    assert read_all(idle) == b""  # closed without a reply, not held
    idle.close()
    trickler.close()


def test_a_head_over_the_cap_gets_431(server: MetricsHttpServer) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (2 * MAX_HEAD))
        assert read_all(sock).startswith(b"HTTP/1.1 431 ")


def test_one_client_holds_at_most_its_share_and_others_still_scrape(
    server: MetricsHttpServer, metrics: Metrics
) -> None:
    greedy = [connect(server) for _ in range(2 + 3)]  # per_client 2
    for sock in greedy[2:]:
        assert sock.recv(1) == b""  # closed at accept
    assert rejected(metrics, "client_limit") == 3
    assert b"200 OK" in scrape(server, "127.0.0.3")
    for sock in greedy:
        sock.close()


def test_when_full_new_connections_close_at_once_and_it_recovers(
    server: MetricsHttpServer, metrics: Metrics
) -> None:
    holders = [connect(server, f"127.0.0.{n}") for n in range(10, 14)]  # max_connections 4
    gevent.sleep(0.2)
    with connect(server, "127.0.0.20") as late:
        assert late.recv(1) == b""  # not queued behind the idle ones
    assert rejected(metrics, "full") == 1
    for sock in holders:
        sock.close()
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        try:
            if b"200 OK" in scrape(server, "127.0.0.20"):
                break
        except OSError:
            pass
        gevent.sleep(0.05)
    else:
        pytest.fail("metrics did not answer again after the idle clients left")
