"""Debian's prometheus scrapes the real `synch run` (against a lab central and branch Asterisk
22 and a loopback dnsmasq) and evaluates, through its HTTP API, every dashboard query and every
alert rule; then the central dies and the failover alerts must fire, and resolve when it is back.

Prometheus loads a copy of grafana/alerts/synch.rules.yml whose `for:` durations are cut to
FOR_IN_TEST (every expr is the committed one, byte for byte) and the fleet view's recording rules
(grafana/recording/synch.recording.yml) as they are. The series a branch costs the head office's
Prometheus are counted from this real scrape (README "Running many branches").
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from lab.asterisk import AsteriskInstance, new_instance
from lab.dnsmasq import Dnsmasq
from lab.ports import free_port
from lab.samples import central_configs
from lab.synchproc import SynchProcess, synch_for
from lab.wait import wait_until
from synch import __version__
from tests.observability import queries
from tests.observability.deps import load_script
from tests.observability.promserver import Prometheus, running_prometheus, scrape_config

pytestmark = pytest.mark.slow

INSTANCE = "branch-test"
SIP_TARGET = "127.0.0.10"  # lab_config's dnsservice.targetnormal
FOR_IN_TEST = "1s"
SCRAPE = 1.0  # seconds; the rules are evaluated as often
# Grafana's $__rate_interval for a 1 s scrape is a few seconds; 5m keeps rates defined for the
# whole module however long the earlier tests take.
RATE_INTERVAL = "5m"
# Kill -> Failed takes 3 probe errors at 0.5 s (lab/synchproc.py), then a scrape and an
# evaluation; fallback needs the central to boot and 3 good probes. Bounds with ample margins.
FIRE_WITHIN = 30.0
RESOLVE_WITHIN = 90.0
# Series per branch that README "Running many branches" sizes the head office's Prometheus for
# (this lab branch probes SIP over one transport and has an uplink check, as a typical branch).
SERIES_PER_BRANCH = 160


@dataclass
class Site:
    synch: SynchProcess
    central: AsteriskInstance
    branch: AsteriskInstance
    upstream: Dnsmasq
    synch_started: float  # unix time `synch run` was started
    synced_at: float  # unix time it was seen synced


def state(synch: SynchProcess, **expected: str) -> bool:
    status = synch.status()
    return all(status[key] == value for key, value in expected.items())


@pytest.fixture(scope="module")
def site(lab: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A branch site: central and branch Asterisk, upstream dnsmasq, `synch run` synced once."""
    started: list[AsteriskInstance] = []
    upstream = Dnsmasq(records={"www.example.org": "127.0.0.42"})
    synch: SynchProcess | None = None
    try:
        # The central's SIP listens where the phones are sent (lab_config's targetnormal).
        central_sip = {"sip_host": SIP_TARGET}
        for name, configs, sip in (
            ("obs-central", central_configs(), central_sip),
            ("obs-branch", None, {}),
        ):
            inst = new_instance(name, configs=configs, **sip)
            started.append(inst)
            inst.start(timeout=60)
        central, branch = started
        upstream.start()
        workdir = tmp_path_factory.mktemp("synch")
        synch_started = time.time()
        probes = {
            "siptransports": ["udp"],
            "sipport": central.sip_port,
            # A closed port on loopback refuses: the "uplink" answers.
            "uplinkcheck": [f"127.0.0.1:{free_port('tcp')}"],
            # The lab's FreePBX AORs keep maximum_expiration=7200: a healthy branch whose
            # failover budget is within its target (SynchFailoverBudgetHigh stays silent).
            "failoverbudgettarget": 86400,
        }
        synch = synch_for(workdir, central, upstream.port, branch=branch,
                          probemonitor=probes).start()  # fmt: skip
        wait_until(
            lambda: state(synch, Monitor="Stable", Sync="Synced", Service="Normal"),
            60,
            message=f"synch Stable, Synced, Normal; log:\n{synch.log()}",
        )
        yield Site(synch, central, branch, upstream, synch_started, synced_at=time.time())
    finally:
        if synch is not None:
            synch.stop()
        upstream.stop()
        keep = bool(os.environ.get("SYNCH_LAB_KEEP"))
        for inst in started:
            inst.stop()
            if not keep:
                inst.remove()


def make_dns_traffic(synch: SynchProcess) -> None:
    """A local answer, a forwarded one and an NXDOMAIN, so the DNS panels have something."""
    assert synch.resolve_a() == "127.0.0.10"
    assert synch.resolve_a("www.example.org") == "127.0.0.42"
    assert synch.query("nothere.example.local").header.rcode == 3  # NXDOMAIN


def rules_for_test(text: str, for_: str = FOR_IN_TEST) -> str:
    """The rule file with every `for:` set to `for_`; everything else as it is."""
    document = yaml.safe_load(text)
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_
    return yaml.safe_dump(document, sort_keys=False, width=1000)


@pytest.fixture(scope="module")
def prometheus(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    workdir = tmp_path_factory.mktemp("prometheus")
    rules = workdir / "synch.rules.yml"
    rules.write_text(rules_for_test(queries.RULES.read_text()))
    url = urllib.parse.urlsplit(site.synch.metrics_url)
    config = scrape_config(
        target=url.netloc,
        instance=INSTANCE,
        rule_files=[rules, queries.RECORDING],
        interval=f"{SCRAPE:g}s",
        metrics_path=url.path,
    )
    with running_prometheus(config, workdir) as prom:
        wait_until(
            lambda: prom.query('synch_last_sync_success_timestamp_seconds{job="synch"} > 0'),
            30,
            interval=0.2,
            message=f"prometheus scraping a synced synch at {site.synch.metrics_url}",
        )
        # Rates and quantiles need events between two scrapes: DNS queries, and a sync (the
        # daemon's own ran before Prometheus started; the next is 300 s away).
        make_dns_traffic(site.synch)
        assert site.synch.admin("Sync")["ok"] is True
        wait_until(
            lambda: prom.query(
                "increase(synch_sync_duration_seconds_count[1m]) > 0 and on (instance)"
                ' increase(synch_dns_queries_total{answer="forwarded"}[1m]) > 0'
            ),
            30,
            interval=0.2,
            message="prometheus saw a sync and DNS queries",
        )
        yield prom


def numeric(prometheus: Prometheus, expr: str) -> list[dict[str, Any]] | None:
    """The result of `expr` if at least one sample is a number (rates and quantiles give NaN
    without traffic), else None."""
    result = prometheus.query(expr)
    return result if any(not math.isnan(float(s["value"][1])) for s in result) else None


def panel_query(title: str) -> str:
    return dict(queries.dashboard_queries(INSTANCE, rate_interval=RATE_INTERVAL))[title]


def firing(prometheus: Prometheus, *names: str) -> dict[str, dict[str, Any]] | None:
    """Every firing alert by name, once all of `names` fire; else None."""
    found = prometheus.get("/api/v1/alerts")["alerts"]
    by_name = {a["labels"]["alertname"]: a for a in found if a["state"] == "firing"}
    return by_name if set(names) <= set(by_name) else None


def evaluated_rules(prometheus: Prometheus, since: float = 0.0) -> list[dict[str, Any]]:
    """All loaded rules once each has been evaluated after unix time `since`, else []."""
    rules = [r for g in prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]]
    stamps = [r.get("lastEvaluation", "") for r in rules]
    # a rule never evaluated reports lastEvaluation 0001-01-01T00:00:00Z
    if not rules or any(s.startswith("0001") or not s for s in stamps):
        return []
    done = all(parse_rfc3339(s) > since for s in stamps)
    return rules if done else []


def parse_rfc3339(stamp: str) -> float:
    """Unix time of Prometheus' RFC 3339 stamps (nanoseconds: Python parses microseconds)."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", stamp)).timestamp()


# -- the daemon, its metrics, the dashboard -------------------------------------------------------


def test_scrape_labels_the_branch(prometheus: Prometheus) -> None:
    info = prometheus.query("synch_build_info")
    assert [s["metric"]["instance"] for s in info] == [INSTANCE]
    assert info[0]["metric"]["job"] == "synch"
    assert info[0]["metric"]["version"] == __version__


def test_the_daemon_exports_what_it_did(prometheus: Prometheus, site: Site) -> None:
    """The new operator metrics carry the lab's values, not their defaults."""

    def value(expr: str) -> float:
        result = prometheus.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    assert value("synch_sync_interval_seconds") == 300
    assert value("synch_branch_ami_up") == 1
    assert value("synch_service_forced") == 0
    assert value("synch_sync_paused") == 0
    assert 0 < value("synch_central_ami_roundtrip_seconds") < 0.4  # below the probe timeout
    assert value('synch_sync_runs_total{result="applied"}') >= 1
    assert value("synch_synced_accounts") >= 1
    assert site.synch_started < value("synch_last_sync_attempt_timestamp_seconds") <= time.time()
    for answer in ("local", "forwarded", "nxdomain"):
        assert value(f'synch_dns_queries_total{{answer="{answer}"}}') >= 1, answer
    # lab_config's timers: 3 rounds × 0.5 s + 0.4 s; recordttl 5; contacts mirrored (PJSIP's
    # default), so no registration term after a cut; back home waits for the AORs' 7200 s.
    assert value("synch_failover_budget_seconds") == pytest.approx(1.9 + 5)
    assert value("synch_fallback_budget_seconds") == pytest.approx(1.5 + 5 + 7200)
    assert value("synch_failover_budget_target_seconds") == 86400
    assert value('synch_failover_budget_term_seconds{term="registration"}') == 0


@pytest.mark.parametrize(
    ("title", "expr"), queries.dashboard_queries(INSTANCE, rate_interval=RATE_INTERVAL)
)
def test_panel_query_returns_data(prometheus: Prometheus, title: str, expr: str) -> None:
    # rate() needs two scrapes inside its window: poll until the series show up.
    result = wait_until(
        lambda: numeric(prometheus, expr),
        30,
        interval=0.2,
        message=f"{title}: no numeric value for {expr}",
    )
    assert result is not None  # wait_until returns a truthy value
    assert all(s["metric"].get("instance", INSTANCE) == INSTANCE for s in result), result


def test_panel_query_for_other_branch_is_empty(prometheus: Prometheus) -> None:
    """The instance variable really filters: another branch's name selects nothing (but in the
    fleet row, which shows every branch whatever the variable)."""
    for title, expr in queries.dashboard_queries(
        "elsewhere", rate_interval=RATE_INTERVAL, fleet=False
    ):
        result = prometheus.query(expr)
        # `time() - x` alone would be a scalar; every panel query is a vector selection.
        assert result == [], (title, result)


def test_state_panels_show_the_daemon_state(prometheus: Prometheus) -> None:
    codes = {
        "Service": 1,  # Normal
        "Central PBX": 3,  # Stable
        "Sync": 2,  # Synced
        "Branch Asterisk": 1,  # Up
        "Admin override": 0,  # Auto
        "Automatic sync": 0,  # Running
        "What is down": 0,  # none
        "Central SIP": 1,  # Up
        "Central AMI": 1,  # Up
        "Our uplink": 1,  # Up
        "Budget vs target": 0,  # Within
    }
    for title, code in codes.items():
        result = prometheus.query(panel_query(title))
        assert [float(s["value"][1]) for s in result] == [code], title


# -- the alert rules --------------------------------------------------------------------------


def test_rules_copy_differs_only_in_for() -> None:
    committed = yaml.safe_load(queries.RULES.read_text())
    copied = yaml.safe_load(rules_for_test(queries.RULES.read_text()))
    for old_group, new_group in zip(committed["groups"], copied["groups"], strict=True):
        for old, new in zip(old_group["rules"], new_group["rules"], strict=True):
            assert {**old, "for": None} == {**new, "for": None}
            assert new.get("for", FOR_IN_TEST) == FOR_IN_TEST


@pytest.mark.parametrize(("name", "expr"), queries.alert_exprs())
def test_alert_expr_evaluates(prometheus: Prometheus, name: str, expr: str) -> None:
    prometheus.query(expr)  # raises PrometheusError if Prometheus rejects it


def test_rules_loaded_and_healthy(prometheus: Prometheus) -> None:
    rules = wait_until(
        lambda: evaluated_rules(prometheus), 30, interval=0.2, message="rules evaluated once"
    )
    names = {name for name, _ in queries.alert_exprs()} | queries.recorded_names()
    assert {r["name"] for r in rules} == names
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert bad == []


def test_series_per_branch_from_a_real_scrape(prometheus: Prometheus) -> None:
    """What one branch costs the head office's Prometheus: the samples of each scrape (one per
    series), plus Prometheus' own `up` and `scrape_*` series (the fleet rules add a dozen series
    for the whole fleet). README "Running many branches" multiplies this by the branches."""
    selector = f'{{job="synch", instance="{INSTANCE}"}}'
    scraped = prometheus.query(f"scrape_samples_scraped{selector}")
    samples = int(float(scraped[0]["value"][1]))
    series = int(float(prometheus.query(f'count({{__name__=~"synch_.+", instance="{INSTANCE}"}})'
                                        )[0]["value"][1]))  # fmt: skip
    assert series == samples  # every sample of a scrape is its own series
    alerts = '__name__!="ALERTS", __name__!="ALERTS_FOR_STATE"'
    per_branch = int(float(prometheus.query(
        f'count({{job="synch", instance="{INSTANCE}", {alerts}}})')[0]["value"][1]))  # fmt: skip
    # up, scrape_duration_seconds, scrape_samples_scraped, scrape_samples_post_metric_relabeling,
    # scrape_series_added
    assert per_branch == samples + 5, (per_branch, samples)
    assert 100 <= per_branch <= SERIES_PER_BRANCH, per_branch
    print(f"\none branch: {samples} series per scrape, {per_branch} series in Prometheus")


def test_fleet_row_counts_the_branch(prometheus: Prometheus) -> None:
    """The recorded fleet series for one healthy, synced branch."""

    def value(name: str) -> float:
        result = prometheus.query(name)
        assert len(result) == 1, (name, result)
        return float(result[0]["value"][1])

    wait_until(lambda: prometheus.query("synch:sync_age_seconds:max"), 30, interval=0.2,
               message="the fleet rules evaluated")  # fmt: skip
    assert value("synch:branches:count") == 1
    for name in ("down", "in_failover", "central_failed", "unsynced", "sync_retrying",
                 "sync_guarded", "sync_failed"):  # fmt: skip
        assert value(f"synch:branches_{name}:count") == 0, name
    quantiles = prometheus.query("synch:sync_age_seconds:quantile")
    assert {s["metric"]["quantile"] for s in quantiles} == {"0.5", "0.9", "0.99"}
    assert all(0 <= float(s["value"][1]) < 300 for s in quantiles)
    assert value("synch:sync_age_seconds:max") < 300


def test_healthy_branch_fires_nothing(prometheus: Prometheus) -> None:
    """Stable, Synced, Normal: once the start-up has passed (Failover until the central proved
    healthy, no sync yet), no alert may be pending or firing, even with `for` cut short."""
    since = time.time() + SCRAPE  # a scrape after now, then an evaluation of every rule
    wait_until(
        lambda: evaluated_rules(prometheus, since),
        30,
        interval=0.2,
        message="rules evaluated after the branch settled",
    )
    assert prometheus.get("/api/v1/alerts")["alerts"] == []


def test_dead_central_fires_failover_alerts_then_they_resolve(
    prometheus: Prometheus, site: Site
) -> None:
    failovers = float(prometheus.query("synch_failovers_total")[0]["value"][1])
    site.central.kill()
    fired = wait_until(
        lambda: firing(
            prometheus, "SynchCentralUnreachable", "SynchBranchInFailover", "SynchCentralDown"
        ),
        FIRE_WITHIN,
        interval=0.2,
        message=f"failover alerts firing; synch log:\n{site.synch.log()}",
    )
    assert fired is not None  # wait_until returns a truthy value
    unreachable = fired["SynchCentralUnreachable"]
    assert unreachable["labels"]["instance"] == INSTANCE
    assert unreachable["labels"]["severity"] == "critical"
    assert INSTANCE in unreachable["annotations"]["summary"]
    assert fired["SynchBranchInFailover"]["labels"]["severity"] == "warning"
    # The uplink check answers: it is the central that is down, not the branch's uplink.
    assert fired["SynchCentralDown"]["labels"]["cause"] == "central"
    # Syncs stop while the central is Failed; that is not reported as a stale sync as well.
    assert set(fired) == {"SynchCentralUnreachable", "SynchBranchInFailover", "SynchCentralDown"}
    assert site.synch.resolve_a() == "127.0.0.20"
    assert [float(s["value"][1]) for s in prometheus.query(panel_query("Service"))] == [2]
    assert [float(s["value"][1]) for s in prometheus.query(panel_query("Central PBX"))] == [2]
    after = float(prometheus.query("synch_failovers_total")[0]["value"][1])
    assert after == failovers + 1

    site.central.start(timeout=60)
    wait_until(
        lambda: prometheus.get("/api/v1/alerts")["alerts"] == [],
        RESOLVE_WITHIN,
        interval=0.2,
        message=f"alerts resolved after the central came back; synch log:\n{site.synch.log()}",
    )
    assert state(site.synch, Monitor="Stable", Service="Normal")
    assert [float(s["value"][1]) for s in prometheus.query(panel_query("Service"))] == [1]


def load_render_preview() -> ModuleType:
    return load_script("render_preview", "matplotlib")


def test_preview_renders_from_the_real_run(prometheus: Prometheus, tmp_path: Path) -> None:
    """grafana/render_preview.py draws every panel from this run (set SYNCH_PREVIEW_OUT to a
    path to keep the picture)."""
    render_preview = load_render_preview()
    out = tmp_path / "preview.png"
    render_preview.render(
        prometheus, prometheus.started_at, time.time(), out, INSTANCE, "a lab run", SCRAPE
    )
    assert out.stat().st_size > 10_000
    keep = os.environ.get("SYNCH_PREVIEW_OUT")
    if keep:
        shutil.copy(out, keep)
