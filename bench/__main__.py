"""All benchmarks in one run: `make bench` (= `python -m bench`, as root: it starts the lab).

Prints one `name=value` line per figure on stdout (progress and context on stderr):

- dns_*: `synch run`'s DNS against dnsmasq answering the same names, measured side by side in
  the same run (alternating, `--rounds` each): `A sip.<domain>` and an in-zone NXDOMAIN.
  `*_ratio` = synch / dnsmasq queries per second; p50/p99 from a paced run below saturation.
  `dns_replies_correct` checks ID, flags and EDNS of fast-path replies against the full path.
- flood_*: a `--flood-qps` flood (the SIP name, random in-zone names and outside names, which are
  forwarded or refused by the rate limit) for `--flood-seconds`: how late the probes ran (from
  the AMI Ping times seen by a relay) and how the status socket answered meanwhile.
- idle_*: CPU share of one core and RSS over `--idle-seconds`; startup_*: `synch run` until
  the SIP name resolves.
- status_*: 50 slow clients holding connections and a 200-client burst on the status socket.
- ami_*: bench/bench_ami.py (GetConfig of a large file: synch.ami vs pyst2 vs a bare socket).
- sync_*: bench/bench_sync.py (a full sync cycle at `--sync-extensions` extensions against a
  bare-socket GetConfig of the same files, the unchanged cycle, peak RSS).
- bench/failover_figures.py, when present, runs last and prints its own lines.
- real_phone_*: the real SIP phones (baresip, linphonec at their default timers) of
  tests/e2e/test_real_phones.py on the namespace bed: a WAN cut, a call across the restore, the
  restore; the test run prints the same figures (about 3 minutes).
- fleet_*: not run by default (`--only fleet`, about 4 minutes): bench/fleet.py with
  `--fleet-branches` branches (20) and short windows; the N=50/200/500 figures
  come from `python -m bench.fleet` (README "Running many branches" says how, and how long).

    python -m bench                       # everything, about 4-5 minutes
    python -m bench --only dns --rounds 3 --dns-seconds 15
    python -m bench --flood-seconds 300 --idle-seconds 600   # longer runs
"""

from __future__ import annotations

import argparse
import json
import math
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import dnsload  # noqa: E402
from bench.synchlab import SynchLab  # noqa: E402
from lab.dnsmasq import Dnsmasq  # noqa: E402
from lab.synchproc import SynchProcess, cpu_seconds, rss_mb  # noqa: E402

SECTIONS = ("startup", "idle", "dns", "flood", "status", "ami", "sync", "figures", "phones")
EXTRA_SECTIONS = ("fleet",)  # run only when asked for with --only
DOMAIN = "example.local"
SIP = f"sip.{DOMAIN}"
NXNAME = f"nothing-here.{DOMAIN}"

# The contract's bounds (bench figures are reported, and these marked pass/FAIL).
TARGET_RATIO = 0.75
TARGET_LATENESS = 0.5
TARGET_IDLE_CPU = 1.0
TARGET_RSS = 45.0
TARGET_STARTUP = 1.5


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def figure(self, name: str, value: object, note: str = "") -> None:
        if isinstance(value, float):
            value = f"{value:.4g}" if not math.isnan(value) else "nan"
        print(f"{name}={value}", flush=True)
        if note:
            say(f"  {name}: {note}")

    def check(self, name: str, ok: bool, what: str) -> None:
        self.figure(name, "pass" if ok else "FAIL", what)
        if not ok:
            self.failures.append(f"{name}: {what}")


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- reference server ------------------------------------------------------------------------


def reference_dnsmasq(target: str) -> Dnsmasq:
    """dnsmasq answering the same names as synch's zone: the SIP name, NXDOMAIN for the rest."""
    server = Dnsmasq(records={SIP: target}, ttl=5, log_queries=False)
    server.start()
    return server


# -- small clients ---------------------------------------------------------------------------


def wait_for(check: Callable[[], object], timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.01)
    raise RuntimeError(f"{what} not ready after {timeout} s")


def ask_udp(port: int, query: DNSRecord | bytes, timeout: float = 0.5) -> bytes | None:
    data = bytes(query.pack()) if isinstance(query, DNSRecord) else query
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, ("127.0.0.1", port))
        try:
            reply, _ = sock.recvfrom(65535)
        except OSError:
            return None
    return reply


def variant(name: str, rd: bool, cd: bool, edns: bool, qid: int) -> bytes:
    query = DNSRecord.question(name, "A")
    query.header.id, query.header.rd, query.header.cd = qid, int(rd), int(cd)
    if edns:
        query.add_ar(EDNS0(udp_len=1232, flags="do"))
    return bytes(query.pack())


def check_replies(port: int, target: str) -> tuple[bool, str]:
    """Fast-path replies match the full path's byte for byte (bar the ID) and echo ID, RD, CD
    and EDNS. Fresh letter cases make sure the first query of each goes the full path."""
    problems = []
    for edns in (False, True):
        for name in (SIP, NXNAME):
            cased = "".join(random.choice((c.lower(), c.upper())) for c in name)
            first = ask_udp(port, variant(cased, True, False, edns, 1))
            for rd, cd in ((True, False), (False, True), (False, False), (True, True)):
                qid = random.randrange(2, 65536)
                reply = ask_udp(port, variant(cased, rd, cd, edns, qid))
                if first is None or reply is None:
                    problems.append(f"{cased}: no reply")
                    continue
                parsed = DNSRecord.parse(reply)
                header = parsed.header
                has_opt = any(rr.rtype == QTYPE.OPT for rr in parsed.ar)
                expected_rcode = RCODE.NOERROR if name == SIP else RCODE.NXDOMAIN
                answer = [str(rr.rdata) for rr in parsed.rr]
                ok = (
                    header.id == qid and header.qr == 1 and header.aa == 1
                    and header.rd == int(rd) and header.cd == int(cd)
                    and has_opt == edns and header.rcode == expected_rcode
                    and str(parsed.q.qname).rstrip(".") == cased
                    and (answer == [target] if name == SIP else answer == [])
                )  # fmt: skip
                # The full path's reply (ID 1, RD set, CD clear) bar ID, RD and CD.
                same = (
                    reply[4:] == first[4:]
                    and reply[2] & 0xFE == first[2] & 0xFE
                    and reply[3] & 0xEF == first[3] & 0xEF
                )
                if not ok:
                    problems.append(f"{cased} rd={rd} cd={cd} edns={edns}: {parsed.header}")
                elif not same:
                    problems.append(f"{cased} edns={edns}: differs from the full path's reply")
    return not problems, "; ".join(problems[:3])


# -- sections --------------------------------------------------------------------------------


def run_dns(lab: SynchLab, opts: argparse.Namespace, report: Report) -> None:
    assert lab.synch is not None
    target = lab.synch.config["dnsservice"]["targetfailover"]
    status = lab.synch.status()
    if status["Service"] == "Normal":
        target = lab.synch.config["dnsservice"]["targetnormal"]
    ref = reference_dnsmasq(target)
    try:
        ok, why = check_replies(lab.synch.dns_port, target)
        report.check("dns_replies_correct", ok, why or "ID, RD/CD, EDNS echoed; = full path")
        if dnsload.DNSPERF is None:
            say("dnsperf is not installed (apt-get install dnsperf): using the Python load "
                "generator, which measures itself as much as the servers")  # fmt: skip
        report.figure("dns_load_tool", "dnsperf" if dnsload.DNSPERF else "python")
        for label, name in (("a", SIP), ("nxdomain", NXNAME)):
            results: dict[str, list[dnsload.LoadResult]] = {"synch": [], "dnsmasq": []}
            paced: dict[str, list[dnsload.LoadResult]] = {"synch": [], "dnsmasq": []}
            ports = {"synch": lab.synch.dns_port, "dnsmasq": ref.port}
            for round_no in range(opts.rounds):
                order = ("dnsmasq", "synch") if round_no % 2 == 0 else ("synch", "dnsmasq")
                for server in order:
                    full, slow = dnsload.measure(
                        ports[server], [(name, "A")], lab.workdir, opts.dns_seconds
                    )
                    results[server].append(full)
                    paced[server].append(slow)
                    say(f"  {label} {server}: {full.qps:,.0f} q/s, lost {full.lost}")
            qps = {s: statistics.mean(r.qps for r in results[s]) for s in results}
            for server in ("synch", "dnsmasq"):
                lat = [x for r in paced[server] for x in r.latencies_ms]
                merged = dnsload.LoadResult(0, 0, 0, 0, 0, lat)
                report.figure(f"dns_{label}_qps_{server}", qps[server])
                report.figure(f"dns_{label}_p50_ms_{server}", merged.percentile(50))
                report.figure(f"dns_{label}_p99_ms_{server}", merged.percentile(99))
                report.figure(
                    f"dns_{label}_avg_ms_full_speed_{server}",
                    statistics.mean(r.avg_ms for r in results[server]),
                )
            ratio = qps["synch"] / qps["dnsmasq"] if qps["dnsmasq"] else float("nan")
            report.figure(f"dns_{label}_ratio", ratio)
            what = f"synch {ratio:.0%} of dnsmasq (target >= {TARGET_RATIO:.0%})"
            report.check(f"dns_{label}_ratio_target", ratio >= TARGET_RATIO, what)
    finally:
        ref.stop()


def status_poller(synch: SynchProcess, stop: threading.Event, out: dict[str, Any]) -> None:
    worst, failures, count = 0.0, 0, 0
    while not stop.wait(0.25):
        start = time.monotonic()
        try:
            ok = synch.ask(f"GetStatus({synch.token})", timeout=5).startswith("[{")
        except OSError:
            ok = False
        worst = max(worst, time.monotonic() - start)
        failures += not ok
        count += 1
    out.update(worst=worst, failures=failures, count=count)


def run_flood(lab: SynchLab, opts: argparse.Namespace, report: Report) -> None:
    assert lab.synch is not None and lab.clock is not None
    interval = lab.synch.config["probemonitor"]["interval"]
    port = lab.synch.dns_port
    rng = random.Random(1)
    lines = []
    for n in range(20000):
        pick = n % 4
        if pick < 2:
            lines.append(f"{SIP} A")
        elif pick == 2:
            lines.append(f"h{rng.randrange(10**9)}.{DOMAIN} A")  # in zone, full path
        else:
            lines.append(f"h{rng.randrange(10**9)}.example.org A")  # forwarded / rate limited
    baseline_end = time.monotonic()
    base_late, base_n = lab.clock.lateness(baseline_end - 30, baseline_end, interval)
    poll: dict[str, Any] = {}
    stop = threading.Event()
    poller = threading.Thread(target=status_poller, args=(lab.synch, stop, poll))
    poller.start()
    start = time.monotonic()
    cpu0 = cpu_seconds(lab.pid)
    proc = dnsload.flood(port, lines, lab.workdir, opts.flood_seconds, opts.flood_qps)
    if proc is not None:
        out, _ = proc.communicate(timeout=opts.flood_seconds + 60)
    else:
        names = [(line.split()[0], "A") for line in lines]
        dnsload.pyload(port, names, opts.flood_seconds, max_qps=opts.flood_qps)
        out = ""
    end = time.monotonic()
    cpu = (cpu_seconds(lab.pid) - cpu0) / (end - start) * 100
    stop.set()
    poller.join()
    late, pings = lab.clock.lateness(start, end, interval)
    alive = lab.synch.running
    completed = next((ln.split()[2] for ln in out.splitlines() if "Queries completed" in ln), "")
    report.figure("flood_qps_offered", opts.flood_qps)
    report.figure("flood_seconds", opts.flood_seconds)
    report.figure("flood_queries_completed", completed or "n/a")
    report.figure("flood_synch_cpu_percent", cpu)
    report.figure("flood_probe_interval_s", float(interval))
    report.figure("flood_probes_seen", pings)
    report.figure("flood_probe_worst_lateness_s", late)
    report.figure("baseline_probe_worst_lateness_s", base_late, f"{base_n} pings before flood")
    report.figure("flood_status_worst_s", poll.get("worst", float("nan")))
    report.figure("flood_status_failures", poll.get("failures", -1))
    report.check(
        "flood_probe_target",
        alive and pings >= 2 and late <= TARGET_LATENESS and poll.get("failures") == 0,
        f"worst probe lateness {late:.3f} s (target <= {TARGET_LATENESS}), "
        f"{poll.get('count')} status requests, {poll.get('failures')} failed",
    )


def run_idle(lab: SynchLab, opts: argparse.Namespace, report: Report) -> None:
    assert lab.synch is not None
    pid = lab.pid
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(opts.idle_seconds)  # measuring idleness: nothing to poll for
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0) * 100
    rss = rss_mb(pid)
    report.figure("idle_seconds", float(opts.idle_seconds))
    report.figure("idle_cpu_percent", cpu)
    report.figure("idle_rss_mb", rss)
    report.check("idle_target", cpu < TARGET_IDLE_CPU and rss < TARGET_RSS,
                 f"CPU {cpu:.2f}% of a core (< {TARGET_IDLE_CPU}), RSS {rss:.1f} MB "
                 f"(< {TARGET_RSS}) with probes every "
                 f"{lab.synch.config['probemonitor']['interval']} s")  # fmt: skip


def run_status(lab: SynchLab, opts: argparse.Namespace, report: Report) -> None:
    assert lab.synch is not None
    synch = lab.synch
    port = lab.synch.config["servicecontrol"]["port"]
    rss_before = rss_mb(lab.pid)
    slow = []
    for _ in range(opts.slow_clients):  # connected, half a request, then silence
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GetSta")
        slow.append(sock)
    answers: list[tuple[bool, float]] = []
    lock = threading.Lock()
    go = threading.Event()

    def client() -> None:
        go.wait()
        start = time.monotonic()
        try:
            ok = synch.ask(f"GetStatus({synch.token})", timeout=10).startswith("[{")
        except OSError:
            ok = False
        with lock:
            answers.append((ok, time.monotonic() - start))

    threads = [threading.Thread(target=client) for _ in range(opts.burst_clients)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join()
    rss_peak = rss_mb(lab.pid)
    for sock in slow:
        sock.close()
    good = sum(ok for ok, _ in answers)
    worst = max((t for _, t in answers), default=float("nan"))
    report.figure("status_slow_clients", opts.slow_clients)
    report.figure("status_burst_clients", opts.burst_clients)
    report.figure("status_burst_answered", good)
    report.figure("status_burst_worst_s", worst)
    report.figure("status_rss_mb_before", rss_before)
    report.figure("status_rss_mb_after_burst", rss_peak)
    report.check("status_target", good == opts.burst_clients and rss_peak < TARGET_RSS + 10,
                 f"{good}/{opts.burst_clients} answered, RSS {rss_peak:.1f} MB")  # fmt: skip


def run_ami(opts: argparse.Namespace, report: Report) -> None:
    argv = [sys.executable, str(ROOT / "bench" / "bench_ami.py"), "--peers", str(opts.peers)]
    argv += ["--rounds", str(opts.ami_rounds)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    if out.returncode != 0:
        report.check("ami_bench", False, f"bench_ami.py failed: {out.stderr[-1000:]}")
        return
    say(out.stderr.rstrip())
    results = json.loads(out.stdout.strip().splitlines()[-1])
    for label in ("full", "filtered"):
        row = results[label]
        for reader in ("socket", "synch", "pyst2"):
            report.figure(f"ami_{label}_{reader}_s", row[reader]["best"])
        report.figure(f"ami_{label}_synch_vs_socket", row["synch"]["best"] / row["socket"]["best"])
        report.figure(f"ami_{label}_pyst2_vs_synch", row["pyst2"]["best"] / row["synch"]["best"])


def run_sync(opts: argparse.Namespace, report: Report) -> None:
    argv = [sys.executable, str(ROOT / "bench" / "bench_sync.py")]
    argv += ["--extensions", str(opts.sync_extensions), "--rounds", str(opts.sync_rounds)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    say(out.stderr.rstrip())
    figures = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    if not figures:
        report.check("sync_bench", False, f"bench_sync.py failed: {out.stderr[-1000:]}")
        return
    f = figures.get
    notes = {
        "sync_ratio_target": f"full cycle {f('sync_full_s')} s = {f('sync_full_vs_reference')}x "
        f"a bare-socket GetConfig of the same files ({f('sync_reference_s')} s; target <= 1.5)",
        "sync_unchanged_target": f"unchanged cycle {f('sync_unchanged_s')} s (target < 0.005)",
        "sync_rss_target": f"peak RSS {f('sync_peak_rss_mb')} MB (target < 80)",
    }
    for name, value in figures.items():
        if name.endswith("_target"):
            report.check(name, value == "pass", notes.get(name, ""))
        else:
            report.figure(name, value)


def run_fleet(opts: argparse.Namespace, report: Report) -> None:
    argv = [sys.executable, "-m", "bench.fleet", "--branches", str(opts.fleet_branches), "--quick"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False,
                         cwd=ROOT)  # fmt: skip
    say(out.stderr.rstrip())
    if out.returncode != 0:
        report.check("fleet_bench", False, f"bench/fleet.py failed: {out.stderr[-1000:]}")
        return
    for line in out.stdout.splitlines():
        if line.startswith("#"):
            say(line)
        elif "=" in line:
            name, value = line.split("=", 1)
            report.figure(name, value)


def run_figures(report: Report) -> None:
    script = ROOT / "bench" / "failover_figures.py"
    if not script.exists():
        say("bench/failover_figures.py not present: skipped")
        return
    out = subprocess.run([sys.executable, str(script)], text=True, timeout=1200, check=False)
    if out.returncode != 0:
        report.failures.append(f"failover_figures.py exited {out.returncode}")


def run_phones(report: Report) -> None:
    """The real-phone figures: the e2e module writes them to a file, printed here as ours."""
    with tempfile.TemporaryDirectory(prefix="synch-bench-phones-") as tmp:
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp}",
             str(ROOT / "tests" / "e2e" / "test_real_phones.py")],
            cwd=ROOT, text=True, capture_output=True, timeout=1800, check=False,
        )  # fmt: skip
        found = sorted(Path(tmp).glob("*/real-phones-figures.txt"))
        if out.returncode != 0 or not found:
            report.failures.append(f"real phones: pytest exited {out.returncode}")
            say(out.stdout[-3000:])
            return
        for line in found[0].read_text().splitlines():
            name, _, value = line.partition("=")
            report.figure(name, value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma list of " +
                        ", ".join(SECTIONS + EXTRA_SECTIONS))  # fmt: skip
    parser.add_argument("--skip", default="", help="comma list of sections to leave out")
    parser.add_argument("--rounds", type=int, default=2, help="DNS rounds per server")
    parser.add_argument("--dns-seconds", type=float, default=8.0)
    parser.add_argument("--flood-seconds", type=float, default=30.0)
    parser.add_argument("--flood-qps", type=int, default=10000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--slow-clients", type=int, default=50)
    parser.add_argument("--burst-clients", type=int, default=200)
    parser.add_argument("--peers", type=int, default=10000, help="bench_ami.py --peers")
    parser.add_argument("--ami-rounds", type=int, default=3, help="bench_ami.py --rounds")
    parser.add_argument("--sync-extensions", type=int, default=10000,
                        help="bench_sync.py --extensions")  # fmt: skip
    parser.add_argument("--sync-rounds", type=int, default=3, help="bench_sync.py --rounds")
    parser.add_argument("--fleet-branches", type=int, default=20, help="bench/fleet.py --branches")
    opts = parser.parse_args()
    wanted = [s for s in opts.only.split(",") if s and s not in opts.skip.split(",")]
    unknown = set(wanted) - set(SECTIONS + EXTRA_SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; known: {SECTIONS}")
    report = Report()
    started = time.monotonic()
    needs_synch = {"startup", "idle", "dns", "flood", "status"} & set(wanted)
    lab = SynchLab()
    try:
        if needs_synch:
            say("starting the lab (Asterisk, dnsmasq) ...")
            lab.start_lab()
            synch = lab.start_synch()
            probe = DNSRecord.question(SIP)
            ready = wait_for(lambda: ask_udp(synch.dns_port, probe, 0.05), 15, "synch DNS")
            report.figure("startup_to_dns_ready_s", ready)
            if "startup" in wanted:
                report.check("startup_target", ready < TARGET_STARTUP,
                             f"{ready:.3f} s from exec to the SIP name resolving "
                             f"(target < {TARGET_STARTUP})")  # fmt: skip
            wait_for(lambda: synch.status()["Monitor"] == "Stable", 30, "Monitor Stable")
            wait_for(lambda: synch.status()["Sync"] == "Synced", 30, "Sync Synced")
            report.figure("startup_rss_mb", rss_mb(lab.pid))
        for section, run in (
            ("idle", lambda: run_idle(lab, opts, report)),
            ("dns", lambda: run_dns(lab, opts, report)),
            ("flood", lambda: run_flood(lab, opts, report)),
            ("status", lambda: run_status(lab, opts, report)),
        ):
            if section in wanted:
                say(f"[{section}]")
                run()
    finally:
        lab.stop()
    if "ami" in wanted:
        say("[ami]")
        run_ami(opts, report)
    if "sync" in wanted:
        say("[sync]")
        run_sync(opts, report)
    if "figures" in wanted:
        run_figures(report)
    if "phones" in wanted:
        run_phones(report)
    if "fleet" in wanted:
        say("[fleet]")
        run_fleet(opts, report)
    report.figure("bench_seconds", time.monotonic() - started)
    for failure in report.failures:
        say(f"FAIL {failure}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
