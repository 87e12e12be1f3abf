"""Prometheus instruments, on a registry of their own (injected, so tests get a fresh one).

The state gauges are exported by a collector reading the live state, so every label value of every
state is always present (pre-initialised) and never stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from synch import __version__
from synch.budget import CUT_TERMS, Budget
from synch.dns.resolver import Answer
from synch.probe import Cause, ProbeResult
from synch.states import Monitor, Service, SyncState
from synch.sync.outcome import CYCLE_RESULTS

DNS_ANSWERS = tuple(Answer)  # how a DNS query was answered (synch.dns.resolver)
# Connections closed at accept, by listener: the reasons each listener can give.
CONNECTION_REJECTS = {
    "dns": ("not_allowed", "client_limit", "full"),
    "metrics": ("client_limit", "full"),
}

# Probes and AMI round trips on a LAN/WAN: milliseconds to the timeout (seconds).
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SYNC_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

StateReader = Callable[[], tuple[Monitor, SyncState, Service]]
UPLINK_RESULTS = (ProbeResult.SUCCESS, ProbeResult.ERROR)  # the uplink answers, or it does not


@dataclass(frozen=True)
class CentralView:
    """What the last probe round showed, as the central's gauges export it."""

    ami_up: bool
    sip_up: Mapping[str, bool]  # per SIP transport probed (none: SIP probing off)
    uplink_up: bool | None  # None: no uplink check configured
    cause: Cause


CentralReader = Callable[[], CentralView]


class _CentralCollector(Collector):
    """The central's reachability gauges, read live; a transport not probed and an uplink not
    checked have no series at all (rather than a 0 that would read as "down")."""

    def __init__(self, read: CentralReader):
        self._read = read

    def collect(self) -> Iterable[Metric]:
        view = self._read()
        ami = GaugeMetricFamily(
            "synch_central_ami_up",
            "1 when the central answered the last AMI probe (Ping); sync needs it.",
        )
        ami.add_metric([], 1.0 if view.ami_up else 0.0)
        yield ami
        sip = GaugeMetricFamily(
            "synch_central_sip_up",
            "1 when the central's SIP service answered the last OPTIONS probe, per transport.",
            labels=["transport"],
        )
        for transport, up in view.sip_up.items():
            sip.add_metric([transport], 1.0 if up else 0.0)
        yield sip
        if view.uplink_up is not None:
            uplink = GaugeMetricFamily(
                "synch_uplink_up",
                "1 when a target of probemonitor.uplinkcheck answered the last uplink check.",
            )
            uplink.add_metric([], 1.0 if view.uplink_up else 0.0)
            yield uplink
        cause = GaugeMetricFamily(
            "synch_outage_cause",
            "What the last probe round shows down: none, ami (AMI only: phones stay, sync "
            "paused), central, uplink (ours), unknown (central or uplink: no uplink check).",
            labels=["cause"],
        )
        for member in Cause:
            cause.add_metric([member.value], 1.0 if member is view.cause else 0.0)
        yield cause


class _StateCollector(Collector):
    def __init__(self, read: StateReader):
        self._read = read

    def collect(self) -> Iterable[Metric]:
        monitor, sync, service = self._read()
        for name, doc, enum, current in (
            (
                "synch_monitor_state",
                "Central PBX health as judged by the probes.",
                Monitor,
                monitor,
            ),
            ("synch_sync_state", "Account synchronisation state.", SyncState, sync),
            (
                "synch_service_state",
                "Where DNS sends the phones: Normal=central.",
                Service,
                service,
            ),
        ):
            family = GaugeMetricFamily(name, doc, labels=["state"])
            for member in enum:
                family.add_metric([member.value], 1.0 if member == current else 0.0)
            yield family


class Metrics:
    """Every instrument synch exports. One instance per daemon (or per test)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(
            "synch_build_info", "synch version; always 1.", ["version"], registry=r
        )
        self.build_info.labels(version=__version__).set(1)
        self.probes = Counter(
            "synch_probes",
            "Probe rounds of the central by the result the failover arithmetic counted (the SIP "
            "probe's when it runs, else the AMI probe's).",
            ["result"],
            registry=r,
        )
        self.probe_duration = Histogram(
            "synch_probe_duration_seconds",
            "Time a probe round (AMI login and Ping, SIP OPTIONS, uplink check, at once) took.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ami_probes = Counter(
            "synch_ami_probes",
            "AMI probes (login, Ping) of the central by result.",
            ["result"],
            registry=r,
        )
        self.sip_probes = Counter(
            "synch_sip_probes",
            "SIP OPTIONS probes of the central by transport and result (failure: 503).",
            ["transport", "result"],
            registry=r,
        )
        self.uplink_checks = Counter(
            "synch_uplink_checks",
            "Uplink checks (TCP connects to probemonitor.uplinkcheck) by result.",
            ["result"],
            registry=r,
        )
        self.failovers = Counter(
            "synch_failovers", "Times the service switched to Failover.", registry=r
        )
        self.fallbacks = Counter(
            "synch_fallbacks", "Times the service switched back to Normal.", registry=r
        )
        self.sync_runs = Counter(
            "synch_sync_runs", "Sync cycles by result.", ["result"], registry=r
        )
        self.sync_duration = Histogram(
            "synch_sync_duration_seconds",
            "Time a sync cycle took.",
            buckets=_SYNC_BUCKETS,
            registry=r,
        )
        self.last_sync_success = Gauge(
            "synch_last_sync_success_timestamp_seconds",
            "Unix time of the last sync cycle that ended Synced (0: never).",
            registry=r,
        )
        self.synced_accounts = Gauge(
            "synch_synced_accounts", "Accounts in the branch's synced file.", registry=r
        )
        self.dns_queries = Counter(
            "synch_dns_queries", "DNS queries by how they were answered.", ["answer"], registry=r
        )
        self.dns_forward_duration = Histogram(
            "synch_dns_forward_duration_seconds",
            "Time to get an answer from the upstream forwarders (including SERVFAIL).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.central_roundtrip = Gauge(
            "synch_central_ami_roundtrip_seconds",
            "Duration of the last successful probe of the central (mostly the Ping round trip).",
            registry=r,
        )
        self.branch_ami_up = Gauge(
            "synch_branch_ami_up",
            "1 when the branch's own Asterisk answered its last AMI check (failover needs it).",
            registry=r,
        )
        self.service_forced = Gauge(
            "synch_service_forced",
            "1 while an admin override (Failover/Normal) holds the service state.",
            registry=r,
        )
        self.fallback_held = Gauge(
            "synch_fallback_held",
            "1 while falling back to the central waits for the branch's calls to end.",
            registry=r,
        )
        self.fallback_held_calls = Gauge(
            "synch_fallback_held_calls",
            "Calls up at the branch that the waiting fallback waits for (0: none waits).",
            registry=r,
        )
        self.sync_paused = Gauge(
            "synch_sync_paused",
            "1 while automatic sync is paused after a rollback (until `synch resume`).",
            registry=r,
        )
        self.sync_interval = Gauge(
            "synch_sync_interval_seconds", "Configured seconds between sync cycles.", registry=r
        )
        self.last_sync_attempt = Gauge(
            "synch_last_sync_attempt_timestamp_seconds",
            "Unix time of the last sync cycle, whatever its result (0: never).",
            registry=r,
        )
        self.sync_next = Gauge(
            "synch_sync_next_timestamp_seconds",
            "Unix time of the next planned sync cycle (0: none planned yet).",
            registry=r,
        )
        self.sync_backoff = Gauge(
            "synch_sync_backoff_seconds",
            "Delay of the retry planned after sync cycles the central failed (0: no retry).",
            registry=r,
        )
        self.mirrored_contacts = Gauge(
            "synch_mirrored_contacts",
            "Contacts of synced phones learned from the central, for the branch to call them "
            "at once after a failover.",
            registry=r,
        )
        self.contact_learns = Counter(
            "synch_contact_learns",
            "Looks at the central's contacts (PJSIPShowContacts), by result.",
            ["result"],
            registry=r,
        )
        self.failover_overlay = Gauge(
            "synch_failover_overlay_active",
            "1 while the branch's synced AORs carry the mirrored contacts and short "
            "registrations (Failover).",
            registry=r,
        )
        self.connections_rejected = Counter(
            "synch_connections_rejected",
            "TCP connections closed at accept: client outside dnsservice.allow, over the "
            "per-client limit, or the listener full.",
            ["listener", "reason"],
            registry=r,
        )
        # synch.budget: worst cases computed from the settings and the synced accounts.
        self.failover_budget = Gauge(
            "synch_failover_budget_seconds",
            "Worst-case seconds a phone of this site is unreachable after a cut, as computed "
            "from what synch sees: detection + DNS TTL + the wait for its next REGISTER.",
            registry=r,
        )
        self.fallback_budget = Gauge(
            "synch_fallback_budget_seconds",
            "Worst-case seconds until every phone is back on the central once it answers "
            "again: fallback detection + DNS TTL + the wait for its next REGISTER.",
            registry=r,
        )
        self.failover_budget_target = Gauge(
            "synch_failover_budget_target_seconds",
            "probemonitor.failoverbudgettarget: the budget above it is warned about; 0: none.",
            registry=r,
        )
        self.failover_budget_terms = Gauge(
            "synch_failover_budget_term_seconds",
            "The terms of synch_failover_budget_seconds (detection, dns_ttl, registration; "
            "0: not counted).",
            ["term"],
            registry=r,
        )
        for term in CUT_TERMS:
            self.failover_budget_terms.labels(term=term.value)
        for listener, reasons in CONNECTION_REJECTS.items():
            for reason in reasons:
                self.connections_rejected.labels(listener=listener, reason=reason)
        for probe in ProbeResult:
            self.probes.labels(result=probe)
            self.ami_probes.labels(result=probe)
        for result in CYCLE_RESULTS:
            self.sync_runs.labels(result=result)
        for answer in DNS_ANSWERS:
            self.dns_queries.labels(answer=answer)
        for learned in ("success", "failure"):
            self.contact_learns.labels(result=learned)

    def show_budget(self, budget: Budget) -> None:
        """Export a failover budget (synch.budget): its totals, target and terms."""
        self.failover_budget.set(budget.seconds)
        self.fallback_budget.set(budget.home_seconds)
        self.failover_budget_target.set(budget.target)
        for term in CUT_TERMS:
            self.failover_budget_terms.labels(term=term.value).set(budget.term(term))

    def watch_central(
        self, read: CentralReader, sip_transports: Sequence[str], uplink: bool
    ) -> None:
        """Export the central's reachability gauges from `read()` at every scrape, and
        pre-initialise the SIP and uplink counters of what is probed."""
        for transport in sip_transports:
            for probe in ProbeResult:
                self.sip_probes.labels(transport=transport, result=probe)
        if uplink:
            for result in UPLINK_RESULTS:
                self.uplink_checks.labels(result=result)
        self.registry.register(_CentralCollector(read))

    def watch_states(self, read: StateReader) -> None:
        """Export the three state gauges from `read()` at every scrape."""
        self.registry.register(_StateCollector(read))
