"""Admission of TCP connections, decided when they are accepted.

A listening socket open to the LAN must not let anyone hold its slots: every connection it
keeps costs a file descriptor and a greenlet, and a daemon out of descriptors fails whatever
opens one next (a probe, a sync, a DNS forward). So a connection is admitted only while

- its client is allowed (the DNS allow list: a stranger's connection costs nothing but the
  accept),
- its client holds fewer than `per_client` connections (one host cannot take every slot),
- fewer than `capacity` connections are open in all;

otherwise it is closed at once and counted. Queueing it instead would let idle connections
ahead of it decide when it is served.

`ConnectionGate` is the bookkeeping (no sockets); `GatedServer` applies it to a gevent
StreamServer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gevent.pool import Group
from gevent.server import StreamServer

log = logging.getLogger("synch.listeners")

NOT_ALLOWED = "not_allowed"
CLIENT_LIMIT = "client_limit"
FULL = "full"
REJECT_REASONS = (NOT_ALLOWED, CLIENT_LIMIT, FULL)
WARN_EVERY = 60.0  # seconds between two warnings about rejected connections


def _everyone(host: str) -> bool:
    return True


class ConnectionGate:
    """Counts open connections per client address; `admit` says whether one more may open."""

    def __init__(
        self, capacity: int, per_client: int, allows: Callable[[str], bool] = _everyone
    ) -> None:
        if capacity < 1 or per_client < 1:
            raise ValueError(f"capacity and per_client must be >= 1: {capacity}, {per_client}")
        self.capacity = capacity
        self.per_client = per_client
        self._allows = allows
        self._open: dict[str, int] = {}
        self.active = 0

    def admit(self, host: str) -> str | None:
        """None: admitted (call `release(host)` when it closes); else why it is refused."""
        if not self._allows(host):
            return NOT_ALLOWED
        held = self._open.get(host, 0)
        if held >= self.per_client:
            return CLIENT_LIMIT
        if self.active >= self.capacity:
            return FULL
        self._open[host] = held + 1
        self.active += 1
        return None

    def release(self, host: str) -> None:
        held = self._open.get(host, 0)
        if held <= 0:
            return
        if held == 1:
            del self._open[host]  # the table holds only clients with open connections
        else:
            self._open[host] = held - 1
        self.active -= 1

    def held_by(self, host: str) -> int:
        return self._open.get(host, 0)


class RejectLog:
    """At most one warning per `every` seconds, summing what was rejected meanwhile."""

    def __init__(self, what: str, every: float = WARN_EVERY) -> None:
        self.what = what
        self.every = every
        self._counts: dict[str, int] = {}
        self._last = -every

    def rejected(self, reason: str, now: float) -> None:
        self._counts[reason] = self._counts.get(reason, 0) + 1
        if now - self._last < self.every:
            return
        summary = ", ".join(f"{count} {why}" for why, count in sorted(self._counts.items()))
        log.warning("%s: connections closed at accept (%s)", self.what, summary)
        self._counts.clear()
        self._last = now


class GatedServer(StreamServer):  # type: ignore[misc]  # gevent ships no type hints
    """A StreamServer that never stops accepting: each connection is admitted by the gate and
    served in its own greenlet, or closed at once. `handle(sock, address)` must bound itself
    in time; the socket is closed after it returns."""

    def __init__(
        self,
        listener: Any,
        handle: Callable[[Any, Any], None],
        gate: ConnectionGate,
        what: str,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(listener, handle=handle)
        self.gate = gate
        self._serve_client = handle
        self._on_reject = on_reject
        self._reject_log = RejectLog(what)
        self._handlers = Group()

    def do_handle(self, sock: Any, address: Any) -> None:
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        reason = self.gate.admit(host)
        if reason is not None:
            sock.close()
            self._reject_log.rejected(reason, time.monotonic())
            if self._on_reject is not None:
                self._on_reject(reason)
            return
        self._handlers.spawn(self._serve, sock, address, host)

    def _serve(self, sock: Any, address: Any, host: str) -> None:
        try:
            self._serve_client(sock, address)
        except Exception as exc:  # one client's trouble never reaches the server
            log.debug("%s: client %s: %r", self._reject_log.what, address, exc)
        finally:
            sock.close()
            self.gate.release(host)

    def stop(self, timeout: float | None = None) -> None:
        """Stop accepting; connections being served get `timeout` seconds, then are cut."""
        super().stop(timeout=timeout)
        self._handlers.join(timeout=timeout if timeout is not None else self.stop_timeout)
        self._handlers.kill(block=True, timeout=1)
