"""How long are the phones down? WAN cut and restore on the e2e bed, measured as the phones see it.

    .venv/bin/python bench/failover_figures.py                # as root: namespaces, lab chroot
    .venv/bin/python bench/failover_figures.py --rounds 3 --interval 5 --timeout 4 --recordttl 30

Builds lab/testbed.py's bed (central, branch with synch, three sipp phones that
register to `sip.<domain>` by name), then per round: pulls the WAN cable (`link down`), waits
until the DNS answers the branch and every phone is registered there, holds one registration
expiry, restores the WAN and waits for the fallback and the phones' return; then the same with
a silent WAN (every packet dropped, so probes time out instead of failing at once).

Prints `name=value` lines on stdout (the worst round of each), progress on stderr:
- failover_detect_seconds: WAN cut → synch's DNS answers the branch;
- phones_at_branch_seconds: WAN cut → every phone registered at the branch (its own record);
- registrations_lost: REGISTERs that failed once the phones had moved (must be 0);
- fallback_seconds: WAN back → DNS answers the central again;
- phones_at_central_seconds: WAN back → every phone registered at the central again;
- timer_*: the timers these figures hold for.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.chroot import lab_root  # noqa: E402
from lab.testbed import CENTRAL_WAN, CutFigures, TestBed, Timers, measure_cut  # noqa: E402


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def timer_lines(t: Timers, phones: int) -> list[str]:
    return [
        f"timer_probe_interval_s={t.interval:g}",
        f"timer_probe_timeout_s={t.timeout:g}",
        f"timer_failure_tolerance={t.failure_tolerance}",
        f"timer_error_penalty_points={t.error_penalty}",
        f"timer_alive_threshold={t.alive_threshold}",
        f"timer_recordttl_s={t.recordttl}",
        f"timer_phone_expires_s={t.expires}",
        f"timer_phone_refresh_s={t.expires / 2:g}",
        f"timer_phone_retry_s={t.retry:g}",
        f"phones={phones}",
    ]


def worst(runs: list[CutFigures], suffix: str) -> list[str]:
    return [
        f"failover_detect_seconds{suffix}={max(r.failover_detect_seconds for r in runs):.2f}",
        f"phones_at_branch_seconds{suffix}={max(r.phones_at_branch_seconds for r in runs):.2f}",
        f"registrations_lost{suffix}={sum(r.registrations_lost for r in runs)}",
        f"fallback_seconds{suffix}={max(r.fallback_seconds for r in runs):.2f}",
        f"phones_at_central_seconds{suffix}={max(r.phones_back_seconds for r in runs):.2f}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="cut/restore rounds per mode")
    parser.add_argument("--interval", type=float, default=Timers.interval)
    parser.add_argument("--timeout", type=float, default=Timers.timeout)
    parser.add_argument("--recordttl", type=int, default=Timers.recordttl)
    parser.add_argument("--expires", type=int, default=Timers.expires, help="phones' expiry")
    opts = parser.parse_args()
    timers = Timers(
        interval=opts.interval,
        timeout=opts.timeout,
        recordttl=opts.recordttl,
        expires=opts.expires,
    )
    lab_root()  # the Asterisk chroot (built on first use)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="synch-failover-") as workdir:
        say("building the bed (central, branch, phones) ...")
        bed = TestBed.build(Path(workdir), timers)
        try:
            bed.wait_phones(CENTRAL_WAN, 60)
            results: dict[str, list[CutFigures]] = {"cut": [], "silent": []}
            for round_no in range(opts.rounds):
                for how in results:
                    bed.heal()
                    say(f"round {round_no + 1}: WAN {how} ...")
                    figures = measure_cut(bed, how)
                    results[how].append(figures)
                    say("  " + ", ".join(figures.lines(timers)[1:-1]))
        finally:
            bed.close()
    for line in timer_lines(timers, len(bed.phones)):
        print(line)
    print(f"failover_rounds={opts.rounds}")
    for line in worst(results["cut"], "") + worst(results["silent"], "_silent"):
        print(line, flush=True)
    say(f"failover figures took {time.monotonic() - started:.0f} s")
    return 0 if all(r.registrations_lost == 0 for runs in results.values() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
