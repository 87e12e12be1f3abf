"""The systemd notify protocol (Type=notify readiness and watchdog), without a dependency.

A datagram to $NOTIFY_SOCKET; a leading '@' names an abstract socket. Without NOTIFY_SOCKET every
call is a no-op, so the daemon behaves the same in a terminal.

A notification must never take the daemon down: one socket is opened at start and reused (a
daemon short of file descriptors could not open a new one per watchdog ping), it never blocks,
and every failure is reported as False, never raised.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("synch")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + path[1:] if path.startswith("@") else path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog_for_us = usec.isdigit() and (not pid or pid == str(os.getpid()))
        self.watchdog_seconds: float | None = int(usec) / 1e6 if watchdog_for_us else None
        self._sock: socket.socket | None = None
        self._failing = False
        if self._address:
            self._sock = self._open()

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def _open(self) -> socket.socket | None:
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        except OSError as exc:
            self._failed(f"cannot open a socket: {exc}")
            return None
        sock.setblocking(False)  # a full queue at systemd's end drops the message instead
        return sock

    def notify(self, message: str) -> bool:
        if not self._address:
            return False
        if self._sock is None:
            self._sock = self._open()  # it could not be opened before: try again
            if self._sock is None:
                return False
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            self._failed(str(exc))
            return False
        if self._failing:
            self._failing = False
            log.info("systemd notifications sent again")
        return True

    def _failed(self, why: str) -> None:
        if not self._failing:  # once per run of failures, not once per watchdog ping
            self._failing = True
            log.warning("systemd notification failed: %s", why)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")
