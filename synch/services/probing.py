"""The probe service: every `interval`, one probe round of the central — the AMI Ping, a SIP
OPTIONS per transport probed (to `dnsservice.targetnormal`, where the phones go) and the uplink
check, all at once, each bounded by the probe timeout — accounted by synch.probe
(`ProbeRound.verdict` into `ProbeMonitor`), and the service state follows
(synch.states.ServiceControl); falling back waits while the branch has calls up
(synch.services.fallback).

One path for a probe result: `run` → `probe_round` → `record` → monitor → service control
→ the service-change listeners the controller registered (the DNS zone, systemd's status line).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import gevent
import gevent.event

from synch.ami import AmiLike, probe_once
from synch.ami.client import AmiClient
from synch.config import Settings
from synch.metrics import CentralView, Metrics
from synch.probe import CAUSE_TEXT, Cause, Check, ProbeMonitor, ProbeResult, ProbeRound
from synch.services.fallback import FallbackHold
from synch.sip.client import options_probe
from synch.sip.message import is_sip_user
from synch.states import Monitor, Service, ServiceControl
from synch.sync.plan import first_account
from synch.timestamps import local_stamp
from synch.uplink import uplink_check

log = logging.getLogger("synch")

DEFAULT_SIP_USER = "synch"  # the probe's From user until an account is synced


class ProbeService:
    def __init__(
        self, settings: Settings, client: AmiClient, metrics: Metrics, branch: AmiLike | None = None
    ):
        """`branch`: the branch Asterisk's AMI, whose calls a fallback waits for (None: none
        waits)."""
        pm = settings.probemonitor
        self.interval = pm.interval
        self.timeout = settings.probe_timeout
        self.client = client
        self.metrics = metrics
        self.monitor = ProbeMonitor(pm.failuretolerance, pm.alivethreshold, pm.errorpenaltypoints)
        self.control = ServiceControl(
            automatic=Service(settings.dnsservice.defaultstate), holdmax=pm.fallbackholdmax
        )
        self.control.listeners.append(self._count_switch)
        self.fallback = FallbackHold(self.control, branch, metrics)
        # The SIP service where the phones go: the address DNS gives them in Normal.
        self.sip_host = settings.dnsservice.targetnormal
        self.sip_ports = {t: pm.siptlsport if t == "tls" else pm.sipport for t in pm.siptransports}
        self.uplink_targets = pm.uplinkcheck
        self._sip_user = pm.sipuser
        sm = settings.syncmanager
        self._synced_file = Path(sm.localconfigspath) / sm.localfilename
        self._mode = sm.mode
        self._auto_user: tuple[int | None, str] = (None, DEFAULT_SIP_USER)
        self.counts = {result: 0 for result in ProbeResult}  # rounds, by their verdict
        self.ami_counts = {result: 0 for result in ProbeResult}
        self.sip_counts = {t: {result: 0 for result in ProbeResult} for t in self.sip_ports}
        self.last: ProbeRound | None = None
        self.last_probe: dict[str, object] = {}
        self.cause = Cause.NONE
        self.failovers = self.fallbacks = 0
        self.last_loop = time.monotonic()  # when the loop last started a probe (watchdog)
        # When the monitor and the service states last changed (start: both), for the status.
        self.monitor_since = self.service_since = datetime.now()
        # Called after each change of the monitor's state (the controller: sync, systemd).
        self.monitor_listeners: list[Callable[[Monitor, Monitor], None]] = []
        # Called when the central's AMI answers for the first time, and when it answers again
        # after an outage of its own while the central stayed Stable (AMI alone was down): the
        # sync, which needs AMI, may run at once. After a failover, entering Stable syncs.
        self.ami_answers: list[Callable[[], None]] = []
        metrics.watch_central(self._view, tuple(self.sip_ports), uplink=bool(self.uplink_targets))

    @property
    def where(self) -> str:
        return f"{self.client.host}:{self.client.port}"

    @property
    def service(self) -> Service:
        return self.control.current

    def describe(self) -> str:
        """What is probed, for the start-up log line."""
        sip = ", ".join(f"{t} {self.sip_host}:{p}" for t, p in self.sip_ports.items())
        uplink = ", ".join(str(t) for t in self.uplink_targets)
        return f"AMI {self.where}; SIP {sip or 'not probed'}; uplink check {uplink or 'off'}"

    def run(self, stop: gevent.event.Event) -> None:
        while not stop.is_set():
            started = self.last_loop = time.monotonic()
            self.record(self.probe_round())
            # Every check of a round is bounded by the timeout (<= interval) and the rounds
            # run one after another here, so one never overlaps the next.
            stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    # -- one round ---------------------------------------------------------------------------

    def probe_round(self) -> ProbeRound:
        """The AMI probe, the SIP probes and the uplink check, at once; each ends within the
        timeout, and the round waits for all of them."""
        user = self.sip_user()
        jobs: dict[str, gevent.Greenlet[Any, Check]] = {"ami": gevent.spawn(self._ami)}
        for transport, port in self.sip_ports.items():
            jobs[f"sip {transport}"] = gevent.spawn(
                options_probe, transport, self.sip_host, port, timeout=self.timeout, user=user
            )
        if self.uplink_targets:
            jobs["uplink"] = gevent.spawn(uplink_check, self.uplink_targets, self.timeout)
        gevent.joinall(list(jobs.values()), timeout=self.timeout + 1.0)
        checks = {name: self._outcome(name, job) for name, job in jobs.items()}
        return ProbeRound(
            ami=checks["ami"],
            sip={t: checks[f"sip {t}"] for t in self.sip_ports},
            uplink=checks.get("uplink"),
        )

    def _ami(self) -> Check:
        result, seconds, error = probe_once(self.client)
        return Check(result, seconds, error)

    def _outcome(self, name: str, job: gevent.Greenlet[Any, Check]) -> Check:
        if not job.ready():  # cannot happen: every check has its own deadline
            job.kill(block=False)
            return Check(ProbeResult.ERROR, self.timeout, f"{name} check did not finish")
        if not job.successful():  # a bug must not stop the probe loop; it counts as an error
            log.error("internal error in the %s check: %r", name, job.exception)
            return Check(ProbeResult.ERROR, 0.0, f"{name} check: {job.exception!r}")
        value = job.value
        assert isinstance(value, Check)
        return value

    def sip_user(self) -> str:
        """The probe's From user: `probemonitor.sipuser`, else the first account in the synced
        file (the central then knows who asks and answers without logging a request from an
        unknown endpoint, which fail2ban counts), else "synch". The file is read again only
        when it changed."""
        if self._sip_user:
            return self._sip_user
        try:
            mtime: int | None = os.stat(self._synced_file).st_mtime_ns
        except OSError:
            mtime = None
        if mtime != self._auto_user[0]:
            user = DEFAULT_SIP_USER
            if mtime is not None:
                try:
                    name = first_account(self._synced_file.read_text("utf-8"), self._mode)
                    user = name if name is not None and is_sip_user(name) else DEFAULT_SIP_USER
                except (OSError, ValueError) as exc:
                    log.debug("SIP probe: no account from %s: %s", self._synced_file, exc)
            if user != self._auto_user[1]:
                log.info("SIP probe of the central: From user %s", user)
            self._auto_user = (mtime, user)
        return self._auto_user[1]

    def record(self, probe: ProbeRound) -> None:
        verdict = probe.verdict
        # Counting the branch's calls waits for its AMI: done before anything of this round is
        # recorded, so that the status socket sees the whole round or none of it.
        calls = self.fallback.calls_before(self.monitor, verdict)
        m = self.metrics
        m.probes.labels(result=verdict).inc()
        m.probe_duration.observe(probe.seconds)
        m.ami_probes.labels(result=probe.ami.result).inc()
        self.counts[verdict] += 1
        self.ami_counts[probe.ami.result] += 1
        for transport, check in probe.sip.items():
            m.sip_probes.labels(transport=transport, result=check.result).inc()
            self.sip_counts[transport][check.result] += 1
        if probe.uplink is not None:
            m.uplink_checks.labels(result=probe.uplink.result).inc()
        first_answer = probe.ami.ok and self.ami_counts[ProbeResult.SUCCESS] == 1
        ami_back = probe.ami.ok and self.last is not None and not self.last.ami.ok
        self.last = probe
        self.last_probe = {
            "Result": verdict.value,
            "Seconds": round(probe.seconds, 4),
            "Error": probe.error,
            "Timestamp": local_stamp(),
            "Ami": probe.ami.as_dict(),
        }
        if probe.sip:
            self.last_probe["Sip"] = {t: c.as_dict() for t, c in probe.sip.items()}
        if probe.uplink is not None:
            self.last_probe["Uplink"] = probe.uplink.as_dict()
        if probe.ami.ok:
            m.central_roundtrip.set(probe.ami.seconds)
        if probe.error:
            log.info("probe of central %s: %s: %s", self.where, verdict.value, probe.error)
        else:
            log.debug("probe of central %s: success in %.3fs", self.where, probe.seconds)
        self._diagnose(probe)
        old, new = self.monitor.record(verdict)
        if old != new:
            self.monitor_since = datetime.now()
            log.log(
                logging.WARNING if new is Monitor.FAILED else logging.INFO,
                "monitor %s -> %s (ok=%d points=%d)",
                old.value, new.value, self.monitor.ok, self.monitor.points,
            )  # fmt: skip
            self.control.on_monitor_change(old, new, now=time.monotonic(), calls=calls)
            for listener in self.monitor_listeners:
                listener(old, new)
        else:
            self.fallback.review()
        if first_answer or (ami_back and new is Monitor.STABLE):
            for callback in self.ami_answers:
                callback()

    def _diagnose(self, probe: ProbeRound) -> None:
        cause = probe.diagnose()
        if cause is self.cause:
            return
        old, self.cause = self.cause, cause
        if cause is Cause.NONE:
            log.info("the central answers again (was: %s)", CAUSE_TEXT[old])
        else:
            log.warning("%s (%s)", CAUSE_TEXT[cause], probe.error or "no detail")

    def usable(self) -> bool:
        """The central is Stable and its AMI answered the last probe: it may be asked."""
        return self.monitor.state is Monitor.STABLE and not self.ami_problem()

    def ami_problem(self) -> str:
        """Why the central's AMI cannot be used now ("" if it answered the last probe, or
        before the first probe)."""
        if self.last is None or self.last.ami.ok:
            return ""
        return f"central AMI does not answer ({self.last.ami.error}): no sync until it answers"

    def _view(self) -> CentralView:
        last = self.last
        return CentralView(
            ami_up=last is not None and last.ami.ok,
            sip_up={t: last is not None and last.sip[t].ok for t in self.sip_ports},
            uplink_up=(
                None
                if not self.uplink_targets
                else last is not None and last.uplink is not None and last.uplink.ok
            ),
            cause=self.cause,
        )

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
        last = self.last
        details: dict[str, object] = {
            "Monitor": self.monitor.state.value,
            "MonitorSince": local_stamp(self.monitor_since),
            "Service": self.service.value,
            "ServiceSince": local_stamp(self.service_since),
            "Forced": self.control.forced is not None,
            "Ok": self.monitor.ok,
            "Points": self.monitor.points,
            "Probes": {result.value: count for result, count in self.counts.items()},
            "AmiProbes": {result.value: count for result, count in self.ami_counts.items()},
        }
        if self.sip_ports:
            details["SipProbes"] = {
                t: {result.value: n for result, n in counts.items()}
                for t, counts in self.sip_counts.items()
            }
        details.update({
            "LastProbe": dict(self.last_probe),
            "CentralReachable": last is not None and last.ami.ok,
            "CentralSipReachable": (
                None if last is None or not last.sip else last.sip_result is ProbeResult.SUCCESS
            ),
            "UplinkReachable": None if last is None or last.uplink is None else last.uplink.ok,
            "Outage": self.cause.value,
            "OutageText": CAUSE_TEXT[self.cause],
            "Failovers": self.failovers,
            "Fallbacks": self.fallbacks,
            **self.fallback.details(),
        })  # fmt: skip
        return details
