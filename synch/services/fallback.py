"""Falling back waits for the branch's calls: when the central becomes Stable again while the
phones are at the branch, the branch Asterisk's calls are counted over AMI (CoreShowChannels),
and the switch to Normal waits until they end, at most `probemonitor.fallbackholdmax` seconds.

The decision is synch.states' (`ServiceControl.review`, `fallback_release`); this module
counts, in the probe loop, and reports: the log, `FallbackHeld` in GetDetails,
`synch_fallback_held` and `synch_fallback_held_calls`. The count that decides is made before
the round is recorded, so the status socket never shows the central Stable with a fallback
that the count is about to hold or take.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from synch.ami import AmiError, AmiLike, branch_calls
from synch.metrics import Metrics
from synch.probe import ProbeMonitor, ProbeResult
from synch.states import BranchCalls, Hold, Monitor, Release, ServiceControl
from synch.timestamps import local_stamp

log = logging.getLogger("synch")


def _calls_text(calls: BranchCalls) -> str:
    return f"{calls.calls} call{'s' if calls.calls != 1 else ''} ({calls.channels} channels)"


class FallbackHold:
    def __init__(self, control: ServiceControl, branch: AmiLike | None, metrics: Metrics):
        """`branch`: the branch Asterisk's AMI; None: never wait (as with holdmax 0)."""
        self.control = control
        self.branch = branch
        self.metrics = metrics
        self.since: datetime | None = None  # wall clock, for the status: when the wait began
        control.hold_listeners.append(self._changed)

    def calls_before(self, monitor: ProbeMonitor, verdict: ProbeResult) -> BranchCalls | None:
        """The branch's calls if this round makes the central Stable and the fallback may wait
        for them; None otherwise (or when they cannot be counted)."""
        if self.branch is None or not self.control.holds_fallback():
            return None
        if monitor.state is Monitor.STABLE or monitor.next_state(verdict) is not Monitor.STABLE:
            return None
        return self.count()

    def review(self) -> None:
        """While a fallback waits (each probe round): count again; the control falls back
        when the calls ended, could not be counted, or the maximum is reached."""
        hold = self.control.held
        if hold is None:
            return
        calls = self.count()
        self.control.review(time.monotonic(), calls)
        now_held = self.control.held
        if now_held is not None and calls != hold.calls:
            log.info("fallback still waits: %s up at the branch", _calls_text(now_held.calls))
            self._export(now_held)

    def count(self) -> BranchCalls | None:
        """The branch's calls now; None when its AMI does not tell (then nothing waits)."""
        assert self.branch is not None
        try:
            return branch_calls(self.branch)
        except AmiError as exc:
            log.warning("cannot count the calls at the branch, so falling back does not wait "
                        "for them: %s", exc)  # fmt: skip
            return None

    def _changed(self, hold: Hold, ended: Release | None) -> None:
        if ended is None:
            self.since = datetime.now()
            until = self.since + timedelta(seconds=hold.maximum)
            log.info(
                "the central answers again; falling back waits for %s at the branch "
                "(at most %g s, until %s)", _calls_text(hold.calls), hold.maximum,
                f"{until:%H:%M:%S}",
            )  # fmt: skip
            self._export(hold)
            return
        waited = time.monotonic() - hold.since
        if ended is Release.MAXIMUM:
            log.warning(
                "falling back after waiting the maximum (probemonitor.fallbackholdmax %g s) "
                "with %s still up at the branch", hold.maximum, _calls_text(hold.calls),
            )  # fmt: skip
        elif ended is Release.FAILED:
            log.warning("the central failed again while the fallback waited: staying in Failover")
        elif ended is Release.ADMIN:
            log.warning("admin forces Normal while the fallback waited for the branch's calls")
        elif ended is Release.NO_CALLS:
            log.info("the calls at the branch ended: falling back after waiting %.0f s", waited)
        else:
            log.info("falling back after waiting %.0f s: the branch's calls could not be "
                     "counted", waited)  # fmt: skip
        self.since = None
        self._export(None)

    def _export(self, hold: Hold | None) -> None:
        self.metrics.fallback_held.set(0 if hold is None else 1)
        self.metrics.fallback_held_calls.set(0 if hold is None else hold.calls.calls)

    def details(self) -> dict[str, object]:
        hold, since = self.control.held, self.since
        if hold is None or since is None:
            return {"FallbackHeld": None}
        return {
            "FallbackHeld": {
                "Since": local_stamp(since),
                "Until": local_stamp(since + timedelta(seconds=hold.maximum)),
                "Calls": hold.calls.calls,
                "Channels": hold.calls.channels,
            }
        }
