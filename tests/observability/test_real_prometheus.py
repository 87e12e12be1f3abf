"""Debian's prometheus scrapes a synch /metrics endpoint and evaluates, through its HTTP API,
every dashboard query and every alert rule.

`metrics_target` is a stand-in: it serves synch.metrics.Metrics() from a subprocess
(tests/observability/fake_target.py). Once `synch run` serves /metrics, replace the fixture's body
with the daemon started on a test config and yield its metrics URL; the tests stay as they are.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.wait import wait_until
from tests.observability import queries
from tests.observability.promserver import Prometheus, running_prometheus, scrape_config

pytestmark = pytest.mark.slow

INSTANCE = "branch-test"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def metrics_target() -> Iterator[str]:
    """URL of a synch /metrics endpoint. STAND-IN: swap for `synch run` when the daemon is done."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.observability.fake_target"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], 30)
        line = process.stdout.readline().decode().strip() if readable else ""
        assert line.isdigit(), f"fake_target printed no port (got {line!r})"
        yield f"http://127.0.0.1:{line}/metrics"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def prometheus(
    metrics_target: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    url = urllib.parse.urlsplit(metrics_target)
    config = scrape_config(
        target=url.netloc,
        instance=INSTANCE,
        rule_files=[queries.RULES],
        metrics_path=url.path or "/metrics",
    )
    with running_prometheus(config, tmp_path_factory.mktemp("prometheus")) as prom:
        wait_until(
            lambda: prom.query('up{job="synch"} == 1'),
            30,
            interval=0.2,
            message=f"prometheus scraping {metrics_target}",
        )
        yield prom


def test_scrape_labels_the_branch(prometheus: Prometheus) -> None:
    info = prometheus.query("synch_build_info")
    assert [s["metric"]["instance"] for s in info] == [INSTANCE]
    assert info[0]["metric"]["job"] == "synch"


@pytest.mark.parametrize(("title", "expr"), queries.dashboard_queries(INSTANCE))
def test_panel_query_returns_data(prometheus: Prometheus, title: str, expr: str) -> None:
    # rate() needs two scrapes inside its window: poll until the series show up.
    result = wait_until(
        lambda: prometheus.query(expr), 30, interval=0.2, message=f"{title}: no data for {expr}"
    )
    assert all(s["metric"].get("instance", INSTANCE) == INSTANCE for s in result), result


def test_panel_query_for_other_branch_is_empty(prometheus: Prometheus) -> None:
    """The instance variable really filters: another branch's name selects nothing."""
    wait_until(lambda: prometheus.query("synch_synced_accounts"), 30, interval=0.2)
    for title, expr in queries.dashboard_queries("elsewhere"):
        assert prometheus.query(expr) == [], title


@pytest.mark.parametrize(("name", "expr"), queries.alert_exprs())
def test_alert_expr_evaluates(prometheus: Prometheus, name: str, expr: str) -> None:
    prometheus.query(expr)  # raises PrometheusError if Prometheus rejects it


def evaluated_rules(prometheus: Prometheus) -> list[dict[str, Any]]:
    """All loaded rules once each has been evaluated at least once, else []."""
    rules = [r for g in prometheus.get("/api/v1/rules")["groups"] for r in g["rules"]]
    # a rule never evaluated reports lastEvaluation 0001-01-01T00:00:00Z
    done = rules and all(not r.get("lastEvaluation", "0").startswith("0") for r in rules)
    return rules if done else []


def test_rules_loaded_and_healthy(prometheus: Prometheus) -> None:
    rules = wait_until(
        lambda: evaluated_rules(prometheus), 30, interval=0.2, message="rules evaluated once"
    )
    assert {r["name"] for r in rules} == {name for name, _ in queries.alert_exprs()}
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert bad == []


def test_healthy_branch_fires_nothing(prometheus: Prometheus) -> None:
    """The stand-in branch is Stable/Synced/Normal: no alert may be pending or firing."""
    wait_until(lambda: evaluated_rules(prometheus), 30, interval=0.2, message="rules evaluated")
    assert prometheus.get("/api/v1/alerts")["alerts"] == []
