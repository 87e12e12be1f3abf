"""The probe service: every `interval`, probe the central over AMI, account the result
(synch.probe.ProbeMonitor) and let the service state follow (synch.states.ServiceControl).

One path for a probe result: `run` → `probe_once` (AMI) → `record` → monitor → service control
→ the service-change listeners the controller registered (the DNS zone, systemd's status line).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime

import gevent.event

from synch.ami import probe_once
from synch.ami.client import AmiClient
from synch.config import Settings
from synch.metrics import Metrics
from synch.probe import ProbeMonitor, ProbeResult
from synch.states import Monitor, Service, ServiceControl
from synch.timestamps import local_stamp

log = logging.getLogger("synch")


class ProbeService:
    def __init__(self, settings: Settings, client: AmiClient, metrics: Metrics):
        pm = settings.probemonitor
        self.interval = pm.interval
        self.client = client
        self.metrics = metrics
        self.monitor = ProbeMonitor(pm.failuretolerance, pm.alivethreshold, pm.errorpenaltypoints)
        self.control = ServiceControl(automatic=Service(settings.dnsservice.defaultstate))
        self.control.listeners.append(self._count_switch)
        self.counts = {result: 0 for result in ProbeResult}
        self.last_probe: dict[str, object] = {}
        self.failovers = self.fallbacks = 0
        self.last_loop = time.monotonic()  # when the loop last started a probe (watchdog)
        # When the monitor and the service states last changed (start: both), for the status.
        self.monitor_since = self.service_since = datetime.now()
        # Called after each change of the monitor's state (the controller: sync, systemd).
        self.monitor_listeners: list[Callable[[Monitor, Monitor], None]] = []
        # Called once, after the first probe the central answered.
        self.first_answer: list[Callable[[], None]] = []

    @property
    def where(self) -> str:
        return f"{self.client.host}:{self.client.port}"

    @property
    def service(self) -> Service:
        return self.control.current

    def run(self, stop: gevent.event.Event) -> None:
        while not stop.is_set():
            started = self.last_loop = time.monotonic()
            self.record(*probe_once(self.client))
            # A probe is bounded by the timeout (<= interval) and they run one after another
            # here, so one never overlaps the next.
            stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def record(self, result: ProbeResult, seconds: float, error: str) -> None:
        self.metrics.probes.labels(result=result).inc()
        self.metrics.probe_duration.observe(seconds)
        first = self.counts[ProbeResult.SUCCESS] == 0 and result is ProbeResult.SUCCESS
        self.counts[result] += 1
        self.last_probe = {
            "Result": result.value,
            "Seconds": round(seconds, 4),
            "Error": error,
            "Timestamp": local_stamp(),
        }
        if result is ProbeResult.SUCCESS:
            self.metrics.central_roundtrip.set(seconds)
            log.debug("probe of central %s: success in %.3fs", self.where, seconds)
        else:
            log.info("probe of central %s: %s", self.where, error or result.value)
        old, new = self.monitor.record(result)
        if old != new:
            self.monitor_since = datetime.now()
            log.log(
                logging.WARNING if new is Monitor.FAILED else logging.INFO,
                "monitor %s -> %s (ok=%d points=%d)",
                old.value, new.value, self.monitor.ok, self.monitor.points,
            )  # fmt: skip
            self.control.on_monitor_change(old, new)
            for listener in self.monitor_listeners:
                listener(old, new)
        if first:
            for callback in self.first_answer:
                callback()

    # -- admin ------------------------------------------------------------------------------

    def force(self, service: Service) -> None:
        log.warning("admin forces service %s", service.value)
        self.control.force(service)

    def auto(self) -> None:
        log.warning("admin returns service control to the probes")
        self.control.auto()

    def _count_switch(self, old: Service, new: Service) -> None:
        self.service_since = datetime.now()
        if new is Service.FAILOVER:
            self.failovers += 1
            self.metrics.failovers.inc()
        elif new is Service.NORMAL and old is Service.FAILOVER:
            self.fallbacks += 1
            self.metrics.fallbacks.inc()
        forced = self.control.forced is not None
        self.metrics.service_forced.set(1 if forced else 0)
        log.log(
            logging.WARNING if new is Service.FAILOVER else logging.INFO,
            "service %s -> %s%s", old.value, new.value, " (forced by admin)" if forced else "",
        )  # fmt: skip

    def details(self) -> dict[str, object]:
        return {
            "Monitor": self.monitor.state.value,
            "MonitorSince": local_stamp(self.monitor_since),
            "Service": self.service.value,
            "ServiceSince": local_stamp(self.service_since),
            "Forced": self.control.forced is not None,
            "Ok": self.monitor.ok,
            "Points": self.monitor.points,
            "Probes": {result.value: count for result, count in self.counts.items()},
            "LastProbe": dict(self.last_probe),
            "CentralReachable": self.last_probe.get("Result") == ProbeResult.SUCCESS.value,
            "Failovers": self.failovers,
            "Fallbacks": self.fallbacks,
        }
