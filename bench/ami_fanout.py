"""What an idle AMI session costs a central: Asterisk wakes every manager session for each event.

    sudo nice -n 19 .venv/bin/python -m bench.ami_fanout [--senders 200] [--window 40]

A lab central (Asterisk 22, 10,000 FreePBX PJSIP extensions as in bench/fleet.py, plus
`synch-probe`, an endpoint without authentication) receives `--senders` SIP OPTIONS probes
every 5 s (synch's own probe, `synch.sip.client.options_probe`: 200 senders are 40 a second, the
SIP probes of 200 branches), while a number of AMI sessions sit logged in and idle (`Events:
off`, as synch's). Each row is the central's CPU (utime + stime of /proc/PID/stat, in cores)
over `--window` s:

- the probes From an account that authenticates (as synch's default `sipuser`, the first
  synced account): each OPTIONS is challenged, a security event, and Asterisk wakes every AMI
  session for it: the cost grows with sessions x events;
- the probes From `synch-probe`: not challenged, no event: the sessions cost nothing.

The senders and the sessions run in a gevent child process (`--child`), the central here.
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and "--child" in sys.argv:
    from gevent import monkey

    monkey.patch_all()

import argparse
import random
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PERIOD = 5.0  # seconds between two probes of one sender (probemonitor.interval)


def child(opts: argparse.Namespace) -> int:
    """Log `sessions` AMI sessions in, say "ready", then on "go" run the senders for the
    window and say "done"."""
    import gevent

    from synch.ami.client import AmiClient
    from synch.sip.client import options_probe

    clients = []
    for _ in range(opts.sessions):
        client = AmiClient(opts.host, opts.ami_port, opts.user, opts.secret, timeout=10)
        client.ping()
        clients.append(client)
    print("ready", flush=True)
    sys.stdin.readline()
    stop = time.monotonic() + opts.window

    def sender(index: int) -> None:
        user = opts.probe_user or str(100000 + 100 * index)  # an account of bench/fleet.py
        gevent.sleep(random.uniform(0, PERIOD))
        while time.monotonic() < stop:
            options_probe("udp", opts.host, opts.sip_port, timeout=4, user=user)
            gevent.sleep(PERIOD)

    gevent.joinall([gevent.spawn(sender, i) for i in range(opts.senders)])
    print("done", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--window", type=float, default=40.0)
    # The child's (the central's address and AMI login, how many sessions, the probe's user).
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name, kind in (("--host", str), ("--ami-port", int), ("--sip-port", int),
                       ("--user", str), ("--secret", str), ("--sessions", int),
                       ("--probe-user", str)):  # fmt: skip
        parser.add_argument(name, type=kind, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        return child(opts)

    from bench.fleet import CLK_TCK, PROBE_ENDPOINT, PROBE_USER, central_sites, cpu_ticks
    from lab.asterisk import new_instance
    from lab.samples import freepbx_pjsip

    configs = freepbx_pjsip(central_sites(10000))
    configs["pjsip.endpoint.conf"] += PROBE_ENDPOINT
    central = new_instance("ami-fanout", configs=configs)
    n = opts.senders
    rows = []
    try:
        central.start(timeout=300)
        for sessions, user in ((0, ""), (n, ""), (2 * n, ""), (n, PROBE_USER)):
            argv = [sys.executable, "-m", "bench.ami_fanout", "--child",
                    "--host", central.sip_host, "--ami-port", str(central.ami_port),
                    "--sip-port", str(central.sip_port), "--user", central.ami_user,
                    "--secret", central.ami_secret, "--sessions", str(sessions),
                    "--probe-user", user, "--senders", str(n),
                    "--window", str(opts.window)]  # fmt: skip
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    text=True, cwd=ROOT)  # fmt: skip
            assert proc.stdin and proc.stdout
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("the child did not log its sessions in")
            time.sleep(2)
            pid = central.pid
            assert pid is not None
            c0, t0 = cpu_ticks(pid), time.monotonic()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            proc.stdout.readline()
            c1, t1 = cpu_ticks(pid), time.monotonic()
            proc.stdin.close()
            proc.wait()
            assert c0 is not None and c1 is not None
            cores = (c1 - c0) / CLK_TCK / (t1 - t0)
            rows.append((sessions, user or "the branch's account", cores))
            print(f"ami_fanout_sessions_{sessions}_{'noauth' if user else 'account'}_cores="
                  f"{cores:.4g}", flush=True)  # fmt: skip
            time.sleep(2)
    finally:
        central.remove()
    base = rows[1][2]
    print(f"# {n} SIP probes every {PERIOD:g} s ({n / PERIOD:g} a second) at a central:")
    for sessions, user, cores in rows:
        print(f"#   {sessions:>4} idle AMI sessions, probes From {user:<22} {cores:.3f} cores "
              f"({cores / base:.2f}x)")  # fmt: skip
    per_wakeup = (rows[2][2] - rows[0][2]) / (2 * n * n / PERIOD)
    print(f"# central CPU per session woken per event: {per_wakeup * 1e6:.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
