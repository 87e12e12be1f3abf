"""Generate grafana/dashboards/synch.json, the one dashboard that serves every branch.

    .venv/bin/python grafana/generate_dashboard.py          # rewrite the JSON
    .venv/bin/python grafana/generate_dashboard.py --check  # exit 1 if the JSON is out of date

Every query selects `instance=~"$instance"`, but for the fleet row's, which read the series
recorded by grafana/recording/synch.recording.yml (every branch at once, a few series however many
branches); every panel and query uses the `${datasource}` variable.
tests/observability/test_dashboard.py checks these on the committed JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

try:
    import grafana_foundation_sdk  # noqa: F401
except ModuleNotFoundError as exc:  # say which version: the bare name picks the wrong flavour
    raise SystemExit(
        "generate_dashboard.py needs grafana-foundation-sdk: "
        ".venv/bin/pip install 'grafana-foundation-sdk==1769699379!11.6.0'"
    ) from exc

from grafana_foundation_sdk.builders import common, prometheus, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    LegendDisplayMode,
    LegendPlacement,
    VisibilityMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
    VariableSort,
)

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "synch.json"
UID = "synch-branch"

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'instance=~"$instance"'
RATE = "$__rate_interval"

# State gauges become one number per instance, so a state timeline shows one band per branch.
# Codes follow the enum order in synch/states.py; the colours are what an operator expects.
MONITOR = (("Init", "text"), ("Unstable", "yellow"), ("Failed", "red"), ("Stable", "green"))
SYNC = (("Init", "text"), ("Unsynced", "red"), ("Synced", "green"))
SERVICE = (("Init", "text"), ("Normal", "green"), ("Failover", "orange"))
# What is down (synch_outage_cause), in the order of synch.probe.Cause.
CAUSE = (
    ("none", "green"),
    ("ami", "yellow"),
    ("central", "red"),
    ("uplink", "purple"),
    ("unknown", "orange"),
)
# 0/1 gauges shown as words.
BRANCH_AMI = (("Down", "red"), ("Up", "green"))
UP = (("Down", "red"), ("Up", "green"))
FORCED = (("Auto", "green"), ("Forced", "orange"))
PAUSED = (("Running", "green"), ("Paused", "orange"))
BUDGET = (("Within", "green"), ("Over", "orange"))


P = TypeVar("P", timeseries.Panel, stat.Panel, statetimeline.Panel)


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str
    instant: bool = False


def state_code(metric: str, states: Sequence[tuple[str, str]], label: str = "state") -> str:
    """0 for the first state, i for the i-th: sum of i * (gauge of state i)."""
    terms = [
        f'{i} * max by (instance) ({metric}{{{SEL}, {label}="{name}"}})'
        for i, (name, _) in enumerate(states)
        if i > 0
    ]
    return " + ".join(terms)


def flag(metric: str) -> str:
    """A 0/1 gauge, one value per branch."""
    return f"max by (instance) ({metric}{{{SEL}}})"


def state_mappings(states: Sequence[tuple[str, str]]) -> ValueMap:
    return ValueMap(
        options={
            str(i): ValueMappingResult(text=name, color=color, index=i)
            for i, (name, color) in enumerate(states)
        }
    )


def quantiles(histogram: str, window: str = RATE) -> list[Target]:
    return [
        Target(
            f"histogram_quantile({q}, sum by (instance, le) "
            f"(rate({histogram}_bucket{{{SEL}}}[{window}])))",
            f"{{{{instance}}}} p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def _with_targets(panel: P, targets: Sequence[Target]) -> P:
    for ref, t in zip("ABCDEFGH", targets, strict=False):
        query = prometheus.Dataquery().expr(t.expr).legend_format(t.legend).ref_id(ref)
        query = query.datasource(DS)
        panel.with_target(query.instant() if t.instant else query.range())
    return panel


def ts(
    title: str,
    description: str,
    targets: Sequence[Target],
    unit: str,
    w: int = 8,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(7)
        .fill_opacity(10)
        .legend(
            common.VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
    )
    return _with_targets(panel, targets)


def single(
    title: str,
    description: str,
    targets: Sequence[Target],
    unit: str = "none",
    mappings: ValueMap | None = None,
    w: int = 4,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(5)
        .graph_mode(BigValueGraphMode.NONE)
        .color_mode(BigValueColorMode.BACKGROUND if mappings else BigValueColorMode.VALUE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(
            ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=v, color=c) for v, c in thresholds])
        )
    )
    if mappings:
        panel = panel.mappings([mappings])
    return _with_targets(panel, targets)


def timeline(
    title: str,
    description: str,
    metric: str,
    states: Sequence[tuple[str, str]],
    w: int = 12,
    label: str = "state",
) -> statetimeline.Panel:
    panel = (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .span(w)
        .height(5)
        .show_value(VisibilityMode.NEVER)
        .mappings([state_mappings(states)])
    )
    return _with_targets(panel, [Target(state_code(metric, states, label), "{{instance}}")])


FLEET_ROW = "Fleet: every branch"


def fleet_row(d: Dashboard) -> Dashboard:
    """Every branch at once, whatever the Branch menu says, from the recorded series (the
    dashboard stays quick at hundreds of branches)."""
    d = d.with_row(Row(FLEET_ROW))
    for title, description, record, warn in (
        ("Branches", "Branches that export synch metrics.", "synch:branches:count", None),
        ("Not answering scrapes", "synch stopped, the branch host down or the WAN to it cut.",
         "synch:branches_down:count", 1),
        ("In failover", "Branches whose phones are sent to the branch Asterisk.",
         "synch:branches_in_failover:count", 1),
        ("Central Failed", "Branches that cannot reach the central PBX; all of them at once "
         "means the central (or the head office's link) is down.",
         "synch:branches_central_failed:count", 1),
        ("Unsynced", "Branches whose last sync failed or was refused by the remove guard.",
         "synch:branches_unsynced:count", 1),
        ("Retrying sync", "Branches retrying a sync the central failed (too slow, refused), "
         "less and less often: many at once means an overloaded central.",
         "synch:branches_sync_retrying:count", 1),
    ):  # fmt: skip
        thresholds = ((None, "green"),) if warn is None else ((None, "green"), (warn, "orange"))
        d = d.with_panel(single(title, description, [Target(record, "")], w=4,
                                thresholds=thresholds))  # fmt: skip
    d = d.with_panel(
        ts(
            "Branches in trouble",
            "Branches in failover, with their central Failed, Unsynced, retrying, and with a "
            "sync that failed or that the remove guard refused in the last 30 min.",
            [
                Target("synch:branches_in_failover:count", "in failover"),
                Target("synch:branches_central_failed:count", "central Failed"),
                Target("synch:branches_unsynced:count", "Unsynced"),
                Target("synch:branches_sync_retrying:count", "retrying sync"),
                Target("synch:branches_sync_failed:count", "sync failed (30 min)"),
                Target("synch:branches_sync_guarded:count", "sync guarded (30 min)"),
            ],
            "short",
            w=12,
        )
    )
    d = d.with_panel(
        ts(
            "Age of the branches' copies",
            "Time since each branch's last successful sync, over the branches: the median, the "
            "90th and 99th percentiles and the oldest. Healthy: below the sync interval "
            "(300 s by default), briefly more after the central's return (the sync jitter).",
            [
                Target("synch:sync_age_seconds:quantile", "p{{quantile}}"),
                Target("synch:sync_age_seconds:max", "oldest"),
            ],
            "s",
            w=12,
        )
    )
    return d


def service_row(d: Dashboard) -> Dashboard:
    d = d.with_row(Row("Service state and transitions"))
    d = d.with_panel(
        single(
            "Service",
            "Where DNS sends the phones: Normal = central PBX, Failover = this branch.",
            [Target(state_code("synch_service_state", SERVICE), "{{instance}}")],
            mappings=state_mappings(SERVICE),
            w=4,
        )
    )
    d = d.with_panel(
        single(
            "Central PBX",
            "The probe monitor's verdict on the central PBX.",
            [Target(state_code("synch_monitor_state", MONITOR), "{{instance}}")],
            mappings=state_mappings(MONITOR),
            w=4,
        )
    )
    d = d.with_panel(
        single(
            "Branch Asterisk",
            "Does the branch's own Asterisk answer AMI? Failover sends the phones to it.",
            [Target(flag("synch_branch_ami_up"), "{{instance}}")],
            mappings=state_mappings(BRANCH_AMI),
            w=4,
        )
    )
    d = d.with_panel(
        single(
            "Admin override",
            "Forced: an admin fixed the service state (Failover/Normal) until Auto(admintoken).",
            [Target(flag("synch_service_forced"), "{{instance}}")],
            mappings=state_mappings(FORCED),
            w=3,
        )
    )
    d = d.with_panel(
        single(
            "Failovers",
            "Switches to Failover in the dashboard's time range.",
            [
                Target(
                    f"round(increase(synch_failovers_total{{{SEL}}}[$__range]))",
                    "{{instance}}",
                    instant=True,
                )
            ],
            thresholds=((None, "green"), (1, "orange")),
            w=3,
        )
    )
    d = d.with_panel(
        single(
            "Fallbacks",
            "Switches back to Normal in the dashboard's time range.",
            [
                Target(
                    f"round(increase(synch_fallbacks_total{{{SEL}}}[$__range]))",
                    "{{instance}}",
                    instant=True,
                )
            ],
            w=3,
        )
    )
    d = d.with_panel(
        single(
            "Version",
            "synch version running on the branch.",
            [Target(f"synch_build_info{{{SEL}}}", "{{version}}", instant=True)],
            w=3,
        ).text_mode(BigValueTextMode.NAME)
    )
    d = d.with_panel(
        timeline(
            "Service state over time",
            "Normal: phones use the central; Failover: the branch.",
            "synch_service_state",
            SERVICE,
        )
    )
    d = d.with_panel(
        timeline(
            "Central PBX state over time",
            "Probe monitor: Stable, Unstable, Failed.",
            "synch_monitor_state",
            MONITOR,
        )
    )
    return budget_panels(d)


def budget_panels(d: Dashboard) -> Dashboard:
    """The failover budget: worst cases computed from the branch's settings and synced AORs."""
    d = d.with_panel(
        single(
            "Failover budget",
            "Worst-case seconds a phone is unreachable after a cut (detection + DNS TTL + the "
            "wait for its next REGISTER), and until every phone is back on the central once it "
            "answers again. `synch check-config` on the branch explains each term.",
            [
                Target(f"synch_failover_budget_seconds{{{SEL}}}", "{{instance}} after a cut"),
                Target(f"synch_fallback_budget_seconds{{{SEL}}}", "{{instance}} back home"),
            ],
            unit="s",
            thresholds=((None, "green"), (120, "orange"), (600, "red")),
            w=8,
        )
    )
    over = (
        f"max by (instance) ((synch_failover_budget_seconds{{{SEL}}} > bool "
        f"synch_failover_budget_target_seconds{{{SEL}}}) * "
        f"(synch_failover_budget_target_seconds{{{SEL}}} > bool 0))"
    )
    d = d.with_panel(
        single(
            "Budget vs target",
            "Over: the failover budget is more than probemonitor.failoverbudgettarget (the "
            "alert SynchFailoverBudgetHigh after an hour). A target of 0 is never over.",
            [Target(over, "{{instance}}")],
            mappings=state_mappings(BUDGET),
            w=4,
        )
    )
    d = d.with_panel(
        single(
            "Failover budget terms",
            "What the budget after a cut is made of: detection (probe rounds to Failed × "
            "interval + a timeout), dns_ttl (dnsservice.recordttl), registration (the synced "
            "AORs' maximum_expiration: FreePBX Max Expiration; 0 with contacts mirrored).",
            [Target(f"synch_failover_budget_term_seconds{{{SEL}}}", "{{instance}} {{term}}")],
            unit="s",
            w=12,
        )
    )
    return d


def probe_row(d: Dashboard) -> Dashboard:
    d = d.with_row(Row("Probes of the central PBX"))
    d = d.with_panel(
        single(
            "What is down",
            "As the last probe round shows it. none; ami: only the central's AMI (phones stay, "
            "sync paused); central: the central, while our uplink answers; uplink: ours; "
            "unknown: the central or our uplink (no probemonitor.uplinkcheck).",
            [Target(state_code("synch_outage_cause", CAUSE, "cause"), "{{instance}}")],
            mappings=state_mappings(CAUSE),
            w=6,
        )
    )
    d = d.with_panel(
        single(
            "Central SIP",
            "Did the central's SIP service (where the phones go) answer the last OPTIONS probe "
            "on every transport probed? Empty: SIP not probed.",
            [Target(f"min by (instance) (synch_central_sip_up{{{SEL}}})", "{{instance}}")],
            mappings=state_mappings(UP),
            w=4,
        ).no_value("not probed")
    )
    d = d.with_panel(
        single(
            "Central AMI",
            "Did the central answer the last AMI probe (Ping)? Sync needs it; phones do not.",
            [Target(flag("synch_central_ami_up"), "{{instance}}")],
            mappings=state_mappings(UP),
            w=4,
        )
    )
    d = d.with_panel(
        single(
            "Our uplink",
            "Did a target of probemonitor.uplinkcheck (beyond the branch's WAN link) answer the "
            "last uplink check? Empty: no uplink check configured.",
            [Target(flag("synch_uplink_up"), "{{instance}}")],
            mappings=state_mappings(UP),
            w=4,
        ).no_value("not checked")
    )
    d = d.with_panel(
        single(
            "Uplink failures",
            "Uplink checks that got no answer in the dashboard's time range: seen here once the "
            "branch can be scraped again, after an outage of its uplink.",
            [
                Target(
                    f"round(sum by (instance) (increase(synch_uplink_checks_total{{{SEL}, "
                    f'result="error"}}[$__range])))',
                    "{{instance}}",
                    instant=True,
                )
            ],
            thresholds=((None, "green"), (1, "orange")),
            w=6,
        ).no_value("not checked")
    )
    d = d.with_panel(
        timeline(
            "What is down over time",
            "none, ami (AMI only), central, uplink (ours), unknown (central or uplink).",
            "synch_outage_cause",
            CAUSE,
            w=24,
            label="cause",
        )
    )
    d = d.with_panel(
        ts(
            "SIP and AMI probes",
            "SIP OPTIONS probes per second by transport and result (failure: 503), and AMI "
            "probes by result.",
            [
                Target(
                    f"sum by (instance, transport, result) "
                    f"(rate(synch_sip_probes_total{{{SEL}}}[{RATE}]))",
                    "{{instance}} SIP {{transport}} {{result}}",
                ),
                Target(
                    f"sum by (instance, result) (rate(synch_ami_probes_total{{{SEL}}}[{RATE}]))",
                    "{{instance}} AMI {{result}}",
                ),
            ],
            "reqps",
            w=12,
        )
    )
    d = d.with_panel(
        ts(
            "Probe results",
            "Probe rounds per second, by the result the failover arithmetic counted: SIP's when "
            "SIP is probed (AMI alone failing moves no phone), else AMI's.",
            [
                Target(
                    f"sum by (instance, result) (rate(synch_probes_total{{{SEL}}}[{RATE}]))",
                    "{{instance}} {{result}}",
                )
            ],
            "reqps",
            w=12,
        )
    )
    d = d.with_panel(
        ts(
            "Probe duration",
            "Time a probe round took (AMI connect, login, Ping; SIP OPTIONS; uplink check, at "
            "once); errors last until the timeout.",
            quantiles("synch_probe_duration_seconds"),
            "s",
            w=12,
        )
    )
    d = d.with_panel(
        ts(
            "Central AMI round trip",
            "Duration of the last successful probe of the central PBX (mostly the AMI Ping round "
            "trip); it keeps its last value while the probes fail.",
            [Target(f"synch_central_ami_roundtrip_seconds{{{SEL}}}", "{{instance}}")],
            "s",
            w=12,
        )
    )
    return d


def sync_row(d: Dashboard) -> Dashboard:
    d = d.with_row(Row("Account sync"))
    d = d.with_panel(
        single(
            "Sync",
            "Account synchronisation state.",
            [Target(state_code("synch_sync_state", SYNC), "{{instance}}")],
            mappings=state_mappings(SYNC),
            w=4,
        )
    )
    d = d.with_panel(
        single(
            "Automatic sync",
            "Paused after `synch rollback`, until `synch resume`.",
            [Target(flag("synch_sync_paused"), "{{instance}}")],
            mappings=state_mappings(PAUSED),
            w=4,
        )
    )
    d = d.with_panel(
        single(
            "Since last successful sync",
            "Age of the last sync that ended Synced (empty: never).",
            [
                Target(
                    f"time() - (synch_last_sync_success_timestamp_seconds{{{SEL}}} > 0)",
                    "{{instance}}",
                )
            ],
            unit="s",
            thresholds=((None, "green"), (900, "orange"), (3600, "red")),
            w=6,
        ).no_value("never")
    )
    d = d.with_panel(
        single(
            "Since last sync attempt",
            "Age of the last sync cycle, whatever its result; more than the sync interval "
            "(shown below it) while the central is up means cycles are not running.",
            [
                Target(
                    f"time() - (synch_last_sync_attempt_timestamp_seconds{{{SEL}}} > 0)",
                    "{{instance}} age",
                ),
                Target(f"synch_sync_interval_seconds{{{SEL}}}", "{{instance}} interval"),
            ],
            unit="s",
            w=5,
        ).no_value("never")
    )
    d = d.with_panel(
        single(
            "Synced accounts",
            "Accounts in the branch's synced file.",
            [Target(f"synch_synced_accounts{{{SEL}}}", "{{instance}}")],
            thresholds=((None, "red"), (1, "green")),
            w=5,
        )
    )
    d = d.with_panel(
        timeline(
            "Sync state over time",
            "Synced, Unsynced (last cycle failed or was refused).",
            "synch_sync_state",
            SYNC,
            w=24,
        )
    )
    d = d.with_panel(
        ts(
            "Sync runs per hour",
            "Sync cycles in the hour before each point, by result (every syncmanager.interval; "
            "guarded: refused by the remove guard).",
            [
                Target(
                    f"sum by (instance, result) (increase(synch_sync_runs_total{{{SEL}}}[1h]))",
                    "{{instance}} {{result}}",
                )
            ],
            "short",
        )
    )
    d = d.with_panel(
        ts(
            "Sync duration",
            "Time a sync cycle took (fetch, compare, write, commit, reload), over 30 min: "
            "syncs are minutes apart.",
            quantiles("synch_sync_duration_seconds", "30m"),
            "s",
        )
    )
    d = d.with_panel(
        ts(
            "Synced accounts over time",
            "A sudden drop is what the remove guard refuses.",
            [Target(f"synch_synced_accounts{{{SEL}}}", "{{instance}}")],
            "short",
        )
    )
    return d


def dns_row(d: Dashboard) -> Dashboard:
    d = d.with_row(Row("DNS"))
    d = d.with_panel(
        ts(
            "DNS answers",
            "Queries per second by how they were answered.",
            [
                Target(
                    f"sum by (instance, answer) (rate(synch_dns_queries_total{{{SEL}}}[{RATE}]))",
                    "{{instance}} {{answer}}",
                )
            ],
            "reqps",
        )
    )
    servfail = f'rate(synch_dns_queries_total{{{SEL}, answer="servfail"}}[{RATE}])'
    total = f"rate(synch_dns_queries_total{{{SEL}}}[{RATE}])"
    d = d.with_panel(
        ts(
            "SERVFAIL share",
            "Share of queries answered SERVFAIL (no forwarder answered).",
            [
                Target(
                    f"sum by (instance) ({servfail}) / sum by (instance) ({total})", "{{instance}}"
                )
            ],
            "percentunit",
        )
    )
    d = d.with_panel(
        ts(
            "Forward latency",
            "Time to an answer from the upstream forwarders (SERVFAIL included).",
            quantiles("synch_dns_forward_duration_seconds"),
            "s",
        )
    )
    return d


def build() -> Dashboard:
    d = (
        Dashboard("synch — branch site")
        .uid(UID)
        .description(
            "synch on a branch Asterisk host: the fleet at a glance, then per branch: failover "
            "state, probes of the central (SIP, AMI) and of the uplink, sync, DNS."
        )
        .tags(["synch", "asterisk", "branch"])
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            QueryVariable("instance")
            .label("Branch")
            .datasource(DS)
            .query("label_values(synch_build_info, instance)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
            .multi(True)
            .include_all(True)
        )
    )
    for row in (fleet_row, service_row, probe_row, sync_row, dns_row):
        d = row(d)
    return d


def render() -> str:
    """The dashboard as the JSON text committed in grafana/dashboards/synch.json."""
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the JSON is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is out of date: run grafana/generate_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
