"""Failover as a phone sees it: phones on the branch LAN resolve `sip.example.local` through
synch and register wherever it points, while the WAN to the central is cut, silenced, made
lossy or restored, the central dies, an admin overrides, or synch itself is killed.

One bed (lab/testbed.py) serves the whole module; each test starts from a healthy bed
(`healthy`) and leaves whatever it broke to be healed by the next. Figures (seconds) are
printed at the end of the module and written to
.pytest_cache/d/synch-e2e/failover-figures.txt; they are measured, never asserted on beyond
the contract's bounds.
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.phones import resolve
from lab.samples import freepbx_pjsip
from lab.synchproc import metric_samples
from lab.testbed import (
    BRANCH_LAN,
    BRANCH_SITE,
    CENTRAL_WAN,
    HEADOFFICE_EXTS,
    PHONE_EXTS,
    SIP_NAME,
    CutFigures,
    Sample,
    TestBed,
    central_files,
    measure_cut,
    sample_until,
)
from lab.wait import wait_until
from synch.probe import ProbeMonitor, ProbeResult
from synch.states import Monitor, Service, ServiceControl
from synch.sync.conftext import parse_conf_text
from tests.figures import report_figures

pytestmark = [pytest.mark.asterisk, pytest.mark.netns]

FIGURES: list[str] = []


@pytest.fixture(scope="module")
def bed(
    lab: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[TestBed]:
    testbed = TestBed.build(tmp_path_factory.mktemp("e2e-bed"))
    try:
        yield testbed
    finally:
        testbed.close()
        _report_figures(request, testbed)


def _report_figures(request: pytest.FixtureRequest, bed: TestBed) -> None:
    if FIGURES:
        report_figures(request, [*FIGURES, f"timers={bed.timers.describe()}"],
                       title="failover figures", cache_dir="synch-e2e",
                       filename="failover-figures.txt", fallback_dir=bed.workdir)  # fmt: skip


@pytest.fixture
def healthy(bed: TestBed) -> TestBed:
    bed.heal()
    return bed


def synch_log_since(bed: TestBed, mark: str) -> str:
    return bed.synch_proc.log(20000).split(mark, 1)[-1]


# -- 1. healthy ---------------------------------------------------------------------------------


def test_healthy_phones_resolve_the_central_and_register_there(healthy: TestBed) -> None:
    bed = healthy
    # Through the phones' own resolver (/etc/netns/NAME/resolv.conf → synch), as they see it.
    answer = resolve(bed.phones_host.name, SIP_NAME)
    assert answer == (CENTRAL_WAN, bed.timers.recordttl)
    assert all(p.registered_at(CENTRAL_WAN) for p in bed.phones), bed.phones_timeline(0)
    assert set(PHONE_EXTS) <= bed.contacts(bed.central)
    # The branch holds the synced Branch accounts, and none of HeadOffice's.
    synced = bed.endpoints(bed.branch)
    assert set(PHONE_EXTS) <= synced
    assert not synced & set(HEADOFFICE_EXTS)


# -- 2 and 3. WAN cut, then restored ------------------------------------------------------------


class CutRun:
    def __init__(self, figures: CutFigures, branch_contacts: set[int], cut_log: str):
        self.figures, self.branch_contacts, self.cut_log = figures, branch_contacts, cut_log


@pytest.fixture(scope="module")
def wan_cut(bed: TestBed) -> CutRun:
    """One WAN cut and restore, measured; the two tests below read different halves of it."""
    bed.heal()
    contacts: set[int] = set()
    figures = measure_cut(bed, "cut", on_failover=lambda: contacts.update(bed.contacts(bed.branch)))
    FIGURES.extend(figures.lines(bed.timers)[:-1])
    return CutRun(figures, contacts, bed.synch_proc.log(20000))


@pytest.mark.slow
def test_wan_cut_fails_over_and_phones_register_at_the_branch(
    bed: TestBed, wan_cut: CutRun
) -> None:
    t, f = bed.timers, wan_cut.figures
    # measure_cut already waited within these bounds; restated here as the contract.
    assert f.failover_detect_seconds <= t.failover_bound
    assert f.phones_at_branch_seconds <= t.failover_bound + t.phone_move_bound
    # The branch Asterisk itself saw every phone register with the synced credentials.
    assert set(PHONE_EXTS) <= wan_cut.branch_contacts
    assert f.registrations_lost == 0


@pytest.mark.slow
def test_wan_restored_falls_back_after_alive_threshold_good_probes(
    bed: TestBed, wan_cut: CutRun
) -> None:
    t, f = bed.timers, wan_cut.figures
    samples = f.restore_samples
    for s in samples:
        if s.before["Service"] == "Failover" and s.after["Service"] == "Failover":
            assert s.dns == BRANCH_LAN, f"DNS answered the central while in Failover: {s}"
    first_normal = next(s for s in samples if s.after["Service"] == "Normal")
    good = first_normal.after["Probes"]["success"] - f.probes_at_restore["success"]
    assert good >= t.alive_threshold, f"fell back after {good} good probes"
    assert first_normal.after["Monitor"] == "Stable"
    assert first_normal.after["Ok"] >= t.alive_threshold
    assert first_normal.after["Fallbacks"] >= 1
    assert samples[-1].dns == CENTRAL_WAN
    # measure_cut waited for the phones to be back on the central.
    assert all(p.registered_at(CENTRAL_WAN) for p in bed.phones)


# -- 4. central dead (refused) vs. its host silent (timeouts) ----------------------------------


def _probe_bound_check(
    bed: TestBed, failing: Callable[[], None], expect_error: str, figure: str
) -> None:
    t = bed.timers
    synch = bed.synch_proc
    errors_before = synch.details()["Probes"]["error"]
    start = time.monotonic()
    failing()
    detected = bed.wait_dns(BRANCH_LAN, t.failover_bound)
    assert detected - start <= t.failover_bound
    # Keep looking for a few more failed probes: each one ended within its timeout.
    samples = sample_until(
        bed, lambda s: s.after["Probes"]["error"] >= errors_before + t.errors_to_fail + 2, 15
    )
    margin = 0.3
    for s in samples:
        last = s.after["LastProbe"]
        assert last["Seconds"] <= t.timeout + margin, f"a probe took {last}"
    assert expect_error in samples[-1].after["LastProbe"]["Error"].lower(), samples[-1].after
    assert samples[-1].after["Monitor"] == "Failed"
    metrics = bed.synch_proc.metrics()
    buckets = metric_samples(metrics, "synch_probe_duration_seconds_bucket")
    count = metric_samples(metrics, "synch_probe_duration_seconds_count")[""]
    finite = {float(k.split('"')[1]): v for k, v in buckets.items() if "+Inf" not in k}
    # Every probe so far fell in the first bucket at or above timeout + margin.
    bound = min(le for le in finite if le >= t.timeout + margin)
    assert finite[bound] == count, f"probes above {bound} s: {buckets}"
    FIGURES.append(f"failover_detect_seconds_{figure}={detected - start:.2f}")


@pytest.mark.slow
def test_central_asterisk_dead_connection_refused_fails_over(healthy: TestBed) -> None:
    bed = healthy
    assert bed.central is not None
    _probe_bound_check(bed, bed.central.kill, "refused", "central_refused")


@pytest.mark.slow
def test_central_host_silent_timeouts_fail_over(healthy: TestBed) -> None:
    _probe_bound_check(healthy, healthy.central_silent, "no answer within", "central_silent")


# -- 5. flapping WAN ----------------------------------------------------------------------------


def _snapshots(samples: list[Sample]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for s in samples:
        out.extend((s.before, s.after))
    return out


def _state(snap: dict[str, Any]) -> tuple[int, int, str, str]:
    return snap["Ok"], snap["Points"], snap["Monitor"], snap["Service"]


def replay(bed: TestBed, snaps: list[dict[str, Any]]) -> tuple[int, int, int]:
    """Replay the probe results seen between consecutive status snapshots through the real
    ProbeMonitor and ServiceControl, asserting that every snapshot matches the replay; returns
    (probes replayed, failovers, fallbacks) of the replay."""
    t = bed.timers
    first = snaps[0]
    monitor = ProbeMonitor(
        t.failure_tolerance,
        t.alive_threshold,
        t.error_penalty,
        ok=first["Ok"],
        points=first["Points"],
        state=Monitor(first["Monitor"]),
    )
    service = ServiceControl(automatic=Service(first["Service"]))
    moves: Counter[str] = Counter()
    service.listeners.append(
        lambda old, new: moves.update(["failover" if new is Service.FAILOVER else "fallback"])
    )
    replayed = 0
    for prev, snap in itertools.pairwise(snaps):
        delta = Counter(
            {r: snap["Probes"][r] - prev["Probes"][r] for r in ("success", "error", "failure")}
        )
        results = sorted(delta.elements())
        # Usually one probe between snapshots; if several, one of their orders must fit.
        for order in dict.fromkeys(itertools.permutations(results)):
            trial = ProbeMonitor(
                t.failure_tolerance,
                t.alive_threshold,
                t.error_penalty,
                ok=monitor.ok,
                points=monitor.points,
                state=monitor.state,
            )
            for r in order:
                trial.record(ProbeResult(r))
            if (trial.ok, trial.points, trial.state.value) == _state(snap)[:3]:
                break
        else:
            raise AssertionError(
                f"no order of probes {results} takes the monitor from "
                f"{(monitor.ok, monitor.points, monitor.state.value)} to {_state(snap)}"
            )
        for r in order:
            old, new = monitor.record(ProbeResult(r))
            service.on_monitor_change(old, new)
            replayed += 1
        assert service.current.value == snap["Service"], (
            f"service {snap['Service']} but the rules give {service.current.value} at {snap}"
        )
    return replayed, moves["failover"], moves["fallback"]


def check_dns_follows_service(samples: list[Sample]) -> None:
    """DNS answers the central only in Normal; in Failed, or Unstable after Failed (still
    Failover), it answers the branch."""
    seen_failed = False
    for s in samples:
        if s.before["Monitor"] == "Failed":
            seen_failed = True
        elif s.before["Monitor"] == "Stable":
            seen_failed = False
        same = s.before["Probes"] == s.after["Probes"]
        if not same or s.dns is None:
            continue  # a probe landed between the two looks: this DNS answer is ambiguous
        if s.before["Monitor"] == "Failed" or seen_failed:
            assert s.before["Service"] == "Failover", f"not Failover after Failed: {s}"
        expected = BRANCH_LAN if s.before["Service"] == "Failover" else CENTRAL_WAN
        assert s.dns == expected, f"DNS {s.dns} in {s.before['Service']}: {s}"


@pytest.mark.slow
def test_flapping_wan_follows_the_probe_rules_without_ping_pong(healthy: TestBed) -> None:
    bed = healthy
    t = bed.timers
    synch = bed.synch_proc
    start = synch.details()
    samples: list[Sample] = []

    def sample_for(seconds: float) -> None:
        until = time.monotonic() + seconds
        samples.extend(sample_until(bed, lambda s: s.at >= until, seconds + 10))

    # Bursts: the link dies until the monitor is Failed, then comes back for 1 s (< the
    # aliveThreshold probes a fallback needs) and dies for 2 s, four times: one failover,
    # no fallback.
    bed.wan.silent()
    samples.extend(sample_until(bed, lambda s: s.after["Monitor"] == "Failed", t.failover_bound))
    for _ in range(4):
        bed.wan.restore()
        sample_for(1.0)
        bed.wan.silent()
        sample_for(2.0)
    bursts = synch.details()
    assert bursts["Failovers"] - start["Failovers"] == 1
    assert bursts["Fallbacks"] - start["Fallbacks"] == 0, "a 1 s burst of WAN made a fallback"
    # Random loss: 30% of packets both ways, for 15 s.
    bed.wan.lossy(30)
    sample_for(15.0)
    bed.wan.restore()
    samples.extend(sample_until(bed, lambda s: s.after["Service"] == "Normal", 30))
    end = synch.details()

    replayed, failovers, fallbacks = replay(bed, _snapshots(samples))
    assert replayed >= 20
    assert failovers == end["Failovers"] - start["Failovers"]
    assert fallbacks == end["Fallbacks"] - start["Fallbacks"]
    check_dns_follows_service(samples)
    results = {r: end["Probes"][r] - start["Probes"][r] for r in end["Probes"]}
    FIGURES.append(f"flapping_probes={results} failovers={failovers} fallbacks={fallbacks}")


# -- 6. admin override --------------------------------------------------------------------------


@pytest.mark.slow
def test_admin_failover_moves_phones_to_the_branch_until_auto(healthy: TestBed) -> None:
    bed = healthy
    t = bed.timers
    synch = bed.synch_proc
    forced = time.monotonic()
    assert synch.admin("Failover")["ok"] is True
    assert bed.dns() == BRANCH_LAN
    status = synch.status()
    assert (status["Monitor"], status["Service"]) == ("Stable", "Failover")
    at_branch = bed.wait_phones(BRANCH_LAN, t.phone_move_bound, after=forced)
    assert set(PHONE_EXTS) <= bed.contacts(bed.branch)
    released = time.monotonic()
    synch.admin("Auto")
    assert bed.dns() == CENTRAL_WAN
    back = bed.wait_phones(CENTRAL_WAN, t.phone_move_bound, after=released)
    FIGURES.append(f"admin_phones_at_branch_seconds={at_branch - forced:.2f}")
    FIGURES.append(f"admin_phones_back_seconds={back - released:.2f}")


# -- 7. WAN cut in the middle of a sync ---------------------------------------------------------


def _git(directory: Path, *argv: str) -> str:
    out = subprocess.run(
        ["git", "-c", f"safe.directory={directory}", "-C", str(directory), *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert out.returncode == 0, f"git {' '.join(argv)}: {out.stderr}"
    return out.stdout


@pytest.mark.slow
def test_wan_cut_mid_sync_keeps_branch_config_intact_and_sync_resumes(healthy: TestBed) -> None:
    bed = healthy
    assert bed.central is not None and bed.branch is not None
    t = bed.timers
    synch = bed.synch_proc
    etc = bed.branch.config_dir
    synced = etc / "pjsip_synch.conf"
    before_text = synced.read_text()
    before_head = _git(etc, "rev-parse", "HEAD").strip()
    # A new Branch account on the central, so the sync has something to apply.
    new_ext = max(PHONE_EXTS) + 1
    files = freepbx_pjsip(
        {"HeadOffice": list(HEADOFFICE_EXTS), BRANCH_SITE: [*PHONE_EXTS, new_ext]}
    )
    for name, text in files.items():
        if name.startswith("pjsip.") and not name.endswith("_custom.conf"):
            bed.central.write_config(
                name, text.replace("minimum_expiration=60", "minimum_expiration=5")
            )
    bed.central.reload("res_pjsip.so")

    cut = time.monotonic()
    # The central's AMI gets ~8 kB more through, then the WAN dies: inside the sync's fetch
    # (tens of kB of unfiltered aor/auth), whatever moment that is.
    bed.wan.ami_dies_after(8000)
    reply: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: reply.update(synch.admin("Sync")))
    worker.start()
    worker.join(60)
    assert reply.get("ok") is False and reply.get("Result") == "failed", reply
    # It died inside a GetConfig of one of the central's PJSIP files: mid-transfer.
    assert "GetConfig" in reply["Reason"] and "central pjsip." in reply["Reason"], reply
    bed.wan.cut()  # and the whole WAN is down from here on

    bed.wait_dns(BRANCH_LAN, t.failover_bound)
    # The branch's config is exactly as before: same text, parses, history intact.
    assert synced.read_text() == before_text
    parse_conf_text(before_text)
    assert _git(etc, "rev-parse", "HEAD").strip() == before_head
    _git(etc, "fsck", "--no-progress", "--strict")
    assert _git(etc, "status", "--porcelain", "--", synced.name) == ""
    assert set(PHONE_EXTS) <= bed.endpoints(bed.branch)
    assert new_ext not in bed.endpoints(bed.branch)
    bed.wait_phones(BRANCH_LAN, t.phone_move_bound, after=cut)

    bed.wan.restore()
    bed.wait_state(30, Monitor="Stable", Service="Normal")
    # Entering Stable syncs: the account that the cut sync missed arrives now.
    wait_until(
        lambda: new_ext in bed.endpoints(bed.branch),
        20,
        message=f"{new_ext} synced after fallback; log:\n{synch.log()}",
    )
    details = synch.details()
    assert details["LastSync"]["Result"] == "applied", details["LastSync"]
    assert f"[{new_ext}]" in synced.read_text()
    parse_conf_text(synced.read_text())
    _git(etc, "fsck", "--no-progress", "--strict")
    subject = _git(etc, "log", "-1", "--format=%s").strip()
    assert f"+{new_ext}" in subject, subject
    assert (
        hashlib.sha256(synced.read_bytes()).hexdigest()
        != hashlib.sha256(before_text.encode()).hexdigest()
    )
    # Put the central back as the other tests know it.
    for name, text in central_files().items():
        if name.startswith("pjsip.") and not name.endswith("_custom.conf"):
            bed.central.write_config(name, text)
    bed.central.reload("res_pjsip.so")


# -- 8. synch killed and restarted during an outage ---------------------------------------------


@pytest.mark.slow
def test_synch_killed_during_outage_comes_back_in_failover_and_phones_stay_served(
    healthy: TestBed,
) -> None:
    bed = healthy
    t = bed.timers
    synch = bed.synch_proc
    cut = time.monotonic()
    bed.wan.cut()
    bed.wait_dns(BRANCH_LAN, t.failover_bound)
    bed.wait_phones(BRANCH_LAN, t.phone_move_bound, after=cut)
    assert bed.branch is not None
    head = _git(bed.branch.config_dir, "rev-parse", "HEAD").strip()

    killed = time.monotonic()
    synch.kill()
    assert bed.dns(timeout=0.5) is None  # nobody answers: phones keep their last server
    synch.start(wait=False)
    first = wait_until(lambda: synch.status(), 20, message=f"synch back; log:\n{synch.log()}")
    # defaultstate first (Failover: the DNS keeps pointing at the branch), then the probes.
    assert first["Service"] == "Failover", first
    assert first["Monitor"] in ("Init", "Unstable"), first
    samples = sample_until(bed, lambda s: s.after["Monitor"] == "Failed", t.failover_bound)
    for s in samples:
        assert s.before["Service"] == "Failover" and s.after["Service"] == "Failover", s
        assert s.dns in (BRANCH_LAN, None), s
    assert samples[-1].dns == BRANCH_LAN

    # The phones never noticed: registered at the branch all along, with no failed attempt.
    wait_until(
        lambda: time.monotonic() - killed >= t.expires,
        t.expires + 5,
        interval=0.2,
        message="one registration expiry after the restart",
    )
    for phone in bed.phones:
        assert phone.registered_at(BRANCH_LAN), phone.timeline(cut)
        assert not phone.failures_between(killed, time.monotonic()), phone.timeline(cut)
    assert set(PHONE_EXTS) <= bed.contacts(bed.branch)
    assert _git(bed.branch.config_dir, "rev-parse", "HEAD").strip() == head
