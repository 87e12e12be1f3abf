"""A hostile LAN against synch's listening sockets: idle connections must never exhaust the
daemon's file descriptors, take the DNS, the status socket or the systemd watchdog down, nor keep
allowed phones from their TCP DNS answers.

Every client here is on loopback; source addresses 127.0.0.2 and up stand for other hosts.
"""

from __future__ import annotations

import errno
import http.client
import os
import resource
import select
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, DNSRecord

from lab.asterisk import AsteriskInstance
from lab.dnsmasq import Dnsmasq
from lab.samples import central_configs
from lab.synchproc import SynchProcess, metric_value, synch_for
from lab.wait import wait_until
from synch.dns.server import TCP_IDLE_TIMEOUT, TCP_PER_CLIENT

pytestmark = pytest.mark.asterisk

TARGETS = ("127.0.0.10", "127.0.0.20")  # lab_config's targetnormal / targetfailover
UPSTREAM_NAME, UPSTREAM_ADDRESS = "www.example.org", "127.0.0.42"
FD_LIMIT = 256
# "At once" must be told apart from "after the idle timeout", with room for a loaded machine.
AT_ONCE = TCP_IDLE_TIMEOUT / 2


@pytest.fixture
def central(asterisk_factory: Callable[..., AsteriskInstance]) -> AsteriskInstance:
    return asterisk_factory("central", configs=central_configs())


@pytest.fixture
def upstream(dnsmasq: Callable[..., Dnsmasq]) -> Dnsmasq:
    return dnsmasq({UPSTREAM_NAME: UPSTREAM_ADDRESS})


def make_synch(
    tmp_path: Path, central: AsteriskInstance, upstream: Dnsmasq, **overrides: dict[str, Any]
) -> SynchProcess:
    return synch_for(tmp_path, central, upstream.port, **overrides)


# -- clients --------------------------------------------------------------------------------------


def open_idle(host: str, port: int, sources: Iterable[str]) -> list[socket.socket]:
    """One connection per source address, opened without waiting and never written to."""
    held = []
    for source in sources:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.bind((source, 0))
        err = sock.connect_ex((host, port))
        assert err in (0, errno.EINPROGRESS), os.strerror(err)
        held.append(sock)
    return held


def closed_by_peer(sock: socket.socket) -> bool:
    """The server closed this connection (EOF or reset); False while it is still open."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()
    socks.clear()


def tcp_query(port: int, name: str, source: str = "127.0.0.1", timeout: float = 5) -> DNSRecord:
    request = DNSRecord.question(name)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        packed = request.pack()
        sock.sendall(struct.pack("!H", len(packed)) + packed)
        (length,) = struct.unpack("!H", recv_exactly(sock, 2))
        return DNSRecord.parse(recv_exactly(sock, length))


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("closed mid-reply")
        data += chunk
    return data


def a_answer(reply: DNSRecord) -> str:
    answers = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
    return answers[0] if answers else ""


def scrape(synch: SynchProcess, source: str = "127.0.0.1") -> str:
    m = synch.config["metrics"]
    conn = http.client.HTTPConnection(m["listenaddress"], m["port"], timeout=5,
                                      source_address=(source, 0))  # fmt: skip
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        return response.read().decode()
    finally:
        conn.close()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class NotifyListener:
    """The systemd side of NOTIFY_SOCKET: collects every datagram synch sends."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def count(self, wanted: str) -> int:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                break
        return sum(wanted in message for message in self.messages)

    def close(self) -> None:
        self.sock.close()


def limit_fds() -> None:
    """In the child: soft and hard limit, so synch cannot raise it back."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def other_hosts(count: int, third: int = 1) -> Iterator[str]:
    """127.0.THIRD.1 … : `count` source addresses, cycling over 200 hosts."""
    for n in range(count):
        yield f"127.0.{third}.{n % 200 + 1}"


# -- the metrics port can no longer take the service down -----------------------------------------


def test_idle_metrics_connections_cannot_exhaust_file_descriptors(
    tmp_path: Path, central: AsteriskInstance, upstream: Dnsmasq
) -> None:
    notify = NotifyListener(tmp_path / "notify.sock")
    synch = make_synch(tmp_path, central, upstream)
    held: list[socket.socket] = []
    try:
        synch.start(env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"},
                    preexec_fn=limit_fds)  # fmt: skip
        assert synch.proc is not None
        pid = synch.proc.pid
        wait_until(lambda: notify.count("READY=1"), 15, message=f"READY=1 in {notify.messages}")
        m = synch.config["metrics"]
        # More idle connections than the daemon has descriptors, from 200 hosts.
        held = open_idle(m["listenaddress"], m["port"], other_hosts(FD_LIMIT + 64))
        pings = notify.count("WATCHDOG=1")
        for _ in range(5):
            assert synch.proc.poll() is None, synch.log()
            assert synch.resolve_a() in TARGETS
            assert a_answer(synch.query("sip.example.local", tcp=True)) in TARGETS
            assert a_answer(synch.query(UPSTREAM_NAME)) == UPSTREAM_ADDRESS
            assert a_answer(synch.query(UPSTREAM_NAME, tcp=True)) == UPSTREAM_ADDRESS
            assert synch.status()["Service"] in ("Normal", "Failover")
            assert open_fds(pid) < FD_LIMIT
            time.sleep(0.5)
        wait_until(lambda: notify.count("WATCHDOG=1") >= pings + 3, 15,
                   message=f"watchdog pings in {notify.messages[-5:]}\n{synch.log()}")  # fmt: skip
        # The daemon drops the idle connections itself (the clients still hold theirs)...
        text = wait_until(lambda: scrape(synch), 40, message=synch.log())
        full = 'synch_connections_rejected_total{listener="metrics",reason="full"}'
        assert metric_value(text, full) > 0
        # ...and after the clients let go too, metrics keeps answering, promtool-clean.
        close_all(held)
        text = scrape(synch)
        check = subprocess.run(["promtool", "check", "metrics"], input=text,
                               capture_output=True, text=True, check=False)  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr
        assert synch.proc.poll() is None, synch.log()
    finally:
        close_all(held)
        synch.stop()
        notify.close()


# -- TCP DNS slots cannot be held from outside the allow list, nor by one client ------------------

STRANGER, GREEDY, PHONE = "127.0.0.2", "127.0.0.1", "127.0.0.3"
TCP_POOL = 200  # the daemon's TCP DNS pool with a generous descriptor limit


def test_tcp_dns_slots_cannot_be_held_by_strangers_or_by_one_client(
    tmp_path: Path, central: AsteriskInstance, upstream: Dnsmasq
) -> None:
    synch = make_synch(tmp_path, central, upstream,
                       dnsservice={"allow": [f"{GREEDY}/32", f"{PHONE}/32"]})  # fmt: skip
    synch.start()
    port = synch.dns_port
    strangers: list[socket.socket] = []
    greedy: list[socket.socket] = []
    try:
        before = scrape(synch)
        strangers = open_idle("127.0.0.1", port, [STRANGER] * (TCP_POOL + 20))
        greedy = open_idle("127.0.0.1", port, [GREEDY] * (TCP_PER_CLIENT + 20))
        # Refused at accept: every stranger's connection is closed at once.
        wait_until(lambda: all(closed_by_peer(s) for s in strangers), AT_ONCE,
                   message="connections from outside dnsservice.allow closed at once")  # fmt: skip
        # One allowed client holds at most TCP_PER_CLIENT connections; the rest close at once.
        wait_until(lambda: sum(closed_by_peer(s) for s in greedy) >= 20, AT_ONCE,
                   message="connections beyond the per-client cap closed at once")  # fmt: skip
        # Another allowed phone gets its TCP answers promptly, its own name and a forwarded one.
        started = time.monotonic()
        assert a_answer(tcp_query(port, "sip.example.local", source=PHONE)) in TARGETS
        assert a_answer(tcp_query(port, UPSTREAM_NAME, source=PHONE)) == UPSTREAM_ADDRESS
        assert time.monotonic() - started < AT_ONCE
        after = scrape(synch)
        rejected = 'synch_connections_rejected_total{listener="dns",reason="%s"}'
        assert metric_value(after, rejected % "not_allowed") == TCP_POOL + 20
        assert metric_value(after, rejected % "client_limit") == 20
        refused = 'synch_dns_queries_total{answer="refused"}'
        assert metric_value(after, refused) - metric_value(before, refused) == TCP_POOL + 20
    finally:
        close_all(strangers)
        close_all(greedy)
        synch.stop()
