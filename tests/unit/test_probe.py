"""Probe arithmetic (SPEC "Probe rules"): table-driven, plain values only."""

from __future__ import annotations

import pytest

from synch.probe import ProbeMonitor, ProbeResult
from synch.states import Monitor

S, F, E = ProbeResult.SUCCESS, ProbeResult.FAILURE, ProbeResult.ERROR
INIT, UNST, FAIL, STAB = Monitor.INIT, Monitor.UNSTABLE, Monitor.FAILED, Monitor.STABLE


def run(results: list[ProbeResult], **kw: int) -> list[Monitor]:
    monitor = ProbeMonitor(**kw)
    return [monitor.record(r)[1] for r in results]


CASES = [
    # (id, settings, results, expected state after each probe)
    ("dead central: Failed after exactly 3 errors", {}, [E, E, E], [UNST, UNST, FAIL]),
    ("5 failure answers to Failed", {}, [F] * 5, [UNST, UNST, UNST, UNST, FAIL]),
    ("5 good probes to Stable", {}, [S] * 5, [UNST, UNST, UNST, UNST, STAB]),
    (
        "fallback needs 5 good in a row",
        {},
        [E, E, E, S, S, S, S, S],
        [UNST, UNST, FAIL, UNST, UNST, UNST, UNST, STAB],
    ),
    (
        "a bad probe restarts the good count",
        {},
        [E, E, E, S, S, S, S, E, S, S, S, S, S],
        [UNST, UNST, FAIL, UNST, UNST, UNST, UNST, FAIL, UNST, UNST, UNST, UNST, STAB],
    ),
    (
        "intermittent link accumulates points and fails over",
        {},
        [S, E, S, E, S, E, S],
        [UNST, UNST, UNST, UNST, UNST, FAIL, UNST],
    ),
    (
        "Stable survives one error (points were cleared on entering Stable)",
        {},
        [S] * 5 + [E, S],
        [UNST] * 4 + [STAB, UNST, UNST],
    ),
    (
        "no penalty: errors count like failure answers",
        {"error_penalty_points": 0},
        [E] * 5,
        [UNST, UNST, UNST, UNST, FAIL],
    ),
    (
        "tolerance 1, threshold 1: every probe decides",
        {"failure_tolerance": 1, "alive_threshold": 1},
        [F, S, E, S],
        [FAIL, STAB, FAIL, STAB],
    ),
    (
        "mixed failures and errors add up",
        {},
        [F, E, F],
        [UNST, UNST, UNST],
    ),
    ("mixed failures and errors reach tolerance", {}, [F, E, F, F], [UNST, UNST, UNST, FAIL]),
]


@pytest.mark.parametrize(
    ("settings", "results", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_state_sequence(
    settings: dict[str, int], results: list[ProbeResult], expected: list[Monitor]
) -> None:
    assert run(results, **settings) == expected


def test_init_until_first_probe() -> None:
    monitor = ProbeMonitor(5, 5, 1)
    assert monitor.state is Monitor.INIT
    assert (monitor.ok, monitor.points) == (0, 0)
    assert monitor.record(S) == (Monitor.INIT, Monitor.UNSTABLE)


def test_record_returns_old_and_new() -> None:
    monitor = ProbeMonitor(5, 5, 1)
    transitions = [monitor.record(E) for _ in range(4)]
    assert transitions == [(INIT, UNST), (UNST, UNST), (UNST, FAIL), (FAIL, FAIL)]


def test_points_reset_only_when_entering_stable() -> None:
    monitor = ProbeMonitor(5, 5, 1)
    monitor.record(E)
    monitor.record(E)
    for _ in range(4):
        monitor.record(S)
        assert monitor.points == 4, "good probes alone do not clear points"
    monitor.record(S)
    assert monitor.state is Monitor.STABLE
    assert monitor.points == 0
    monitor.record(F)
    assert (monitor.ok, monitor.points, monitor.state) == (0, 1, Monitor.UNSTABLE)


def test_counters_follow_the_arithmetic() -> None:
    monitor = ProbeMonitor(failure_tolerance=100, alive_threshold=100, error_penalty_points=3)
    monitor.record(S)
    monitor.record(S)
    assert (monitor.ok, monitor.points) == (2, 0)
    monitor.record(E)
    assert (monitor.ok, monitor.points) == (0, 4)
    monitor.record(F)
    assert (monitor.ok, monitor.points) == (0, 5)


@pytest.mark.parametrize(
    "settings",
    [{"failure_tolerance": 0}, {"alive_threshold": 0}, {"error_penalty_points": -1}],
)
def test_rejects_nonsense_settings(settings: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(settings))):
        ProbeMonitor(**settings)


def _stable(monitor: ProbeMonitor) -> ProbeMonitor:
    while monitor.state is not Monitor.STABLE:
        monitor.record(S)
    return monitor


@pytest.mark.parametrize("tolerance", [1, 2, 3, 5, 7, 10])
@pytest.mark.parametrize("penalty", [0, 1, 2, 4, 9])
@pytest.mark.parametrize("result", [E, F])
def test_rounds_to_fail_is_what_record_counts(
    tolerance: int, penalty: int, result: ProbeResult
) -> None:
    monitor = _stable(ProbeMonitor(tolerance, 3, penalty))
    rounds = 0
    while monitor.state is not Monitor.FAILED:
        monitor.record(result)
        rounds += 1
    assert monitor.rounds_to_fail(result) == rounds


@pytest.mark.parametrize("threshold", [1, 3, 5, 8])
def test_rounds_to_recover_is_what_record_counts(threshold: int) -> None:
    monitor = ProbeMonitor(5, threshold, 1)
    while monitor.state is not Monitor.FAILED:
        monitor.record(E)
    rounds = 0
    while monitor.state is not Monitor.STABLE:
        monitor.record(S)
        rounds += 1
    assert monitor.rounds_to_recover() == rounds


def test_rounds_with_the_defaults() -> None:
    monitor = ProbeMonitor()
    assert (monitor.rounds_to_fail(), monitor.rounds_to_fail(F)) == (3, 5)
    assert monitor.rounds_to_recover() == 5
    with pytest.raises(ValueError):
        monitor.rounds_to_fail(S)
