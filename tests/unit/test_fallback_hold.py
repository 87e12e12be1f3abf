"""Falling back waits while the branch has calls up: the pure decision (synch.states:
`fallback_release`, `ServiceControl` with `holdmax`), the count of calls from CoreShowChannels
(synch.ami.actions.branch_calls), and the probe service counting and reporting it
(synch.services.fallback via ProbeService), fed rounds by hand with a branch AMI double."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from prometheus_client import generate_latest

from synch.ami import AmiReply, AmiTransportError, branch_calls
from synch.ami.client import AmiClient
from synch.metrics import Metrics
from synch.probe import Check, ProbeResult, ProbeRound
from synch.services.probing import ProbeService
from synch.states import (
    BranchCalls,
    Hold,
    Monitor,
    Release,
    Service,
    ServiceControl,
    fallback_release,
)
from tests.unit.test_config import parse

FAILOVER, NORMAL = Service.FAILOVER, Service.NORMAL
ONE_CALL = BranchCalls(calls=1, channels=2)
NO_CALLS = BranchCalls(calls=0, channels=0)


# -- the decision --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "calls", "expected"),
    [
        (10.0, ONE_CALL, None),  # calls up, within the maximum: hold
        (10.0, NO_CALLS, Release.NO_CALLS),
        (10.0, None, Release.UNKNOWN),  # the branch did not say: never hold blind
        (100.0, ONE_CALL, Release.MAXIMUM),  # exactly the maximum
        (500.0, BranchCalls(calls=3, channels=7), Release.MAXIMUM),
        (500.0, NO_CALLS, Release.NO_CALLS),
        (500.0, None, Release.UNKNOWN),
    ],
)
def test_fallback_release(now: float, calls: BranchCalls | None, expected: Release | None) -> None:
    assert fallback_release(now, since=0.0, maximum=100.0, calls=calls) is expected


class Recorder:
    """A ServiceControl in Failover with holding on, and everything it said, in order."""

    def __init__(self, holdmax: float = 300.0, automatic: Service = FAILOVER):
        self.control = ServiceControl(automatic=automatic, holdmax=holdmax)
        self.events: list[str] = []
        self.control.listeners.append(
            lambda old, new: self.events.append(f"service {old.value}->{new.value}")
        )
        self.control.hold_listeners.append(self._hold)

    def _hold(self, hold: Hold, ended: Release | None) -> None:
        if ended is None:
            self.events.append(f"held {hold.calls.calls} since {hold.since:g}")
        else:
            self.events.append(f"hold ended: {ended.value}")

    def stable(self, now: float, calls: BranchCalls | None) -> None:
        assert self.control.holds_fallback()
        self.control.on_monitor_change(Monitor.UNSTABLE, Monitor.STABLE, now=now, calls=calls)


def test_held_while_calls_are_up_then_released_when_they_end() -> None:
    r = Recorder()
    r.stable(now=1000.0, calls=ONE_CALL)
    assert r.control.current is FAILOVER and r.events == ["held 1 since 1000"]
    assert r.control.review(1010.0, BranchCalls(calls=2, channels=4)) is None
    held = r.control.held
    assert held is not None and (held.since, held.calls.calls) == (1000.0, 2)
    assert r.control.current is FAILOVER
    assert r.control.review(1020.0, NO_CALLS) is Release.NO_CALLS
    assert r.control.current is NORMAL and r.control.held is None
    # The wait ends before the switch that the DNS follows.
    assert r.events == ["held 1 since 1000", "hold ended: no calls", "service Failover->Normal"]
    assert r.control.review(1030.0, ONE_CALL) is None  # nothing waits any more
    assert r.control.current is NORMAL


def test_released_at_the_maximum_with_calls_still_up() -> None:
    r = Recorder(holdmax=300.0)
    r.stable(now=0.0, calls=ONE_CALL)
    assert r.control.review(299.0, ONE_CALL) is None
    assert r.control.current is FAILOVER
    assert r.control.review(300.0, ONE_CALL) is Release.MAXIMUM
    assert r.control.current is NORMAL
    assert r.events[-2:] == ["hold ended: maximum", "service Failover->Normal"]


def test_no_calls_or_no_count_falls_back_at_once() -> None:
    for calls in (NO_CALLS, None):
        r = Recorder()
        r.stable(now=0.0, calls=calls)
        assert r.control.current is NORMAL and r.control.held is None
        assert r.events == ["service Failover->Normal"]  # no wait began


def test_a_count_that_fails_while_held_falls_back() -> None:
    r = Recorder()
    r.stable(now=0.0, calls=ONE_CALL)
    assert r.control.review(5.0, None) is Release.UNKNOWN
    assert r.control.current is NORMAL


def test_holding_off_or_nothing_to_fall_back_from_never_waits() -> None:
    off = Recorder(holdmax=0.0)
    assert not off.control.holds_fallback()
    off.control.on_monitor_change(Monitor.UNSTABLE, Monitor.STABLE, now=0.0, calls=ONE_CALL)
    assert off.control.current is NORMAL and off.events == ["service Failover->Normal"]
    normal = Recorder(automatic=NORMAL)
    assert not normal.control.holds_fallback()
    normal.control.on_monitor_change(Monitor.UNSTABLE, Monitor.STABLE, now=0.0, calls=ONE_CALL)
    assert normal.control.current is NORMAL and normal.events == []


def test_the_central_failing_again_while_held_stays_in_failover_without_a_flap() -> None:
    r = Recorder()
    r.stable(now=0.0, calls=ONE_CALL)
    r.control.on_monitor_change(Monitor.STABLE, Monitor.UNSTABLE)
    assert r.control.held is not None  # Unstable changes nothing
    r.control.on_monitor_change(Monitor.UNSTABLE, Monitor.FAILED)
    assert r.control.current is FAILOVER and r.control.held is None
    assert r.events == ["held 1 since 0", "hold ended: failed"]  # no service change at all
    assert r.control.review(10.0, NO_CALLS) is None and r.control.current is FAILOVER
    # The central recovers again: a new wait, from then.
    r.stable(now=50.0, calls=ONE_CALL)
    assert r.events[-1] == "held 1 since 50" and r.control.current is FAILOVER


def test_stable_again_after_unstable_keeps_the_wait_from_when_it_began() -> None:
    r = Recorder(holdmax=100.0)
    r.stable(now=0.0, calls=ONE_CALL)
    r.control.on_monitor_change(Monitor.STABLE, Monitor.UNSTABLE)
    assert not r.control.holds_fallback()  # already waiting: no new count needed
    r.control.on_monitor_change(Monitor.UNSTABLE, Monitor.STABLE, now=60.0, calls=None)
    held = r.control.held
    assert held is not None and held.since == 0.0 and r.control.current is FAILOVER
    assert r.control.review(100.0, ONE_CALL) is Release.MAXIMUM


def test_admin_normal_is_obeyed_at_once_and_ends_the_wait() -> None:
    r = Recorder()
    r.stable(now=0.0, calls=ONE_CALL)
    r.control.force(NORMAL)
    assert r.control.current is NORMAL and r.control.held is None
    assert r.events[1:] == ["hold ended: admin", "service Failover->Normal"]
    r.control.auto()  # back to the probes: the central is Stable, phones stay at the central
    assert r.control.current is NORMAL and r.events[-1] == "service Failover->Normal"


def test_admin_failover_keeps_the_phones_at_the_branch_whatever_the_wait_says() -> None:
    r = Recorder()
    r.control.force(FAILOVER)
    r.stable(now=0.0, calls=ONE_CALL)
    assert r.control.review(10.0, NO_CALLS) is Release.NO_CALLS
    assert r.control.current is FAILOVER  # forced
    r.control.auto()
    assert r.control.current is NORMAL
    # A central recovering while an admin forces Normal needs no count: nothing waits.
    forced = Recorder()
    forced.control.force(NORMAL)
    assert not forced.control.holds_fallback()


# -- the count -----------------------------------------------------------------------------------


class Branch:
    """A branch AMI double answering CoreShowChannels with `channels` (linked ids), or
    raising `error`."""

    name = "branch"

    def __init__(self, *linkedids: str, error: Exception | None = None):
        self.linkedids = list(linkedids)
        self.error = error
        self.asked: list[str] = []

    def action(
        self,
        action: str,
        headers: Mapping[str, str | Sequence[str]] | None = None,
        timeout: float | None = None,
    ) -> AmiReply:
        self.asked.append(action)
        if self.error is not None:
            raise self.error
        events = tuple(
            AmiReply((("Event", "CoreShowChannel"), ("Channel", f"PJSIP/{n}"),
                      ("Uniqueid", f"u{n}"), ("Linkedid", linked)))
            for n, linked in enumerate(self.linkedids)
        )  # fmt: skip
        return AmiReply((("Response", "Success"), ("EventList", "start")), events=events)

    def close(self) -> None:
        pass


def test_channels_sharing_a_linked_id_are_one_call() -> None:
    assert branch_calls(Branch()) == BranchCalls(calls=0, channels=0)
    # Two phones talking (2 channels), and a Local channel pair bridged to a phone (3).
    counted = branch_calls(Branch("a", "a", "b", "b", "b"))
    assert counted == BranchCalls(calls=2, channels=5)


# -- the probe service ---------------------------------------------------------------------------

S, E = ProbeResult.SUCCESS, ProbeResult.ERROR


def probe_round(result: ProbeResult) -> ProbeRound:
    return ProbeRound(ami=Check(result, 0.01, "" if result is S else "no answer within 4 s"))


def service(branch: Branch | None, **probemonitor: Any) -> tuple[ProbeService, Metrics]:
    settings = parse(
        probemonitor={"alivethreshold": 2, "siptransports": [], **probemonitor},
        dnsservice={"defaultstate": "Normal"},
    )
    metrics = Metrics()
    client = AmiClient("127.0.0.2", 5038, "synch", "x", timeout=1)
    return ProbeService(settings, client, metrics, branch), metrics


def fail_over(probes: ProbeService) -> None:
    for _ in range(2):
        probes.record(probe_round(S))
    for _ in range(3):
        probes.record(probe_round(E))
    assert (probes.monitor.state, probes.service) == (Monitor.FAILED, FAILOVER)


def sample(metrics: Metrics, name: str) -> float:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exported")


def test_the_probe_service_waits_for_the_calls_and_reports_the_wait() -> None:
    branch = Branch("call-1", "call-1")
    probes, metrics = service(branch)
    seen: list[tuple[str, str]] = []
    probes.control.listeners.append(
        lambda old, new: seen.append((probes.monitor.state.value, new.value))
    )
    assert probes.details()["FallbackHeld"] is None
    fail_over(probes)
    assert branch.asked == []  # counted only when falling back
    probes.record(probe_round(S))
    probes.record(probe_round(S))  # Stable: the fallback waits for the call
    assert branch.asked == ["CoreShowChannels"]
    details = probes.details()
    assert (details["Monitor"], details["Service"]) == ("Stable", "Failover")
    held = details["FallbackHeld"]
    assert isinstance(held, dict) and (held["Calls"], held["Channels"]) == (1, 2)
    assert held["Since"] <= held["Until"]
    assert sample(metrics, "synch_fallback_held") == 1
    assert sample(metrics, "synch_fallback_held_calls") == 1
    branch.linkedids += ["call-2", "call-2"]
    probes.record(probe_round(S))  # each round counts again
    held = probes.details()["FallbackHeld"]
    assert isinstance(held, dict) and held["Calls"] == 2
    assert sample(metrics, "synch_fallback_held_calls") == 2
    branch.linkedids = []
    probes.record(probe_round(S))  # the calls ended: Normal
    details = probes.details()
    assert (details["Service"], details["FallbackHeld"], details["Fallbacks"]) == (
        "Normal", None, 1,
    )  # fmt: skip
    assert sample(metrics, "synch_fallback_held") == 0
    assert sample(metrics, "synch_fallback_held_calls") == 0
    assert seen == [("Failed", "Failover"), ("Stable", "Normal")]
    assert len(branch.asked) == 3  # when falling back, then once a round while held


def test_the_probe_service_falls_back_at_once_without_calls_or_an_answer() -> None:
    for branch in (
        Branch(),
        Branch(error=AmiTransportError("branch AMI 127.0.0.1:5038: cannot connect")),
    ):
        probes, _ = service(branch)
        fail_over(probes)
        probes.record(probe_round(S))
        probes.record(probe_round(S))
        assert (probes.monitor.state, probes.service) == (Monitor.STABLE, NORMAL)
        assert branch.asked == ["CoreShowChannels"]


def test_the_probe_service_without_holding_never_asks_the_branch() -> None:
    for branch, holdmax in ((Branch("c", "c"), 0), (None, 300)):
        probes, _ = service(branch, fallbackholdmax=holdmax)
        fail_over(probes)
        probes.record(probe_round(S))
        probes.record(probe_round(S))
        assert probes.service is NORMAL
        assert branch is None or branch.asked == []


def test_the_probe_service_releases_at_the_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    branch = Branch("c", "c")
    probes, _ = service(branch, fallbackholdmax=60)
    fail_over(probes)
    probes.record(probe_round(S))
    probes.record(probe_round(S))
    assert probes.service is FAILOVER
    clock[0] += 59
    probes.record(probe_round(S))
    assert probes.service is FAILOVER
    clock[0] += 1
    probes.record(probe_round(S))
    assert probes.service is NORMAL  # the call is still up


def test_the_central_failing_again_while_held_stays_in_failover() -> None:
    branch = Branch("c", "c")
    probes, _ = service(branch)
    fail_over(probes)
    probes.record(probe_round(S))
    probes.record(probe_round(S))
    switches: list[str] = []
    probes.control.listeners.append(lambda old, new: switches.append(new.value))
    for _ in range(3):
        probes.record(probe_round(E))
    details = probes.details()
    assert (details["Monitor"], details["Service"], details["FallbackHeld"]) == (
        "Failed", "Failover", None,
    )  # fmt: skip
    assert switches == [] and details["Fallbacks"] == 0


def test_the_count_comes_before_anything_of_its_round_is_recorded() -> None:
    # The status socket may answer while the count waits for the branch's AMI: it must see
    # the previous round whole, never this round's probe counted with the old state.
    seen: list[tuple[str, int, str]] = []

    class Watched(Branch):
        def action(
            self,
            action: str,
            headers: Mapping[str, str | Sequence[str]] | None = None,
            timeout: float | None = None,
        ) -> AmiReply:
            details = probes.details()
            seen.append((details["Monitor"], details["Probes"]["success"], details["Service"]))
            return super().action(action, headers, timeout)

    probes, _ = service(Watched("c", "c"))
    fail_over(probes)
    probes.record(probe_round(S))
    probes.record(probe_round(S))
    assert seen == [("Unstable", 3, "Failover")]  # two rounds before, one since the outage
    assert (probes.monitor.state, probes.service) == (Monitor.STABLE, FAILOVER)
