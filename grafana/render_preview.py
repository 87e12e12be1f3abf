"""Render grafana/preview.png: the dashboard's panels drawn with matplotlib (not Grafana) from
real Prometheus query_range answers.

    .venv/bin/python grafana/render_preview.py [--out grafana/preview.png] [--hours 6]

Six hours of one simulated branch ("lyon") are produced with synch.metrics.Metrics(): a central
outage (failover and fallback), a flaky hour, a sync refused by the remove guard and a SERVFAIL
burst. The samples are backfilled into a fresh TSDB with `promtool tsdb create-blocks-from
openmetrics`, Debian's prometheus serves them, and every panel's queries (tests/observability/
queries.py, variables substituted as Grafana would) are evaluated with /api/v1/query_range.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from anywhere

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.dates import DateFormatter, date2num  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from synch.metrics import Metrics  # noqa: E402
from synch.states import Monitor, Service, SyncState  # noqa: E402
from tests.observability import queries  # noqa: E402
from tests.observability.promserver import running_prometheus  # noqa: E402

INSTANCE = "lyon"
SCRAPE = 15.0  # seconds between simulated scrapes
PROBE_INTERVAL = 5.0
SYNC_INTERVAL = 300.0
COLORS = {"green": "#56a64b", "red": "#e02f44", "orange": "#ff9830", "yellow": "#f2cc0c"}
COLORS["text"] = "#8e8e8e"


# --- simulation -------------------------------------------------------------------------------


class Rng(random.Random):
    def poisson(self, mean: float) -> int:
        # Knuth's method is enough for the small means used here.
        limit, k, p = math.exp(-mean), 0, 1.0
        while True:
            p *= self.random()
            if p <= limit:
                return k
            k += 1


@dataclass
class Branch:
    """Probe arithmetic as synch computes it (defaults 5/5/1), and the sync cycle's results."""

    metrics: Metrics
    rng: Rng
    monitor: Monitor = Monitor.INIT
    service: Service = Service.FAILOVER  # dnsservice.defaultstate
    sync: SyncState = SyncState.INIT
    ok: int = 0
    points: int = 0
    accounts: int = 40
    next_sync: float = 0.0
    events: list[str] = field(default_factory=list)

    def probe(self, central: str) -> None:
        m = self.metrics
        if central == "up" or (central == "flaky" and self.rng.random() < 0.75):
            self.ok += 1
            m.probes.labels(result="success").inc()
            m.probe_duration.observe(self.rng.lognormvariate(math.log(0.02), 0.3))
        elif central == "flaky":
            self.ok, self.points = 0, self.points + 1
            m.probes.labels(result="failure").inc()
            m.probe_duration.observe(self.rng.uniform(0.05, 0.4))
        else:
            self.ok, self.points = 0, self.points + 2
            m.probes.labels(result="error").inc()
            m.probe_duration.observe(4.0)
        self._judge()

    def _judge(self) -> None:
        old = self.monitor
        if self.ok >= 5:
            self.monitor, self.points = Monitor.STABLE, 0
        elif self.points >= 5 and self.ok == 0:
            self.monitor = Monitor.FAILED
        else:
            self.monitor = Monitor.UNSTABLE
        if self.monitor == old:
            return
        if self.monitor is Monitor.FAILED:
            if self.service is not Service.FAILOVER:
                self.metrics.failovers.inc()
            self.service = Service.FAILOVER
        elif self.monitor is Monitor.STABLE:
            if self.service is Service.FAILOVER:
                self.metrics.fallbacks.inc()
            self.service = Service.NORMAL
            self.next_sync = 0.0  # entering Stable syncs now

    def maybe_sync(self, now: float, central_accounts: int) -> None:
        if self.monitor is Monitor.FAILED or now < self.next_sync:
            return
        self.next_sync = now + SYNC_INTERVAL
        m = self.metrics
        removed = max(0, self.accounts - central_accounts)
        if self.accounts and removed * 100 > 50 * self.accounts:
            result, self.sync = "guarded", SyncState.UNSYNCED
        elif central_accounts != self.accounts:
            result, self.sync, self.accounts = "applied", SyncState.SYNCED, central_accounts
        else:
            result, self.sync = "unchanged", SyncState.SYNCED
        m.sync_runs.labels(result=result).inc()
        m.sync_duration.observe(self.rng.uniform(0.2, 0.6) + (1.5 if result == "applied" else 0))
        if self.sync is SyncState.SYNCED:
            m.last_sync_success.set(now)
        m.synced_accounts.set(self.accounts)

    def dns(self, central: str, seconds: float) -> None:
        m = self.metrics
        for answer, rate in (("local", 2.0), ("forwarded", 0.6), ("nxdomain", 0.05)):
            m.dns_queries.labels(answer=answer).inc(self.rng.poisson(rate * seconds))
        servfail_rate = 0.4 if central == "down" else 0.002
        for _ in range(self.rng.poisson(0.6 * seconds)):
            m.dns_forward_duration.observe(self.rng.lognormvariate(math.log(0.025), 0.4))
        for _ in range(self.rng.poisson(servfail_rate * seconds)):
            m.dns_queries.labels(answer="servfail").inc()
            m.dns_forward_duration.observe(2.0)


def central_at(offset: float, hours: float) -> tuple[str, int]:
    """Central PBX condition and account count at `offset` seconds into the simulation."""
    h = offset / 3600 * 6 / hours  # the scenario is written for 6 hours
    central = "up"
    if 2.0 <= h < 2.4:
        central = "down"
    elif 4.1 <= h < 4.35:
        central = "flaky"
    accounts = 40 if h < 1.0 else 42
    if 4.8 <= h < 5.3:
        accounts = 12  # someone broke the central's accountcodes: the guard refuses
    return central, accounts


def simulate(start: float, hours: float) -> Iterator[tuple[float, Metrics]]:
    """Yield (timestamp, metrics) at every simulated scrape."""
    metrics = Metrics()
    rng = Rng(1)
    branch = Branch(metrics, rng)
    metrics.watch_states(lambda: (branch.monitor, branch.sync, branch.service))
    now, end = start, start + hours * 3600
    while now <= end:
        central, accounts = central_at(now - start, hours)
        for _ in range(int(SCRAPE / PROBE_INTERVAL)):
            branch.probe(central)
        branch.maybe_sync(now, accounts)
        branch.dns(central, SCRAPE)
        yield now, metrics
        now += SCRAPE


def openmetrics(start: float, hours: float) -> str:
    """The simulation as OpenMetrics text with timestamps, for promtool's backfill."""
    families: dict[str, str] = {}
    series: dict[str, dict[tuple[str, str], list[str]]] = defaultdict(lambda: defaultdict(list))
    for ts, metrics in simulate(start, hours):
        for family in metrics.registry.collect():
            families[family.name] = family.type
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = {"job": "synch", "instance": INSTANCE, **sample.labels}
                text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
                series[family.name][(sample.name, text)].append(f"{sample.value} {ts:.3f}")
    lines = []
    for name, kind in families.items():
        lines.append(f"# TYPE {name} {kind}")
        for (sample_name, matchers), points in series[name].items():
            lines.extend(f"{sample_name}{{{matchers}}} {point}" for point in points)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


# --- drawing ----------------------------------------------------------------------------------


def legend_text(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def human(value: float, unit: str) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "s":
        if value >= 3600:
            return f"{value / 3600:.1f} h"
        if value >= 60:
            return f"{int(value // 60)} min {int(value % 60)} s"
        return f"{value:.3g} s"
    if unit == "percentunit":
        return f"{value * 100:.2g} %"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"


@dataclass
class Series:
    legend: str
    times: list[float]  # matplotlib date numbers
    values: list[float]


def fetch(prom: Any, panel: dict[str, Any], start: float, end: float, step: float) -> list[Series]:
    out = []
    for target in panel["targets"]:
        expr = queries.substitute(
            target["expr"], INSTANCE, rate_interval="1m", range_=f"{int(end - start)}s"
        )
        for s in prom.query_range(expr, start, end, step):
            times = [to_date_num(float(t)) for t, _ in s["values"]]
            values = [float(v) for _, v in s["values"]]
            out.append(
                Series(legend_text(target.get("legendFormat", ""), s["metric"]), times, values)
            )
    return out


def to_date_num(ts: float) -> float:
    return float(date2num(datetime.fromtimestamp(ts)))  # type: ignore[no-untyped-call]


def clock_axis(ax: Axes) -> None:
    ax.xaxis_date()
    ax.xaxis.set_major_formatter(DateFormatter("%H:%M"))  # type: ignore[no-untyped-call]


def draw_timeseries(ax: Axes, panel: dict[str, Any], data: list[Series]) -> None:
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    for s in data:
        ax.plot(s.times, s.values, linewidth=1, label=s.legend)
    if unit == "s" and any(v > 0 for s in data for v in s.values if not math.isnan(v)):
        ax.set_yscale("log")
    if unit == "percentunit":
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{v * 100:.0f}%")
    ax.set_ylabel({"s": "seconds", "reqps": "per second", "percentunit": ""}.get(unit, ""))
    clock_axis(ax)
    ax.grid(alpha=0.3)
    if data:
        ax.legend(fontsize=6, loc="upper left", ncol=3, framealpha=0.6)


def draw_stat(ax: Axes, panel: dict[str, Any], data: list[Series]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    mappings = {k: v for m in defaults.get("mappings", []) for k, v in m.get("options", {}).items()}
    text_mode = panel.get("options", {}).get("textMode")
    ax.set_xticks([])
    ax.set_yticks([])
    if not data:
        ax.text(
            0.5, 0.45, defaults.get("noValue", "No data"), ha="center", va="center", fontsize=16
        )
        return
    s = data[0]
    last = next((v for v in reversed(s.values) if not math.isnan(v)), math.nan)
    color = "black"
    if text_mode == "name":
        text = s.legend
    elif mappings and str(int(last)) in mappings:
        mapped = mappings[str(int(last))]
        text = mapped["text"]
        ax.set_facecolor(COLORS.get(mapped.get("color", ""), "#cccccc"))
        color = "white"
    else:
        text = human(last, defaults.get("unit", ""))
        steps = defaults.get("thresholds", {}).get("steps", [])
        for step in steps:
            if step["value"] is None or last >= step["value"]:
                color = COLORS.get(step["color"], "black")
    ax.text(0.5, 0.45, text, ha="center", va="center", fontsize=18, color=color, weight="bold")


def draw_timeline(ax: Axes, panel: dict[str, Any], data: list[Series]) -> None:
    mappings = {
        k: v
        for m in panel["fieldConfig"]["defaults"].get("mappings", [])
        for k, v in m.get("options", {}).items()
    }
    seen: dict[str, str] = {}
    for row, s in enumerate(data):
        nums = s.times
        for i, value in enumerate(s.values):
            if math.isnan(value) or i + 1 >= len(nums):
                continue
            mapped = mappings.get(str(int(value)), {"text": str(value), "color": "text"})
            color = COLORS.get(mapped.get("color", ""), "#cccccc")
            ax.broken_barh([(nums[i], nums[i + 1] - nums[i])], (row + 0.1, 0.8), color=color)
            seen[mapped["text"]] = color
    ax.set_yticks([r + 0.5 for r in range(len(data))], [s.legend for s in data], fontsize=7)
    clock_axis(ax)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in seen.values()]
    ax.legend(handles, list(seen), fontsize=6, loc="upper left", ncol=len(seen), framealpha=0.8)


def render(prom: Any, start: float, end: float, out: Path) -> None:
    dashboard = queries.load_dashboard()
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    fig = plt.figure(figsize=(20, height * 0.42))
    fig.suptitle(
        f"{dashboard['title']} · branch {INSTANCE} — matplotlib rendering of the panels' "
        "queries on simulated data (not Grafana)",
        fontsize=13,
    )
    top, floor = 0.965, 0.025  # room for the title and the last row's time axis
    step = max(SCRAPE, (end - start) / 480)
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        pad = 0.006 if panel["type"] in ("stat", "row") else 0.03  # room for y tick labels
        left, width = pos["x"] / 24 + pad, pos["w"] / 24 - pad - 0.006
        bottom = floor + (top - floor) * (1 - (pos["y"] + pos["h"]) / height) + 0.008
        box_height = (top - floor) * pos["h"] / height - 0.024
        if panel["type"] == "row":
            fig.text(left, bottom + 0.004, panel["title"], fontsize=12, weight="bold")
            continue
        ax = fig.add_axes((left, bottom, width, box_height))
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        data = fetch(prom, panel, start, end, step)
        {"timeseries": draw_timeseries, "stat": draw_stat, "state-timeline": draw_timeline}[
            panel["type"]
        ](ax, panel, data)
    fig.savefig(out, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "grafana" / "preview.png")
    parser.add_argument("--hours", type=float, default=6.0)
    args = parser.parse_args(argv)
    end = float(int(datetime.now().timestamp()) // 60 * 60 - 120)
    start = end - args.hours * 3600
    with tempfile.TemporaryDirectory(prefix="synch-preview-") as tmp:
        work = Path(tmp)
        (work / "series.om").write_text(openmetrics(start, args.hours))
        subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", "series.om", "data"],
            cwd=work,
            check=True,
            capture_output=True,
        )
        config = '{"global": {"scrape_interval": "15s"}, "scrape_configs": []}'
        with running_prometheus(config, work) as prom:
            render(prom, start, end, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
