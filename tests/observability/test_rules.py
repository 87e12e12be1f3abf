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


# -- the fleet view's recording rules (grafana/recording/synch.recording.yml) ----------------------

RECORDING_TESTS = GRAFANA / "recording" / "synch.recording.test.yml"


def test_check_recording_rules() -> None:
    result = promtool("check", "rules", queries.RECORDING)
    assert result.returncode == 0, result.stdout + result.stderr


def test_recording_unit_tests_pass() -> None:
    result = promtool("test", "rules", RECORDING_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_recording_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """Counting the never-synced branches' age (0: 1970) must make the unit tests fail."""
    rules = queries.RECORDING.read_text()
    broken = rules.replace("(synch_last_sync_success_timestamp_seconds{job=\"synch\"} > 0)",
                           "synch_last_sync_success_timestamp_seconds{job=\"synch\"}")  # fmt: skip
    assert broken != rules
    (tmp_path / "synch.recording.yml").write_text(broken)
    shutil.copy(RECORDING_TESTS, tmp_path / RECORDING_TESTS.name)
    result = promtool("test", "rules", tmp_path / RECORDING_TESTS.name)
    assert result.returncode != 0
    assert "synch:sync_age_seconds:quantile" in result.stdout + result.stderr


def test_every_recorded_series_is_tested() -> None:
    tested = {
        case["expr"]
        for test in yaml.safe_load(RECORDING_TESTS.read_text())["tests"]
        for case in test.get("promql_expr_test", [])
    }
    assert queries.recorded_names() <= tested


def test_recording_rules_use_only_exported_metrics() -> None:
    exported = exported_metric_names() | PROMETHEUS_METRICS | queries.recorded_names()
    for name, expr in queries.recording_rules():
        used = {metric for metric, _ in selectors(expr)}
        assert used, name
        assert used - exported == set(), name
        assert name.startswith("synch:") and name.count(":") == 2, name  # level:metric:operation


def test_example_scrape_config_loads_both_rule_files() -> None:
    config = yaml.safe_load((GRAFANA / "prometheus.example.yml").read_text())
    assert config["rule_files"] == ["alerts/synch.rules.yml", "recording/synch.recording.yml"]
