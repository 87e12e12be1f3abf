"""DNS fuzzing through the real server objects (UDP and TCP framing) in this process, and the
fast path's prepared replies against the full path for random question forms.

Invariants: the UDP loop never dies and logs no loop error, every malformed packet is dropped
or answered with a well-formed message, a valid query right after still gets its answer, and a
prepared reply is byte-identical to what the full path would have sent.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import gevent
import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSHeader, DNSQuestion, DNSRecord, EDNSOption
from gevent import socket as gsocket
from hypothesis import given
from hypothesis import strategies as st

from synch.config import DnsSettings
from synch.dns.server import DnsServers
from synch.dns.service import DnsService
from synch.dns.state import DnsState
from synch.metrics import Metrics
from synch.states import Service
from tests.fuzz.budget import fuzz
from tests.fuzz.exchange import exchange

TARGET = "10.0.0.254"
TIMEOUT = 5.0
NAMES = ["sip.example.local", "example.local", "_sip._udp.example.local", "x.example.local",
         "_udp.example.local", "ns.example.local", "www.example.org"]  # fmt: skip
QTYPES = ["A", "AAAA", "SRV", "SOA", "NS", "TXT", "ANY", "MX"]


def settings() -> DnsSettings:
    return DnsSettings(
        listenaddress="127.0.0.1", domain="example.local", record="sip", targetnormal=TARGET
    )


def service() -> DnsService:
    return DnsService(settings(), DnsState(settings(), Service.NORMAL, serial=1), Metrics())


@pytest.fixture(scope="module")
def servers() -> Iterator[DnsServers]:
    servers = DnsServers(service(), "127.0.0.1", 0)
    servers.start()
    gevent.spawn(servers.serve_udp)
    yield servers
    alive, errors = servers.serving, servers.loop_errors
    servers.stop()
    assert alive and errors == 0, f"UDP loop alive={alive}, loop errors={errors}"


def question(name: str, qtype: str = "A", qid: int = 0) -> DNSRecord:
    """DNSRecord.question without its random ID (Hypothesis wants no hidden randomness)."""
    return DNSRecord(DNSHeader(id=qid, rd=1), q=DNSQuestion(name, getattr(QTYPE, qtype)))


def valid_query(qid: int) -> bytes:
    return bytes(question("sip.example.local", qid=qid).pack())


def well_formed(reply: bytes) -> DNSRecord:
    assert len(reply) >= 12 and reply[2] & 0x80, "a reply must be a response"
    return DNSRecord.parse(reply)


def still_answers_udp(sock: gsocket.socket, port: int, qid: int) -> None:
    sock.sendto(valid_query(qid), ("127.0.0.1", port))
    while True:  # replies to the fuzz datagrams may come first (and may carry the same ID)
        data, _ = sock.recvfrom(65535)
        parsed = well_formed(data)
        if data[:2] == struct.pack("!H", qid) and parsed.rr:
            assert str(parsed.rr[0].rdata) == TARGET
            return


@st.composite
def mutated_query(draw: st.DrawFn) -> bytes:
    record = question(draw(st.sampled_from(NAMES)), draw(st.sampled_from(QTYPES)))
    if draw(st.booleans()):
        record.add_ar(EDNS0(udp_len=draw(st.integers(0, 65535))))
    packet = bytearray(record.pack())
    for _ in range(draw(st.integers(0, 6))):
        packet[draw(st.integers(0, len(packet) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(packet)))
    return bytes(packet[:cut]) + draw(st.binary(max_size=40))


PACKETS = st.one_of(st.binary(max_size=700), mutated_query())


@fuzz(150)
@given(packets=st.lists(PACKETS, min_size=1, max_size=8), qid=st.integers(0, 65535))
def test_udp_garbage_never_stops_the_loop(
    servers: DnsServers, packets: list[bytes], qid: int
) -> None:
    sock = gsocket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(TIMEOUT)
    try:
        for packet in packets:
            sock.sendto(packet, ("127.0.0.1", servers.udp_port))
        still_answers_udp(sock, servers.udp_port, qid)
    finally:
        sock.close()
    assert servers.serving and servers.loop_errors == 0


def framed(messages: list[bytes]) -> bytes:
    return b"".join(struct.pack("!H", len(m)) + m for m in messages)


@fuzz(80)
@given(
    stream=st.one_of(
        st.binary(max_size=400),
        st.lists(PACKETS, min_size=1, max_size=4).map(framed),
        st.tuples(st.integers(0, 65535), st.binary(max_size=50)).map(
            lambda t: struct.pack("!H", t[0]) + t[1]  # a length that lies
        ),
    )
)
def test_tcp_garbage_is_answered_or_closed(servers: DnsServers, stream: bytes) -> None:
    received = exchange(servers.tcp_port, stream, timeout=TIMEOUT)
    offset = 0
    while offset + 2 <= len(received):  # whatever came back is framed, well-formed replies
        (length,) = struct.unpack("!H", received[offset : offset + 2])
        assert offset + 2 + length <= len(received), "a reply cut short"
        well_formed(received[offset + 2 : offset + 2 + length])
        offset += 2 + length
    assert offset == len(received)
    reply = exchange(servers.tcp_port, framed([valid_query(7)]), timeout=TIMEOUT)
    assert str(well_formed(reply[2:]).rr[0].rdata) == TARGET


# -- prepared replies = full path ----------------------------------------------------------


def random_case(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.upper() if flip else c for c, flip in zip(name, flips, strict=True))


@st.composite
def query_forms(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """(the query that teaches the template, another query of the same question)"""
    name = random_case(draw, draw(st.sampled_from(NAMES[:-1])))
    qtype = draw(st.sampled_from(QTYPES))
    edns = draw(st.booleans())
    options = draw(st.sampled_from([[], ["cookie"]]))

    def make() -> bytes:
        record = question(name, qtype)
        header = record.header
        header.id = draw(st.integers(0, 65535))
        header.rd, header.cd = int(draw(st.booleans())), int(draw(st.booleans()))
        header.aa, header.tc, header.ad = (int(draw(st.booleans())) for _ in range(3))
        if edns:
            flags = draw(st.sampled_from(["", "do"]))
            opt = EDNS0(udp_len=draw(st.integers(0, 65535)), flags=flags)
            if options:
                opt.rdata.append(EDNSOption(10, draw(st.binary(min_size=8, max_size=8))))
            record.add_ar(opt)
        return bytes(record.pack())

    return make(), make()


def full_path_reply(data: bytes) -> bytes | None:
    return service().answer(data, "127.0.0.1", tcp=False).reply


@fuzz(300)
@given(forms=query_forms())
def test_prepared_reply_is_the_full_path_reply(forms: tuple[bytes, bytes]) -> None:
    teach, ask = forms
    learner = service()
    learner.handle_query(teach, tcp=False)
    fast = learner.fast_answer(ask, "127.0.0.1")
    expected = full_path_reply(ask)
    if fast is not None:
        assert fast == expected
    reply = learner.handle_query(ask, tcp=False)
    assert reply == expected
    assert reply is not None and DNSRecord.parse(reply).header.rcode != RCODE.SERVFAIL
