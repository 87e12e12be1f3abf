"""Forwarding to the upstream resolvers: each tried in order, each bounded by the timeout.

`ForwardResolver` is the last resolver of the chain (dnslib's `ProxyResolver`, in two steps so
that the UDP loop never blocks): `resolve` decides at once, `forward` runs the exchange, which
blocks. `Forwarder` is the exchange itself (gevent sockets).

The whole exchange with one upstream (including a TCP retry) fits in `timeout`, so a client gets
an answer or SERVFAIL within `timeout` × len(endpoints) plus processing time.

Each query goes out on a fresh socket (random source port, connected to the upstream so only its
datagrams arrive) with a fresh random ID, restored before the reply goes back: an off-path
attacker has to guess both, and clients reusing IDs cannot get each other's answers.

A UDP client gets the upstream's UDP reply as is, even truncated (TC): its size matches what the
client asked for, and the client retries over TCP, which is then forwarded over TCP.

When no upstream gives a useful reply (every one silent, REFUSED or SERVFAIL), the last good
reply an upstream gave for the question is served stale (synch.dns.stale, RFC 8767) at the
point where SERVFAIL would have been sent: the bound above holds for stale answers too.
"""

from __future__ import annotations

import logging
import secrets
import socket
import struct
import time
from collections.abc import Callable, Sequence

from dnslib import RCODE, DNSRecord
from gevent import socket as gsocket

from synch.config import Endpoint
from synch.dns.acl import RateLimiter
from synch.dns.resolver import Answer, Decision, Query
from synch.dns.stale import StaleCache
from synch.dns.wire import (
    HEADER_LEN,
    MAX_MESSAGE,
    error_bytes,
    framed,
    rcode_of,
    recv_exactly,
    remaining,
    reply_matches,
)

log = logging.getLogger("synch.dns")

WARN_EVERY = 60.0  # seconds between two "forwarders do not answer" warnings
_RETRY_NEXT = (RCODE.SERVFAIL, RCODE.REFUSED)  # another upstream may do better


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


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
            if rcode_of(reply) not in _RETRY_NEXT:
                return reply
            fallback = reply
        return fallback

    @staticmethod
    def servfail(request: DNSRecord) -> bytes:
        return error_bytes(request, RCODE.SERVFAIL)

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


def _exchange_udp(endpoint: Endpoint, query: bytes, deadline: float) -> bytes | None:
    sock = gsocket.socket(_family(endpoint.host), socket.SOCK_DGRAM)
    try:
        sock.settimeout(remaining(deadline))
        sock.connect((endpoint.host, endpoint.port))
        sock.send(query)
        while True:
            sock.settimeout(remaining(deadline))
            reply: bytes = sock.recv(MAX_MESSAGE)
            if reply_matches(query, reply):
                return reply
            log.debug("forwarder %s: ignored a datagram that does not match", endpoint)
    finally:
        sock.close()


def _exchange_tcp(endpoint: Endpoint, query: bytes, deadline: float) -> bytes | None:
    address = (endpoint.host, endpoint.port)
    sock = gsocket.create_connection(address, timeout=remaining(deadline))
    try:
        sock.settimeout(remaining(deadline))
        sock.sendall(framed(query))
        (length,) = struct.unpack("!H", recv_exactly(sock, 2, deadline))
        reply = recv_exactly(sock, length, deadline)
        return reply if reply_matches(query, reply) else None
    finally:
        sock.close()


class ForwardResolver:
    """The forwarder as the last resolver of the chain.

    `resolve` never blocks: it claims every query that reaches it, to be forwarded, unless its
    client is over `dnsservice.ratelimit` (then REFUSED at once). The rate limit lives here
    because it limits forwards only: the zone before it in the chain answers without limit
    (phones must always resolve the SIP name, and a zone answer costs no upstream traffic, no
    socket and no pool slot). `forward` then runs the exchange, which blocks up to
    `forwardtimeout` per upstream, and always gives a reply: the upstream's, a stale one from
    `stale` when no upstream had a useful one, or SERVFAIL.
    """

    def __init__(
        self,
        forwarder: Forwarder,
        limiter: RateLimiter,
        clock: Callable[[], float] = time.monotonic,
        stale: StaleCache | None = None,
    ) -> None:
        self.forwarder = forwarder
        self.limiter = limiter
        self.clock = clock
        self.stale = stale if stale is not None else StaleCache(0, 0.0, clock)
        self._last_warning = -WARN_EVERY
        self._failed_since_warning = 0
        self._stale_since_warning = 0

    def resolve(self, request: DNSRecord, query: Query) -> Decision:
        if not self.limiter.allow(query.client, self.clock()):
            return Decision(Answer.REFUSED, error_bytes(request, RCODE.REFUSED))
        return Decision(Answer.FORWARDED, forward=request)

    def forward(self, data: bytes, request: DNSRecord, tcp: bool) -> tuple[bytes, Answer]:
        """The upstream's reply; once every upstream had its chance without a useful one, a
        stale reply, else the upstreams' refusal or SERVFAIL. Blocks."""
        try:
            reply = self.forwarder.forward(data, tcp)
        except Exception:
            log.exception("forwarding failed")
            reply = None
        if reply is not None and rcode_of(reply) not in _RETRY_NEXT:
            try:
                self.stale.learn(request, reply)
            except Exception:  # a bug here must cost serve-stale, never the reply
                log.exception("serve-stale: keeping the answer failed")
            return reply, Answer.FORWARDED
        try:
            stale = self.stale.answer(request, tcp)
        except Exception:
            log.exception("serve-stale failed")
            stale = None
        if stale is not None:
            self._warn_silent(stale=True)
            return stale, Answer.STALE
        if reply is not None:  # an upstream's REFUSED or SERVFAIL, relayed
            return reply, Answer.FORWARDED
        self._warn_silent()
        return self.busy(request), Answer.SERVFAIL

    def busy(self, request: DNSRecord) -> bytes:
        """SERVFAIL without trying (also when no forward can be started)."""
        return self.forwarder.servfail(request)

    def _warn_silent(self, stale: bool = False) -> None:
        # One line a minute at most: during a WAN outage every query would log.
        if stale:
            self._stale_since_warning += 1
        else:
            self._failed_since_warning += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            log.warning(
                "no DNS forwarder answered (%s), %d query(ies) answered SERVFAIL, "
                "%d from the stale cache",
                ", ".join(str(e) for e in self.forwarder.endpoints),
                self._failed_since_warning,
                self._stale_since_warning,
            )
            self._last_warning = now
            self._failed_since_warning = 0
            self._stale_since_warning = 0
