"""The DNS servers over real UDP and TCP on 127.0.0.1, queried with dig and dnslib.

The servers run in their own process (tests/integration/dns_server_app.py); the upstream is a
real dnsmasq on loopback (lab/dnsmasq.py) or a UDP socket that never answers. The state
switch is the target file the app re-reads. Last, the servers in this process: what only they
show (pools, deadlines, the UDP loop's owner).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import gevent
import gevent.pool
import pytest
from dnslib import QTYPE, RCODE, DNSRecord
from gevent import socket as gsocket

from lab.dnsmasq import Dnsmasq, SilentUdpServer
from synch.config import DnsSettings, Endpoint
from synch.dns.server import DnsServers
from synch.dns.service import DnsService
from synch.dns.state import DnsState
from synch.metrics import Metrics
from synch.states import Service
from tests.helpers.serverapp import ServerApp, spawner

APP = "tests.integration.dns_server_app"
NORMAL = "10.0.0.254"
FAILOVER = "127.0.0.77"
UPSTREAM_NAME = "example.org"
UPSTREAM_ADDRESS = "127.0.0.42"
STALE_NAME = "ntp.example.org"  # resolved once, then served stale
GONE_NAME = "gone.example.net"  # NXDOMAIN upstream: never served stale
REPLY_TIMEOUT = 10.0  # generous: the machine is shared; only a hang should ever reach it


@dataclass
class DnsApp(ServerApp):
    """dns_server_app: `PORT <udp> <tcp>`, and the file it reads the current target from."""

    target_file: Path = field(kw_only=True)

    @property
    def udp_port(self) -> int:
        return self.ports[0]

    @property
    def tcp_port(self) -> int:
        return self.ports[1]

    def switch(self, target: str) -> None:
        tmp = self.target_file.with_suffix(".tmp")
        tmp.write_text(target + "\n")
        tmp.replace(self.target_file)


def _settings_file(tmp_path: Path, **overrides: Any) -> Path:
    settings: dict[str, Any] = {
        "listenaddress": "127.0.0.1",
        "port": 0,
        "domain": "example.local",
        "record": "sip",
        "recordttl": 30,
        "targetnormal": NORMAL,
        "targetfailover": FAILOVER,
        "forwardtimeout": 1.0,
        "minttl": 60,
    }
    settings.update(overrides)
    settings_file = tmp_path / f"dns-{time.monotonic_ns()}.json"
    settings_file.write_text(json.dumps(settings))
    return settings_file


@pytest.fixture
def start_dns(tmp_path: Path) -> Iterator[Callable[..., DnsApp]]:
    target_file = tmp_path / "target"

    def start(**overrides: Any) -> DnsApp:
        if not target_file.exists():
            target_file.write_text(NORMAL + "\n")
        app = launch(APP, str(_settings_file(tmp_path, **overrides)), str(target_file))
        return DnsApp(app.proc, app.ports, app.timeout, target_file=target_file)

    with spawner(timeout=REPLY_TIMEOUT) as launch:
        yield start


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[Dnsmasq]:
    with Dnsmasq(records={UPSTREAM_NAME: UPSTREAM_ADDRESS}) as upstream:
        yield upstream


def forwarders(*servers: Dnsmasq | SilentUdpServer) -> list[list[object]]:
    return [[server.host, server.port] for server in servers]


# -- clients --


def dig(port: int, *args: str) -> str:
    result = subprocess.run(
        ["dig", "@127.0.0.1", "-p", str(port), "+time=5", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=REPLY_TIMEOUT,
        check=False,
    )
    return result.stdout


def udp(port: int, query: bytes | DNSRecord, timeout: float = REPLY_TIMEOUT) -> DNSRecord:
    data = query.pack() if isinstance(query, DNSRecord) else query
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, ("127.0.0.1", port))
        reply, _ = sock.recvfrom(65535)
    return DNSRecord.parse(reply)


def tcp_send(sock: socket.socket, data: bytes) -> None:
    sock.sendall(struct.pack("!H", len(data)) + data)


def tcp_recv(sock: socket.socket) -> DNSRecord | None:
    """One length-prefixed reply; None if the server closed the connection."""
    header = _recv_exactly(sock, 2)
    if header is None:
        return None
    body = _recv_exactly(sock, struct.unpack("!H", header)[0])
    return DNSRecord.parse(body) if body is not None else None


def _recv_exactly(sock: socket.socket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def tcp(port: int, query: DNSRecord) -> DNSRecord | None:
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT) as sock:
        tcp_send(sock, query.pack())
        return tcp_recv(sock)


def question(name: str, qtype: str = "A") -> DNSRecord:
    return DNSRecord.question(name, qtype)


# -- the zone, through dig --


def test_dig_a_record_over_udp_and_tcp(start_dns: Callable[..., DnsApp]) -> None:
    app = start_dns()
    assert dig(app.udp_port, "SIP.Example.Local", "A", "+short").split() == [NORMAL]
    assert dig(app.tcp_port, "sip.example.local", "A", "+short", "+tcp").split() == [NORMAL]
    full = dig(app.udp_port, "sip.example.local", "A")
    assert "status: NOERROR" in full and " aa " in full.split("flags:")[1].split(";")[0] + " "
    assert app.udp_port == app.tcp_port  # port 0 gives one number for both
    counters = app.stop()
    assert counters["local"] == 3


def test_dig_zone_records(start_dns: Callable[..., DnsApp]) -> None:
    app = start_dns()
    port = app.udp_port
    # The current target first; the other side's own name after it (srvbackup, on by default).
    srv = sorted(dig(port, "_sip._udp.example.local", "SRV", "+short").splitlines())
    assert [line.split() for line in srv] == [
        ["0", "0", "5060", "sip.example.local."],
        ["10", "0", "5060", "sip-branch.example.local."],
    ]
    assert dig(port, "_sip._tcp.example.local", "SRV", "+short", "+tcp").split()[3] == (
        "sip.example.local."
    )
    assert dig(port, "example.local", "NS", "+short").split() == ["ns.example.local."]
    soa = dig(port, "example.local", "SOA", "+short").split()
    assert soa[:2] == ["ns.example.local.", "hostmaster.example.local."]
    aaaa = dig(port, "sip.example.local", "AAAA")
    assert "status: NOERROR" in aaaa and "ANSWER: 0" in aaaa
    assert "AUTHORITY: 1" in aaaa and "SOA" in aaaa.split("AUTHORITY SECTION:")[1]
    nx = dig(port, "nothing.example.local", "A")
    assert "status: NXDOMAIN" in nx and "SOA" in nx.split("AUTHORITY SECTION:")[1]
    app.stop()


def test_edns_is_answered_with_edns(start_dns: Callable[..., DnsApp]) -> None:
    app = start_dns()
    assert "OPT PSEUDOSECTION" in dig(app.udp_port, "sip.example.local", "+edns=0")
    assert "OPT PSEUDOSECTION" not in dig(app.udp_port, "sip.example.local", "+noedns")
    app.stop()


def test_state_switch_changes_the_answer_and_grows_the_serial(
    start_dns: Callable[..., DnsApp],
) -> None:
    app = start_dns()
    before = udp(app.udp_port, question("example.local", "SOA")).rr[0].rdata.times[0]
    assert str(udp(app.udp_port, question("sip.example.local")).rr[0].rdata) == NORMAL
    app.switch(FAILOVER)
    assert str(udp(app.udp_port, question("sip.example.local")).rr[0].rdata) == FAILOVER
    reply = tcp(app.tcp_port, question("sip.example.local"))
    assert reply is not None and str(reply.rr[0].rdata) == FAILOVER
    after = udp(app.udp_port, question("example.local", "SOA")).rr[0].rdata.times[0]
    assert after > before
    app.stop()


# -- forwarding --


def test_forwarded_to_dnsmasq_over_udp_and_tcp(
    start_dns: Callable[..., DnsApp], dnsmasq: Dnsmasq
) -> None:
    app = start_dns(forwarders=forwarders(dnsmasq))
    assert dig(app.udp_port, UPSTREAM_NAME, "+short").split() == [UPSTREAM_ADDRESS]
    assert dig(app.tcp_port, UPSTREAM_NAME, "+short", "+tcp").split() == [UPSTREAM_ADDRESS]
    query = question(UPSTREAM_NAME)
    query.header.id = 4321
    reply = udp(app.udp_port, query)
    assert reply.header.id == 4321 and reply.header.ra == 1
    assert udp(app.udp_port, question("unknown.example.net")).header.rcode == RCODE.NXDOMAIN
    counters = app.stop()
    assert counters["forwarded"] == 4


def test_silent_forwarders_give_servfail_within_the_bound(
    start_dns: Callable[..., DnsApp],
) -> None:
    timeout = 0.5
    with SilentUdpServer() as first, SilentUdpServer() as second:
        app = start_dns(forwarders=forwarders(first, second), forwardtimeout=timeout)
        bound = timeout * 2 + 0.5  # the contract: forwardtimeout × forwarders + 0.5 s
        query = question(UPSTREAM_NAME)
        query.header.id = 999
        # Generous margin for a loaded machine; without the fix the client would get nothing.
        reply = udp(app.udp_port, query, timeout=bound + 2.0)
        assert (reply.header.id, reply.header.rcode) == (999, RCODE.SERVFAIL)
        assert first.received >= 1 and second.received >= 1
        tcp_reply = tcp(app.tcp_port, question(UPSTREAM_NAME))
        assert tcp_reply is not None and tcp_reply.header.rcode == RCODE.SERVFAIL
        counters = app.stop()
    assert counters["servfail"] == 2


def test_first_forwarder_silent_second_answers(
    start_dns: Callable[..., DnsApp], dnsmasq: Dnsmasq
) -> None:
    with SilentUdpServer() as silent:
        app = start_dns(forwarders=forwarders(silent, dnsmasq), forwardtimeout=0.5)
        reply = udp(app.udp_port, question(UPSTREAM_NAME))
        assert [str(rr.rdata) for rr in reply.rr] == [UPSTREAM_ADDRESS]
        assert silent.received >= 1
        app.stop()


def test_slow_forward_does_not_hold_up_local_answers(start_dns: Callable[..., DnsApp]) -> None:
    with SilentUdpServer() as silent:
        app = start_dns(forwarders=forwarders(silent), forwardtimeout=3.0)
        forwarded, local = question(UPSTREAM_NAME), question("sip.example.local")
        forwarded.header.id, local.header.id = 1, 2
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(REPLY_TIMEOUT)
            sock.sendto(forwarded.pack(), ("127.0.0.1", app.udp_port))
            sock.sendto(local.pack(), ("127.0.0.1", app.udp_port))
            order = [DNSRecord.parse(sock.recvfrom(65535)[0]).header.id for _ in range(2)]
        assert order == [2, 1]
        app.stop()


def test_serve_stale_when_a_real_upstream_goes_silent_then_away(
    start_dns: Callable[..., DnsApp],
) -> None:
    """RFC 8767 against dnsmasq: a name resolved while the upstream answered is served stale
    (TTL 30, counted) once it is silent (stopped) or gone (killed: its port refuses); a name
    never resolved, and one the upstream said does not exist, get SERVFAIL as before."""
    timeout = 0.5
    bound = timeout + 0.5  # the contract: forwardtimeout × forwarders + 0.5 s
    with Dnsmasq(records={STALE_NAME: UPSTREAM_ADDRESS}, ttl=60) as upstream:
        app = start_dns(forwarders=forwarders(upstream), forwardtimeout=timeout)
        good = udp(app.udp_port, question(STALE_NAME))
        assert [(str(rr.rdata), rr.ttl) for rr in good.rr] == [(UPSTREAM_ADDRESS, 60)]
        assert udp(app.udp_port, question(GONE_NAME)).header.rcode == RCODE.NXDOMAIN

        upstream.pause()  # silent: every forward times out
        try:
            query = question(STALE_NAME.upper())
            query.header.id = 4242
            # Generous margin for a loaded machine; the answer comes when SERVFAIL would.
            reply = udp(app.udp_port, query, timeout=bound + 2.0)
            assert (reply.header.id, reply.header.rcode, reply.header.aa) == (4242, 0, 0)
            assert str(reply.q.qname) == STALE_NAME.upper() + "."
            assert [(str(rr.rdata), rr.ttl) for rr in reply.rr] == [(UPSTREAM_ADDRESS, 30)]
            never = udp(app.udp_port, question("never.example.org"), timeout=bound + 2.0)
            assert never.header.rcode == RCODE.SERVFAIL
            gone = udp(app.udp_port, question(GONE_NAME), timeout=bound + 2.0)
            assert gone.header.rcode == RCODE.SERVFAIL  # NXDOMAIN is never served stale
        finally:
            upstream.resume()

        upstream.stop()  # gone: nothing listens on its port any more
        out = dig(app.udp_port, STALE_NAME)  # dig asks with EDNS: it shows the EDE
        assert "status: NOERROR" in out and "EDE: 3 (Stale Answer)" in out, out
        assert dig(app.udp_port, STALE_NAME, "+short").split() == [UPSTREAM_ADDRESS]
        tcp_reply = tcp(app.tcp_port, question(STALE_NAME))
        assert tcp_reply is not None
        assert [(str(rr.rdata), rr.ttl) for rr in tcp_reply.rr] == [(UPSTREAM_ADDRESS, 30)]
        counters = app.stop()
    assert (counters["forwarded"], counters["stale"], counters["servfail"]) == (2, 4, 2)


def test_serve_stale_off_gives_servfail(
    start_dns: Callable[..., DnsApp],
) -> None:
    with Dnsmasq(records={STALE_NAME: UPSTREAM_ADDRESS}) as upstream:
        app = start_dns(forwarders=forwarders(upstream), forwardtimeout=0.5, stalecachesize=0)
        assert [str(rr.rdata) for rr in udp(app.udp_port, question(STALE_NAME)).rr] == [
            UPSTREAM_ADDRESS
        ]
        upstream.stop()
        assert udp(app.udp_port, question(STALE_NAME)).header.rcode == RCODE.SERVFAIL
        counters = app.stop()
    assert (counters["stale"], counters["servfail"]) == (0, 1)


def test_no_forwarders_refuses_outside_names(start_dns: Callable[..., DnsApp]) -> None:
    app = start_dns()
    assert udp(app.udp_port, question(UPSTREAM_NAME)).header.rcode == RCODE.REFUSED
    app.stop()


# -- garbage --


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00", b"\xde\xad\xbe\xef" * 8, os.urandom(10_000), b"\x12\x34\x01\x00" + b"\xff" * 40],
    ids=["empty", "one-byte", "binary", "10KB", "bad-question"],
)
def test_udp_garbage_then_a_normal_query(start_dns: Callable[..., DnsApp], garbage: bytes) -> None:
    app = start_dns()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(garbage, ("127.0.0.1", app.udp_port))
    assert str(udp(app.udp_port, question("sip.example.local")).rr[0].rdata) == NORMAL
    app.stop()


def test_udp_garbage_with_a_readable_header_gets_formerr(
    start_dns: Callable[..., DnsApp],
) -> None:
    app = start_dns()
    reply = udp(app.udp_port, b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fshort")
    assert (reply.header.id, reply.header.rcode) == (0x1234, RCODE.FORMERR)
    assert app.stop()["formerr"] == 1


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack("!H", 0),
        struct.pack("!H", 8) + b"\xde\xad\xbe\xef" * 2,
        struct.pack("!H", 10_000) + os.urandom(10_000),
        b"GET / HTTP/1.0\r\n\r\n",
    ],
    ids=["zero-length", "binary", "10KB", "http"],
)
def test_tcp_garbage_closes_that_connection_only(
    start_dns: Callable[..., DnsApp], garbage: bytes
) -> None:
    app = start_dns()
    with socket.create_connection(("127.0.0.1", app.tcp_port), timeout=REPLY_TIMEOUT) as bad:
        bad.sendall(garbage)
        bad.shutdown(socket.SHUT_WR)  # the HTTP case would otherwise wait for the idle timeout
        while tcp_recv(bad) is not None:  # at most a FORMERR, then the server closes
            pass
    reply = tcp(app.tcp_port, question("sip.example.local"))
    assert reply is not None and str(reply.rr[0].rdata) == NORMAL
    app.stop()


def test_tcp_several_queries_on_one_connection(
    start_dns: Callable[..., DnsApp], dnsmasq: Dnsmasq
) -> None:
    app = start_dns(forwarders=forwarders(dnsmasq))
    queries = [question("sip.example.local"), question(UPSTREAM_NAME), question("x.example.local")]
    with socket.create_connection(("127.0.0.1", app.tcp_port), timeout=REPLY_TIMEOUT) as sock:
        replies = []
        for query in queries:
            tcp_send(sock, query.pack())
            replies.append(tcp_recv(sock))
    assert [r.header.id if r else None for r in replies] == [q.header.id for q in queries]
    assert str(replies[0].rr[0].rdata) == NORMAL  # type: ignore[union-attr]
    assert str(replies[1].rr[0].rdata) == UPSTREAM_ADDRESS  # type: ignore[union-attr]
    assert replies[2].header.rcode == RCODE.NXDOMAIN  # type: ignore[union-attr]
    app.stop()


def test_tcp_pipelined_queries_in_one_write(start_dns: Callable[..., DnsApp]) -> None:
    app = start_dns()
    queries = [question("sip.example.local"), question("example.local", "SOA")]
    with socket.create_connection(("127.0.0.1", app.tcp_port), timeout=REPLY_TIMEOUT) as sock:
        sock.sendall(b"".join(struct.pack("!H", len(q.pack())) + q.pack() for q in queries))
        replies = [tcp_recv(sock), tcp_recv(sock)]
    assert [r.q.qtype if r else None for r in replies] == [QTYPE.A, QTYPE.SOA]
    app.stop()


def test_bind_failure_is_an_error_naming_the_address(start_dns: Callable[..., DnsApp]) -> None:
    app = start_dns()
    with pytest.raises(AssertionError, match=r"DNS cannot listen on 127\.0\.0\.1 UDP port"):
        start_dns(port=app.udp_port)
    app.stop()


# -- DnsServers in this process (gevent sockets, no monkey patching needed) --


def _service(settings: DnsSettings) -> DnsService:
    """The service, its SIP name answering NORMAL."""
    settings = replace(settings, targetnormal=NORMAL)
    return DnsService(settings, DnsState(settings, Service.NORMAL), Metrics())


def _serving(servers: DnsServers) -> DnsServers:
    """Bound, and the UDP loop spawned as its owner does."""
    servers.start()
    gevent.spawn(servers.serve_udp)
    return servers


def _in_process_servers(forward_pool_size: int, upstream_port: int) -> DnsServers:
    settings = DnsSettings(
        domain="example.local",
        forwarders=(Endpoint("127.0.0.1", upstream_port),),
        forwardtimeout=3.0,
    )
    service = _service(settings)
    return _serving(DnsServers(service, "127.0.0.1", 0, forward_pool_size=forward_pool_size))


def test_full_forward_pool_answers_servfail_at_once() -> None:
    silent = gsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    servers = _in_process_servers(1, silent.getsockname()[1])
    client = gsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(REPLY_TIMEOUT)
    try:
        first, second = question(UPSTREAM_NAME), question("www.example.net")
        first.header.id, second.header.id = 1, 2
        client.sendto(first.pack(), ("127.0.0.1", servers.udp_port))
        silent.recvfrom(65535)  # the first query is out, holding the only pool slot
        client.sendto(second.pack(), ("127.0.0.1", servers.udp_port))
        reply = DNSRecord.parse(client.recvfrom(65535)[0])
        assert (reply.header.id, reply.header.rcode) == (2, RCODE.SERVFAIL)
    finally:
        client.close()
        servers.stop()
        silent.close()


def _refusal(servers: DnsServers) -> str:
    """Why `serve_udp`, spawned now, refuses to run ("" if it ran and returned)."""

    def run() -> str:
        try:
            servers.serve_udp()
        except RuntimeError as exc:
            return str(exc)
        return ""

    return str(gevent.spawn(run).get(timeout=REPLY_TIMEOUT))


def test_udp_loop_runs_in_the_callers_group_and_stop_ends_it() -> None:
    servers = DnsServers(_service(DnsSettings(domain="example.local")), "127.0.0.1", 0)
    assert "start() first" in _refusal(servers)
    servers.start()
    assert not servers.serving  # bound, TCP accepting; UDP waits for its loop
    group = gevent.pool.Group()
    loop = group.spawn(servers.serve_udp)
    client = gsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(REPLY_TIMEOUT)
    try:
        client.sendto(question("sip.example.local").pack(), ("127.0.0.1", servers.udp_port))
        assert str(DNSRecord.parse(client.recvfrom(65535)[0]).rr[0].rdata) == NORMAL
        assert servers.serving and servers.answers(REPLY_TIMEOUT)
        assert "already running" in _refusal(servers)
    finally:
        client.close()
        servers.stop()
    assert loop.dead and loop.successful()
    assert not servers.serving and not servers.answers(0.1)
    assert _refusal(servers) == ""  # stopped: a loop spawned too late just returns


def test_bind_failure_raises_oserror_naming_address_and_protocol() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    service = _service(DnsSettings(domain="example.local"))
    try:
        with pytest.raises(OSError, match=rf"DNS cannot listen on 127\.0\.0\.1 TCP port {port}"):
            DnsServers(service, "127.0.0.1", port).start()
    finally:
        taken.close()


def _tcp_servers(**kwargs: Any) -> DnsServers:
    service = _service(DnsSettings(domain="example.local", allow=("127.0.0.0/8",)))
    return _serving(DnsServers(service, "127.0.0.1", 0, **kwargs))


def _tcp_client(port: int, source: str = "127.0.0.1") -> gsocket.socket:
    sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(REPLY_TIMEOUT)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_tcp_trickling_client_is_closed_at_the_message_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("synch.dns.server.TCP_IDLE_TIMEOUT", 1.0)
    servers = _tcp_servers()
    query = question("sip.example.local").pack()
    message = struct.pack("!H", len(query)) + query
    sock = _tcp_client(servers.tcp_port)
    try:
        # One byte every 0.2 s: the whole message would take several deadlines to arrive.
        closed = False
        for byte in message:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            gevent.sleep(0.2)
        assert closed or sock.recv(2) == b"", "the trickle was answered or held open"
    finally:
        sock.close()
        servers.stop()


def test_tcp_full_pool_closes_new_connections_at_once_and_recovers() -> None:
    servers = _tcp_servers(tcp_connections=2, tcp_per_client=1)
    metrics = servers.service.metrics
    holders = [_tcp_client(servers.tcp_port, f"127.0.0.{n}") for n in (11, 12)]
    try:
        late = _tcp_client(servers.tcp_port, "127.0.0.13")
        assert late.recv(2) == b""  # closed, not queued behind the idle connections
        late.close()
        assert metrics.registry.get_sample_value(
            "synch_connections_rejected_total", {"listener": "dns", "reason": "full"}
        ) == 1
        holders.pop().close()
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:  # the freed slot is given to the next client
            try:
                with _tcp_client(servers.tcp_port, "127.0.0.13") as client:
                    tcp_send(client, question("sip.example.local").pack())
                    reply = tcp_recv(client)
            except OSError:
                reply = None
            if reply is not None or time.monotonic() > deadline:
                break
            gevent.sleep(0.05)
        assert reply is not None and str(reply.rr[0].rdata) == NORMAL
    finally:
        for sock in holders:
            sock.close()
        servers.stop()
