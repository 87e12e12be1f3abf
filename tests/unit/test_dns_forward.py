"""The forwarder against loopback upstreams run as greenlets, and DnsService with a stub forwarder
(metrics, SERVFAIL, garbage in: fuzzed with Hypothesis)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import gevent
import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, A, DNSRecord
from gevent import socket as gsocket
from gevent.server import StreamServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synch.config import DnsSettings, Endpoint
from synch.dns.forward import Forwarder
from synch.dns.service import DnsService
from synch.dns.state import DnsState, ZoneView
from synch.dns.wire import reply_matches
from synch.metrics import Metrics
from synch.states import Service

TIMEOUT = 0.3  # short: silent upstreams cost this much per test

Answer = Callable[[DNSRecord], list[bytes]]  # query → datagrams to send back, in order


def answer_a(address: str, rcode: int = RCODE.NOERROR, tc: bool = False) -> Answer:
    def answer(query: DNSRecord) -> list[bytes]:
        reply = query.reply(ra=1, aa=0)
        reply.header.rcode = rcode
        reply.header.tc = int(tc)
        if rcode == RCODE.NOERROR and not tc:
            reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=60))
        return [reply.pack()]

    return answer


@contextmanager
def udp_upstream(answer: Answer | None) -> Iterator[Endpoint]:
    """A UDP resolver on 127.0.0.1 in a greenlet; answer=None: reads and never answers."""
    sock = gsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    seen: list[DNSRecord] = []

    def serve() -> None:
        while True:
            data, peer = sock.recvfrom(65535)
            query = DNSRecord.parse(data)
            seen.append(query)
            for datagram in answer(query) if answer else []:
                sock.sendto(datagram, peer)

    worker = gevent.spawn(serve)
    try:
        yield Endpoint("127.0.0.1", sock.getsockname()[1])
    finally:
        worker.kill()
        sock.close()


@contextmanager
def tcp_upstream(answer: Answer) -> Iterator[Endpoint]:
    def handle(conn: gsocket.socket, _peer: object) -> None:
        (length,) = struct.unpack("!H", conn.recv(2))
        data = b""
        while len(data) < length:
            data += conn.recv(length - len(data))
        for reply in answer(DNSRecord.parse(data)):
            conn.sendall(struct.pack("!H", len(reply)) + reply)

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        yield Endpoint("127.0.0.1", server.server_port)
    finally:
        server.stop()


def closed_port() -> Endpoint:
    """A loopback port with nothing listening (UDP: ICMP port unreachable)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return Endpoint("127.0.0.1", port)


def query_bytes(name: str = "www.example.org", qid: int = 4321, edns: bool = False) -> bytes:
    query = DNSRecord.question(name)
    query.header.id = qid
    if edns:
        query.add_ar(EDNS0(udp_len=1232))
    packed: bytes = query.pack()
    return packed


# -- reply matching --


def test_reply_matches_same_id_and_question_any_case() -> None:
    query = query_bytes("www.Example.org")
    reply = DNSRecord.parse(query).reply()
    reply.q.qname = "WWW.EXAMPLE.ORG"
    assert reply_matches(query, reply.pack())


def test_reply_matches_rejects_other_id_other_question_and_queries() -> None:
    query = query_bytes("www.example.org", qid=1)
    assert not reply_matches(query, DNSRecord.parse(query_bytes(qid=2)).reply().pack())
    assert not reply_matches(query, DNSRecord.parse(query_bytes("evil.org", qid=1)).reply().pack())
    assert not reply_matches(query, query)  # QR not set
    assert not reply_matches(query, b"\x00\x01")


# -- Forwarder --


def test_forward_returns_the_upstream_answer_with_the_client_id() -> None:
    with udp_upstream(answer_a("127.0.0.42")) as upstream:
        reply = Forwarder([upstream], TIMEOUT).forward(query_bytes(qid=777))
    assert reply is not None
    parsed = DNSRecord.parse(reply)
    assert parsed.header.id == 777
    assert str(parsed.rr[0].rdata) == "127.0.0.42"


def test_forward_uses_a_fresh_id_upstream() -> None:
    seen: list[int] = []

    def record(query: DNSRecord) -> list[bytes]:
        seen.append(query.header.id)
        return answer_a("127.0.0.42")(query)

    with udp_upstream(record) as upstream:
        forwarder = Forwarder([upstream], TIMEOUT)
        for _ in range(4):
            assert forwarder.forward(query_bytes(qid=777)) is not None
    assert len(seen) == 4 and set(seen) != {777}


def test_stray_datagrams_are_ignored() -> None:
    def noisy(query: DNSRecord) -> list[bytes]:
        wrong_id = query.reply()
        wrong_id.header.id = (query.header.id + 1) % 65536
        wrong_id.add_answer(RR(query.q.qname, QTYPE.A, rdata=A("6.6.6.6")))
        wrong_q = DNSRecord.question("evil.example").reply()
        wrong_q.header.id = query.header.id
        return [b"junk", wrong_id.pack(), wrong_q.pack(), *answer_a("127.0.0.42")(query)]

    with udp_upstream(noisy) as upstream:
        reply = Forwarder([upstream], TIMEOUT).forward(query_bytes())
    assert reply is not None and str(DNSRecord.parse(reply).rr[0].rdata) == "127.0.0.42"


def test_silent_then_answering_upstream() -> None:
    with udp_upstream(None) as silent, udp_upstream(answer_a("127.0.0.43")) as good:
        reply = Forwarder([silent, good], TIMEOUT).forward(query_bytes())
    assert reply is not None and str(DNSRecord.parse(reply).rr[0].rdata) == "127.0.0.43"


def test_closed_port_then_answering_upstream() -> None:
    with udp_upstream(answer_a("127.0.0.44")) as good:
        reply = Forwarder([closed_port(), good], TIMEOUT).forward(query_bytes())
    assert reply is not None and str(DNSRecord.parse(reply).rr[0].rdata) == "127.0.0.44"


def test_all_silent_gives_none() -> None:
    with udp_upstream(None) as one, udp_upstream(None) as two:
        assert Forwarder([one, two], TIMEOUT).forward(query_bytes()) is None


def test_no_forwarders_gives_none() -> None:
    assert Forwarder([], TIMEOUT).forward(query_bytes()) is None


def test_servfail_from_one_upstream_tries_the_next() -> None:
    with (
        udp_upstream(answer_a("", rcode=RCODE.SERVFAIL)) as failing,
        udp_upstream(answer_a("127.0.0.45")) as good,
    ):
        reply = Forwarder([failing, good], TIMEOUT).forward(query_bytes())
    assert reply is not None and str(DNSRecord.parse(reply).rr[0].rdata) == "127.0.0.45"


def test_upstream_refusal_is_relayed_when_nobody_does_better() -> None:
    with udp_upstream(answer_a("", rcode=RCODE.REFUSED)) as refusing, udp_upstream(None) as silent:
        reply = Forwarder([refusing, silent], TIMEOUT).forward(query_bytes(qid=9))
    assert reply is not None
    parsed = DNSRecord.parse(reply)
    assert (parsed.header.id, parsed.header.rcode) == (9, RCODE.REFUSED)


def test_nxdomain_is_an_answer_not_a_failure() -> None:
    with (
        udp_upstream(answer_a("", rcode=RCODE.NXDOMAIN)) as first,
        udp_upstream(answer_a("127.0.0.46")) as second,
    ):
        reply = Forwarder([first, second], TIMEOUT).forward(query_bytes())
    assert reply is not None and DNSRecord.parse(reply).header.rcode == RCODE.NXDOMAIN


def test_truncated_udp_answer_goes_back_to_a_udp_client_as_is() -> None:
    with udp_upstream(answer_a("", tc=True)) as upstream:
        reply = Forwarder([upstream], TIMEOUT).forward(query_bytes())
    assert reply is not None and DNSRecord.parse(reply).header.tc == 1


def test_tcp_client_is_forwarded_over_tcp() -> None:
    with tcp_upstream(answer_a("127.0.0.47")) as upstream:
        reply = Forwarder([upstream], TIMEOUT).forward(query_bytes(qid=55), tcp=True)
    assert reply is not None
    parsed = DNSRecord.parse(reply)
    assert parsed.header.id == 55 and str(parsed.rr[0].rdata) == "127.0.0.47"


def test_servfail_reply_echoes_id_rd_question_and_edns() -> None:
    request = DNSRecord.parse(query_bytes("www.example.org", qid=31, edns=True))
    reply = DNSRecord.parse(Forwarder.servfail(request))
    assert reply.header.id == 31 and reply.header.rcode == RCODE.SERVFAIL
    assert reply.header.qr == 1 and reply.header.rd == 1 and reply.header.aa == 0
    assert str(reply.q.qname) == "www.example.org."
    assert [rr.rtype for rr in reply.ar] == [QTYPE.OPT]


# -- DnsService with a stub forwarder --


class StubForwarder(Forwarder):
    def __init__(self, reply: Callable[[bytes], bytes | None] = lambda _packet: None):
        super().__init__([Endpoint("127.0.0.1", 9)], 0.1)
        self.reply = reply
        self.calls = 0

    def forward(self, packet: bytes, tcp: bool = False) -> bytes | None:
        self.calls += 1
        return self.reply(packet)


SETTINGS = DnsSettings(domain="example.local", record="sip", targetnormal="10.0.0.1")


def service(forwarder: Forwarder | None = None) -> tuple[DnsService, Metrics]:
    metrics = Metrics()
    return (
        DnsService(
            SETTINGS, DnsState(SETTINGS, Service.NORMAL), metrics, forwarder or StubForwarder()
        ),
        metrics,
    )


def count(metrics: Metrics, answer: str) -> float:
    value = metrics.registry.get_sample_value("synch_dns_queries_total", {"answer": answer})
    return value or 0.0


def test_service_counts_each_kind() -> None:
    upstream = DNSRecord.parse(query_bytes()).reply().pack()
    svc, metrics = service(StubForwarder(lambda packet: packet[:2] + upstream[2:]))
    for name, qtype in (
        ("sip.example.local", "A"),
        ("sip.example.local", "AAAA"),
        ("nope.example.local", "A"),
        ("www.example.org", "A"),
    ):
        assert svc.handle_query(DNSRecord.question(name, qtype).pack(), tcp=False) is not None
    assert svc.handle_query(b"\x00\x01\x01\x00" + b"\xff" * 20, tcp=False) is not None
    assert [count(metrics, k) for k in ("local", "nodata", "nxdomain", "forwarded", "formerr")] == [
        1,
        1,
        1,
        1,
        1,
    ]
    assert metrics.registry.get_sample_value("synch_dns_forward_duration_seconds_count") == 1


def test_service_answers_servfail_when_no_forwarder_answers() -> None:
    svc, metrics = service(StubForwarder())
    reply = svc.handle_query(query_bytes(qid=99), tcp=False)
    assert reply is not None
    parsed = DNSRecord.parse(reply)
    assert (parsed.header.id, parsed.header.rcode) == (99, RCODE.SERVFAIL)
    assert count(metrics, "servfail") == 1
    assert metrics.registry.get_sample_value("synch_dns_forward_duration_seconds_count") == 1


def test_service_without_forwarders_refuses_outside_names() -> None:
    metrics = Metrics()
    svc = DnsService(SETTINGS, DnsState(SETTINGS, Service.NORMAL), metrics, Forwarder([], 1.0))
    reply = svc.handle_query(query_bytes(), tcp=False)
    assert reply is not None and DNSRecord.parse(reply).header.rcode == RCODE.REFUSED
    assert count(metrics, "refused") == 1


def test_unparseable_query_gets_formerr_with_its_id_and_a_response_is_dropped() -> None:
    svc, _ = service()
    garbage = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fshort"
    reply = svc.handle_query(garbage, tcp=False)
    assert reply is not None
    parsed = DNSRecord.parse(reply)
    assert (parsed.header.id, parsed.header.rcode, parsed.header.rd) == (0xABCD, RCODE.FORMERR, 1)
    as_response = garbage[:2] + b"\x81" + garbage[3:]
    assert svc.handle_query(as_response, tcp=False) is None
    assert svc.handle_query(b"", tcp=False) is None
    assert svc.handle_query(b"\x01" * 11, tcp=False) is None


class BrokenState:
    @property
    def view(self) -> ZoneView:
        raise RuntimeError("view exploded")


def test_resolver_bug_costs_one_query_not_the_server() -> None:
    svc = DnsService(SETTINGS, BrokenState(), Metrics(), StubForwarder())
    reply = svc.handle_query(DNSRecord.question("sip.example.local").pack(), tcp=False)
    assert reply is not None and DNSRecord.parse(reply).header.rcode == RCODE.FORMERR


VALID = [
    DNSRecord.question(name, qtype).pack()
    for name, qtype in (
        ("sip.example.local", "A"),
        ("_sip._udp.example.local", "SRV"),
        ("example.local", "SOA"),
        ("www.example.org", "AAAA"),
    )
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    packet = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(packet) - 1))
        packet[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(packet)))
    tail = draw(st.binary(max_size=16))
    return bytes(packet[:cut]) + tail


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=600), mutated()))
def test_fuzz_handle_query_never_raises(data: bytes) -> None:
    svc, _ = service(StubForwarder(lambda packet: packet))
    for tcp in (False, True):
        reply = svc.handle_query(data, tcp=tcp)
        assert reply is None or isinstance(reply, bytes)
        if reply is not None and reply is not data:
            assert len(reply) >= 12
            if not tcp:
                assert len(reply) <= 65535


@pytest.mark.parametrize(
    ("data", "rcode"),
    [
        (b"", None),
        (b"\x00", None),
        (b"\xff" * 12, None),  # QR set: a response, dropped
        (b"\xff" * 10_000, None),
        (b"\x00" * 12, RCODE.FORMERR),  # no question
        (b"\x00" * 10_000, RCODE.FORMERR),
    ],
)
def test_empty_odd_or_oversized_packets(data: bytes, rcode: int | None) -> None:
    svc, _ = service()
    for tcp in (False, True):
        reply = svc.handle_query(data, tcp=tcp)
        assert (None if reply is None else DNSRecord.parse(reply).header.rcode) == rcode
