"""The sync service: when to run a sync cycle (at start once the central answers, every
`syncmanager.interval`, on entering Stable, on `Sync`, when the central's AMI answers again),
never two at once, never while the central is Failed or its AMI does not answer; and what the
last one ended with (the Sync state, metrics, the log)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import gevent.event
import gevent.lock

from synch.ami.client import AmiClient
from synch.config import Settings
from synch.dialplan.sync import DialplanStage
from synch.metrics import Metrics
from synch.states import Monitor, SyncState
from synch.sync.job import SyncJob
from synch.sync.outcome import Outcome, SyncResult
from synch.timestamps import local_stamp

log = logging.getLogger("synch")


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
    ):
        self.interval = settings.syncmanager.interval
        self.job = job
        self.metrics = metrics
        self._monitor = monitor  # the probe service's verdict on the central
        self._ami = ami  # why the central's AMI cannot be used now ("" if it can)
        self.state = SyncState.INIT
        self.last: dict[str, object] = {}
        self._wakeup = gevent.event.Event()
        self._lock = gevent.lock.Semaphore()
        # Called after each cycle that ran, with what it ended with (the failover budget).
        self.listeners: list[Callable[[Outcome], None]] = []
        metrics.sync_interval.set(self.interval)
        # Read at each scrape: a rollback or `synch resume` from the CLI shows at once.
        metrics.sync_paused.set_function(lambda: 1.0 if job.history.paused else 0.0)

    def wake(self) -> None:
        """Run a cycle now rather than at the end of the interval."""
        self._wakeup.set()

    def on_monitor_change(self, old: Monitor, new: Monitor) -> None:
        if new is Monitor.STABLE:
            self.wake()

    def run(self, stop: gevent.event.Event) -> None:
        while not stop.is_set():
            self._wakeup.wait(timeout=self.interval)
            self._wakeup.clear()
            if not stop.is_set():
                self.cycle("scheduled")

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

    def cycle(self, why: str, *, full: bool = False) -> Outcome | None:
        """Run one cycle unless something forbids it; None when it did not run. `full`: fetch
        even if the central reports no reload since the last sync."""
        blocker = self.blocker()
        if blocker:
            log.debug("sync (%s) not run: %s", why, blocker)
            return None
        with self._lock:
            started = time.monotonic()
            outcome = self.job.run(full=full)
            seconds = time.monotonic() - started
        self._record(outcome, seconds, why)
        for listener in self.listeners:
            listener(outcome)
        return outcome

    def sync_now(self) -> dict[str, object]:
        """The admin's `Sync`: one cycle now, a full look at the central (an admin asking has a
        reason to doubt it), and what it ended with."""
        outcome = self.cycle("admin request", full=True)
        if outcome is None:
            return {"ok": False, "Sync": self.state.value, "Error": self.blocker()}
        return {"ok": outcome.result.synced, **self.last}

    def _record(self, outcome: Outcome, seconds: float, why: str) -> None:
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

    def details(self) -> dict[str, object]:
        return {
            "Sync": self.state.value,
            "LastSync": dict(self.last),
            "SyncPaused": self.job.history.paused,
            "SyncBlocked": self.blocker(),
            "SyncedFile": str(self.job.path),
        }
