"""Every PromQL expression the dashboard and the alert rules use, ready for /api/v1/query.

    dashboard_queries()           -> [(panel title, expr)], $instance matching every instance
    dashboard_queries("lyon")     -> the same for the one branch whose instance label is "lyon"
    alert_exprs()                 -> [(alert name, expr)]
    recording_rules()             -> [(recorded series, expr)] of the fleet view

Read from the committed files (grafana/dashboards/synch.json, grafana/alerts/synch.rules.yml,
grafana/recording/synch.recording.yml), so what is evaluated is exactly what Grafana and
Prometheus load.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "grafana" / "dashboards" / "synch.json"
RULES = REPO / "grafana" / "alerts" / "synch.rules.yml"
RECORDING = REPO / "grafana" / "recording" / "synch.recording.yml"
# The dashboard's row for every branch at once: its panels read the recorded series only, and
# do not follow the Branch variable.
FLEET_ROW = "Fleet: every branch"

_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


@dataclass(frozen=True)
class PanelQuery:
    """One query (target) of one panel, its expr still holding Grafana variables."""

    title: str  # panel title, with " [refId]" when the panel has several queries
    panel_title: str
    row: str  # the title of the row the panel is in
    panel_type: str
    expr: str
    legend: str
    unit: str
    mappings: dict[str, str]  # value -> text, from the panel's value mappings


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The dashboard's panels that show data: rows left out, collapsed rows' panels included."""
    result = []
    for panel in (dashboard or load_dashboard())["panels"]:
        if panel.get("type") == "row":
            result.extend(panel.get("panels", []))
        else:
            result.append(panel)
    return result


def panel_queries(dashboard: dict[str, Any] | None = None) -> list[PanelQuery]:
    out = []
    dashboard = dashboard or load_dashboard()
    rows: dict[int, str] = {}  # id(panel) -> its row's title
    row = ""
    for panel in dashboard["panels"]:
        if panel.get("type") == "row":
            row = panel["title"]
            rows.update((id(inner), row) for inner in panel.get("panels", []))  # collapsed
        else:
            rows[id(panel)] = row
    for panel in panels(dashboard):
        targets = panel.get("targets", [])
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        mappings = {
            value: str(result.get("text", value))
            for mapping in defaults.get("mappings", [])
            if mapping.get("type") == "value"
            for value, result in mapping.get("options", {}).items()
        }
        for target in targets:
            title = panel["title"]
            if len(targets) > 1:
                title = f"{title} [{target.get('refId', '?')}]"
            out.append(
                PanelQuery(
                    title=title,
                    panel_title=panel["title"],
                    row=rows.get(id(panel), ""),
                    panel_type=panel["type"],
                    expr=target.get("expr", ""),
                    legend=target.get("legendFormat", ""),
                    unit=defaults.get("unit", ""),
                    mappings=mappings,
                )
            )
    return out


def instance_regex(instance: str | None) -> str:
    """The value for `instance=~"..."`: every instance, or exactly this one (escaped twice: once
    for the regex, once for the PromQL string)."""
    if instance is None:
        return ".+"
    return re.escape(instance).replace("\\", "\\\\")


def substitute(
    expr: str,
    instance: str | None = None,
    rate_interval: str = "1m",
    range_: str = "1h",
    interval: str = "15s",
) -> str:
    """Replace Grafana's variables as Grafana would for one time range; ValueError on any other."""
    values = {
        "instance": instance_regex(instance),
        "__rate_interval": rate_interval,
        "__range": range_,
        "__interval": interval,
    }

    def replace(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def dashboard_queries(
    instance: str | None = None, rate_interval: str = "1m", range_: str = "1h", fleet: bool = True
) -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel, variables substituted (without the
    fleet row's unless `fleet`)."""
    return [
        (q.title, substitute(q.expr, instance, rate_interval, range_))
        for q in panel_queries()
        if fleet or q.row != FLEET_ROW
    ]


def load_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_exprs() -> list[tuple[str, str]]:
    """(alert name, expr) for every alerting rule."""
    return [(rule["alert"], rule["expr"]) for rule in load_rules() if "alert" in rule]


def recording_rules() -> list[tuple[str, str]]:
    """(recorded series, expr) for every recording rule, in order (a name may come twice:
    one rule per quantile)."""
    groups = yaml.safe_load(RECORDING.read_text())["groups"]
    return [(rule["record"], rule["expr"]) for group in groups for rule in group["rules"]]


def recorded_names() -> set[str]:
    return {name for name, _ in recording_rules()}
