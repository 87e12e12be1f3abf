"""A head office with many branches: what N synch branches cost one central, and how they come
back after the central restarts, without and with the sync jitter.

    sudo nice -n 19 .venv/bin/python -m bench.fleet --branches 50,200,500   # about 30 min
    sudo .venv/bin/python -m bench.fleet --branches 10 --quick              # a try, 3-4 min

The central is a real lab Asterisk 22 serving FreePBX PJSIP files of `--extensions` extensions
(10,000) over 500 sites of 20 (accountcode `Site000` ... `Site499`); branch i syncs
`accountcode=^Site<i>$`, its ~20 extensions. The N branches run in gevent worker processes
(bench/fleet_worker.py; one per 100 branches, 1 to 4, so that one process's parsing of a 5 MB
reply does not hold up the replies of the others): each is the daemon's own ProbeService,
SyncService + SyncJob (its own directory and git history) and FailoverOverlay, wired as the
daemon wires them, at the default probe timers (5 s, timeout 4 s); the branch Asterisk is a
stand-in that accepts Reload. This process samples the central's CPU (utime + stime of its
/proc/PID/stat) and the workers' every 100 ms, and stops and starts the central.

Phases, for each N (one central for all; the workers are new for each N):

1. **cold start**: the branches' first syncs, each at a random moment within `--cold-spread`
   s (a fleet switched on within two minutes), until every branch is Synced.
2. **background**: the probes (AMI Ping + SIP OPTIONS every 5 s) and the contacts look
   (PJSIPShowContacts every 120 s) only, no sync due, for `--window` s: the central's CPU and
   the AMI bytes, in real time; the branches' SIP probes come From an endpoint without
   authentication (`synch-probe`, as README "Running many branches" advises). Then the same with
   the probes From each branch's first account (the default: challenged), and that with every
   branch's sync session held open too, as synch did before it closed it between uses
   (`SESSION_IDLE_CLOSE`).
3. **full fetch**: `--fulls` full cycles one after the other (CoreStatus + 3 GetConfig): the
   central's CPU (less the background) and the bytes per full fetch.
4. **cheap cycle**: `--cheap` ordinary cycles in a row with the central unchanged (one
   CoreStatus each): the central's CPU and the bytes per cycle.
5. **cheap cycles, time-compressed**: every branch at `--compressed-interval` s (30 s for the
   real 300 s: ×10) for `--window` s, phases random: what the fleet's cycles add to the
   background, divided by 10, is their cost per real hour (a check of 4 at fleet scale).
   Steady state per hour of real time is composed explicitly: background/h + N × (11 cheap +
   1 full) (interval 300 s, a full fetch at least every 12 cycles: `fullcheckevery`; a central
   reloaded at most once an hour costs the same).
6. **restart**, for each variant of the sync's timers at real time (interval 300 s, first retry
   30 s doubling to 300 s, spread ±10 %), by `--jitters`: `jitter 0` (before: every branch
   fetches as soon as it sees the central Stable) and `jitter 300` (after, the default); the
   ratios are to the first. The central is stopped, every
   branch goes Failed, the central is started (`fully booted` = t0) and the figures are:
   the time from t0 until every branch has completed a sync ending Synced, the most GetConfig
   requests in flight at the central at once, the most started in one second, the central's peak
   CPU over 100 ms and over the busiest 5 s (1.0 = one core of this 2-core machine) from t0 to
   then, and the cycles the
   central failed (too slow: over `amiremote.timeout`, 4 s), and, once a branch saw the central
   Stable again, its probe rounds in error and new failovers (the herd's harm to the phones).

Caveats: the N branches share this machine's 2 cores with the central (their CPU is printed
too: a real branch parses its 5 MB on its own machine, here they compete with the central); the
central has no registered phones, so PJSIPShowContacts returns nothing (with phones it returns a
ContactList event per contact: see the README).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SITES = 500
PER_SITE = 20
REAL_INTERVAL = 300.0
FULL_EVERY = 12  # fullcheckevery's default: one full fetch in 12 cycles
DEFAULT_JITTER = 300.0
# An endpoint without authentication for the branches' SIP probes (README "Running many
# branches"): an OPTIONS from an endpoint that authenticates is challenged, and each challenge
# is a security event that Asterisk wakes every AMI session for.
PROBE_USER = "synch-probe"
PROBE_ENDPOINT = (
    f"\n[{PROBE_USER}]\ntype=endpoint\ncontext={PROBE_USER}\ndisallow=all\nallow=ulaw\n"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def figure(name: str, value: object) -> None:
    print(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}", flush=True)


# -- the central and its CPU --------------------------------------------------------------------


def site_name(index: int) -> str:
    return f"Site{index:03d}"


def central_sites(extensions: int) -> dict[str, list[int]]:
    """`extensions` extensions over 500 sites, 20 each (the last ones fewer if fewer)."""
    sites: dict[str, list[int]] = {}
    for n in range(extensions):
        site = n // PER_SITE % SITES
        sites.setdefault(site_name(site), []).append(100000 + 100 * site + n % PER_SITE + 1000000
                                                     * (n // (SITES * PER_SITE)))  # fmt: skip
    return sites


def cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


class CpuSampler(threading.Thread):
    """Every `period` s: (monotonic time, {name: (pids, ticks)}) of the process groups `pids()`
    names (a group's ticks summed; a step across a change of its processes is not counted)."""

    def __init__(self, pids: Callable[[], dict[str, list[int]]], period: float = 0.1):
        super().__init__(daemon=True)
        self.pids, self.period = pids, period
        self.samples: list[tuple[float, dict[str, tuple[tuple[int, ...], int]]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            row = {}
            for name, pids in self.pids().items():
                ticks = [cpu_ticks(pid) for pid in pids]
                if pids and None not in ticks:
                    row[name] = (tuple(pids), sum(t for t in ticks if t is not None))
            self.samples.append((time.monotonic(), row))
            self.done.wait(self.period)

    def _steps(self, name: str, t0: float, t1: float) -> list[tuple[float, float, float]]:
        """(end time, seconds, CPU seconds) of each sampling step inside [t0, t1]."""
        steps = []
        rows = [(t, r[name]) for t, r in self.samples if t0 <= t <= t1 and name in r]
        for (ta, (pa, ca)), (tb, (pb, cb)) in itertools.pairwise(rows):
            if pa == pb and tb > ta:
                steps.append((tb, tb - ta, (cb - ca) / CLK_TCK))
        return steps

    def total(self, name: str, t0: float, t1: float) -> float:
        return sum(cpu for _, _, cpu in self._steps(name, t0, t1))

    def peak(self, name: str, t0: float, t1: float, window: float = 0.0) -> float:
        """The most CPU, in cores, over one sampling step (100 ms) or over `window` s."""
        steps = self._steps(name, t0, t1)
        if window <= 0:
            return max((cpu / dt for _, dt, cpu in steps), default=0.0)
        best, first, seconds, cpu = 0.0, 0, 0.0, 0.0
        for end, dt, used in steps:
            seconds, cpu = seconds + dt, cpu + used
            while steps[first][0] <= end - window:
                seconds, cpu = seconds - steps[first][1], cpu - steps[first][2]
                first += 1
            if seconds >= window * 0.9:
                best = max(best, cpu / seconds)
        return best


# -- the workers --------------------------------------------------------------------------------


class Worker:
    def __init__(self, log: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.fleet_worker", str(log)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip

    def send(self, do: str, **args: Any) -> None:
        assert self.proc.stdin
        self.proc.stdin.write(json.dumps({"do": do, **args}) + "\n")
        self.proc.stdin.flush()

    def reply(self) -> Any:
        assert self.proc.stdout
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a fleet worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin:
            self.proc.stdin.write('{"do": "quit"}\n')
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Workers:
    """The fleet's branches over several worker processes (each its own gevent loop, so that
    one process's parsing never holds up another's replies); a command goes to all of them,
    and their replies come back as a list."""

    def __init__(self, count: int, workdir: Path):
        self.workers = [Worker(workdir / f"worker-{i}.log") for i in range(count)]

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers]

    def __call__(self, do: str, **args: Any) -> list[Any]:
        for worker in self.workers:
            worker.send(do, **args)
        return [worker.reply() for worker in self.workers]

    def first(self, do: str, **args: Any) -> Any:
        self.workers[0].send(do, **args)
        return self.workers[0].reply()

    def build(self, settings: dict[str, Any], sites: list[str], workdir: Path,
              seed: int) -> None:  # fmt: skip
        share = -(-len(sites) // len(self.workers))
        for i, worker in enumerate(self.workers):
            worker.send("build", settings=settings, sites=sites[i * share : (i + 1) * share],
                        workdir=str(workdir / f"w{i}"), seed=seed + i)  # fmt: skip
        for worker in self.workers:
            worker.reply()

    def counters(self) -> dict[str, Any]:
        """Every worker's AMI counters, summed; GetConfig's spans merged."""
        merged: dict[str, Any] = {"bytes_in": {}, "bytes_out": {}, "requests": {}, "errors": {},
                                  "getconfig_spans": []}  # fmt: skip
        for reply in self("counters"):
            for key in ("bytes_in", "bytes_out", "requests", "errors"):
                for name, value in reply[key].items():
                    merged[key][name] = merged[key].get(name, 0) + value
            merged["getconfig_spans"] += reply["getconfig_spans"]
        return merged

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


def in_flight_peak(spans: list[list[float]]) -> int:
    """The most spans open at once."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans],
                    key=lambda e: (e[0], e[1]))  # fmt: skip
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def busiest_second(spans: list[list[float]]) -> int:
    """The most spans started within one second (a sliding window)."""
    starts = sorted(start for start, _ in spans)
    best, first = 0, 0
    for i, start in enumerate(starts):
        while starts[first] <= start - 1.0:
            first += 1
        best = max(best, i - first + 1)
    return best


def merge_synced(replies: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {"synced": [], "stable": [], "cycles": {}, "whys": {},
                              "central_failed": 0, "late_probes": 0, "failed_again": 0}  # fmt: skip
    for reply in replies:
        merged["synced"] += reply["synced"]
        merged["stable"] += reply["stable"]
        for key in ("cycles", "whys"):
            for name, value in reply[key].items():
                merged[key][name] = merged[key].get(name, 0) + value
        for key in ("central_failed", "late_probes", "failed_again"):
            merged[key] += reply[key]
    return merged


def branch_settings(central: Any) -> dict[str, Any]:
    """What every branch shares (its filter and directory are set per branch): the defaults,
    but for the addresses, the probes' From user (the central's endpoint without
    authentication) and no periodic full fetch (measured apart, composed per hour)."""
    return {
        "loglevel": {"default": "warning"},
        "probemonitor": {"siptransports": ["udp"], "sipport": central.sip_port,
                         "sipuser": PROBE_USER},
        "amiremote": {"hostname": central.ami_host, "port": central.ami_port,
                      "username": central.ami_user, "password": central.ami_secret},
        "amilocal": {"username": "branch", "password": "unused-stand-in"},
        "syncmanager": {"mode": "pjsip", "filterkey": "accountcode", "filtervalue": "x",
                        "localconfigspath": "/", "fullcheckevery": 1_000_000, "jitter": 0},
        "dnsservice": {"listenaddress": "127.0.0.1", "domain": "example.local",
                       "targetnormal": central.sip_host, "targetfailover": "127.0.0.20",
                       "forwarders": ["127.0.0.1:5353"]},
        "servicecontrol": {"token": "fleet"},
    }  # fmt: skip


# -- one fleet --------------------------------------------------------------------------------


class Run:
    """One N: its workers, the phases, the figures (a dict of name -> value)."""

    def __init__(self, n: int, opts: argparse.Namespace, central: Any, sampler: CpuSampler,
                 workdir: Path, worker_pids: list[int]):  # fmt: skip
        self.n, self.opts, self.central, self.sampler = n, opts, central, sampler
        self.workdir = workdir / f"n{n}"
        self.workdir.mkdir(parents=True)
        count = opts.workers or min(4, max(1, round(n / 100)))
        self.workers = Workers(count, self.workdir)
        worker_pids[:] = self.workers.pids
        self.figures: dict[str, Any] = {"workers": count}

    def cpu(self, t0: float, t1: float) -> tuple[float, float]:
        """(central CPU s, workers' CPU s) over [t0, t1]."""
        return self.sampler.total("central", t0, t1), self.sampler.total("worker", t0, t1)

    def window(self, seconds: float) -> tuple[float, float, dict[str, Any]]:
        self.workers.counters()
        t0 = time.monotonic()
        time.sleep(seconds)
        t1 = time.monotonic()
        counters = self.workers.counters()
        central, worker = self.cpu(t0, t1)
        return central / (t1 - t0), worker / (t1 - t0), counters

    def run(self) -> dict[str, Any]:
        n, opts = self.n, self.opts
        say(f"[N={n}] building {n} branches in {self.figures['workers']} worker processes ...")
        self.workers.build(branch_settings(self.central), [site_name(i) for i in range(n)],
                           self.workdir, opts.seed)  # fmt: skip
        stable = self.workers("probes", timeout=120)
        if not all(r["ok"] for r in stable):
            raise RuntimeError(f"branches not Stable: {stable}")
        self.cold_start()
        self.background()
        self.full_fetches()
        self.cheap_burst()
        self.cheap_cycles()
        self.compose()
        for jitter in opts.jitters:
            self.restart(f"j{jitter:g}", jitter)
        return self.figures

    def synced_since(self, since: float) -> dict[str, Any]:
        """Every worker's branches, once all have synced after `since` (or the timeout)."""
        deadline = time.monotonic() + self.opts.restart_timeout
        replies = []
        for worker in self.workers.workers:  # one after the other: each waits for its own
            worker.send("synced_since", since=since, timeout=max(0.0, deadline - time.monotonic()))
            replies.append(worker.reply())
        return merge_synced(replies)

    def cold_start(self) -> None:
        self.workers.counters()
        since, t0 = time.time(), time.monotonic()
        self.workers("syncs", spread=self.opts.cold_spread)
        done = self.synced_since(since)
        t1 = time.monotonic()
        counters = self.workers.counters()
        firsts = [t for t in done["synced"] if t is not None]
        f = self.figures
        f["cold_spread_s"] = self.opts.cold_spread
        f["cold_all_synced_s"] = (max(firsts) - since) if len(firsts) == self.n else float("nan")
        f["cold_peak_getconfig"] = in_flight_peak(counters["getconfig_spans"])
        f["cold_central_peak_cpu_5s"] = self.sampler.peak("central", t0, t1, window=5.0)
        f["cold_central_failed_cycles"] = done["central_failed"]
        say(f"[N={self.n}] cold start (first syncs spread over {self.opts.cold_spread:g} s): all "
            f"Synced after {f['cold_all_synced_s']:.1f} s, "
            f"peak {f['cold_peak_getconfig']} GetConfig in flight, "
            f"{done['central_failed']} cycles failed by the central")  # fmt: skip

    def background(self) -> None:
        # No sync cycle in this window: the next of each branch a whole interval away.
        self.workers("schedule", interval=REAL_INTERVAL, replan="later")
        central, worker, counters = self.window(self.opts.window)
        f = self.figures
        f["bg_central_cpu_share"] = central  # cores, i.e. CPU s per s
        f["bg_worker_cpu_share"] = worker
        f["bg_bytes_per_s"] = (sum(counters["bytes_in"].values())
                               + sum(counters["bytes_out"].values())) / self.opts.window
        f["contacts_looks_per_branch_hour"] = (counters["requests"].get("PJSIPShowContacts", 0)
                                               / self.n * 3600 / self.opts.window)  # fmt: skip
        say(f"[N={self.n}] background: central {central:.3f} cores, branches {worker:.3f}, "
            f"{f['bg_bytes_per_s'] / 1e3:.1f} kB/s, requests {counters['requests']}")  # fmt: skip
        # The SIP probes From the branch's first account (the default): each is challenged, a
        # security event for which Asterisk wakes every AMI session.
        self.workers("probe_user", user=None)
        central, _, _ = self.window(self.opts.window)
        f["bg_account_central_cpu_share"] = central
        say(f"[N={self.n}] background, probes From the branch's account: central "
            f"{central:.3f} cores")  # fmt: skip
        # And every branch's sync session held open, as synch did before it closed it between
        # uses: one more session to wake per branch.
        held = self.workers("sessions", hold=True)
        central, _, _ = self.window(self.opts.window)
        self.workers("sessions", hold=False)
        self.workers("probe_user", user=PROBE_USER)
        f["bg_held_central_cpu_share"] = central
        f["bg_held_sessions"] = sum(r["connected"] for r in held)
        say(f"[N={self.n}] background, probes From the branch's account, the "
            f"{f['bg_held_sessions']} sync sessions held open: central {central:.3f} cores")

    def full_fetches(self) -> None:
        count = min(self.n, self.opts.fulls)
        time.sleep(1.2)  # the central's reload mark is seen a second before a full fetch
        self.workers.counters()
        t0 = time.monotonic()
        out = self.workers.first("fulls", count=count)
        t1 = time.monotonic()
        counters = self.workers.counters()
        count = len(out["seconds"])  # the first worker's branches
        central, worker = self.cpu(t0, t1)
        f = self.figures
        background = f["bg_central_cpu_share"] * (t1 - t0)
        per = {a: counters["requests"].get(a, 0) for a in ("CoreStatus", "GetConfig")}
        sync_bytes = sum(bytes_of(counters, a) for a in ("CoreStatus", "GetConfig"))
        for name in ("endpoint", "aor", "auth"):
            f[f"full_bytes_{name}"] = bytes_of(counters, f"GetConfig pjsip.{name}.conf") / count
        f["full_central_cpu_s"] = max(0.0, central - background) / count
        f["full_branch_cpu_s"] = max(0.0, worker - f["bg_worker_cpu_share"] * (t1 - t0)) / count
        f["full_bytes"] = sync_bytes / count
        f["full_bytes_aor_auth"] = f["full_bytes_aor"] + f["full_bytes_auth"]
        f["full_seconds_p50"] = sorted(out["seconds"])[count // 2]
        say(f"[N={self.n}] full fetch x{count}: central {f['full_central_cpu_s'] * 1e3:.0f} ms "
            f"CPU, branch {f['full_branch_cpu_s'] * 1e3:.0f} ms, "
            f"{f['full_bytes'] / 1e6:.2f} MB each ({per}, {out['results']})")  # fmt: skip

    def cheap_burst(self) -> None:
        """The cheap cycle (one CoreStatus, the central unchanged), --cheap times in a row."""
        count = self.opts.cheap
        self.workers.counters()
        t0 = time.monotonic()
        out = self.workers.first("fulls", count=count, cheap=True)
        t1 = time.monotonic()
        counters = self.workers.counters()
        central, _ = self.cpu(t0, t1)
        f = self.figures
        f["cheap_central_cpu_s"] = max(0.0, central - f["bg_central_cpu_share"] * (t1 - t0)) / count
        f["cheap_bytes"] = bytes_of(counters, "CoreStatus") / count
        f["cheap_seconds_p50"] = sorted(out["seconds"])[count // 2]
        say(f"[N={self.n}] cheap cycle x{count}: central {f['cheap_central_cpu_s'] * 1e6:.0f} µs "
            f"CPU, {f['cheap_bytes']:.0f} B each ({out['results']})")  # fmt: skip

    def cheap_cycles(self) -> None:
        """Every branch at the compressed interval: the fleet's cycles at 10 times their real
        rate; what they add to the background, divided by 10, is their real cost per hour."""
        opts = self.opts
        self.workers("schedule", interval=opts.compressed_interval,
                     retry_first=opts.compressed_interval / 10, replan="spread")  # fmt: skip
        central, _, counters = self.window(opts.window)
        f = self.figures
        cycles = counters["requests"].get("CoreStatus", 0)
        getconfigs = counters["requests"].get("GetConfig", 0)
        background = f["bg_central_cpu_share"]
        compression = REAL_INTERVAL / opts.compressed_interval
        f["compressed_cycles_in_window"] = cycles
        f["compressed_getconfigs_in_window"] = getconfigs  # 0: every cycle was the cheap one
        f["compressed_central_cpu_share"] = central
        # Real time: the cycles' share of the central at 10x their rate, over 10, per hour.
        f["compressed_sync_cpu_s_per_hour"] = max(0.0, central - background) * 3600 / compression
        f["compressed_sync_bytes_per_hour"] = (
            bytes_of(counters, "CoreStatus") / opts.window * 3600 / compression
        )
        say(f"[N={self.n}] cheap cycles, time-compressed x{compression:g} (interval "
            f"{opts.compressed_interval:g} s): {cycles} CoreStatus, {getconfigs} GetConfig in "
            f"{opts.window:g} s; central {central:.3f} cores (background {background:.3f}): "
            f"{f['compressed_sync_cpu_s_per_hour']:.1f} CPU s per real hour")  # fmt: skip

    def compose(self) -> None:
        """Steady state per hour in real time (interval 300 s, a full fetch in 12 cycles)."""
        f, n = self.figures, self.n
        cycles = 3600 / REAL_INTERVAL
        fulls, cheaps = cycles / FULL_EVERY, cycles * (FULL_EVERY - 1) / FULL_EVERY
        sync_cpu = n * (fulls * f["full_central_cpu_s"] + cheaps * f["cheap_central_cpu_s"])
        sync_bytes = n * (fulls * f["full_bytes"] + cheaps * f["cheap_bytes"])
        f["hour_central_cpu_s"] = f["bg_central_cpu_share"] * 3600 + sync_cpu
        f["hour_central_cpu_s_sync"] = sync_cpu
        f["hour_central_cpu_s_probes"] = f["bg_central_cpu_share"] * 3600
        f["hour_central_cpu_s_account"] = f["bg_account_central_cpu_share"] * 3600
        f["hour_central_cpu_s_held"] = f["bg_held_central_cpu_share"] * 3600
        f["hour_central_cpu_s_before"] = f["hour_central_cpu_s_held"] + sync_cpu
        f["hour_cheap_cpu_s"] = n * cycles * f["cheap_central_cpu_s"]  # were all 12 cheap
        f["hour_bytes"] = f["bg_bytes_per_s"] * 3600 + sync_bytes
        f["hour_bytes_sync"] = sync_bytes
        f["hour_bytes_probes"] = f["bg_bytes_per_s"] * 3600

    def restart(self, name: str, jitter: float) -> None:
        n = self.n
        self.workers("schedule", interval=REAL_INTERVAL, retry_first=REAL_INTERVAL / 10,
                     jitter=jitter, replan="spread")  # fmt: skip
        say(f"[N={n}] restart {name} (jitter {jitter:g} s): stopping the central ...")
        self.central.stop(timeout=30)
        failed = self.workers("wait_monitor", state="Failed", timeout=120)
        if not all(r["ok"] for r in failed):
            raise RuntimeError(f"branches not Failed: {failed}")
        since = time.time()
        self.workers.counters()
        self.central.start(timeout=300)
        up, t0 = time.time(), time.monotonic()
        done = self.synced_since(since)
        t1 = time.monotonic()
        counters = self.workers.counters()
        spans = counters["getconfig_spans"]
        firsts = sorted(t for t in done["synced"] if t is not None)
        stables = sorted(t for t in done["stable"] if t is not None)
        f = self.figures
        key = f"restart_{name}"
        f[f"{key}_jitter_s"] = jitter
        f[f"{key}_all_synced_s"] = (firsts[-1] - up) if len(firsts) == n else float("nan")
        f[f"{key}_median_synced_s"] = firsts[len(firsts) // 2] - up if firsts else float("nan")
        f[f"{key}_all_stable_s"] = (stables[-1] - up) if len(stables) == n else float("nan")
        f[f"{key}_synced_branches"] = len(firsts)
        f[f"{key}_peak_getconfig"] = in_flight_peak(spans)
        f[f"{key}_busiest_second_getconfig"] = busiest_second(spans)
        f[f"{key}_getconfig_max_s"] = max((end - start for start, end in spans), default=0.0)
        f[f"{key}_getconfigs"] = len(spans)
        f[f"{key}_central_peak_cpu"] = self.sampler.peak("central", t0, t1)
        f[f"{key}_central_peak_cpu_5s"] = self.sampler.peak("central", t0, t1, window=5.0)
        f[f"{key}_central_cpu_s"] = self.sampler.total("central", t0, t1)
        f[f"{key}_branches_peak_cpu_5s"] = self.sampler.peak("worker", t0, t1, window=5.0)
        f[f"{key}_central_failed_cycles"] = done["central_failed"]
        f[f"{key}_getconfig_errors"] = counters["errors"].get("GetConfig", 0)
        f[f"{key}_late_probe_rounds"] = done["late_probes"]
        f[f"{key}_failed_again_branches"] = done["failed_again"]
        say(f"[N={n}] restart {name}: all Stable {f[f'{key}_all_stable_s']:.1f} s, all Synced "
            f"{f[f'{key}_all_synced_s']:.1f} s after the central's boot; peak "
            f"{f[f'{key}_peak_getconfig']} GetConfig in flight, central "
            f"{f[f'{key}_central_peak_cpu_5s']:.2f} cores over the busiest 5 s; "
            f"{done['central_failed']} cycles failed by the central; cycles {done['cycles']}, "
            f"why {done['whys']}")  # fmt: skip

    def close(self) -> None:
        self.workers.close()


# -- report -------------------------------------------------------------------------------------


def bytes_of(counters: dict[str, Any], action: str) -> float:
    """Bytes both ways of `action` ("GetConfig": of every file)."""
    total = 0.0
    for direction in ("bytes_in", "bytes_out"):
        for key, value in counters[direction].items():
            if key == action or key.startswith(action + " "):
                total += value
    return total


def ratio(after: float, before: float) -> str:
    if not before or before != before or after != after:
        return "-"
    return f"{after / before:.2f}x"


def report(results: dict[int, dict[str, Any]], opts: argparse.Namespace) -> None:
    for n, f in results.items():
        for name, value in f.items():
            if isinstance(value, int | float):
                figure(f"fleet_n{n}_{name}", value)
    ns = list(results)

    def row(label: str, values: list[str]) -> str:
        return f"# {label:<44}" + "".join(f"{v:>16}" for v in values)

    out = [row("steady state, per hour of real time", [f"N={n}" for n in ns])]
    for label, key, scale, unit in (
        ("central CPU s/h: probes + contacts", "hour_central_cpu_s_probes", 1, ""),
        ("  probes From the branch's account", "hour_central_cpu_s_account", 1, ""),
        ("  and the sync sessions held open", "hour_central_cpu_s_held", 1, ""),
        ("central CPU s/h: sync", "hour_central_cpu_s_sync", 1, ""),
        ("central CPU s/h: total", "hour_central_cpu_s", 1, ""),
        ("  of one core", "hour_central_cpu_s", 100 / 3600, "%"),
        ("  before (account, sessions held)", "hour_central_cpu_s_before", 1, ""),
        ("    of one core", "hour_central_cpu_s_before", 100 / 3600, "%"),
        ("AMI MB/h (probes + contacts)", "hour_bytes_probes", 1e-6, ""),
        ("AMI MB/h (sync)", "hour_bytes_sync", 1e-6, ""),
        ("AMI MB/h (total)", "hour_bytes", 1e-6, ""),
        ("central CPU per full fetch (ms)", "full_central_cpu_s", 1e3, ""),
        ("bytes per full fetch (MB)", "full_bytes", 1e-6, ""),
        ("  of which pjsip.aor.conf + auth (MB)", "full_bytes_aor_auth", 1e-6, ""),
        ("central CPU per cheap cycle (µs)", "cheap_central_cpu_s", 1e6, ""),
        ("12 cheap cycles/h/branch: from that, s/h", "hour_cheap_cpu_s", 1, ""),
        ("  the same, time-compressed window, s/h", "compressed_sync_cpu_s_per_hour", 1, ""),
        ("bytes per cheap cycle", "cheap_bytes", 1, ""),
    ):
        out.append(row(label, [f"{results[n][key] * scale:.1f}{unit}" for n in ns]))
    per_branch = [results[n]["hour_central_cpu_s"] / n for n in ns]
    out.append(row("central CPU s/h per branch", [f"{v:.2f}" for v in per_branch]))
    out.append(row("cold start: first syncs spread over (s)",
                   [f"{results[n]['cold_spread_s']:.0f}" for n in ns]))  # fmt: skip
    out.append(row("  every branch Synced after (s)",
                   [f"{results[n]['cold_all_synced_s']:.1f}" for n in ns]))  # fmt: skip
    out.append(row("  GetConfig in flight at once (peak)",
                   [f"{results[n]['cold_peak_getconfig']:.0f}" for n in ns]))  # fmt: skip
    out.append(row("branch worker processes", [f"{results[n]['workers']}" for n in ns]))
    out.append("#")
    jitters = [f"j{j:g}" for j in opts.jitters]
    out.append(row("after a central restart (jitter, s)",
                   [f"N={n} {j}" for n in ns for j in jitters]))  # fmt: skip
    for label, key, fmt in (
        ("time from boot to every branch Synced (s)", "all_synced_s", "{:.1f}"),
        ("  median branch Synced (s)", "median_synced_s", "{:.1f}"),
        ("  every branch Stable (s)", "all_stable_s", "{:.1f}"),
        ("GetConfig in flight at once (peak)", "peak_getconfig", "{:.0f}"),
        ("GetConfig started in the busiest second", "busiest_second_getconfig", "{:.0f}"),
        ("slowest GetConfig (s)", "getconfig_max_s", "{:.2f}"),
        ("central peak CPU, 100 ms (cores)", "central_peak_cpu", "{:.2f}"),
        ("central CPU, busiest 5 s (cores)", "central_peak_cpu_5s", "{:.2f}"),
        ("central CPU s until all Synced", "central_cpu_s", "{:.1f}"),
        ("cycles failed by the central (timeouts)", "central_failed_cycles", "{:.0f}"),
        ("probe rounds in error once Stable again", "late_probe_rounds", "{:.0f}"),
        ("branches Failed again after the return", "failed_again_branches", "{:.0f}"),
        ("GetConfig requests until all Synced", "getconfigs", "{:.0f}"),
        ("branch processes, busiest 5 s (cores)", "branches_peak_cpu_5s", "{:.2f}"),
    ):
        values = []
        for n in ns:
            before = results[n][f"restart_{jitters[0]}_{key}"]
            values.append(fmt.format(before))
            for j in jitters[1:]:
                after = results[n][f"restart_{j}_{key}"]
                values.append(f"{fmt.format(after)} ({ratio(after, before)})")
        out.append(row(label, values))
    print("\n".join(out), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branches", default="50,200,500", help="comma list of N")
    parser.add_argument("--extensions", type=int, default=SITES * PER_SITE)
    parser.add_argument("--window", type=float, default=120.0, help="measured seconds per window")
    parser.add_argument("--fulls", type=int, default=30, help="full fetches measured one by one")
    parser.add_argument("--cheap", type=int, default=2000, help="cheap cycles measured in a row")
    parser.add_argument("--cold-spread", type=float, default=120.0,
                        help="the branches' first syncs at random moments within this (s)")
    parser.add_argument("--compressed-interval", type=float, default=30.0)
    parser.add_argument("--jitters", default=f"0,{DEFAULT_JITTER:g}",
                        help="syncmanager.jitter values compared after a restart, the first the "
                        "reference (before)")  # fmt: skip
    parser.add_argument("--restart-timeout", type=float, default=900.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0,
                        help="worker processes for the branches (0: one per 100, 1 to 4)")
    parser.add_argument("--quick", action="store_true", help="short windows (a try)")
    opts = parser.parse_args()
    if opts.quick:
        opts.window, opts.fulls, opts.cheap, opts.cold_spread = 15.0, 5, 300, 10.0
    ns = [int(x) for x in opts.branches.split(",") if x]
    opts.jitters = [float(x) for x in opts.jitters.split(",") if x]
    if any(not 1 <= n <= SITES for n in ns):
        parser.error(f"--branches: each N from 1 to {SITES}")

    from lab.asterisk import new_instance
    from lab.samples import freepbx_pjsip

    workdir = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    started = time.monotonic()
    configs = freepbx_pjsip(central_sites(opts.extensions))
    configs["pjsip.endpoint.conf"] += PROBE_ENDPOINT
    central = new_instance("fleet-central", configs=configs)
    worker_pids: list[int] = []
    sampler = CpuSampler(
        lambda: {"central": [central.pid] if central.pid else [], "worker": list(worker_pids)}
    )
    results: dict[int, dict[str, Any]] = {}
    try:
        say(f"starting a central with {opts.extensions} extensions ...")
        central.start(timeout=300)
        say(f"central booted in {central.boot_seconds:.1f} s")
        sampler.start()
        for n in ns:
            run = Run(n, opts, central, sampler, workdir, worker_pids)
            try:
                results[n] = run.run()
            finally:
                run.close()
                worker_pids.clear()
    finally:
        sampler.done.set()
        central.remove()
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, opts)
    figure("fleet_central_boot_s", central.boot_seconds or 0.0)
    figure("fleet_bench_seconds", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
