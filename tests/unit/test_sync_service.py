"""The sync service's planning (synch.services.syncing.SyncService), heard from a probe service
fed rounds by hand and a fake job: the first sync at once, the one after an outage within the
jitter, retries backing off after failures of the central, the admin's sync at once."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
from prometheus_client import generate_latest

from synch.ami.client import AmiClient
from synch.metrics import Metrics
from synch.probe import Check, ProbeResult, ProbeRound
from synch.services.probing import ProbeService
from synch.services.syncing import SyncService
from synch.sync.outcome import Outcome, SyncResult
from tests.unit.test_config import parse

S, E = ProbeResult.SUCCESS, ProbeResult.ERROR
JITTER = 60.0


class FakeHistory:
    paused: str | None = None


class FakeJob:
    """What SyncService asks of a SyncJob; `outcomes` are handed out in turn (then unchanged)."""

    def __init__(self, *outcomes: Outcome):
        self.outcomes = list(outcomes)
        self.history = FakeHistory()
        self.path = Path("/tmp/nothing/pjsip_synch.conf")
        self.runs = 0
        self.kwargs: dict[str, bool] = {}

    def run(self, **kwargs: bool) -> Outcome:
        self.runs += 1
        self.kwargs = kwargs
        return self.outcomes.pop(0) if self.outcomes else Outcome(SyncResult.UNCHANGED)


def services(
    *outcomes: Outcome, sip: bool = False, **sync: Any
) -> tuple[ProbeService, SyncService, FakeJob, Metrics]:
    settings = parse(
        probemonitor={"alivethreshold": 2, "failuretolerance": 2, "errorpenaltypoints": 1,
                      "siptransports": ["udp"] if sip else []},
        syncmanager={"jitter": JITTER, **sync},
    )  # fmt: skip
    metrics = Metrics()
    probes = ProbeService(settings, AmiClient("127.0.0.2", 5038, "synch", "x", timeout=1), metrics)
    job = FakeJob(*outcomes)
    sync = SyncService(settings, job, metrics, lambda: probes.monitor.state, probes.ami_problem,
                       rng=random.Random(5))  # type: ignore[arg-type]  # fmt: skip
    sync.follow(probes)
    return probes, sync, job, metrics


def ami_round(result: ProbeResult) -> ProbeRound:
    return ProbeRound(ami=Check(result, 0.01, "" if result is S else "refused"), sip={})


def planned(sync: SyncService) -> tuple[str, float]:
    plan = sync.details()["NextSync"]
    assert isinstance(plan, dict)
    return str(plan["Why"]), float(plan["In"])


def sample(metrics: Metrics, name: str) -> float:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exported")


def central_failure() -> Outcome:
    return Outcome(SyncResult.FAILED, "central AMI: no answer within 4 s", central_failed=True)


def test_first_answer_and_first_stable_sync_at_once() -> None:
    probes, sync, _, _ = services()
    assert sync.details()["NextSync"] is None  # the loop has not started
    probes.record(ami_round(S))  # Init -> Unstable, the first answer
    assert planned(sync) == ("start", 0.0)
    sync.cycle(sync.schedule.plan.trigger)  # type: ignore[union-attr]
    assert sync.last["Why"] == "start"
    why, wait = planned(sync)
    assert why == "scheduled" and 270 <= wait <= 330
    probes.record(ami_round(S))  # Stable for the first time: no outage before it
    assert planned(sync) == ("central stable", 0.0)


def test_after_an_outage_the_sync_waits_a_random_moment_within_the_jitter() -> None:
    probes, sync, _, metrics = services()
    for _ in range(2):
        probes.record(ami_round(S))
    sync.cycle(sync.schedule.plan.trigger)  # type: ignore[union-attr]
    for _ in range(2):
        probes.record(ami_round(E))
    assert probes.monitor.state.value == "Failed"
    assert sync.cycle(sync.schedule.plan.trigger) is None  # type: ignore[union-attr]
    sync.schedule.blocked(time.monotonic())  # what the loop does with a blocked cycle
    for _ in range(2):
        probes.record(ami_round(S))
    assert probes.monitor.state.value == "Stable"
    why, wait = planned(sync)
    assert why == "central back" and 0 < wait <= JITTER
    next_unix = sample(metrics, "synch_sync_next_timestamp_seconds")
    assert time.time() < next_unix <= time.time() + JITTER
    assert sample(metrics, "synch_sync_backoff_seconds") == 0


def test_no_jitter_syncs_at_once_after_an_outage() -> None:
    probes, sync, _, _ = services(jitter=0)
    for result in (S, S, E, E, S, S):
        probes.record(ami_round(result))
    assert planned(sync) == ("central back", 0.0)


def test_ami_back_after_its_own_outage_is_a_return_too() -> None:
    probes, sync, _, _ = services(sip=True)
    sip_ok = {"udp": Check(S, 0.01, "", answer="401 Unauthorized")}
    probes.record(ProbeRound(ami=Check(S, 0.01, ""), sip=sip_ok))
    sync.cycle(sync.schedule.plan.trigger)  # type: ignore[union-attr]
    probes.record(ProbeRound(ami=Check(S, 0.01, ""), sip=sip_ok))
    probes.record(ProbeRound(ami=Check(E, 0.01, "refused"), sip=sip_ok))  # AMI alone down
    probes.record(ProbeRound(ami=Check(S, 0.01, ""), sip=sip_ok))  # and back: still Stable
    assert probes.monitor.state.value == "Stable"
    why, wait = planned(sync)
    assert why == "central back" and wait <= JITTER


def test_failures_of_the_central_back_off_and_a_success_resets() -> None:
    probes, sync, job, metrics = services(
        central_failure(), central_failure(), central_failure(), Outcome(SyncResult.UNCHANGED)
    )
    probes.record(ami_round(S))
    waits = []
    for n in (1, 2, 3):
        sync.cycle(sync.schedule.plan.trigger)  # type: ignore[union-attr]
        why, wait = planned(sync)
        assert why == "retry"
        retry = sync.details()["SyncRetry"]
        assert retry == {"Failures": n, "Delay": round(sync.schedule.backoff, 1)}
        assert sample(metrics, "synch_sync_backoff_seconds") == sync.schedule.backoff
        waits.append(wait)
    assert sync.state.value == "Unsynced" and sync.last["Why"] == "retry"
    assert waits == sorted(waits) and 15 <= waits[0] <= 30 and 60 <= waits[2] <= 120
    sync.cycle(sync.schedule.plan.trigger)  # type: ignore[union-attr]
    assert sync.state.value == "Synced" and job.runs == 4
    assert sync.details()["SyncRetry"] is None and planned(sync)[0] == "scheduled"
    assert sample(metrics, "synch_sync_backoff_seconds") == 0


def test_other_failures_wait_the_interval() -> None:
    refused = Outcome(SyncResult.FAILED, "refused unsafe central config: ...")
    probes, sync, _, _ = services(refused, Outcome(SyncResult.GUARDED, "too many removed"))
    probes.record(ami_round(S))
    for _ in range(2):
        sync.cycle(sync.schedule.plan.trigger)  # type: ignore[union-attr]
        why, wait = planned(sync)
        assert why == "scheduled" and wait >= 270
        assert sync.details()["SyncRetry"] is None


def test_admin_sync_runs_at_once_whatever_is_planned() -> None:
    probes, sync, job, _ = services()
    for result in (S, S, E, E, S, S):
        probes.record(ami_round(result))
    assert planned(sync)[0] == "central back"
    reply = sync.sync_now()
    assert job.runs == 1 and reply["ok"] is True and reply["Why"] == "admin request"
    assert job.kwargs == {"settle": True, "full": True}  # asked for: a full fetch
    sync.cycle(sync.schedule.plan.trigger)  # type: ignore[union-attr]
    assert job.kwargs == {"settle": True, "full": False}


def test_the_loop_runs_the_planned_cycles() -> None:
    """The real loop (gevent): a cycle at the first answer, none before; a retry planned after a
    failure of the central, then run when due; nothing after stop."""
    probes, sync, job, _ = services(central_failure(), interval=1000)
    sync.schedule.retry_first = 0.2  # a short retry, so that the loop gets to it
    stop = gevent.event.Event()
    loop = gevent.spawn(sync.run, stop)
    gevent.sleep(0.05)
    assert job.runs == 0
    probes.record(ami_round(S))  # the first answer
    deadline = time.monotonic() + 20
    while job.runs < 2 and time.monotonic() < deadline:
        gevent.sleep(0.02)
    assert job.runs == 2 and sync.last["Why"] == "retry" and sync.state.value == "Synced"
    assert planned(sync)[0] == "scheduled"
    stop.set()
    sync.wake()
    loop.join(timeout=10)
    assert loop.dead and job.runs == 2
