"""The sync cycle at 10,000 extensions: SyncJob vs a bare-socket GetConfig of the same files.

    .venv/bin/python bench/bench_sync.py                     # starts two lab Asterisks (root)
    .venv/bin/python bench/bench_sync.py --extensions 10000 --rounds 5 --profile 30

A lab central serves FreePBX-style pjsip.{endpoint,aor,auth}.conf for --extensions
extensions over --sites sites (accountcode Site0 = HeadOffice, ...); the filter
`accountcode=^HeadOffice$` selects one site. A lab branch answers the reloads, and its own
config dir is the synced one (its pjsip.conf includes pjsip_synch.conf), so the first sync
really loads the accounts there.

The job runs in a monkey-patched worker subprocess, as in the daemon, with one long-lived
SyncJob and AMI sessions (this process stays unpatched and drives it over a pipe). Figures,
best of --rounds (one `name=value` per line on stdout, context on stderr):

- sync_first_s: `run(full=True)` into an empty directory (fetch, parse, filter, render,
  git init, write, commit, reload of res_pjsip on the branch).
- sync_full_s: `run(full=True)` with nothing changed (CoreStatus, three GetConfig, parse,
  filter, render, compare). sync_full_cpu_s: the worker's CPU time for it.
- sync_reference_s: the bare-socket reference: one logged-in plain socket sends the three
  GetConfig actions the job sends (the endpoint file with the Filter the job pushes, aor and
  auth whole), one after the other, each read in 256 KiB chunks until the blank line that ends
  its reply; nothing parsed. Login and connect are not included (the job's session is open).
- sync_full_vs_reference: the ratio (target <= 1.5).
- sync_unchanged_s: `run()` once the central's reload mark is confirmed: one CoreStatus
  (target < 5 ms).
- sync_peak_rss_mb: the worker's peak RSS (ru_maxrss) over all of it (target < 80 MB).

--profile N prints the N most expensive functions (cumulative) of one full cycle to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 1.5
TARGET_UNCHANGED_S = 0.005
TARGET_RSS_MB = 80.0
FILES = ("pjsip.endpoint.conf", "pjsip.aor.conf", "pjsip.auth.conf")
SYNCED = "pjsip_synch.conf"
SITES = ("HeadOffice", "DevOps", "Support", "Sales", "Plant", "Remote", "Depot", "Lab")

# -- the worker (monkey-patched, like the daemon) -----------------------------------------------

WORKER = r"""
from gevent import monkey
monkey.patch_all()

import cProfile, io, json, pstats, resource, shutil, sys, time
from pathlib import Path

from synch.ami import core_status
from synch.ami.client import AmiClient
from synch.config import load_settings
from synch.sync.job import SyncJob

settings = load_settings(sys.argv[1])
ar, al = settings.amiremote, settings.amilocal
central = AmiClient(ar.hostname, ar.port, ar.username, ar.password, timeout=ar.timeout)
branch = AmiClient(al.hostname, al.port, al.username, al.password, timeout=al.timeout,
                   name="branch")
core_status(central)  # sessions open before anything is timed, as in a running daemon
core_status(branch)
job = SyncJob(settings, central, branch)
directory = Path(settings.syncmanager.localconfigspath)

def empty_directory():
    shutil.rmtree(directory / ".git", ignore_errors=True)
    for name in job.owned_files:
        (directory / name).unlink(missing_ok=True)

for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["do"] == "first":
        empty_directory()
    profiler = cProfile.Profile() if cmd.get("profile") else None
    cpu, start = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    outcome = job.run(full=cmd["do"] != "unchanged")
    if profiler:
        profiler.disable()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    reply = {"result": outcome.result, "reason": outcome.reason, "accounts": outcome.accounts,
             "wall": wall, "cpu": cpu,
             "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(cmd["profile"])
        reply["profile"] = out.getvalue()
    print(json.dumps(reply), flush=True)
"""


class Worker:
    """The patched worker process; `run(do)` is one `job.run` there."""

    def __init__(self, settings_path: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, str(settings_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip

    def run(self, do: str, profile: int = 0) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"do": do, "profile": profile}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the sync worker died (exit {self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the reference: a bare socket ---------------------------------------------------------------


class BareAmi:
    """A logged-in plain socket that sends actions and reads raw replies, nothing more."""

    def __init__(self, host: str, port: int, user: str, secret: str):
        self.sock = socket.create_connection((host, port), timeout=120)
        self.sock.recv(4096)  # the banner
        self._ids = 0
        self.request(f"Action: Login\r\nUsername: {user}\r\nSecret: {secret}\r\nEvents: off\r\n")

    def request(self, action: str) -> int:
        """Send `action` (its header lines) and read until the blank line ending its reply;
        the reply's size in bytes."""
        self._ids += 1
        self.sock.sendall(f"{action}ActionID: ref-{self._ids}\r\n\r\n".encode())
        data = bytearray()
        while True:
            chunk = self.sock.recv(262144)
            if not chunk:
                raise ConnectionError("the central closed the connection in mid-reply")
            seen = len(data)
            data += chunk
            if data.find(b"\r\n\r\n", max(seen - 3, 0)) >= 0:
                return len(data)

    def fetch(self, pushed: str | None) -> int:
        """The three GetConfig actions of a pjsip sync; bytes read."""
        total = 0
        for name in FILES:
            extra = f"Filter: {pushed}\r\n" if pushed and name == FILES[0] else ""
            total += self.request(f"Action: GetConfig\r\nFilename: {name}\r\n{extra}")
        return total

    def close(self) -> None:
        self.sock.close()


# -- setup --------------------------------------------------------------------------------------


def sites_for(extensions: int, sites: int) -> dict[str, list[int]]:
    """`extensions` extensions spread over `sites` sites, 100000 upwards."""
    names = SITES[:sites]
    out: dict[str, list[int]] = {name: [] for name in names}
    per_site = -(-extensions // sites)
    for n in range(extensions):
        site = n // per_site
        out[names[site]].append(100000 + 100000 * site + n % per_site)
    return out


def settings_file(central: Any, branch: Any, workdir: Path) -> Path:
    from lab.ports import free_port
    from lab.synchproc import lab_config_for

    config = lab_config_for(central, branch, branch.config_dir, [f"127.0.0.1:{free_port('both')}"])
    config["probemonitor"]["interval"] = 300
    config["amiremote"]["timeout"] = 300
    config["amilocal"]["timeout"] = 300
    # Never due for a periodic full check while the cheap cycle is measured.
    config["syncmanager"]["fullcheckevery"] = 1000
    path = workdir / "appsettings.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def figure(name: str, value: object) -> None:
    print(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}", flush=True)


def expect(reply: dict[str, Any], result: str, what: str) -> dict[str, Any]:
    if reply["result"] != result:
        raise RuntimeError(f"{what}: {reply['result']} ({reply['reason']}), expected {result}")
    return reply


def measure(opts: argparse.Namespace, central: Any, worker: Worker) -> dict[str, Any]:
    from synch.sync.filter import Selector, central_filter

    pushed = central_filter(Selector("accountcode", "^HeadOffice$"))
    bare = BareAmi(central.ami_host, central.ami_port, central.ami_user, central.ami_secret)
    try:
        first, full, ref, unchanged = [], [], [], []
        ref_bytes = 0
        for n in range(opts.rounds):
            start = time.perf_counter()
            ref_bytes = bare.fetch(pushed)
            ref.append(time.perf_counter() - start)
            first.append(expect(worker.run("first"), "applied", "first sync"))
            say(f"  round {n + 1}: reference {ref[-1]:.3f} s, first {first[-1]['wall']:.3f} s "
                f"(peak RSS so far {first[-1]['rss_mb']:.1f} MB)")  # fmt: skip
        time.sleep(1.1)  # the central's reload mark counts once seen a second earlier
        for n in range(opts.rounds):
            start = time.perf_counter()
            bare.fetch(pushed)
            ref.append(time.perf_counter() - start)
            full.append(expect(worker.run("full"), "unchanged", "unchanged full cycle"))
            row = full[-1]
            say(f"  round {n + 1}: reference {ref[-1]:.3f} s, full {row['wall']:.3f} s "
                f"(cpu {row['cpu']:.3f} s, peak RSS so far {row['rss_mb']:.1f} MB)")  # fmt: skip
        for _ in range(max(opts.rounds, 5)):
            unchanged.append(expect(worker.run("unchanged"), "skipped", "unchanged cycle"))
        profile = ""
        if opts.profile:
            profile = expect(worker.run("full", opts.profile), "unchanged", "profiled")["profile"]
        last = unchanged[-1]
    finally:
        bare.close()
    return {
        "accounts": first[0]["accounts"],
        "reference_bytes": ref_bytes,
        "first": min(r["wall"] for r in first),
        "full": min(r["wall"] for r in full),
        "full_cpu": min(r["cpu"] for r in full),
        "reference": min(ref),
        "unchanged": min(r["wall"] for r in unchanged),
        "rss_mb": last["rss_mb"],
        "profile": profile,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extensions", type=int, default=10000)
    parser.add_argument("--sites", type=int, default=4, choices=range(1, len(SITES) + 1))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N costliest functions of one full cycle")  # fmt: skip
    opts = parser.parse_args()

    from lab.asterisk import new_instance
    from lab.samples import freepbx_pjsip

    workdir = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    started = time.monotonic()
    central = new_instance(
        "bench-central", configs=freepbx_pjsip(sites_for(opts.extensions, opts.sites))
    )
    branch = new_instance("bench-branch")
    worker = None
    try:
        say(f"starting a central with {opts.extensions} extensions and a branch ...")
        central.start(timeout=300)
        branch.start()
        worker = Worker(settings_file(central, branch, workdir))
        results = measure(opts, central, worker)
    finally:
        if worker is not None:
            worker.close()
        for inst in (central, branch):
            inst.remove()
        shutil.rmtree(workdir, ignore_errors=True)
    if results["profile"]:
        say(results["profile"])
    ratio = results["full"] / results["reference"]
    figure("sync_extensions", opts.extensions)
    figure("sync_accounts", results["accounts"])
    figure("sync_reference_mb", results["reference_bytes"] / 1e6)
    figure("sync_reference_s", results["reference"])
    figure("sync_first_s", results["first"])
    figure("sync_full_s", results["full"])
    figure("sync_full_cpu_s", results["full_cpu"])
    figure("sync_full_vs_reference", ratio)
    figure("sync_unchanged_s", results["unchanged"])
    figure("sync_peak_rss_mb", results["rss_mb"])
    checks = {
        "sync_ratio_target": ratio <= TARGET_RATIO,
        "sync_unchanged_target": results["unchanged"] < TARGET_UNCHANGED_S,
        "sync_rss_target": results["rss_mb"] < TARGET_RSS_MB,
    }
    for name, ok in checks.items():
        figure(name, "pass" if ok else "FAIL")
    figure("sync_bench_seconds", time.monotonic() - started)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
