"""Prometheus `/metrics` over HTTP, safe on an address open to the LAN.

`metrics.listenaddress` is 0.0.0.0 by default: anyone on the LAN can connect. So each
connection carries one request: its head (at most `MAX_HEAD` bytes) must arrive and the reply
must leave within `REQUEST_SECONDS` in all, then the connection closes (`Connection: close`, so
nothing idles between scrapes). At most `MAX_CONNECTIONS` are served at once (fewer under a low
descriptor limit), `PER_CLIENT` of them from one address; past that a connection is closed at
accept and counted in synch_connections_rejected_total{listener="metrics"}.

The reply is prometheus_client's WSGI app (content negotiation, gzip, `name[]` filters); the
parsing and rendering around it are plain functions.
"""

from __future__ import annotations

import io
import logging
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import gevent
from prometheus_client import make_wsgi_app

from synch.listeners import ConnectionGate, GatedServer
from synch.metrics import Metrics

log = logging.getLogger("synch.metrics")

MAX_HEAD = 8192  # request line and headers; a scrape sends a few hundred bytes
REQUEST_SECONDS = 10.0  # Prometheus' default scrape timeout
MAX_CONNECTIONS = 16
PER_CLIENT = 4

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class BadRequest(ValueError):
    """The head is not an HTTP/1.x request; args[0] is the status line to answer."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    version: str
    headers: dict[str, str]  # names in lower case; a repeated header keeps its last value


def head_end(buffer: bytes) -> int | None:
    """Offset just past the blank line that ends the head, or None if it has not come yet."""
    for marker in (b"\r\n\r\n", b"\n\n"):
        found = buffer.find(marker)
        if found >= 0:
            return found + len(marker)
    return None


def parse_head(head: bytes) -> Request:
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise BadRequest("400 Bad Request")
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest("505 HTTP Version Not Supported")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadRequest("400 Bad Request")
        headers[name.lower()] = value.strip()
    path, _, query = target.partition("?")
    return Request(method, unquote(path), query, version, headers)


def wsgi_environ(request: Request, server: tuple[str, int]) -> dict[str, Any]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": request.path,
        "QUERY_STRING": request.query,
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": request.version,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request.headers.items():
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        environ[key] = value
    return environ


def response(status: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body


def error_response(status: str) -> bytes:
    return response(status, [("Content-Type", "text/plain; charset=utf-8")], f"{status}\n".encode())


def render(app: WsgiApp, request: Request, server: tuple[str, int]) -> bytes:
    """The whole HTTP response of `app` to `request`."""
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], *_: Any) -> None:
        started[:] = [status, headers]

    body = b"".join(app(wsgi_environ(request, server), start_response))
    status, headers = started
    if request.method == "HEAD":
        body = b""
    return response(status, headers, body)


def reply_to(app: WsgiApp, head: bytes, server: tuple[str, int]) -> bytes:
    """The response to the bytes a client sent (its head, complete or not)."""
    end = head_end(head)
    if end is None:
        if len(head) >= MAX_HEAD:
            return error_response("431 Request Header Fields Too Large")
        return error_response("400 Bad Request")  # the client stopped mid-head
    try:
        request = parse_head(head[:end])
    except BadRequest as exc:
        return error_response(str(exc.args[0]))
    try:
        return render(app, request, server)
    except Exception:  # a collector's bug: the scrape fails visibly, the server goes on
        log.exception("metrics: building the reply failed")
        return error_response("500 Internal Server Error")


class MetricsHttpServer:
    def __init__(
        self,
        metrics: Metrics,
        listenaddress: str,
        port: int,
        max_connections: int = MAX_CONNECTIONS,
        per_client: int = PER_CLIENT,
        request_seconds: float = REQUEST_SECONDS,
    ) -> None:
        self._app: WsgiApp = make_wsgi_app(metrics.registry)
        self._request_seconds = request_seconds
        self._metrics = metrics
        self._address = (listenaddress, port)
        self._gate = ConnectionGate(max_connections, per_client)
        self._server: GatedServer | None = None
        self.port = 0  # the bound port, once started


    def start(self) -> None:
        """Bind and serve; OSError if the address cannot be bound."""
        server = GatedServer(
            self._address, self._handle, self._gate, "metrics", on_reject=self._rejected
        )
        server.start()
        self._server = server
        self.port = int(server.server_port)

    def stop(self, timeout: float = 1.0) -> None:
        if self._server is not None:
            self._server.stop(timeout=timeout)
            self._server = None

    def _rejected(self, reason: str) -> None:
        self._metrics.connections_rejected.labels(listener="metrics", reason=reason).inc()

    def _handle(self, sock: socket.socket, address: Any) -> None:
        # One deadline for reading the head, building the reply and sending it.
        with gevent.Timeout(self._request_seconds, False):
            head = self._read_head(sock)
            if head:
                sock.sendall(reply_to(self._app, head, (self._address[0], self.port)))
                sock.shutdown(socket.SHUT_WR)

    @staticmethod
    def _read_head(sock: socket.socket) -> bytes:
        """Up to MAX_HEAD bytes, until the head is complete or the client stops sending."""
        buffer = b""
        while len(buffer) < MAX_HEAD and head_end(buffer) is None:
            chunk = sock.recv(MAX_HEAD - len(buffer))
            if not chunk:
                break
            buffer += chunk
        return buffer
