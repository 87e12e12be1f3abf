"""Render grafana/preview.png: the dashboard's panels drawn with matplotlib (not Grafana) from
real Prometheus query_range answers.

    .venv/bin/python grafana/render_preview.py [--out grafana/preview.png] [--hours 6]

Six hours of one simulated branch ("lyon") are produced with synch.metrics.Metrics(): a
maintenance window with the service forced to Failover, the branch's own uplink down, a central
outage (failover and fallback), the branch Asterisk down for a while, the central's AMI alone down
(no failover, sync paused), a flaky spell, a sync refused by the remove guard, then a
rollback pausing automatic sync, and a SERVFAIL burst; the central's Max Expiration is lowered
with the first accounts added, which brings the failover budget within its target. The samples
are backfilled into a fresh TSDB with `promtool tsdb create-blocks-from openmetrics`, the fleet
row's recording rules (grafana/recording/synch.recording.yml) computed over them with `promtool
tsdb create-blocks-from rules`, Debian's prometheus serves both, and every panel's queries
(tests/observability/queries.py, variables substituted as Grafana would) are evaluated with
/api/v1/query_range.

`render()` draws from any Prometheus that scrapes synch: tests/observability/
test_real_prometheus.py uses it on a run of the real daemon against the Asterisk lab.
"""

from __future__ import annotations

import argparse
import math
import random
import re
import shutil
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

from synch.budget import RegistrationLimit, Timers, compute  # noqa: E402
from synch.metrics import CentralView, Metrics  # noqa: E402
from synch.probe import Cause  # noqa: E402
from synch.states import Monitor, Service, SyncState  # noqa: E402
from tests.observability import queries  # noqa: E402
from tests.observability.promserver import running_prometheus  # noqa: E402

INSTANCE = "lyon"
SCRAPE = 15.0  # seconds between simulated scrapes
PROBE_INTERVAL = 5.0
SYNC_INTERVAL = 300.0
COLORS = {"green": "#56a64b", "red": "#e02f44", "orange": "#ff9830", "yellow": "#f2cc0c"}
COLORS["text"] = "#8e8e8e"
# The failover budget's timers: the shipped probe timers, recordttl 30 s, target 120 s.
BUDGET_TIMERS = Timers(record_ttl=30.0)


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
    forced: Service | None = None  # admin override
    paused: bool = False  # automatic sync paused after a rollback
    accounts: int = 40
    next_sync: float = 0.0
    events: list[str] = field(default_factory=list)
    sip_up: bool = False
    ami_up: bool = False
    uplink_up: bool = True
    cause: Cause = Cause.NONE

    def probe(self, central: str) -> None:
        """One round: SIP (udp) and AMI of the central, and the uplink check. `central` is up,
        flaky, down (the central), uplink (our uplink down) or ami (only its AMI down)."""
        m = self.metrics
        self.uplink_up = central != "uplink"
        self.ami_up = central in ("up", "flaky")
        if central in ("up", "ami") or (central == "flaky" and self.rng.random() < 0.75):
            self.ok += 1
            self.sip_up = True
            seconds = self.rng.lognormvariate(math.log(0.02), 0.3)
            m.probes.labels(result="success").inc()
            m.sip_probes.labels(transport="udp", result="success").inc()
            m.probe_duration.observe(seconds if central != "ami" else 4.0)
            if central != "ami":
                m.central_roundtrip.set(seconds)
        elif central == "flaky":
            self.ok, self.points, self.sip_up = 0, self.points + 1, False
            m.probes.labels(result="failure").inc()
            m.sip_probes.labels(transport="udp", result="failure").inc()
            m.probe_duration.observe(self.rng.uniform(0.05, 0.4))
        else:
            self.ok, self.points, self.sip_up = 0, self.points + 2, False
            m.probes.labels(result="error").inc()
            m.sip_probes.labels(transport="udp", result="error").inc()
            m.probe_duration.observe(4.0)
        m.ami_probes.labels(result="success" if self.ami_up else "error").inc()
        m.uplink_checks.labels(result="success" if self.uplink_up else "error").inc()
        if self.sip_up:
            self.cause = Cause.NONE if self.ami_up else Cause.AMI
        else:
            self.cause = Cause.CENTRAL if self.uplink_up else Cause.UPLINK
        self._judge()

    def view(self) -> CentralView:
        return CentralView(self.ami_up, {"udp": self.sip_up}, self.uplink_up, self.cause)

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
            self._switch(Service.FAILOVER)
        elif self.monitor is Monitor.STABLE:
            self._switch(Service.NORMAL)
            self.next_sync = 0.0  # entering Stable syncs now

    def _switch(self, service: Service) -> None:
        wanted = self.forced or service
        if wanted is self.service:
            return
        if wanted is Service.FAILOVER:
            self.metrics.failovers.inc()
        elif self.service is Service.FAILOVER:
            self.metrics.fallbacks.inc()
        self.service = wanted

    def override(self, forced: Service | None) -> None:
        """An admin's Failover/Normal (or Auto: None)."""
        if forced is self.forced:
            return
        self.forced = forced
        self.metrics.service_forced.set(0 if forced is None else 1)
        automatic = Service.NORMAL if self.monitor is Monitor.STABLE else Service.FAILOVER
        self._switch(forced or automatic)

    def show_budget(self, maximum_expiration: int) -> None:
        """The failover budget with the synced AORs' maximum_expiration."""
        limit = RegistrationLimit(maximum_expiration, "maximum_expiration", "pjsip", True)
        self.metrics.show_budget(compute(BUDGET_TIMERS, limit))

    def maybe_sync(self, now: float, central_accounts: int, maximum_expiration: int) -> None:
        self.metrics.sync_paused.set(1 if self.paused else 0)
        blocked = self.monitor is Monitor.FAILED or not self.ami_up  # no sync without AMI
        if blocked or self.paused or now < self.next_sync:
            return
        self.next_sync = now + SYNC_INTERVAL
        m = self.metrics
        m.last_sync_attempt.set(now)
        removed = max(0, self.accounts - central_accounts)
        if self.accounts and removed * 100 > 50 * self.accounts:
            result, self.sync = "guarded", SyncState.UNSYNCED
        elif central_accounts != self.accounts:
            result, self.sync, self.accounts = "applied", SyncState.SYNCED, central_accounts
            self.show_budget(maximum_expiration)
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
        servfail_rate = 0.4 if central in ("down", "uplink") else 0.002
        for _ in range(self.rng.poisson(0.6 * seconds)):
            m.dns_forward_duration.observe(self.rng.lognormvariate(math.log(0.025), 0.4))
        for _ in range(self.rng.poisson(servfail_rate * seconds)):
            m.dns_queries.labels(answer="servfail").inc()
            m.dns_forward_duration.observe(2.0)


@dataclass(frozen=True)
class Moment:
    """What the world looks like at one point of the scenario."""

    central: str  # up, down, flaky, uplink (ours down), ami (only the central's AMI down)
    accounts: int  # the site's accounts on the central
    branch_asterisk_up: bool
    forced: Service | None
    paused: bool
    maximum_expiration: int  # the central's FreePBX Max Expiration for the site's extensions


def scenario(offset: float, hours: float) -> Moment:
    """The world at `offset` seconds into the simulation."""
    h = offset / 3600 * 6 / hours  # the scenario is written for 6 hours
    central = "up"
    if 1.7 <= h < 1.9:
        central = "uplink"  # the branch's own line is down
    elif 2.0 <= h < 2.4:
        central = "down"
    elif 3.5 <= h < 3.7:
        central = "ami"  # the central's AMI is firewalled; SIP answers: phones stay
    elif 4.1 <= h < 4.35:
        central = "flaky"
    accounts = 40 if h < 1.0 else 42
    if 4.8 <= h < 5.3:
        accounts = 12  # someone broke the central's accountcodes: the guard refuses
    return Moment(
        central=central,
        accounts=accounts,
        branch_asterisk_up=not 3.0 <= h < 3.2,
        forced=Service.FAILOVER if 0.5 <= h < 0.8 else None,  # a maintenance window
        paused=5.5 <= h < 5.8,  # after a rollback, until `synch resume`
        # lowered with the new accounts: the failover budget falls within its target
        maximum_expiration=3600 if h < 1.0 else 60,
    )


def simulate(start: float, hours: float) -> Iterator[tuple[float, Metrics]]:
    """Yield (timestamp, metrics) at every simulated scrape."""
    metrics = Metrics()
    rng = Rng(1)
    branch = Branch(metrics, rng)
    metrics.watch_states(lambda: (branch.monitor, branch.sync, branch.service))
    metrics.watch_central(branch.view, ("udp",), uplink=True)
    metrics.sync_interval.set(SYNC_INTERVAL)
    branch.show_budget(scenario(0, hours).maximum_expiration)
    now, end = start, start + hours * 3600
    while now <= end:
        moment = scenario(now - start, hours)
        metrics.branch_ami_up.set(1 if moment.branch_asterisk_up else 0)
        branch.override(moment.forced)
        branch.paused = moment.paused
        for _ in range(int(SCRAPE / PROBE_INTERVAL)):
            branch.probe(moment.central)
        branch.maybe_sync(now, moment.accounts, moment.maximum_expiration)
        branch.dns(moment.central, SCRAPE)
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


def fetch(
    prom: Any,
    panel: dict[str, Any],
    start: float,
    end: float,
    step: float,
    instance: str,
    scrape: float,
) -> list[Series]:
    out = []
    # $__rate_interval as Grafana computes it: max($__interval + scrape interval, 4 scrapes).
    rate = f"{int(max(step + scrape, 4 * scrape))}s"
    for target in panel["targets"]:
        expr = queries.substitute(
            target["expr"], instance, rate_interval=rate, range_=f"{int(end - start)}s"
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
    ax.set_xticks([])
    ax.set_yticks([])
    if not data:
        ax.text(
            0.5, 0.45, defaults.get("noValue", "No data"), ha="center", va="center", fontsize=16
        )
        return
    # Several series (branches, or queries): one value each, side by side, as Grafana does.
    for i, s in enumerate(data):
        x = (i + 0.5) / len(data)
        text, color = stat_text(ax, panel, s)
        if len(data) > 1:
            ax.text(x, 0.8, s.legend, ha="center", va="center", fontsize=8)
        ax.text(x, 0.45, text, ha="center", va="center", fontsize=18, color=color, weight="bold")


def stat_text(ax: Axes, panel: dict[str, Any], s: Series) -> tuple[str, str]:
    """The text of one stat value and its colour (a mapped value colours the whole panel)."""
    defaults = panel["fieldConfig"]["defaults"]
    mappings = {k: v for m in defaults.get("mappings", []) for k, v in m.get("options", {}).items()}
    last = next((v for v in reversed(s.values) if not math.isnan(v)), math.nan)
    if panel.get("options", {}).get("textMode") == "name":
        return s.legend, "black"
    if mappings and not math.isnan(last) and str(int(last)) in mappings:
        mapped = mappings[str(int(last))]
        ax.set_facecolor(COLORS.get(mapped.get("color", ""), "#cccccc"))
        return mapped["text"], "white"
    color = "black"
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or last >= step["value"]:
            color = COLORS.get(step["color"], "black")
    return human(last, defaults.get("unit", "")), color


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
            if math.isnan(value) or len(nums) < 2:
                continue
            # each value holds until the next point; the last one for one more step
            width = nums[i + 1] - nums[i] if i + 1 < len(nums) else nums[i] - nums[i - 1]
            mapped = mappings.get(str(int(value)), {"text": str(value), "color": "text"})
            color = COLORS.get(mapped.get("color", ""), "#cccccc")
            ax.broken_barh([(nums[i], width)], (row + 0.1, 0.8), color=color)
            seen[mapped["text"]] = color
    ax.set_yticks([r + 0.5 for r in range(len(data))], [s.legend for s in data], fontsize=7)
    clock_axis(ax)
    handles = [Rectangle((0, 0), 1, 1, color=c) for c in seen.values()]
    ax.legend(handles, list(seen), fontsize=6, loc="upper left", ncol=len(seen), framealpha=0.8)


def render(
    prom: Any,
    start: float,
    end: float,
    out: Path,
    instance: str = INSTANCE,
    data_source: str = "simulated data",
    scrape: float = SCRAPE,
) -> None:
    """Draw every panel of the dashboard for `instance` from `prom`'s data in [start, end]."""
    dashboard = queries.load_dashboard()
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
    fig = plt.figure(figsize=(20, height * 0.42))
    fig.suptitle(
        f"{dashboard['title']} · branch {instance} — matplotlib rendering of the panels' "
        f"queries on {data_source} (not Grafana)",
        fontsize=13,
    )
    top, floor = 0.965, 0.025  # room for the title and the last row's time axis
    step = max(scrape, (end - start) / 480)
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        # room for y tick labels (a state timeline's are branch names)
        pad = {"stat": 0.006, "row": 0.006, "state-timeline": 0.045}.get(panel["type"], 0.03)
        left, width = pos["x"] / 24 + pad, pos["w"] / 24 - pad - 0.006
        bottom = floor + (top - floor) * (1 - (pos["y"] + pos["h"]) / height) + 0.008
        box_height = (top - floor) * pos["h"] / height - 0.024
        if panel["type"] == "row":
            fig.text(left, bottom + 0.004, panel["title"], fontsize=12, weight="bold")
            continue
        ax = fig.add_axes((left, bottom, width, box_height))
        ax.set_title(panel["title"], fontsize=9, loc="left")
        ax.tick_params(labelsize=7)
        data = fetch(prom, panel, start, end, step, instance, scrape)
        {"timeseries": draw_timeseries, "stat": draw_stat, "state-timeline": draw_timeline}[
            panel["type"]
        ](ax, panel, data)
        if panel["type"] != "stat":
            # The dashboard's time range on every time axis, with seconds on a short one.
            ax.set_xlim(to_date_num(start), to_date_num(end))
            clock = "%H:%M:%S" if end - start < 1800 else "%H:%M"
            ax.xaxis.set_major_formatter(DateFormatter(clock))  # type: ignore[no-untyped-call]
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
        with running_prometheus(config, work) as prom:  # the recorded series, from the samples
            subprocess.run(
                ["promtool", "tsdb", "create-blocks-from", "rules", f"--start={int(start)}",
                 f"--end={int(end)}", f"--url={prom.url}", "--eval-interval=15s",
                 "--output-dir=recorded", str(queries.RECORDING)],
                cwd=work, check=True, capture_output=True,
            )  # fmt: skip
        for block in (work / "recorded").iterdir():
            if block.is_dir():
                shutil.move(block, work / "data" / block.name)
        with running_prometheus(config, work) as prom:
            render(prom, start, end, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
