"""The daemon: builds each component once, owns every greenlet, and stops them all.

Start order matters: every socket is bound before anything is reported as started, so a bind
failure is a fatal error with its cause, never a half-running daemon that logged "started".
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.pool

from synch import __version__, exitcodes
from synch.ami import AmiError, client_for, probe_once
from synch.config import Settings
from synch.control.protocol import ControlProtocol, StatusSnapshot
from synch.control.server import ControlServer
from synch.dns.server import DnsServers
from synch.dns.service import DnsService
from synch.dns.state import DnsState
from synch.limits import connection_budget
from synch.metrics import Metrics
from synch.metrics_http import MetricsHttpServer
from synch.probe import ProbeMonitor, ProbeResult
from synch.sdnotify import Notifier
from synch.states import Monitor, Service, ServiceControl, SyncState
from synch.sync.job import Outcome, SyncJob

log = logging.getLogger("synch")

BRANCH_CHECK_SECONDS = 15.0


class StartupError(Exception):
    """A component could not start (e.g. its port is taken); the message names which."""


class Daemon:
    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        pm = settings.probemonitor
        self.monitor = ProbeMonitor(pm.failuretolerance, pm.alivethreshold, pm.errorpenaltypoints)
        self.service = ServiceControl(automatic=Service(settings.dnsservice.defaultstate))
        self.service.listeners.append(self._on_service_change)
        self.sync_state = SyncState.INIT
        # What the DNS answers (target, SOA serial): follows every service change.
        self.dns_state = DnsState(settings.dnsservice, self.service.current)
        self.started_at = time.time()
        self.last_probe: dict[str, Any] = {}
        self.probe_counts = {r.value: 0 for r in ProbeResult}
        self.failovers = 0
        self.fallbacks = 0
        self._last_probe_loop = time.monotonic()
        self._stop = gevent.event.Event()
        self._group = gevent.pool.Group()
        self._notifier = Notifier()
        self.branch_reachable: bool | None = None
        self.metrics.sync_interval.set(settings.syncmanager.interval)
        self.metrics.watch_states(
            lambda: (self.monitor.state, self.sync_state, self.service.current)
        )

        ar = settings.amiremote
        self._probe_client = client_for(ar, name="central", timeout=settings.probe_timeout)
        # Separate sessions: a big GetConfig must never delay a probe.
        self._sync_client = client_for(ar, name="central")
        self._branch_client = client_for(settings.amilocal, name="branch")
        self.sync_job = SyncJob(settings, self._sync_client, self._branch_client)
        self.last_sync: dict[str, Any] = {}
        # Read at each scrape: a rollback or `synch resume` from the CLI shows at once.
        self.metrics.sync_paused.set_function(lambda: 1.0 if self.sync_job.history.paused else 0.0)
        self._sync_wakeup = gevent.event.Event()
        self._sync_lock = gevent.lock.Semaphore()
        self._synced_once = False
        # Every listener's pool fits in the descriptor limit, with room for everything else.
        budget = connection_budget()
        ds = settings.dnsservice
        self.dns = DnsService(ds, self.dns_state, self.metrics)
        self._dns_servers = DnsServers(
            self.dns, ds.listenaddress, ds.port, budget.dns_forward, budget.dns_tcp
        )
        sc = settings.servicecontrol
        self._control = ControlServer(
            ControlProtocol(sc.token, sc.admintoken, self), sc.listenaddress, sc.port,
            max_clients=budget.status,
        )  # fmt: skip
        ms = settings.metrics
        self._metrics_server = MetricsHttpServer(
            self.metrics, ms.listenaddress, ms.port, budget.metrics
        )

    # -- state --------------------------------------------------------------------------------

    def _on_service_change(self, old: Service, new: Service) -> None:
        self.dns_state.follow(new)
        if new is Service.FAILOVER:
            self.failovers += 1
            self.metrics.failovers.inc()
        elif new is Service.NORMAL and old is Service.FAILOVER:
            self.fallbacks += 1
            self.metrics.fallbacks.inc()
        forced = " (forced by admin)" if self.service.forced is not None else ""
        self.metrics.service_forced.set(1 if self.service.forced is not None else 0)
        log.log(
            logging.WARNING if new is Service.FAILOVER else logging.INFO,
            "service %s -> %s%s: %s now resolves to %s",
            old.value,
            new.value,
            forced,
            self.settings.dnsservice.fqdn,
            self.dns_state.view.target,
        )
        self._notifier.status(self._status_line())

    def _status_line(self) -> str:
        return (
            f"Monitor {self.monitor.state.value}, Sync {self.sync_state.value}, "
            f"Service {self.service.current.value}"
        )

    # -- control backend (status socket) ------------------------------------------------------

    def status(self) -> StatusSnapshot:
        return StatusSnapshot(self.monitor.state, self.sync_state, self.service.current)

    def details(self) -> dict[str, object]:
        ds = self.settings.dnsservice
        return {
            "Version": __version__,
            "Timestamp": datetime.now().strftime("%Y%m%d%H%M%S"),
            "Uptime": round(time.time() - self.started_at),
            "Monitor": self.monitor.state.value,
            "Sync": self.sync_state.value,
            "Service": self.service.current.value,
            "Forced": self.service.forced is not None,
            "DnsName": ds.fqdn,
            "DnsTarget": self.dns_state.view.target,
            "SoaSerial": self.dns_state.view.serial,
            "Ok": self.monitor.ok,
            "Points": self.monitor.points,
            "Probes": dict(self.probe_counts),
            "LastProbe": dict(self.last_probe),
            "CentralReachable": self.last_probe.get("Result") == ProbeResult.SUCCESS.value,
            "BranchReachable": self.branch_reachable,
            "Failovers": self.failovers,
            "Fallbacks": self.fallbacks,
            "LastSync": dict(self.last_sync),
            "SyncPaused": self.sync_job.history.paused,
            "SyncedFile": str(self.sync_job.path),
        }

    def force(self, service: Service) -> None:
        log.warning("admin forces service %s", service.value)
        self.service.force(service)
        self.metrics.service_forced.set(1)

    def auto(self) -> None:
        log.warning("admin returns service control to the probes")
        self.service.auto()
        self.metrics.service_forced.set(0)

    def sync_now(self) -> dict[str, object]:
        outcome = self._sync_cycle("admin request")
        if outcome is None:
            return {"ok": False, "Sync": self.sync_state.value, "Error": self._sync_blocker()}
        return {"ok": outcome.result in ("applied", "unchanged"), **self.last_sync}

    # -- sync ---------------------------------------------------------------------------------

    def _sync_blocker(self) -> str:
        if self.monitor.state is Monitor.FAILED:
            return "central is Failed: no sync until it recovers"
        if self.monitor.state is Monitor.INIT:
            return "central has not answered a probe yet"
        paused = self.sync_job.history.paused
        return f"automatic sync paused: {paused}" if paused else ""

    def _sync_loop(self) -> None:
        interval = self.settings.syncmanager.interval
        while not self._stop.is_set():
            self._sync_wakeup.wait(timeout=interval)
            self._sync_wakeup.clear()
            if not self._stop.is_set():
                self._sync_cycle("scheduled")

    def _sync_cycle(self, why: str) -> Outcome | None:
        """Run one cycle unless something forbids it; returns None when it did not run."""
        blocker = self._sync_blocker()
        if blocker:
            log.debug("sync (%s) not run: %s", why, blocker)
            return None
        with self._sync_lock:
            started = time.monotonic()
            outcome = self.sync_job.run()
            seconds = time.monotonic() - started
        self._record_sync(outcome, seconds, why)
        return outcome

    def _record_sync(self, outcome: Outcome, seconds: float, why: str) -> None:
        self.metrics.sync_runs.labels(result=outcome.result).inc()
        self.metrics.last_sync_attempt.set(time.time())
        self.metrics.sync_duration.observe(seconds)
        self.last_sync = {
            "Result": outcome.result,
            "Reason": outcome.reason,
            "Commit": outcome.commit or self.last_sync.get("Commit"),
            "Seconds": round(seconds, 3),
            "Timestamp": datetime.now().strftime("%Y%m%d%H%M%S"),
        }
        old = self.sync_state
        if outcome.result in ("applied", "unchanged"):
            self.sync_state = SyncState.SYNCED
            self.metrics.last_sync_success.set(time.time())
            if outcome.accounts is not None:
                self.metrics.synced_accounts.set(outcome.accounts)
        elif outcome.result in ("guarded", "failed"):
            self.sync_state = SyncState.UNSYNCED
        for warning in outcome.warnings:
            log.warning("sync: %s", warning)
        if outcome.result == "applied" and outcome.change is not None:
            log.info("sync (%s) applied %s as %s", why, outcome.change, (outcome.commit or "")[:10])
        elif outcome.result in ("guarded", "failed"):
            log.error("sync (%s) %s: %s", why, outcome.result, outcome.reason)
        else:
            log.debug("sync (%s) %s in %.3fs", why, outcome.result, seconds)
        if old != self.sync_state:
            level = logging.WARNING if self.sync_state is SyncState.UNSYNCED else logging.INFO
            log.log(level, "sync %s -> %s", old.value, self.sync_state.value)

    # -- greenlets ----------------------------------------------------------------------------

    def _probe_loop(self) -> None:
        interval = self.settings.probemonitor.interval
        while not self._stop.is_set():
            started = time.monotonic()
            self._last_probe_loop = started
            self._probe()
            # Probes are bounded by the timeout (<= interval) and run one after another here,
            # so one never overlaps the next.
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def _probe(self) -> None:
        result, seconds, error = probe_once(self._probe_client)
        self.metrics.probes.labels(result=result.value).inc()
        self.metrics.probe_duration.observe(seconds)
        self.probe_counts[result.value] += 1
        self.last_probe = {
            "Result": result.value,
            "Seconds": round(seconds, 4),
            "Error": error,
            "Timestamp": datetime.now().strftime("%Y%m%d%H%M%S"),
        }
        if result is ProbeResult.SUCCESS:
            self.metrics.central_roundtrip.set(seconds)
            log.debug("probe of central %s: success in %.3fs", self._probe_client_name(), seconds)
        else:
            log.info("probe of central %s: %s", self._probe_client_name(), error or result.value)
        old, new = self.monitor.record(result)
        if old != new:
            log.log(
                logging.WARNING if new is Monitor.FAILED else logging.INFO,
                "monitor %s -> %s (ok=%d points=%d)",
                old.value,
                new.value,
                self.monitor.ok,
                self.monitor.points,
            )
            self.service.on_monitor_change(old, new)
            self._notifier.status(self._status_line())
            if new is Monitor.STABLE:
                self._sync_wakeup.set()
        if result is ProbeResult.SUCCESS and not self._synced_once:
            # The first sync runs as soon as the central answers, not one interval later.
            self._synced_once = True
            self._sync_wakeup.set()

    def _probe_client_name(self) -> str:
        ar = self.settings.amiremote
        return f"{ar.hostname}:{ar.port}"

    def _branch_check_loop(self) -> None:
        """Is the branch Asterisk answering? Failing over to a dead branch helps no phone."""
        while not self._stop.is_set():
            try:
                self._branch_client.ping()
                reachable = True
            except AmiError as exc:
                reachable = False
                if self.branch_reachable is not False:
                    log.warning("branch Asterisk AMI not answering: %s", exc)
            if reachable and self.branch_reachable is False:
                log.info("branch Asterisk AMI answering again")
            self.branch_reachable = reachable
            self.metrics.branch_ami_up.set(1 if reachable else 0)
            self._stop.wait(BRANCH_CHECK_SECONDS)

    def _watchdog_loop(self, period: float) -> None:
        # Ping only while the daemon serves: a wedged daemon gets restarted by systemd.
        while not self._stop.wait(period):
            problem = self._not_serving(timeout=min(period, 2.0))
            if problem is None:
                self._notifier.watchdog()
            else:
                log.error("%s; not feeding the systemd watchdog", problem)

    def _not_serving(self, timeout: float) -> str | None:
        """Why the daemon is not doing its job (None: it is): the probe loop ran recently and
        the DNS service answers a query of its own."""
        stale_after = 2 * self.settings.probemonitor.interval + self.settings.probe_timeout + 5
        if time.monotonic() - self._last_probe_loop >= stale_after:
            return "probe loop stalled"
        if not self._dns_servers.answers(timeout):
            return f"DNS does not answer its own query within {timeout:g} s"
        return None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind every socket, then start the greenlets. Raises StartupError naming the culprit."""
        binds: list[tuple[str, Callable[[], None]]] = [
            (
                f"DNS on {self.settings.dnsservice.listenaddress}:{self.settings.dnsservice.port}",
                self._dns_servers.start,
            ),
            (
                f"status socket on {self.settings.servicecontrol.listenaddress}:"
                f"{self.settings.servicecontrol.port}",
                self._control.start,
            ),
            (
                f"metrics on {self.settings.metrics.listenaddress}:{self.settings.metrics.port}",
                self._metrics_server.start,
            ),
        ]
        for what, start in binds:
            try:
                start()
            except OSError as exc:
                self._stop_servers()
                raise StartupError(f"cannot listen for {what}: {exc.strerror or exc}") from exc
        self._spawn(self._dns_servers.serve_udp)
        self._spawn(self._probe_loop)
        self._spawn(self._sync_loop)
        self._spawn(self._branch_check_loop)
        if self._notifier.watchdog_seconds:
            self._spawn(self._watchdog_loop, self._notifier.watchdog_seconds / 2)
        log.info(
            "synch %s started: service %s, %s -> %s, central %s",
            __version__,
            self.service.current.value,
            self.settings.dnsservice.fqdn,
            self.dns_state.view.target,
            self._probe_client_name(),
        )
        self._notifier.ready(self._status_line())

    def _spawn(self, func: Callable[..., None], *args: Any) -> None:
        greenlet = self._group.spawn(func, *args)
        greenlet.link_exception(self._crashed)

    def _crashed(self, greenlet: gevent.Greenlet) -> None:
        if self._stop.is_set():
            return  # killed while stopping: whatever it raised on the way out is not a crash
        log.critical(
            "internal error in %s: %r; stopping (exit %d: systemd restarts synch)",
            greenlet,
            greenlet.exception,
            exitcodes.INTERNAL,
        )
        self.exit_code = exitcodes.INTERNAL
        self._stop.set()

    exit_code = exitcodes.OK

    def request_stop(self, reason: str = "") -> None:
        if not self._stop.is_set():
            log.info("stopping%s", f" ({reason})" if reason else "")
        self._stop.set()

    def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, stop. Returns the exit code."""
        # Handlers first: a SIGTERM while the sockets are being bound must stop cleanly too.
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self.request_stop, signal.Signals(signum).name)
        self.start()
        self._stop.wait()
        self.stop()
        return self.exit_code

    def stop(self) -> None:
        self._stop.set()
        self._notifier.stopping()
        self._stop_servers()
        # Let a sync in progress finish its write and commit (bounded), then kill the rest.
        if self._sync_lock.acquire(timeout=0.5):
            self._sync_lock.release()
        self._group.kill(block=True, timeout=0.5)
        for client in (self._probe_client, self._sync_client, self._branch_client):
            client.close()
        log.info("stopped")

    def _stop_servers(self) -> None:
        for server in (self._dns_servers, self._control, self._metrics_server):
            try:
                server.stop(timeout=0.5) if server is self._metrics_server else server.stop()
            except Exception as exc:  # stopping must go on whatever one server says
                log.debug("stopping %s: %r", server, exc)
