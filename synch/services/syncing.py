"""The sync service: when to run a sync cycle (at start once the central answers, every
`syncmanager.interval` give or take a tenth, within `syncmanager.jitter` after the central comes
back, sooner after a failure of the central and then less and less often: synch.sync.schedule
decides), never two at once, never while the central is Failed or its AMI does not answer; and
what the last one ended with (the Sync state, metrics, the log)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import gevent.event
import gevent.lock

from synch.ami.client import AmiClient
from synch.config import Settings
from synch.dialplan.sync import DialplanStage
from synch.metrics import Metrics
from synch.services.probing import ProbeService
from synch.states import Monitor, SyncState
from synch.sync.job import SyncJob
from synch.sync.outcome import Outcome, SyncResult
from synch.sync.schedule import Ending, SyncSchedule, Trigger
from synch.timestamps import local_stamp

log = logging.getLogger("synch")

# Seconds after its last use that the sync's AMI session to the central is closed (the probes
# keep theirs): Asterisk wakes every open manager session for each event it emits (about 30 µs
# of its CPU each time), so an idle session per branch costs a central of N branches in
# proportion to N² (README "Running many branches"). A cycle's requests follow each other
# closer than this (the longest gap: waiting out the second of a new reload mark).
SESSION_IDLE_CLOSE = 2.0


def make_sync_job(settings: Settings, central: AmiClient, branch: AmiClient) -> SyncJob:
    """The sync job with every stage it runs (the daemon's and the CLI's are the same)."""
    return SyncJob(settings, central, branch, stages=[DialplanStage(settings)])


class SyncService:
    def __init__(
        self,
        settings: Settings,
        job: SyncJob,
        metrics: Metrics,
        monitor: Callable[[], Monitor],
        ami: Callable[[], str] = lambda: "",
        rng: random.Random | None = None,
    ):
        sm = settings.syncmanager
        self.interval = sm.interval
        self.job = job
        self.metrics = metrics
        self._monitor = monitor  # the probe service's verdict on the central
        self._ami = ami  # why the central's AMI cannot be used now ("" if it can)
        self.state = SyncState.INIT
        self.last: dict[str, object] = {}
        self.schedule = SyncSchedule(sm.interval, sm.jitter, rng or random.Random())
        self._outage = False  # the central was down (or unsteady) since it was last Stable
        self._cycles = 0  # cycles run since the start, whatever their result
        self._changed = gevent.event.Event()  # the plan changed: the loop looks again
        self._lock = gevent.lock.Semaphore()
        # Called after each cycle that ran, with what it ended with (the failover budget).
        self.listeners: list[Callable[[Outcome], None]] = []
        metrics.sync_interval.set(self.interval)
        # Read at each scrape: a rollback or `synch resume` from the CLI shows at once.
        metrics.sync_paused.set_function(lambda: 1.0 if job.history.paused else 0.0)
        metrics.sync_next.set_function(self._next_unix)
        metrics.sync_backoff.set_function(lambda: self.schedule.backoff)

    def follow(self, probes: ProbeService) -> None:
        """Hear the probes: the monitor's changes, and the central's AMI answering (the
        daemon's wiring; the fleet benchmark wires its branches the same way)."""
        probes.monitor_listeners.append(self.on_monitor_change)
        probes.ami_answers.append(self.on_ami_answers)

    def wake(self, trigger: Trigger = Trigger.START) -> None:
        """Run a cycle now rather than when planned."""
        self.schedule.at_once(time.monotonic(), trigger)
        self._changed.set()

    def on_ami_answers(self) -> None:
        """The central's AMI answers: for the first time (a cycle now), or again after an
        outage of its own (a cycle within the jitter, as every branch hears it at once)."""
        if self._cycles == 0 and not self._outage:
            self.wake(Trigger.START)
        else:
            self._recovered()

    def on_monitor_change(self, old: Monitor, new: Monitor) -> None:
        if new is Monitor.STABLE:
            if self._outage:
                self._recovered()
            else:
                self.wake(Trigger.STABLE)  # the first Stable since the start: no herd to avoid
            self._outage = False
        elif new is Monitor.FAILED or old is Monitor.STABLE:
            self._outage = True

    def _recovered(self) -> None:
        now = time.monotonic()
        plan = self.schedule.recovered(now)
        if plan.trigger is Trigger.RECOVERY:
            log.info("sync: the central is back; next sync in %.1f s (jitter up to %g s)",
                     max(0.0, plan.at - now), self.schedule.jitter)  # fmt: skip
        self._changed.set()

    def run(self, stop: gevent.event.Event) -> None:
        if self.schedule.plan is None:
            self.schedule.start(time.monotonic())
        while not stop.is_set():
            wait = self.schedule.wait(time.monotonic())
            if wait > 0:
                self._changed.wait(timeout=wait)
                self._changed.clear()
                continue  # due now, or planned anew: look again
            plan = self.schedule.plan
            trigger = plan.trigger if plan is not None else Trigger.SCHEDULED
            if self.cycle(trigger) is None:
                self.schedule.blocked(time.monotonic())

    def settle(self, timeout: float) -> None:
        """Let a cycle in progress finish its write and commit, for at most `timeout` s."""
        if self._lock.acquire(timeout=timeout):
            self._lock.release()

    def blocker(self) -> str:
        """Why no cycle may run now ("" if one may)."""
        monitor = self._monitor()
        if monitor is Monitor.FAILED:
            return "central is Failed: no sync until it recovers"
        if monitor is Monitor.INIT:
            return "central has not answered a probe yet"
        ami = self._ami()
        if ami:
            return ami
        paused = self.job.history.paused
        return f"automatic sync paused: {paused}" if paused else ""

    def cycle(self, why: Trigger) -> Outcome | None:
        """Run one cycle unless something forbids it; None when it did not run. The next one
        is planned from how it ended."""
        blocker = self.blocker()
        if blocker:
            log.debug("sync (%s) not run: %s", why, blocker)
            return None
        with self._lock:
            started = time.monotonic()
            # The admin's Sync fetches in full, as `synch sync` does: asked for, not planned.
            outcome = self.job.run(settle=True, full=why is Trigger.ADMIN)
            seconds = time.monotonic() - started
        self._cycles += 1
        ending = Ending.CENTRAL_FAILED if outcome.central_failed else Ending.ANSWERED
        plan = self.schedule.done(time.monotonic(), ending)
        self._record(outcome, seconds, why)
        if plan.trigger is Trigger.RETRY:
            log.info("sync: retry %d in %.1f s", self.schedule.failures, self.schedule.backoff)
        self._changed.set()
        for listener in self.listeners:
            listener(outcome)
        return outcome

    def sync_now(self) -> dict[str, object]:
        """The admin's `Sync`: one cycle now, and what it ended with."""
        outcome = self.cycle(Trigger.ADMIN)
        if outcome is None:
            return {"ok": False, "Sync": self.state.value, "Error": self.blocker()}
        return {"ok": outcome.result.synced, **self.last}

    def _record(self, outcome: Outcome, seconds: float, why: Trigger) -> None:
        result = outcome.result
        self.metrics.sync_runs.labels(result=result).inc()
        self.metrics.last_sync_attempt.set(time.time())
        self.metrics.sync_duration.observe(seconds)
        self.last = {
            "Result": result.value,
            "Reason": outcome.reason,
            "Commit": outcome.commit or self.last.get("Commit"),
            "Change": str(outcome.change) if outcome.change is not None else "",
            "Accounts": outcome.accounts if outcome.accounts is not None else self.last.get(
                "Accounts"
            ),
            "Seconds": round(seconds, 3),
            "Timestamp": local_stamp(),
            "Why": why.value,
        }
        old = self.state
        if result.synced:
            self.state = SyncState.SYNCED
            self.metrics.last_sync_success.set(time.time())
            if outcome.accounts is not None:
                self.metrics.synced_accounts.set(outcome.accounts)
        elif result.trouble:
            self.state = SyncState.UNSYNCED
        for warning in outcome.warnings:
            log.warning("sync: %s", warning)
        if result is SyncResult.APPLIED and outcome.change is not None:
            log.info("sync (%s) applied %s as %s", why, outcome.change, (outcome.commit or "")[:10])
        elif result.trouble:
            log.error("sync (%s) %s: %s", why, result.value, outcome.reason)
        else:
            log.debug("sync (%s) %s in %.3fs", why, result.value, seconds)
        if old != self.state:
            level = logging.WARNING if self.state is SyncState.UNSYNCED else logging.INFO
            log.log(level, "sync %s -> %s", old.value, self.state.value)

    def _next_unix(self) -> float:
        """Unix time of the next planned cycle (0: none planned yet)."""
        plan = self.schedule.plan
        if plan is None:
            return 0.0
        return time.time() + (plan.at - time.monotonic())

    def next_sync(self) -> dict[str, object] | None:
        """When the next cycle is planned and why; None before the loop has started."""
        plan = self.schedule.plan
        if plan is None:
            return None
        wait = max(0.0, plan.at - time.monotonic())
        return {
            "Timestamp": local_stamp(datetime.now() + timedelta(seconds=wait)),
            "In": round(wait, 1),
            "Why": plan.trigger.value,
        }

    def details(self) -> dict[str, object]:
        schedule = self.schedule
        retry = (
            {"Failures": schedule.failures, "Delay": round(schedule.backoff, 1)}
            if schedule.failures
            else None
        )
        return {
            "Sync": self.state.value,
            "LastSync": dict(self.last),
            "NextSync": self.next_sync(),
            "SyncRetry": retry,
            "SyncJitter": schedule.jitter,
            "SyncPaused": self.job.history.paused,
            "SyncBlocked": self.blocker(),
            "SyncedFile": str(self.job.path),
        }
