"""grafana/alerts/synch.rules.yml: promtool checks, promtool unit tests, and conventions."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.observability import queries
from tests.observability.test_dashboard import exported_metric_names, selectors

GRAFANA = queries.REPO / "grafana"
TESTS = GRAFANA / "alerts" / "synch.rules.test.yml"
PROMETHEUS_METRICS = {"up"}  # made by Prometheus itself at each scrape
NO_INSTANCE = {"SynchAbsent"}  # absent() has no instance to name: it names the job


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: apt-get install prometheus"
    return subprocess.run(
        [binary, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def test_check_rules() -> None:
    result = promtool("check", "rules", queries.RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_tests_pass() -> None:
    result = promtool("test", "rules", TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """Dropping the Failed exception from SynchSyncStale must make the unit tests fail."""
    rules = queries.RULES.read_text()
    broken = rules.replace("unless on (instance, job)", "and on (instance, job)")
    assert broken != rules
    (tmp_path / "synch.rules.yml").write_text(broken)
    shutil.copy(TESTS, tmp_path / TESTS.name)
    result = promtool("test", "rules", tmp_path / TESTS.name)
    assert result.returncode != 0
    assert "SynchSyncStale" in result.stdout + result.stderr


def test_example_scrape_config_is_valid() -> None:
    result = promtool("check", "config", GRAFANA / "prometheus.example.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("rule", queries.load_rules(), ids=lambda r: r.get("alert", "?"))
def test_rule_conventions(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    for key in ("summary", "description"):
        text = annotations[key]
        if rule["alert"] in NO_INSTANCE:
            assert "$labels.job" in text
        else:
            assert "$labels.instance" in text, f"{rule['alert']} {key} does not name the branch"


def test_rules_use_only_exported_metrics() -> None:
    exported = exported_metric_names() | PROMETHEUS_METRICS
    for name, expr in queries.alert_exprs():
        used = {metric for metric, _ in selectors(expr)}
        assert used, name
        assert used - exported == set(), name


def test_every_alert_is_tested_firing_and_silent() -> None:
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    for name, _ in queries.alert_exprs():
        assert cases.get(name) == {True, False}, f"{name}: tested {cases.get(name)}"
