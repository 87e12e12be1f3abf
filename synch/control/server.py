"""The status socket's TCP transport: read one request, send one reply, close.

Every connection gets its own greenlet from a bounded pool and one deadline for its whole
request, so a silent or slow client only ever holds its own slot.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

from gevent.pool import Pool
from gevent.server import StreamServer

from synch.control.protocol import MAX_REQUEST_BYTES, ControlProtocol, is_complete

log = logging.getLogger(__name__)

DEFAULT_MAX_CLIENTS = 1000
# After the reply, unread input is drained (bounded) before closing: closing a socket with
# unread bytes makes the kernel send RST, which can destroy the reply before the client reads it.
_DRAIN_BYTES = 64 * 1024
_DRAIN_SECONDS = 1.0


class ControlServer:
    def __init__(
        self,
        protocol: ControlProtocol,
        listenaddress: str,
        port: int,
        idle_timeout: float = 5.0,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        self._protocol = protocol
        self._listenaddress = listenaddress
        self._requested_port = port
        self._idle_timeout = idle_timeout
        self._pool = Pool(max_clients)
        self._server: Any = None  # gevent's StreamServer, once started
        # Counters for metrics; the protocol counts token and action errors itself.
        self.connections = 0
        self.idle_drops = 0  # connected, then said nothing within idle_timeout
        self.handler_errors = 0  # connection failures (reset, send timeout, ...)

    @property
    def protocol(self) -> ControlProtocol:
        return self._protocol

    @property
    def port(self) -> int:
        """The bound port (useful after binding port 0)."""
        if self._server is None:
            raise RuntimeError("status socket is not started")
        return int(self._server.server_port)

    def start(self) -> None:
        """Bind and start accepting; OSError naming the address if the bind fails."""
        address = (self._listenaddress, self._requested_port)
        server = StreamServer(address, self._handle, spawn=self._pool)
        try:
            server.start()
        except OSError as exc:
            where = _describe(self._listenaddress, self._requested_port)
            raise OSError(
                exc.errno,
                f"status socket: cannot listen on {where} "
                f"(servicecontrol.listenaddress/port): {exc.strerror or exc}",
            ) from exc
        self._server = server
        log.info("status socket listening on %s", _describe(self._listenaddress, self.port))

    def stop(self, timeout: float = 1.0) -> None:
        """Stop accepting; clients being answered get `timeout` seconds, then are cut."""
        if self._server is not None:
            self._server.stop(timeout=timeout)
            self._server = None

    def _handle(self, sock: socket.socket, address: object) -> None:
        self.connections += 1
        try:
            raw = self._read_request(sock)
            if raw is None:
                self.idle_drops += 1
                log.debug("status socket: %s said nothing, dropped", address)
                return
            if not raw:
                return  # connected and closed without a word: nothing to answer
            reply = self._protocol.reply(raw)
            sock.settimeout(self._idle_timeout)  # a client that never reads cannot hold us
            sock.sendall(reply)
            self._close_gently(sock)
        except Exception as exc:  # one client's trouble never reaches the server
            self.handler_errors += 1
            log.debug("status socket: client %s: %r", address, exc)
        finally:
            sock.close()

    def _read_request(self, sock: socket.socket) -> bytes | None:
        """The request's bytes (b"" if the client closed at once); None if it stayed silent.

        Stops at a complete request, at end of input, or at the cap. One deadline covers the
        whole read, so trickling bytes do not extend it.
        """
        deadline = time.monotonic() + self._idle_timeout
        buffer = b""
        while not is_complete(buffer):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(MAX_REQUEST_BYTES - len(buffer))
            except TimeoutError:
                break
            if not chunk:
                return buffer  # half-close (nc -N / -q) ends the request
            buffer += chunk
        # Deadline reached with part of a request: answer it, as the original answered any
        # buffer it got; with nothing at all, drop the client.
        return buffer if buffer else None

    def _close_gently(self, sock: socket.socket) -> None:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + min(_DRAIN_SECONDS, self._idle_timeout)
        drained = 0
        while drained < _DRAIN_BYTES:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(4096)
            except (TimeoutError, OSError):
                return
            if not chunk:
                return
            drained += len(chunk)


def _describe(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
