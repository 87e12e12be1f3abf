"""DNS on the wire: framing and packet helpers shared by the service, the zone, the forwarder
and the transport.

Pure: no gevent, no socket module (the stream helpers take any object with `settimeout` and
`recv`), no state. Byte-level helpers work on packets that have not been parsed (a malformed
one included); record-level ones on dnslib records.
"""

from __future__ import annotations

import struct
import time
from typing import Protocol

from dnslib import EDNS0, OPCODE, QTYPE, RCODE, RR, DNSHeader, DNSRecord

from synch.dns.resolver import Answer, Decision

HEADER_LEN = 12
MAX_MESSAGE = 65535
MAX_UDP_NO_EDNS = 512
EDNS_UDP_SIZE = 1232  # the DNS flag day 2020 size: no IP fragmentation
RCODE_BADVERS = 16
PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_OPT_HEAD = b"\x00\x00\x29"  # root owner, type OPT
_OPT_FIXED = 11  # owner, type, class, TTL, RDLENGTH


# -- raw packets ------------------------------------------------------------------------------


def question_end(packet: bytes) -> int | None:
    """Offset just past the (uncompressed) first question, or None if it is not well formed."""
    offset = HEADER_LEN
    while offset < len(packet):
        length = packet[offset]
        if length == 0:
            end = offset + 1 + 4
            return end if end <= len(packet) else None
        if length & 0xC0:
            return None
        offset += 1 + length
    return None


def opt_ok(rest: bytes) -> bool:
    """`rest` is exactly one OPT record of EDNS version 0 (any options, any flags)."""
    return (
        len(rest) >= _OPT_FIXED
        and rest[:3] == _OPT_HEAD
        and rest[6] == 0
        and len(rest) == _OPT_FIXED + (rest[9] << 8 | rest[10])
    )


def reply_matches(query: bytes, reply: bytes) -> bool:
    """The reply answers this query: same ID, QR set, and the same question (any letter case)."""
    if len(reply) < HEADER_LEN or reply[:2] != query[:2] or not reply[2] & 0x80:
        return False
    if reply[4:6] == b"\x00\x00":
        return bool(reply[3] & 0x0F)  # an error with no question section (e.g. FORMERR)
    end = question_end(query)
    return end is not None and reply[HEADER_LEN:end].lower() == query[HEADER_LEN:end].lower()


def rcode_of(reply: bytes) -> int:
    return reply[3] & 0x0F


def formerr_for(data: bytes) -> bytes | None:
    """FORMERR for an unparseable query whose header is readable; None (drop) otherwise."""
    return _bare_error(data, RCODE.FORMERR, with_question=False)


def refused_for(data: bytes) -> bytes | None:
    """REFUSED without parsing (for clients outside `allow`): header and the question echoed
    when it is well formed; None (drop) for a response or anything shorter than a header."""
    return _bare_error(data, RCODE.REFUSED, with_question=True)


def _bare_error(data: bytes, rcode: int, with_question: bool) -> bytes | None:
    if len(data) < HEADER_LEN:
        return None
    (query_id, flags, qdcount) = struct.unpack("!HHH", data[:6])
    if flags & 0x8000:
        return None  # a response: never answer it
    # QR, the query's opcode and RD; the rcode.
    reply_flags = 0x8000 | (flags & 0x7900) | rcode
    end = question_end(data) if with_question and qdcount >= 1 else None
    if end is None:
        return struct.pack("!HHHHHH", query_id, reply_flags, 0, 0, 0, 0)
    return struct.pack("!HHHHHH", query_id, reply_flags, 1, 0, 0, 0) + data[HEADER_LEN:end]


# -- parsed messages --------------------------------------------------------------------------


def reply_header(request: DNSRecord, rcode: int, aa: bool, ra: bool) -> DNSHeader:
    """A response header: the query's ID, opcode, RD and CD echoed; nothing else copied."""
    query = request.header
    return DNSHeader(
        id=query.id,
        bitmap=0,
        qr=1,
        opcode=query.opcode,
        aa=int(aa),
        rd=query.rd,
        ra=int(ra),
        cd=query.cd,
        rcode=rcode & 0xF,
    )


def query_opt(request: DNSRecord) -> list[RR]:
    return [rr for rr in request.ar if rr.rtype == QTYPE.OPT]


def error_reply(request: DNSRecord, rcode: int, ra: bool = True) -> DNSRecord:
    """An answerless reply (SERVFAIL, REFUSED, FORMERR, ...), with OPT if the query had one."""
    reply = DNSRecord(
        reply_header(request, rcode, aa=False, ra=ra), questions=list(request.questions[:1])
    )
    if query_opt(request):
        reply.add_ar(EDNS0(udp_len=EDNS_UDP_SIZE, ext_rcode=rcode >> 4))
    return reply


def error_bytes(request: DNSRecord, rcode: int, ra: bool = True) -> bytes:
    return bytes(error_reply(request, rcode, ra).pack())


def screen(request: DNSRecord, ra: bool) -> Decision | None:
    """What every query must be before any resolver sees it; the refusal if it is not. `ra`:
    whether the server offers recursion (echoed as RA)."""
    header = request.header
    if header.qr:
        return Decision(Answer.FORMERR)  # never answer a response: two servers could loop
    if header.opcode != OPCODE.QUERY:
        return Decision(Answer.REFUSED, error_bytes(request, RCODE.NOTIMP, ra))
    opts = query_opt(request)
    if len(request.questions) != 1 or len(opts) > 1:
        return Decision(Answer.FORMERR, error_bytes(request, RCODE.FORMERR, ra))
    if opts and (opts[0].ttl >> 16) & 0xFF != 0:
        return Decision(Answer.FORMERR, error_bytes(request, RCODE_BADVERS, ra))
    return None


def max_udp_size(request: DNSRecord) -> int:
    """The largest UDP reply the client accepts (RFC 6891: at least 512)."""
    opts = query_opt(request)
    if not opts:
        return MAX_UDP_NO_EDNS
    return max(MAX_UDP_NO_EDNS, min(int(opts[0].rclass), 65535))


def fit_udp(reply: DNSRecord, request: DNSRecord) -> bytes:
    """Pack for UDP: drop the additional records, then truncate (TC) if still too large."""
    limit = max_udp_size(request)
    packed = bytes(reply.pack())
    if len(packed) <= limit:
        return packed
    reply.ar = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    packed = bytes(reply.pack())
    if len(packed) <= limit:
        return packed
    reply.rr, reply.auth = [], []
    reply.header.tc = 1
    return bytes(reply.pack())


def pack_for(reply: DNSRecord, request: DNSRecord, tcp: bool) -> bytes:
    """The reply's bytes for the transport the request came over."""
    return bytes(reply.pack()) if tcp else fit_udp(reply, request)


# -- TCP framing (RFC 1035 4.2.2: a 2-byte length before each message) ------------------------


class StreamSocket(Protocol):
    def settimeout(self, value: float | None, /) -> None: ...
    def recv(self, size: int, /) -> bytes: ...


def remaining(deadline: float) -> float:
    """Seconds left before `deadline` (time.monotonic); TimeoutError once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("deadline passed")
    return left


def recv_exactly(sock: StreamSocket, count: int, deadline: float) -> bytes:
    """`count` bytes before `deadline`; ConnectionError on EOF, TimeoutError when late."""
    chunks: list[bytes] = []
    needed = count
    while needed > 0:
        sock.settimeout(remaining(deadline))
        chunk = sock.recv(needed)
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        chunks.append(chunk)
        needed -= len(chunk)
    return b"".join(chunks)


def read_message(sock: StreamSocket, timeout: float) -> bytes | None:
    """One length-prefixed message, all of it within `timeout` (trickling bytes do not extend
    it); None when the client closes or sends length 0; TimeoutError when late."""
    deadline = time.monotonic() + timeout
    try:
        prefix = recv_exactly(sock, 2, deadline)
    except ConnectionError:
        return None
    (length,) = struct.unpack("!H", prefix)
    if length == 0:
        return None
    return recv_exactly(sock, length, deadline)


def framed(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message
