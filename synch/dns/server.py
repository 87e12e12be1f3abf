"""DNS transport: the UDP and TCP listeners in front of `DnsService` (synch.dns.service).

Bytes only: what to answer is the service's business. `DnsServers.start()` binds both sockets
and starts accepting TCP; the UDP loop is `serve_udp()`, which the caller spawns in a greenlet
of its own (in its own `gevent.pool.Group`, like its other loops) and `stop()` ends.

UDP: one greenlet drains the socket without blocking, at most `UDP_BATCH` datagrams per wake,
then yields (`gevent.sleep(0)`), so a flood never starves the probes or the status socket.
Prepared and local answers are sent at once; each forwarded query runs in a greenlet of a
bounded pool, and when the pool is full the client gets SERVFAIL at once rather than a queue.

TCP (RFC 7766): 2-byte length prefix, several queries per connection; each message must arrive
within `TCP_IDLE_TIMEOUT` of the previous one (one deadline for its whole length: trickling
bytes do not extend it), else the connection is closed, and so is a connection whose message
is malformed (its framing is suspect). TCP slots are given at accept (synch.listeners): a
connection from outside `allow` is closed at once (counted as refused), one client holds at
most `TCP_PER_CLIENT`, and when all slots are taken a new connection is closed rather than
queued behind idle ones.
"""

from __future__ import annotations

import _socket
import contextlib
import logging
import socket
import time
from typing import Any

import gevent
from dnslib import DNSRecord
from gevent import socket as gsocket
from gevent.pool import Pool

from synch.dns.resolver import Answer
from synch.dns.service import DnsService
from synch.dns.wire import framed, read_message
from synch.listeners import NOT_ALLOWED, ConnectionGate, GatedServer

log = logging.getLogger("synch.dns")

FORWARD_POOL_SIZE = 500
TCP_CONNECTIONS = 200
TCP_IDLE_TIMEOUT = 10.0
TCP_PER_CLIENT = 8  # a phone needs one at a time; a LAN resolver forwarding to us, a few
UDP_BATCH = 64  # datagrams handled per wake before yielding to the other greenlets
UDP_RECV_SIZE = 65535
UDP_RCVBUF = 1 << 20  # absorbs bursts while other greenlets run (capped by net.core.rmem_max)


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
        self._udp_loop: gevent.Greenlet[Any, Any] | None = None  # serve_udp(), while it runs
        self._check_sock: gsocket.socket | None = None  # see answers()
        self._tcp: GatedServer | None = None
        self._stopped = False
        self.loop_errors = 0

    def start(self) -> None:
        """Bind UDP and TCP and start accepting TCP; OSError naming the address and protocol
        if either cannot bind. UDP is served once the caller spawns `serve_udp`."""
        udp_sock, tcp_sock = self._bind_both()
        self._stopped = False
        self.udp_port = udp_sock.getsockname()[1]
        self.tcp_port = tcp_sock.getsockname()[1]
        self._udp_sock = _plain_udp(udp_sock)
        self._tcp = GatedServer(
            tcp_sock, self._handle_tcp, self.tcp_gate, "DNS TCP", on_reject=self._tcp_rejected
        )
        self._tcp.start()
        log.info(
            "DNS listening on %s UDP %d, TCP %d", self.listenaddress, self.udp_port, self.tcp_port
        )

    def stop(self) -> None:
        """Close both listeners and end the UDP loop, wherever it was spawned."""
        self._stopped = True
        if self._check_sock is not None:
            self._check_sock.close()
            self._check_sock = None
        loop = self._udp_loop
        if loop is not None and loop is not gevent.getcurrent():
            loop.kill(block=True, timeout=1)
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
        """Both listeners are up: bound, and the UDP loop running."""
        return self._udp_loop is not None and self._tcp is not None

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

    def serve_udp(self) -> None:
        """The UDP loop, after `start()`: runs until killed or `stop()`, in the greenlet that
        calls it (spawn it: `group.spawn(servers.serve_udp)`). Drains the socket in batches
        and yields between them; never dies of a bad datagram."""
        sock = self._udp_sock
        current = gevent.getcurrent()
        if self._stopped:
            return  # stopped before this greenlet first ran
        if sock is None:
            raise RuntimeError("DnsServers.serve_udp: start() first")
        if self._udp_loop is not None:
            raise RuntimeError("DnsServers.serve_udp: already running")
        if not isinstance(current, gevent.Greenlet):
            raise RuntimeError("DnsServers.serve_udp runs in a greenlet of its own: spawn it")
        hub = gevent.get_hub()
        readable = hub.loop.io(sock.fileno(), 1)
        self._udp_loop = current
        try:
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
        finally:
            self._udp_loop = None
            readable.close()

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
        decision = self.service.answer(data, address[0], tcp=False)
        request = decision.forward
        if request is None:
            if decision.reply is not None:
                self._sendto(decision.reply, address)
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
            metrics.dns_queries.labels(answer=Answer.REFUSED).inc()

    def _handle_tcp(self, sock: gsocket.socket, address: tuple[str, int]) -> None:
        service = self.service
        try:
            while True:
                data = read_message(sock, TCP_IDLE_TIMEOUT)
                if data is None:
                    return
                reply = service.fast_answer(data, address[0])
                answer = Answer.LOCAL
                if reply is None:
                    decision = service.answer(data, address[0], tcp=True)
                    reply, answer = decision.reply, decision.answer
                    if decision.forward is not None:
                        reply = service.forward(data, decision.forward, tcp=True)
                service.flush_counts()
                if reply is None:
                    return
                sock.settimeout(TCP_IDLE_TIMEOUT)  # a client that does not read cannot hold us
                sock.sendall(framed(reply))
                if answer is Answer.FORMERR:
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
