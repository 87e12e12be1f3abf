"""DNS over UDP and TCP (gevent) in front of the zone resolver and the forwarder.

`DnsService` turns a query's bytes into reply bytes (transport-free apart from the blocking
forward). `DnsServers` runs it on a UDP `DatagramServer` and a TCP `StreamServer`.

UDP: local answers are sent at once; each forwarded query runs in a greenlet of a bounded pool,
and when the pool is full the client gets SERVFAIL at once rather than a queue. TCP (RFC 7766):
2-byte length prefix, several queries per connection, an idle connection is closed after
`TCP_IDLE_TIMEOUT`, and so is a connection whose message is malformed (its framing is suspect).
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from dnslib import RCODE, DNSRecord
from gevent import socket as gsocket
from gevent.pool import Pool
from gevent.server import DatagramServer, StreamServer

from synch.config import DnsSettings
from synch.dns.forward import HEADER_LEN, Forwarder, recv_exactly
from synch.dns.zone import (
    DROP,
    FORMERR,
    FORWARD,
    REFUSED,
    ZoneResolver,
    ZoneView,
    error_reply,
    fit_udp,
)
from synch.metrics import Metrics

log = logging.getLogger("synch.dns")

FORWARDED = "forwarded"
SERVFAIL = "servfail"
FORWARD_POOL_SIZE = 500
TCP_CONNECTIONS = 200
TCP_IDLE_TIMEOUT = 10.0
WARN_EVERY = 60.0  # seconds between two "forwarders do not answer" warnings


@dataclass
class Outcome:
    """What to do with one query: send `reply` (None: send nothing), or forward `pending`."""

    reply: bytes | None
    kind: str
    pending: DNSRecord | None = None


def formerr_for(data: bytes) -> bytes | None:
    """FORMERR for an unparseable query whose header is readable; None (drop) otherwise."""
    if len(data) < HEADER_LEN:
        return None
    (query_id, flags) = struct.unpack("!HH", data[:4])
    if flags & 0x8000:
        return None  # a response: never answer it
    # QR, the query's opcode and RD; rcode FORMERR; all counts 0.
    reply_flags = 0x8000 | (flags & 0x7900) | RCODE.FORMERR
    return struct.pack("!HHHHHH", query_id, reply_flags, 0, 0, 0, 0)


class DnsService:
    def __init__(
        self,
        settings: DnsSettings,
        view: Callable[[], ZoneView],
        metrics: Metrics,
        forwarder: Forwarder | None = None,
    ):
        self.settings = settings
        self.metrics = metrics
        self.forwarder = forwarder or Forwarder(settings.forwarders, settings.forwardtimeout)
        self.resolver = ZoneResolver(settings, view, ra=bool(self.forwarder.endpoints))
        self._last_warning = -WARN_EVERY
        self._failed_since_warning = 0

    def handle_query(self, data: bytes, tcp: bool) -> bytes | None:
        """The reply to send (None: send nothing). Blocks while forwarding."""
        outcome = self.prepare(data, tcp)
        if outcome.pending is not None:
            return self.forward(data, outcome.pending, tcp)
        return outcome.reply

    def prepare(self, data: bytes, tcp: bool) -> Outcome:
        """Everything but the forward: never blocks, never raises."""
        try:
            outcome = self._prepare(data, tcp)
        except Exception:  # a bug must cost one query, not the server
            log.exception("DNS query failed (%d bytes)", len(data))
            outcome = Outcome(formerr_for(data), FORMERR)
        if outcome.pending is None:
            self._count(outcome.kind)
        return outcome

    def _prepare(self, data: bytes, tcp: bool) -> Outcome:
        try:
            request = DNSRecord.parse(data)
        except Exception as exc:  # dnslib raises more than DNSError on garbage
            log.debug("malformed DNS query (%d bytes): %s", len(data), exc)
            return Outcome(formerr_for(data), FORMERR)
        reply, kind = self.resolver.resolve(request)
        if kind == DROP:
            return Outcome(None, FORMERR)
        if kind == FORWARD:
            if not self.forwarder.endpoints:
                refused = bytes(error_reply(request, RCODE.REFUSED, ra=False).pack())
                return Outcome(refused, REFUSED)
            return Outcome(None, FORWARD, pending=request)
        assert reply is not None
        packed = bytes(reply.pack()) if tcp else fit_udp(reply, request)
        log.debug("DNS %s %s: %s", request.q.qname, request.q.qtype, kind)
        return Outcome(packed, kind)

    def forward(self, data: bytes, request: DNSRecord, tcp: bool) -> bytes:
        """The upstream's reply, or SERVFAIL once every forwarder had its chance."""
        start = time.monotonic()
        try:
            reply = self.forwarder.forward(data, tcp)
        except Exception:
            log.exception("forwarding failed")
            reply = None
        self.metrics.dns_forward_duration.observe(time.monotonic() - start)
        if reply is not None:
            self._count(FORWARDED)
            return reply
        self._warn_forwarders_silent()
        return self.busy(request)

    def busy(self, request: DNSRecord) -> bytes:
        """SERVFAIL without trying (also when no forward can be started)."""
        self._count(SERVFAIL)
        return self.forwarder.servfail(request)

    def _count(self, kind: str) -> None:
        self.metrics.dns_queries.labels(answer=kind).inc()

    def _warn_forwarders_silent(self) -> None:
        # One line a minute at most: during a WAN outage every query would log.
        self._failed_since_warning += 1
        now = time.monotonic()
        if now - self._last_warning >= WARN_EVERY:
            log.warning(
                "no DNS forwarder answered (%s), %d query(ies) answered SERVFAIL",
                ", ".join(str(e) for e in self.forwarder.endpoints),
                self._failed_since_warning,
            )
            self._last_warning = now
            self._failed_since_warning = 0


def _bind(family: socket.AddressFamily, kind: int, address: tuple[str, int]) -> gsocket.socket:
    sock = gsocket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class DnsServers:
    """The UDP and TCP listeners on `listenaddress:port` (port 0: any free port, same for both)."""

    def __init__(
        self,
        service: DnsService,
        listenaddress: str,
        port: int,
        forward_pool_size: int = FORWARD_POOL_SIZE,
    ):
        self.service = service
        self.listenaddress = listenaddress
        self.port = port
        self.forward_pool = Pool(forward_pool_size)
        self.udp_port = 0
        self.tcp_port = 0
        self._udp: DatagramServer | None = None
        self._tcp: StreamServer | None = None

    def start(self) -> None:
        """Bind and serve; OSError naming the address and protocol if either cannot bind."""
        udp_sock, tcp_sock = self._bind_both()
        self.udp_port = udp_sock.getsockname()[1]
        self.tcp_port = tcp_sock.getsockname()[1]
        self._udp = DatagramServer(udp_sock, handle=self._handle_udp)
        self._tcp = StreamServer(tcp_sock, handle=self._handle_tcp, spawn=Pool(TCP_CONNECTIONS))
        self._udp.start()
        self._tcp.start()
        log.info(
            "DNS listening on %s UDP %d, TCP %d", self.listenaddress, self.udp_port, self.tcp_port
        )

    def stop(self) -> None:
        for server in (self._udp, self._tcp):
            if server is not None:
                server.stop(timeout=1)
        self.forward_pool.kill(block=False)
        self._udp = self._tcp = None

    def _bind_both(self) -> tuple[gsocket.socket, gsocket.socket]:
        family = socket.AF_INET6 if ":" in self.listenaddress else socket.AF_INET
        attempts = 20 if self.port == 0 else 1
        for attempt in range(attempts):
            udp = self._bind_one(family, socket.SOCK_DGRAM, self.port)
            try:
                # With port 0, TCP takes the port UDP got, so one number serves both.
                tcp = self._bind_one(family, socket.SOCK_STREAM, udp.getsockname()[1])
            except OSError:
                udp.close()
                if attempt == attempts - 1:
                    raise
                continue
            return udp, tcp
        raise AssertionError("unreachable")

    def _bind_one(self, family: socket.AddressFamily, kind: int, port: int) -> gsocket.socket:
        proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
        try:
            return _bind(family, kind, (self.listenaddress, port))
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"DNS cannot listen on {self.listenaddress} {proto} port {port}: "
                f"{exc.strerror or exc}",
            ) from exc

    # -- UDP --

    def _handle_udp(self, data: bytes, address: tuple[str, int]) -> None:
        outcome = self.service.prepare(data, tcp=False)
        request = outcome.pending
        if request is None:
            if outcome.reply is not None:
                self._sendto(outcome.reply, address)
            return
        if self.forward_pool.full():
            self._sendto(self.service.busy(request), address)
            return
        self.forward_pool.spawn(self._forward_udp, data, request, address)

    def _forward_udp(self, data: bytes, request: DNSRecord, address: tuple[str, int]) -> None:
        self._sendto(self.service.forward(data, request, tcp=False), address)

    def _sendto(self, reply: bytes, address: tuple[str, int]) -> None:
        server = self._udp
        if server is None:
            return
        try:
            server.sendto(reply, address)
        except OSError as exc:
            log.debug("DNS reply to %s not sent: %s", address, exc)

    # -- TCP --

    def _handle_tcp(self, sock: gsocket.socket, address: tuple[str, int]) -> None:
        try:
            while True:
                data = _read_message(sock)
                if data is None:
                    return
                outcome = self.service.prepare(data, tcp=True)
                reply = outcome.reply
                if outcome.pending is not None:
                    reply = self.service.forward(data, outcome.pending, tcp=True)
                if reply is None:
                    return
                sock.sendall(struct.pack("!H", len(reply)) + reply)
                if outcome.kind == FORMERR:
                    return
        except (OSError, gevent.Timeout) as exc:
            log.debug("DNS TCP client %s: %s", address, exc or type(exc).__name__)
        finally:
            sock.close()


def _read_message(sock: gsocket.socket) -> bytes | None:
    """One length-prefixed message; None when the client closes, idles or sends length 0."""
    deadline = time.monotonic() + TCP_IDLE_TIMEOUT
    try:
        prefix = recv_exactly(sock, 2, deadline)
    except ConnectionError:
        return None
    (length,) = struct.unpack("!H", prefix)
    if length == 0:
        return None
    return recv_exactly(sock, length, deadline)
