"""Probe arithmetic: turns a sequence of probe results into a Monitor state, and what one probe
round of the central (AMI Ping, SIP OPTIONS, the uplink check) counts as.

Pure logic (no sockets, no greenlets). The rules are the original Synch's, kept on purpose:
`points` accumulate across good probes and are cleared only on entering Stable, so an
intermittent link (good, error, good, error, ...) ends up Failed and fails the phones over.

One round feeds the arithmetic one result (`ProbeRound.verdict`): the phones need the central's
SIP service, so when synch probes SIP, a round is a success whenever SIP answered on every
transport probed, whatever AMI said; otherwise it is the worse of the SIP and AMI results
(error before failure). Without SIP probing it is the AMI result, as in the original. AMI alone
failing moves no phone; it stops the sync (no sync without AMI), which the sync service asks
`ProbeRound.ami` about. `diagnose` says what is down, for the operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from synch.states import Monitor


class ProbeResult(StrEnum):
    SUCCESS = "success"  # the central answered Ping
    FAILURE = "failure"  # the central answered, but with Response: Error (e.g. auth failed)
    ERROR = "error"  # no usable answer: connect refused, timeout, closed, garbage


_SEVERITY = {ProbeResult.SUCCESS: 0, ProbeResult.FAILURE: 1, ProbeResult.ERROR: 2}


def worst(results: list[ProbeResult]) -> ProbeResult:
    """The worst of `results` (error, then failure, then success); success if none."""
    return max(results, key=_SEVERITY.__getitem__, default=ProbeResult.SUCCESS)


@dataclass(frozen=True)
class Check:
    """One check of a round: its result, how long it took, why it failed ("" if it did not),
    and what the peer answered (a SIP status line, "" otherwise)."""

    result: ProbeResult
    seconds: float
    error: str = ""
    answer: str = ""

    @property
    def ok(self) -> bool:
        return self.result is ProbeResult.SUCCESS

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"Result": self.result.value, "Seconds": round(self.seconds, 4)}
        if self.answer:
            out["Answer"] = self.answer
        out["Error"] = self.error
        return out


class Cause(StrEnum):
    """What is down, as one round shows it (`diagnose`)."""

    NONE = "none"  # the central answers the phones' protocol, and AMI
    AMI = "ami"  # only the central's AMI fails: phones stay on the central, sync stops
    CENTRAL = "central"  # the central does not answer while our uplink does
    UPLINK = "uplink"  # our uplink is down (no uplink check target answers)
    UNKNOWN = "unknown"  # the central does not answer; no uplink check to tell which side


CAUSE_TEXT = {
    Cause.NONE: "the central answers",
    Cause.AMI: (
        "the central's AMI does not answer while its SIP service does: phones stay on the "
        "central, sync is paused until AMI answers"
    ),
    Cause.CENTRAL: "the central is down: it does not answer while our uplink does",
    Cause.UPLINK: "our uplink is down: no uplink check target answers",
    Cause.UNKNOWN: (
        "the central or our uplink is down (no probemonitor.uplinkcheck to tell which)"
    ),
}


@dataclass(frozen=True)
class ProbeRound:
    """The checks of one probe round: AMI always; SIP per transport probed (none: SIP probing
    off); the uplink check (None: not configured)."""

    ami: Check
    sip: Mapping[str, Check] = field(default_factory=dict)
    uplink: Check | None = None

    @property
    def sip_result(self) -> ProbeResult | None:
        """The worst SIP result over the transports probed; None without SIP probing."""
        if not self.sip:
            return None
        return worst([check.result for check in self.sip.values()])

    @property
    def verdict(self) -> ProbeResult:
        """What the round counts as in the probe arithmetic (see the module's docstring)."""
        sip = self.sip_result
        if sip is None:
            return self.ami.result
        if sip is ProbeResult.SUCCESS:
            return ProbeResult.SUCCESS
        return worst([sip, self.ami.result])

    @property
    def seconds(self) -> float:
        checks = [self.ami, *self.sip.values(), *([self.uplink] if self.uplink else [])]
        return max(check.seconds for check in checks)

    @property
    def error(self) -> str:
        """Why the round was not a plain success, every failing check's reason."""
        failing = [*self.sip.values(), self.ami]
        return "; ".join(check.error for check in failing if not check.ok and check.error)

    def diagnose(self) -> Cause:
        sip = self.sip_result
        phones = self.ami.result if sip is None else sip  # what the phones' service shows
        if phones is ProbeResult.SUCCESS:
            return Cause.NONE if self.ami.ok else Cause.AMI
        if self.uplink is None:
            return Cause.UNKNOWN
        return Cause.CENTRAL if self.uplink.ok else Cause.UPLINK


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

    def rounds_to_fail(self, result: ProbeResult = ProbeResult.ERROR) -> int:
        """Rounds of `result` in a row that take a Stable central (no points) to Failed: what
        `record` does, counted. A cut gives errors: `ceil(failure_tolerance / (1 +
        error_penalty_points))` (3 with the defaults); a central answering 503 or refusing the
        AMI login gives failures: `failure_tolerance` (5)."""
        if result is ProbeResult.SUCCESS:
            raise ValueError("successes never make the central Failed")
        per_round = 1 + (self.error_penalty_points if result is ProbeResult.ERROR else 0)
        return -(-self.failure_tolerance // per_round)

    def rounds_to_recover(self) -> int:
        """Good rounds in a row that take a Failed central back to Stable: `alive_threshold`."""
        return self.alive_threshold

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

    def next_state(self, result: ProbeResult) -> Monitor:
        """The state `record(result)` would give, recording nothing."""
        return replace(self).record(result)[1]

    def _verdict(self) -> Monitor:
        if self.ok >= self.alive_threshold:
            return Monitor.STABLE
        if self.points >= self.failure_tolerance and self.ok == 0:
            return Monitor.FAILED
        return Monitor.UNSTABLE
