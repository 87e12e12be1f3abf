"""Structure of grafana/dashboards/synch.json: queries, variables, metric names, layout."""

from __future__ import annotations

import re
from enum import Enum
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from synch.metrics import CentralView, Metrics
from synch.probe import Cause
from synch.sip import TRANSPORTS
from synch.states import Monitor, Service, SyncState
from tests.observability import queries
from tests.observability.deps import load_script

INSTANCE_MATCHER = 'instance=~"$instance"'
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# Words of PromQL that are not metric names.
_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?\s*(\()?")


def exported_metric_names() -> set[str]:
    """Every sample name synch exports (counters' _total, histograms' _bucket/_sum/_count)."""
    metrics = Metrics()
    metrics.watch_states(lambda: (Monitor.INIT, SyncState.INIT, Service.INIT))
    # Every SIP transport probed and an uplink check: the series a branch may export.
    view = CentralView(True, {t: True for t in TRANSPORTS}, True, Cause.NONE)
    metrics.watch_central(lambda: view, TRANSPORTS, uplink=True)
    text = generate_latest(metrics.registry).decode()
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, label matchers) of every vector selector in `expr`."""
    stripped = re.sub(r"\[[^\]]*\]", "", _GROUPING.sub("", expr))  # ranges, groupings
    found = []
    for name, matchers, call in _SELECTOR.findall(stripped):
        if call or name.lower() in _KEYWORDS:
            continue  # a function, or an operator word
        found.append((name, matchers))
    return found


def load_generator() -> ModuleType:
    return load_script("generate_dashboard", "grafana_foundation_sdk")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return queries.load_dashboard()


def test_selectors_parser() -> None:
    expr = (
        'histogram_quantile(0.5, sum by (instance, le) (rate(a_bucket{x="1"}[5m]))) '
        '/ on (instance) group_left b unless c{y=~"z"} offset 5m'
    )
    assert selectors(expr) == [("a_bucket", '{x="1"}'), ("b", ""), ("c", '{y=~"z"}')]


def test_committed_json_is_current() -> None:
    generator = load_generator()
    assert queries.DASHBOARD.read_text() == generator.render(), (
        "grafana/dashboards/synch.json is out of date: run .venv/bin/python "
        "grafana/generate_dashboard.py"
    )


def test_variables(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["type"] == "query"
    assert instance["query"] == "label_values(synch_build_info, instance)"
    assert instance["datasource"] == DATASOURCE


def test_every_panel_has_a_query(dashboard: dict[str, Any]) -> None:
    panels = queries.panels(dashboard)
    assert len(panels) >= 10
    for panel in panels:
        exprs = [t.get("expr", "").strip() for t in panel.get("targets", [])]
        assert exprs and all(exprs), f"panel {panel['title']!r} has a target without a query"


def test_every_panel_and_query_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in queries.panels(dashboard):
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource") == DATASOURCE, (panel["title"], target["refId"])


def test_every_selector_is_filtered_by_instance(dashboard: dict[str, Any]) -> None:
    """Every branch query follows the Branch variable; the fleet row reads recorded series only
    (a few series whatever the number of branches), which have no instance."""
    recorded = queries.recorded_names()
    fleet = 0
    for query in queries.panel_queries(dashboard):
        found = selectors(query.expr)
        assert found, f"{query.title}: no metric in {query.expr!r}"
        for name, matchers in found:
            if query.row == queries.FLEET_ROW:
                assert name in recorded, f"{query.title}: {name} is not a recorded series"
                fleet += 1
            else:
                assert INSTANCE_MATCHER in matchers, f"{query.title}: {name} not filtered"
    assert fleet >= 8


def test_every_metric_name_is_exported_by_synch(dashboard: dict[str, Any]) -> None:
    exported = exported_metric_names()
    assert "synch_probes_total" in exported and "synch_service_state" in exported
    used = {name for q in queries.panel_queries(dashboard) for name, _ in selectors(q.expr)}
    assert used - exported - queries.recorded_names() == set()


def test_every_concern_has_a_row(dashboard: dict[str, Any]) -> None:
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == [
        queries.FLEET_ROW,
        "Service state and transitions",
        "Probes of the central PBX",
        "Account sync",
        "DNS",
    ]


def test_panels_fit_the_grid_without_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_state_panels_map_every_state(dashboard: dict[str, Any]) -> None:
    enums: dict[str, type[Enum]] = {"Service": Service, "Central PBX": Monitor, "Sync": SyncState}
    checked = 0
    for query in queries.panel_queries(dashboard):
        for prefix, enum in enums.items():
            if query.panel_title in (prefix, f"{prefix} state over time"):
                assert sorted(query.mappings.values()) == sorted(s.value for s in enum), query.title
                checked += 1
    assert checked == 6  # a stat and a state timeline each


def test_substitution_leaves_no_variable() -> None:
    for title, expr in queries.dashboard_queries("10.0.0.1:9386"):
        assert "$" not in expr, title
    for title, expr in queries.dashboard_queries("10.0.0.1:9386", fleet=False):
        assert 'instance=~"10\\\\.0\\\\.0\\\\.1:9386"' in expr, title
    with pytest.raises(ValueError, match="unknown Grafana variable"):
        queries.substitute("rate(x[$__unknown])")


def test_provisioning_files() -> None:
    base = queries.REPO / "grafana" / "provisioning"
    datasources = yaml.safe_load((base / "datasources" / "synch-prometheus.yml").read_text())
    assert datasources["apiVersion"] == 1
    assert datasources["datasources"][0]["type"] == "prometheus"
    providers = yaml.safe_load((base / "dashboards" / "synch.yml").read_text())
    assert providers["apiVersion"] == 1
    assert providers["providers"][0]["type"] == "file"
    assert providers["providers"][0]["options"]["path"]
