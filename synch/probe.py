"""Probe arithmetic: turns a sequence of probe results into a Monitor state.

Pure logic (no sockets, no greenlets). The rules are the original Synch's, kept on purpose:
`points` accumulate across good probes and are cleared only on entering Stable, so an
intermittent link (good, error, good, error, ...) ends up Failed and fails the phones over.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from synch.states import Monitor


class ProbeResult(StrEnum):
    SUCCESS = "success"  # the central answered Ping
    FAILURE = "failure"  # the central answered, but with Response: Error (e.g. auth failed)
    ERROR = "error"  # no usable answer: connect refused, timeout, closed, garbage


@dataclass
class ProbeMonitor:
    failure_tolerance: int = 5
    alive_threshold: int = 5
    error_penalty_points: int = 1
    ok: int = 0
    points: int = 0
    state: Monitor = Monitor.INIT

    def __post_init__(self) -> None:
        for name in ("failure_tolerance", "alive_threshold"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.error_penalty_points < 0:
            raise ValueError(
                f"error_penalty_points must not be negative, not {self.error_penalty_points}"
            )

    def record(self, result: ProbeResult) -> tuple[Monitor, Monitor]:
        """Account one probe; returns (old state, new state)."""
        old = self.state
        if result is ProbeResult.SUCCESS:
            self.ok += 1
        elif result is ProbeResult.FAILURE:
            self.ok = 0
            self.points += 1
        elif result is ProbeResult.ERROR:
            self.ok = 0
            self.points += 1 + self.error_penalty_points
        else:  # pragma: no cover - exhaustive over the enum
            raise ValueError(f"unknown probe result {result!r}")
        self.state = self._verdict()
        if self.state is Monitor.STABLE and old is not Monitor.STABLE:
            self.points = 0
        return old, self.state

    def _verdict(self) -> Monitor:
        if self.ok >= self.alive_threshold:
            return Monitor.STABLE
        if self.points >= self.failure_tolerance and self.ok == 0:
            return Monitor.FAILED
        return Monitor.UNSTABLE
