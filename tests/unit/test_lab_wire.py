"""The real-phone lab's wire parsing, without a network: what lab.capture reads from frames,
baresip's netstring framing, and the scripted registrar's responses."""

from __future__ import annotations

import socket
import struct

from dnslib import DNSRecord

from lab.capture import _udp, parse_dns_query, parse_sip
from lab.registrar import response
from lab.softphones import NetstringReader, netstring

REGISTER = (
    "REGISTER sip:sip.example.local SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 10.232.1.14:5060;branch=z9hG4bK1;rport\r\n"
    "Contact: <sip:2011-0x1@10.232.1.14:5060>;expires=3784\r\n"
    "To: <sip:2011@sip.example.local>\r\n"
    "From: <sip:2011@sip.example.local>;tag=abc\r\n"
    "Call-ID: 2d52e811\r\n"
    "CSeq: 45050 REGISTER\r\n"
    "Content-Length: 0\r\n\r\n"
)


def frame(src: str, sport: int, dst: str, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )  # fmt: skip
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp


def test_a_udp_frame_gives_addresses_ports_and_payload() -> None:
    assert _udp(frame("10.232.1.14", 5060, "10.232.2.2", 5060, b"x")) == (
        "10.232.1.14", 5060, "10.232.2.2", 5060, b"x",
    )  # fmt: skip
    assert _udp(b"\x00" * 20) is None


def test_dns_queries_are_read_and_answers_are_not() -> None:
    query = DNSRecord.question("_sip._udp.sip.example.local", "SRV")
    assert parse_dns_query(query.pack()) == ("_sip._udp.sip.example.local", "SRV")
    assert parse_dns_query(query.reply().pack()) is None
    assert parse_dns_query(b"garbage") is None


def test_sip_requests_and_responses_are_read() -> None:
    assert parse_sip(REGISTER.encode()) == (
        "REGISTER", 0, "2d52e811", "45050 REGISTER", 3784, "2011",
    )  # fmt: skip
    assert parse_sip(response(REGISTER, 200, ["Expires: 60"])) == (
        "", 200, "2d52e811", "45050 REGISTER", 60, "2011",
    )  # fmt: skip
    assert parse_sip(b"hello world") is None


def test_registrar_responses_copy_the_transaction_and_tag_the_to() -> None:
    text = response(REGISTER, 503).decode()
    assert text.startswith("SIP/2.0 503 Service Unavailable\r\n")
    assert "Via: SIP/2.0/UDP 10.232.1.14:5060;branch=z9hG4bK1;rport\r\n" in text
    assert "To: <sip:2011@sip.example.local>;tag=scripted\r\n" in text
    assert "CSeq: 45050 REGISTER\r\n" in text and text.endswith("\r\n\r\n")


def test_netstrings_are_split_across_reads() -> None:
    reader = NetstringReader()
    data = netstring(b'{"event":true}') + netstring(b"{}")
    assert reader.feed(data[:5]) == []
    assert reader.feed(data[5:]) == [b'{"event":true}', b"{}"]
