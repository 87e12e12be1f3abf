"""The controller: builds each component once, hands them their dependencies, runs every loop
in one greenlet group, and stops them all.

Start order matters: every socket is bound before anything is reported as started, so a bind
failure is a fatal error with its cause, never a half-running daemon that logged "started".
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.pool

from synch import __version__, exitcodes
from synch.ami.client import client_for
from synch.config import Settings
from synch.control.protocol import ControlProtocol
from synch.control.server import ControlServer
from synch.dns.server import DnsServers
from synch.dns.service import DnsService
from synch.dns.state import DnsState
from synch.limits import connection_budget
from synch.metrics import Metrics
from synch.metrics_http import MetricsHttpServer
from synch.sdnotify import Notifier
from synch.services.branch import BranchCheck
from synch.services.budget import BudgetService
from synch.services.failover import FailoverOverlay
from synch.services.probing import ProbeService
from synch.services.status import StatusBoard
from synch.services.syncing import SESSION_IDLE_CLOSE, SyncService, make_sync_job
from synch.services.watchdog import Watchdog
from synch.states import Monitor, Service

log = logging.getLogger("synch")


class StartupError(Exception):
    """A component could not start (e.g. its port is taken); the message names which."""


class Daemon:
    exit_code = exitcodes.OK

    def __init__(self, settings: Settings, metrics: Metrics | None = None):
        self.settings = settings
        self.metrics = metrics if metrics is not None else Metrics()
        self._stop = gevent.event.Event()
        self._group = gevent.pool.Group()
        self._notifier = Notifier()
        ar = settings.amiremote
        # Separate sessions: a big GetConfig never delays a probe; the sync's closes when idle.
        self._clients = (
            client_for(ar, name="central", timeout=settings.probe_timeout),
            client_for(ar, name="central", idle_close=SESSION_IDLE_CLOSE),
            client_for(settings.amilocal, name="branch"),
        )
        probe_client, sync_client, branch_client = self._clients
        self.probes = ProbeService(settings, probe_client, self.metrics, branch_client)
        job = make_sync_job(settings, sync_client, branch_client)
        self.sync = SyncService(settings, job, self.metrics, lambda: self.probes.monitor.state,
                                self.probes.ami_problem)  # fmt: skip
        self.branch = BranchCheck(branch_client, self.metrics)
        self.overlay = FailoverOverlay(
            settings, sync_client, branch_client, job.store, self.metrics,
            lambda: self.probes.service, self.probes.usable,
        )  # fmt: skip
        self.budget = BudgetService(settings, self.metrics)
        self.dns_state = DnsState(settings.dnsservice, self.probes.service)
        # Every listener's pool fits in the descriptor limit, with room for everything else.
        budget = connection_budget()
        ds, sc, ms = settings.dnsservice, settings.servicecontrol, settings.metrics
        dns = DnsService(ds, self.dns_state, self.metrics)
        self.dns = DnsServers(dns, ds.listenaddress, ds.port, budget.dns_forward, budget.dns_tcp)
        self.board = StatusBoard(
            self.probes, self.sync,
            [s.details for s in (self.probes, self.dns_state, self.sync, self.branch, self.overlay,
                                 self.budget)],
        )  # fmt: skip
        protocol = ControlProtocol(sc.token, sc.admintoken, self.board)
        self.control = ControlServer(protocol, sc.listenaddress, sc.port, max_clients=budget.status)
        self.metrics_server = MetricsHttpServer(self.metrics, ms.listenaddress, ms.port,
                                                budget.metrics)  # fmt: skip
        self.watchdog = Watchdog(self._notifier, [self._probing, self._dns_answers])
        self._wire()

    def _wire(self) -> None:
        """Who hears of what: one path for each change."""
        self.probes.control.listeners += [self._service_changed, self.overlay.wake]
        # The first sync runs as soon as the central's AMI answers, not one interval later;
        # after an outage, within the sync jitter.
        self.sync.follow(self.probes)
        self.probes.monitor_listeners.append(self._report)
        # A sync that changed the synced file may change the failover budget.
        self.sync.listeners.append(self.budget.after_sync)
        self.metrics.watch_states(lambda: (self.probes.monitor.state, self.sync.state,
                                           self.probes.service))  # fmt: skip

    def _service_changed(self, old: Service, new: Service) -> None:
        view = self.dns_state.follow(new)
        log.info("%s now resolves to %s", self.settings.dnsservice.fqdn, view.target)
        self._report(old, new)

    def _report(self, old: Monitor | Service, new: Monitor | Service) -> None:
        self._notifier.status(self.board.line())

    # -- watchdog checks: what "serving" means ----------------------------------------------

    def _probing(self, timeout: float) -> str | None:
        interval = self.settings.probemonitor.interval
        stale_after = 2 * interval + self.settings.probe_timeout + 5
        if time.monotonic() - self.probes.last_loop >= stale_after:
            return "probe loop stalled"
        return None

    def _dns_answers(self, timeout: float) -> str | None:
        if not self.dns.answers(timeout):
            return f"DNS does not answer its own query within {timeout:g} s"
        return None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Bind every socket, then start the loops. Raises StartupError naming the culprit."""
        ds, sc, ms = self.settings.dnsservice, self.settings.servicecontrol, self.settings.metrics
        binds: list[tuple[str, Callable[[], None]]] = [
            (f"DNS on {ds.listenaddress}:{ds.port}", self.dns.start),
            (f"status socket on {sc.listenaddress}:{sc.port}", self.control.start),
            (f"metrics on {ms.listenaddress}:{ms.port}", self.metrics_server.start),
        ]
        for what, start in binds:
            try:
                start()
            except OSError as exc:
                self._stop_servers()
                raise StartupError(f"cannot listen for {what}: {exc.strerror or exc}") from exc
        self._spawn(self.dns.serve_udp)
        for loop in (self.probes.run, self.sync.run, self.branch.run, self.overlay.run,
                     self.watchdog.run):  # fmt: skip
            self._spawn(loop, self._stop)
        log.info(
            "synch %s started: service %s, %s -> %s, central %s",
            __version__, self.probes.service.value, ds.fqdn, self.dns_state.view.target,
            self.probes.describe(),
        )  # fmt: skip
        self.budget.refresh("at start")
        self._notifier.ready(self.board.line())

    def _spawn(self, func: Callable[..., None], *args: Any) -> None:
        greenlet = self._group.spawn(func, *args)
        greenlet.link_exception(self._crashed)

    def _crashed(self, greenlet: gevent.Greenlet[Any, Any]) -> None:
        if self._stop.is_set():
            return  # killed while stopping: whatever it raised on the way out is not a crash
        log.critical(
            "internal error in %s: %r; stopping (exit %d: systemd restarts synch)",
            greenlet, greenlet.exception, exitcodes.INTERNAL,
        )  # fmt: skip
        self.exit_code = exitcodes.INTERNAL
        self._stop.set()

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
        self.sync.settle(timeout=0.5)  # a sync in progress may finish its write and commit
        self._group.kill(block=True, timeout=0.5)
        for client in self._clients:
            client.close()
        log.info("stopped")

    def _stop_servers(self) -> None:
        for server in (self.dns, self.control, self.metrics_server):
            try:
                server.stop()  # each bounds how long its clients may take to finish
            except Exception as exc:  # stopping must go on whatever one server says
                log.debug("stopping %s: %r", server, exc)

