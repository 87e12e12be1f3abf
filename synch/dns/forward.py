"""Forwarding to the upstream resolvers: each tried in order, each bounded by the timeout.

The whole exchange with one upstream (including a TCP retry) fits in `timeout`, so a client gets
an answer or SERVFAIL within `timeout` × len(endpoints) plus processing time.

Each query goes out on a fresh socket (random source port, connected to the upstream so only its
datagrams arrive) with a fresh random ID, restored before the reply goes back: an off-path
attacker has to guess both, and clients reusing IDs cannot get each other's answers.

A UDP client gets the upstream's UDP reply as is, even truncated (TC): its size matches what the
client asked for, and the client retries over TCP, which is then forwarded over TCP.
"""

from __future__ import annotations

import logging
import secrets
import socket
import struct
import time
from collections.abc import Sequence

from dnslib import RCODE, DNSRecord
from gevent import socket as gsocket

from synch.config import Endpoint
from synch.dns.zone import error_reply

log = logging.getLogger("synch.dns")

HEADER_LEN = 12
MAX_MESSAGE = 65535
_RETRY_NEXT = (RCODE.SERVFAIL, RCODE.REFUSED)  # another upstream may do better


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


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


def reply_matches(query: bytes, reply: bytes) -> bool:
    """The reply answers this query: same ID, QR set, and the same question (any letter case)."""
    if len(reply) < HEADER_LEN or reply[:2] != query[:2] or not reply[2] & 0x80:
        return False
    if reply[4:6] == b"\x00\x00":
        return bool(reply[3] & 0x0F)  # an error with no question section (e.g. FORMERR)
    end = question_end(query)
    return end is not None and reply[HEADER_LEN:end].lower() == query[HEADER_LEN:end].lower()


def _rcode(reply: bytes) -> int:
    return reply[3] & 0x0F


class Forwarder:
    def __init__(self, endpoints: Sequence[Endpoint], timeout: float):
        self.endpoints = tuple(endpoints)
        self.timeout = timeout

    def forward(self, packet: bytes, tcp: bool = False) -> bytes | None:
        """The first useful upstream reply (its ID set back to the query's), or None."""
        if len(packet) < HEADER_LEN:
            return None
        fallback: bytes | None = None
        for endpoint in self.endpoints:
            reply = self._ask(endpoint, packet, tcp)
            if reply is None:
                continue
            reply = packet[:2] + reply[2:]
            if _rcode(reply) not in _RETRY_NEXT:
                return reply
            fallback = reply
        return fallback

    @staticmethod
    def servfail(request: DNSRecord) -> bytes:
        return bytes(error_reply(request, RCODE.SERVFAIL).pack())

    def _ask(self, endpoint: Endpoint, packet: bytes, tcp: bool) -> bytes | None:
        deadline = time.monotonic() + self.timeout
        query = struct.pack("!H", secrets.randbelow(65536)) + packet[2:]
        try:
            if tcp:
                return _exchange_tcp(endpoint, query, deadline)
            return _exchange_udp(endpoint, query, deadline)
        except OSError as exc:  # timeouts included (socket.timeout is an OSError)
            log.debug("forwarder %s: %s", endpoint, exc or type(exc).__name__)
            return None


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("forwarder did not answer in time")
    return left


def _exchange_udp(endpoint: Endpoint, query: bytes, deadline: float) -> bytes | None:
    sock = gsocket.socket(_family(endpoint.host), socket.SOCK_DGRAM)
    try:
        sock.settimeout(_remaining(deadline))
        sock.connect((endpoint.host, endpoint.port))
        sock.send(query)
        while True:
            sock.settimeout(_remaining(deadline))
            reply: bytes = sock.recv(MAX_MESSAGE)
            if reply_matches(query, reply):
                return reply
            log.debug("forwarder %s: ignored a datagram that does not match", endpoint)
    finally:
        sock.close()


def _exchange_tcp(endpoint: Endpoint, query: bytes, deadline: float) -> bytes | None:
    address = (endpoint.host, endpoint.port)
    sock = gsocket.create_connection(address, timeout=_remaining(deadline))
    try:
        sock.settimeout(_remaining(deadline))
        sock.sendall(struct.pack("!H", len(query)) + query)
        (length,) = struct.unpack("!H", recv_exactly(sock, 2, deadline))
        reply = recv_exactly(sock, length, deadline)
        return reply if reply_matches(query, reply) else None
    finally:
        sock.close()


def recv_exactly(sock: gsocket.socket, count: int, deadline: float) -> bytes:
    """`count` bytes before `deadline`; ConnectionError on EOF, TimeoutError when late."""
    chunks: list[bytes] = []
    needed = count
    while needed > 0:
        sock.settimeout(_remaining(deadline))
        chunk: bytes = sock.recv(needed)
        if not chunk:
            raise ConnectionError("connection closed mid-message")
        chunks.append(chunk)
        needed -= len(chunk)
    return b"".join(chunks)
