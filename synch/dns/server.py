"""DNS over UDP and TCP (gevent) in front of the zone resolver and the forwarder.

`DnsService` turns a query's bytes (and the client's address) into reply bytes: transport-free
apart from the blocking forward. `DnsServers` runs it on UDP and TCP.

Who is answered: clients inside `dnsservice.allow` (others get REFUSED: no open resolver), and
forwarded queries at most `dnsservice.ratelimit` per second per client (then REFUSED). Answers
from the zone are never rate-limited: phones must always resolve the SIP name.

Fast path: the first time a name of the zone is asked in the canonical form that stub resolvers
use (one question, no compression, nothing or one plain OPT after it), its reply is kept as a
template keyed by the question's bytes. Later queries with the same bytes are answered by copying
the template with the query's ID and RD/CD bits, without parsing: several times faster than
dnslib. The templates are dropped whenever the zone view (target, serial) changes.

UDP: one greenlet drains the socket without blocking, at most `UDP_BATCH` datagrams per wake,
then yields (`gevent.sleep(0)`), so a flood never starves the probes or the status socket. Local
answers are sent at once; each forwarded query runs in a greenlet of a bounded pool, and when the
pool is full the client gets SERVFAIL at once rather than a queue. TCP (RFC 7766): 2-byte length
prefix, several queries per connection; each message must arrive within `TCP_IDLE_TIMEOUT` of
the previous one (one deadline for its whole length: trickling bytes do not extend it), else the
connection is closed, and so is a connection whose message is malformed (its framing is
suspect). TCP slots are given at accept (synch.listeners): a connection from outside `allow` is
closed at once (counted as refused), one client holds at most `TCP_PER_CLIENT`, and when all
slots are taken a new connection is closed rather than queued behind idle ones.
"""

from __future__ import annotations

import _socket
import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from dnslib import RCODE, DNSRecord
from gevent import socket as gsocket
from gevent.pool import Pool

from synch.config import DnsSettings
from synch.dns.acl import ClientAcl, RateLimiter
from synch.dns.forward import HEADER_LEN, Forwarder, question_end, recv_exactly
from synch.dns.state import ZoneView
from synch.dns.zone import (
    DROP,
    FORMERR,
    FORWARD,
    LOCAL,
    MAX_UDP_NO_EDNS,
    NODATA,
    NXDOMAIN,
    REFUSED,
    ZoneResolver,
    error_reply,
    fit_udp,
)
from synch.listeners import NOT_ALLOWED, ConnectionGate, GatedServer
from synch.metrics import Metrics

log = logging.getLogger("synch.dns")

FORWARDED = "forwarded"
SERVFAIL = "servfail"
FORWARD_POOL_SIZE = 500
TCP_CONNECTIONS = 200
TCP_IDLE_TIMEOUT = 10.0
TCP_PER_CLIENT = 8  # a phone needs one at a time; a LAN resolver forwarding to us, a few
WARN_EVERY = 60.0  # seconds between two "forwarders do not answer" warnings
UDP_BATCH = 64  # datagrams handled per wake before yielding to the other greenlets
UDP_RECV_SIZE = 65535
UDP_RCVBUF = 1 << 20  # absorbs bursts while other greenlets run (capped by net.core.rmem_max)
MAX_TEMPLATES = 512  # prepared replies kept; past that the table starts afresh
_CACHEABLE = (LOCAL, NODATA, NXDOMAIN)
_PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00"  # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0
_OPT_HEAD = b"\x00\x00\x29"  # root owner, type OPT
_OPT_FIXED = 11  # owner, type, class, TTL, RDLENGTH


@dataclass
class Outcome:
    """What to do with one query: send `reply` (None: send nothing), or forward `pending`."""

    reply: bytes | None
    kind: str
    pending: DNSRecord | None = None


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


def _opt_ok(rest: bytes) -> bool:
    """`rest` is exactly one OPT record of EDNS version 0 (any options, any flags)."""
    return (
        len(rest) >= _OPT_FIXED
        and rest[:3] == _OPT_HEAD
        and rest[6] == 0
        and len(rest) == _OPT_FIXED + (rest[9] << 8 | rest[10])
    )


class DnsService:
    def __init__(
        self,
        settings: DnsSettings,
        view: Callable[[], ZoneView],
        metrics: Metrics,
        forwarder: Forwarder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.metrics = metrics
        self.view = view
        self.clock = clock
        self.forwarder = forwarder or Forwarder(settings.forwarders, settings.forwardtimeout)
        self.resolver = ZoneResolver(settings, view, ra=bool(self.forwarder.endpoints))
        self.acl = ClientAcl(settings.allow)
        self.limiter = RateLimiter(settings.ratelimit)
        self._last_warning = -WARN_EVERY
        self._failed_since_warning = 0
        # Answers counted here and added to the metric by flush_counts(): one metric update
        # per batch instead of one per query.
        self._counts: dict[str, int] = {}
        # question bytes -> [template without OPT, template with OPT] (each (reply, kind))
        self._templates: dict[bytes, list[tuple[bytes, str] | None]] = {}
        self._question_lengths: tuple[int, ...] = ()
        self._templates_view: ZoneView | None = None

    # -- the whole answer for one client ------------------------------------------------------

    def handle_query(self, data: bytes, tcp: bool, client: str = "127.0.0.1") -> bytes | None:
        """The reply to send (None: send nothing). Blocks while forwarding."""
        data = bytes(data)
        self.refresh()
        try:
            outcome = self.answer(data, client, tcp)
            if outcome.pending is not None:
                return self.forward(data, outcome.pending, tcp)
            return outcome.reply
        finally:
            self.flush_counts()

    def refresh(self) -> None:
        """Drop the prepared replies if the zone view changed (checked before each answer)."""
        try:
            current: ZoneView | None = self.view()
        except Exception:  # the full path reports it per query; nothing prepared meanwhile
            current = None
        if current is self._templates_view and current is not None:
            return
        if current is None or current != self._templates_view:
            self._templates.clear()
            self._question_lengths = ()
            self._templates_view = current

    def fast_answer(self, data: bytes, client: str) -> bytes | None:
        """The reply from a prepared template, for an allowed client; None: take `answer`.

        `data` must be `bytes` (not bytearray): slices of it are dictionary keys."""
        if not self.acl.allows(client) or len(data) <= HEADER_LEN + 4:
            return None
        # QR and opcode clear, one question, no answer/authority records.
        if data[2] & 0xF8 or data[4:10] != _PLAIN_COUNTS:
            return None
        self.refresh()
        arcount = data[10:12]
        found: tuple[bytes, str] | None = None
        if arcount == b"\x00\x00":
            entry = self._templates.get(data[HEADER_LEN:])
            found = entry[0] if entry is not None else None
        elif arcount == b"\x00\x01":
            for length in self._question_lengths:
                end = HEADER_LEN + length
                entry = self._templates.get(data[HEADER_LEN:end])
                if entry is not None and _opt_ok(data[end:]):
                    found = entry[1]
                    break
        if found is None:
            return None
        template, kind = found
        self._counts[kind] = self._counts.get(kind, 0) + 1
        # The query's ID, RD (byte 2, bit 0) and CD (byte 3, bit 4) into the prepared reply.
        flags = bytes((template[2] | (data[2] & 0x01), template[3] | (data[3] & 0x10)))
        return data[:2] + flags + template[4:]

    def answer(self, data: bytes, client: str, tcp: bool) -> Outcome:
        """Everything but the forward, for `client`: never blocks, never raises."""
        if not self.acl.allows(client):
            self._count(REFUSED)
            return Outcome(refused_for(data), REFUSED)
        outcome = self.prepare(data, tcp)
        pending = outcome.pending
        if pending is not None and not self.limiter.allow(client, self.clock()):
            self._count(REFUSED)
            return Outcome(bytes(error_reply(pending, RCODE.REFUSED).pack()), REFUSED)
        return outcome

    def prepare(self, data: bytes, tcp: bool) -> Outcome:
        """The zone's answer or what to forward, for any client: never blocks, never raises."""
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
        if kind in _CACHEABLE:
            self._learn(data, packed, kind)
        log.debug("DNS %s %s: %s", request.q.qname, request.q.qtype, kind)
        return Outcome(packed, kind)

    def _learn(self, data: bytes, packed: bytes, kind: str) -> None:
        """Keep `packed` as the template for queries with these question bytes, if the query
        has the canonical form the fast path recognises and the reply fits any UDP client."""
        if self._templates_view is None or len(packed) > MAX_UDP_NO_EDNS:
            return
        if data[2] & 0xF8 or data[4:10] != _PLAIN_COUNTS or data[10] != 0:
            return
        end = question_end(data)
        if end is None or packed[HEADER_LEN:end] != data[HEADER_LEN:end]:
            return
        rest = data[end:]
        if data[11] == 0 and not rest:
            slot = 0
        elif data[11] == 1 and _opt_ok(rest):
            slot = 1
        else:
            return
        question = bytes(data[HEADER_LEN:end])
        entry = self._templates.get(question)
        if entry is None:
            if len(self._templates) >= MAX_TEMPLATES:
                self._templates.clear()
                self._question_lengths = ()
            entry = self._templates[question] = [None, None]
            if len(question) not in self._question_lengths:
                self._question_lengths += (len(question),)
        template = b"\x00\x00" + bytes((packed[2] & 0xFE, packed[3] & 0xEF)) + packed[4:]
        entry[slot] = (template, kind)

    # -- forwarding ---------------------------------------------------------------------------

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
            self._count(FORWARDED, flush=True)
            return reply
        self._warn_forwarders_silent()
        return self.busy(request)

    def busy(self, request: DNSRecord) -> bytes:
        """SERVFAIL without trying (also when no forward can be started)."""
        self._count(SERVFAIL, flush=True)
        return self.forwarder.servfail(request)

    # -- counting -----------------------------------------------------------------------------

    def _count(self, kind: str, flush: bool = False) -> None:
        if flush:  # outside a batch (a forward's greenlet): nobody else would flush it
            self.metrics.dns_queries.labels(answer=kind).inc()
        else:
            self._counts[kind] = self._counts.get(kind, 0) + 1

    def flush_counts(self) -> None:
        """Add the answers counted since the last flush to synch_dns_queries_total."""
        if self._counts:
            counts, self._counts = self._counts, {}
            for kind, count in counts.items():
                self.metrics.dns_queries.labels(answer=kind).inc(count)

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
        tcp_connections: int = TCP_CONNECTIONS,
        tcp_per_client: int = TCP_PER_CLIENT,
    ):
        self.service = service
        self.listenaddress = listenaddress
        self.port = port
        self.forward_pool = Pool(forward_pool_size)
        self.tcp_gate = ConnectionGate(tcp_connections, tcp_per_client, service.acl.allows)
        self.udp_port = 0
        self.tcp_port = 0
        self._udp_sock: Any = None  # the plain non-blocking socket the UDP loop drains
        self._udp_loop: gevent.Greenlet[Any, Any] | None = None
        self._check_sock: gsocket.socket | None = None  # see answers()
        self._tcp: GatedServer | None = None
        self.loop_errors = 0

    def start(self) -> None:
        """Bind and serve; OSError naming the address and protocol if either cannot bind."""
        udp_sock, tcp_sock = self._bind_both()
        self.udp_port = udp_sock.getsockname()[1]
        self.tcp_port = tcp_sock.getsockname()[1]
        self._udp_sock = _plain_udp(udp_sock)
        self._tcp = GatedServer(
            tcp_sock, self._handle_tcp, self.tcp_gate, "DNS TCP", on_reject=self._tcp_rejected
        )
        self._tcp.start()
        self._udp_loop = gevent.spawn(self._serve_udp, self._udp_sock)
        log.info(
            "DNS listening on %s UDP %d, TCP %d", self.listenaddress, self.udp_port, self.tcp_port
        )

    def stop(self) -> None:
        if self._check_sock is not None:
            self._check_sock.close()
            self._check_sock = None
        if self._udp_loop is not None:
            self._udp_loop.kill(block=True, timeout=1)
            self._udp_loop = None
        if self._udp_sock is not None:
            self._udp_sock.close()
            self._udp_sock = None
        if self._tcp is not None:
            self._tcp.stop(timeout=1)
            self._tcp = None
        self.forward_pool.kill(block=False)
        self.service.flush_counts()

    def answers(self, timeout: float) -> bool:
        """Does the UDP service answer a query now? The SIP name is asked over loopback (or
        the listen address) from a socket kept for it; any reply counts, REFUSED included.
        It shows in synch_dns_queries_total like any other query."""
        if not self.serving:
            return False
        try:
            sock = self._self_check_socket()
            query = DNSRecord.question(self.service.settings.fqdn)
            sock.send(query.pack())
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                sock.settimeout(remaining)
                reply = sock.recv(UDP_RECV_SIZE)
                if reply[:2] == query.pack()[:2]:  # not a late reply to an earlier check
                    return True
        except (OSError, ValueError) as exc:
            log.debug("DNS self-check: %s", exc)
        return False

    def _self_check_socket(self) -> gsocket.socket:
        if self._check_sock is None:
            family = socket.AF_INET6 if ":" in self.listenaddress else socket.AF_INET
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.listenaddress, self.listenaddress)
            sock = gsocket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.connect((host, self.udp_port))
            except OSError:
                sock.close()
                raise
            self._check_sock = sock
        return self._check_sock

    @property
    def serving(self) -> bool:
        """Both listeners are up (the UDP loop greenlet alive)."""
        loop = self._udp_loop
        return loop is not None and not loop.dead and self._tcp is not None

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

    def _serve_udp(self, sock: Any) -> None:
        """Drain the socket in batches, yield between batches; never dies of a bad datagram."""
        hub = gevent.get_hub()
        readable = hub.loop.io(sock.fileno(), 1)
        while True:
            try:
                full = self._udp_batch(sock)
            except Exception:  # a bug in one datagram's handling must not stop DNS
                self.loop_errors += 1
                log.exception("DNS UDP loop error")
                full = True
            if full:
                gevent.sleep(0)  # more is waiting: let the probes and the sockets run first
            else:
                hub.wait(readable)

    def _udp_batch(self, sock: Any) -> bool:
        """Handle up to UDP_BATCH waiting datagrams; True if the batch was full."""
        service = self.service
        recvfrom, sendto = sock.recvfrom, sock.sendto
        fast_answer = service.fast_answer
        try:
            for _ in range(UDP_BATCH):
                try:
                    data, address = recvfrom(UDP_RECV_SIZE)
                except BlockingIOError:
                    return False
                except OSError as exc:  # e.g. an ICMP error reported on the socket
                    log.debug("DNS UDP receive: %s", exc)
                    return False
                reply = fast_answer(data, address[0])
                if reply is not None:
                    try:
                        sendto(reply, address)
                    except OSError as exc:  # a full send buffer drops the reply, as UDP may
                        log.debug("DNS reply to %s not sent: %s", address, exc)
                else:
                    self._slow_udp(data, address)
            return True
        finally:
            service.flush_counts()

    def _slow_udp(self, data: bytes, address: tuple[str, int]) -> None:
        outcome = self.service.answer(data, address[0], tcp=False)
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
        sock = self._udp_sock
        if sock is None:
            return
        try:
            sock.sendto(reply, address)
        except OSError as exc:
            log.debug("DNS reply to %s not sent: %s", address, exc)

    # -- TCP --

    def _tcp_rejected(self, reason: str) -> None:
        metrics = self.service.metrics
        metrics.connections_rejected.labels(listener="dns", reason=reason).inc()
        if reason == NOT_ALLOWED:  # what a query from there would have got
            metrics.dns_queries.labels(answer=REFUSED).inc()

    def _handle_tcp(self, sock: gsocket.socket, address: tuple[str, int]) -> None:
        service = self.service
        try:
            while True:
                data = _read_message(sock)
                if data is None:
                    return
                reply = service.fast_answer(data, address[0])
                kind = LOCAL
                if reply is None:
                    outcome = service.answer(data, address[0], tcp=True)
                    reply, kind = outcome.reply, outcome.kind
                    if outcome.pending is not None:
                        reply = service.forward(data, outcome.pending, tcp=True)
                service.flush_counts()
                if reply is None:
                    return
                sock.settimeout(TCP_IDLE_TIMEOUT)  # a client that does not read cannot hold us
                sock.sendall(struct.pack("!H", len(reply)) + reply)
                if kind == FORMERR:
                    return
        except (OSError, gevent.Timeout) as exc:
            log.debug("DNS TCP client %s: %s", address, exc or type(exc).__name__)
        finally:
            service.flush_counts()
            sock.close()


def _plain_udp(bound: gsocket.socket) -> Any:
    """The bound socket as a non-blocking plain socket: its calls go straight to the kernel,
    without gevent's per-call wrapping (the UDP loop waits for readability itself)."""
    fileno = bound.detach()
    plain = _socket.socket(bound.family, socket.SOCK_DGRAM, 0, fileno)
    plain.setblocking(False)
    with contextlib.suppress(OSError):  # the default buffer works, with less slack
        plain.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
    return plain


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
