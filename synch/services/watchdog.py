"""systemd's watchdog, fed only while the daemon serves: each check names what is wrong, or
returns None; one failing check starves the watchdog and systemd restarts synch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import gevent.event

from synch.sdnotify import Notifier

log = logging.getLogger("synch")

Check = Callable[[float], "str | None"]  # (seconds it may take) -> problem or None


class Watchdog:
    def __init__(self, notifier: Notifier, checks: Sequence[Check]):
        self.notifier = notifier
        self.checks = tuple(checks)

    @property
    def period(self) -> float | None:
        """Seconds between two pings (half systemd's WatchdogSec); None: no watchdog."""
        seconds = self.notifier.watchdog_seconds
        return seconds / 2 if seconds else None

    def run(self, stop: gevent.event.Event) -> None:
        period = self.period
        if period is None:
            return
        while not stop.wait(period):
            problem = self.problem(timeout=min(period, 2.0))
            if problem is None:
                self.notifier.watchdog()
            else:
                log.error("%s; not feeding the systemd watchdog", problem)

    def problem(self, timeout: float) -> str | None:
        for check in self.checks:
            if (problem := check(timeout)) is not None:
                return problem
        return None
