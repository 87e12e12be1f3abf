"""When the next sync cycle is due. Pure: the caller hands in the time and the random numbers.

One central serves hundreds of branches, and they must not all ask it at the same moment:

- **scheduled**: every `interval`, each wait drawn in `interval` ± SPREAD of it, so that
  branches started together drift apart instead of asking in lockstep for ever;
- **after the central comes back** (Stable again after an outage, or its AMI answering again):
  at a random moment within `jitter` seconds (0: at once), or at the cycle already planned if
  that comes first. The first cycle at start, when the central first answers, is not delayed;
- **after a cycle the central failed** (no answer in time, an error reply, a refused
  connection): a retry after a tenth of `interval` (RETRY_FIRST: 30 s of the default 300 s),
  doubling with each further failure up to `interval`; each delay is drawn in [d/2, d], so
  retries spread out and still grow. The first
  cycle the central answers ends it. A failure on the branch's side (git, the disk, the reload)
  or a refusal of the content waits the interval as before: retrying sooner would not help;
- **blocked** (the central Failed, its AMI down, sync paused): the next look is an interval away,
  unless the central's return plans one sooner.

The admin's `Sync` and `synch sync` do not go through here: they run at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

SPREAD = 0.1  # each scheduled wait is interval × [1 - SPREAD, 1 + SPREAD]
RETRY_FIRST = 0.1  # the first retry after a failure of the central, as a share of the interval


class Trigger(StrEnum):
    """Why a cycle runs (GetDetails' `NextSync.Why` and `LastSync.Why`, the log)."""

    START = "start"  # the central's AMI answered for the first time
    STABLE = "central stable"  # the central became Stable for the first time since the start
    SCHEDULED = "scheduled"
    RECOVERY = "central back"  # Stable again after an outage, or its AMI answering again
    RETRY = "retry"  # the last cycle failed because of the central
    ADMIN = "admin request"  # `Sync(admintoken)`: never planned, always at once


class Ending(StrEnum):
    """What a cycle's outcome means for the next one."""

    ANSWERED = "answered"  # the central answered (synced, unchanged, guarded, skipped, ...)
    CENTRAL_FAILED = "central failed"  # the central was too slow, refused, or closed


@dataclass(frozen=True)
class Plan:
    at: float  # on the caller's clock (monotonic seconds)
    trigger: Trigger


class SyncSchedule:
    """The next cycle's time and reason, and the retry state. Every method takes `now`."""

    def __init__(
        self,
        interval: float,
        jitter: float,
        rng: random.Random,
        *,
        spread: float = SPREAD,
        retry_first: float | None = None,
    ):
        """`retry_first`: seconds before the first retry (default: RETRY_FIRST × interval)."""
        if interval <= 0:
            raise ValueError(f"interval must be positive, not {interval}")
        retry_first = interval * RETRY_FIRST if retry_first is None else retry_first
        if jitter < 0 or not 0 <= spread < 1 or retry_first <= 0:
            raise ValueError("jitter >= 0, 0 <= spread < 1 and retry_first > 0 are required")
        self.interval = interval
        self.jitter = jitter
        self.spread = spread
        self.retry_first = retry_first
        self._rng = rng
        self.plan: Plan | None = None
        self.failures = 0  # cycles in a row that the central failed
        self.backoff = 0.0  # the delay drawn for the retry planned (0: none)

    # -- what happened ------------------------------------------------------------------------

    def start(self, now: float) -> Plan:
        """The loop starts: the first scheduled cycle, one (spread) interval away. The first
        answer of the central usually brings a cycle sooner (`now`)."""
        return self._set(now + self._interval(), Trigger.SCHEDULED)

    def at_once(self, now: float, trigger: Trigger) -> Plan:
        """A cycle as soon as possible (the central answered for the first time)."""
        return self._set(now, trigger)

    def recovered(self, now: float) -> Plan:
        """The central is back after an outage: a cycle within `jitter` seconds, or the one
        already planned if it comes sooner."""
        at = now + (self._rng.uniform(0.0, self.jitter) if self.jitter > 0 else 0.0)
        if self.plan is not None and now <= self.plan.at <= at:
            return self.plan
        self.backoff = 0.0  # a retry planned later is replaced; its failures still count
        return self._set(at, Trigger.RECOVERY)

    def done(self, now: float, ending: Ending) -> Plan:
        """A cycle ended (any trigger, the admin's too): plan the next. A return of the central
        heard while the cycle ran keeps its cycle if that comes sooner."""
        pending = self.plan
        if ending is Ending.CENTRAL_FAILED:
            self.failures += 1
            ceiling = min(self.interval, self.retry_first * 2 ** min(self.failures - 1, 62))
            backoff = self._rng.uniform(ceiling / 2, ceiling)
            at, trigger = now + backoff, Trigger.RETRY
        else:
            self.failures, backoff = 0, 0.0
            at, trigger = now + self._interval(), Trigger.SCHEDULED
        if pending is not None and pending.trigger is Trigger.RECOVERY and now < pending.at < at:
            self.backoff = 0.0
            return pending
        self.backoff = backoff
        return self._set(at, trigger)

    def blocked(self, now: float) -> Plan:
        """The planned cycle could not run (central Failed, AMI down, paused): look again an
        interval later; the retry state stays as it was."""
        self.backoff = 0.0
        return self._set(now + self._interval(), Trigger.SCHEDULED)

    # -- what to do ---------------------------------------------------------------------------

    def wait(self, now: float) -> float:
        """Seconds until the planned cycle (0: due now); the interval when none is planned."""
        if self.plan is None:
            return self.interval
        return max(0.0, self.plan.at - now)

    def _interval(self) -> float:
        if self.spread <= 0:
            return self.interval
        return self.interval * self._rng.uniform(1.0 - self.spread, 1.0 + self.spread)

    def _set(self, at: float, trigger: Trigger) -> Plan:
        self.plan = Plan(at, trigger)
        return self.plan
