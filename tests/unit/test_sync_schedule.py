"""synch.sync.schedule: when the next sync is due, with a fake clock and seeded random numbers;
and a fleet of 500 schedules, counted, after a central outage."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from synch.sync.schedule import SPREAD, Ending, Plan, SyncSchedule, Trigger

INTERVAL, JITTER = 300.0, 60.0
RETRY_FIRST = 30.0  # a tenth of the interval


def schedule(seed: int = 1, interval: float = INTERVAL, jitter: float = JITTER) -> SyncSchedule:
    return SyncSchedule(interval, jitter, random.Random(seed))


def test_scheduled_cycles_wait_the_interval_give_or_take_a_tenth() -> None:
    s = schedule()
    now = 1000.0
    plan = s.start(now)
    assert plan.trigger is Trigger.SCHEDULED
    waits = []
    for _ in range(2000):
        waits.append(plan.at - now)
        now = plan.at
        plan = s.done(now, Ending.ANSWERED)
        assert plan.trigger is Trigger.SCHEDULED
    assert min(waits) >= INTERVAL * (1 - SPREAD) and max(waits) <= INTERVAL * (1 + SPREAD)
    assert INTERVAL * 0.99 < sum(waits) / len(waits) < INTERVAL * 1.01  # no drift on average
    assert max(waits) - min(waits) > INTERVAL * SPREAD * 1.5  # really spread


def test_no_spread_is_the_plain_interval() -> None:
    s = SyncSchedule(INTERVAL, 0, random.Random(1), spread=0)
    assert s.start(0).at == INTERVAL
    assert s.done(10, Ending.ANSWERED).at == 10 + INTERVAL


def test_first_answer_is_at_once_and_wait_counts_down() -> None:
    s = schedule()
    assert s.wait(0) == INTERVAL  # nothing planned yet
    s.start(0)
    assert s.at_once(5.0, Trigger.START) == Plan(5.0, Trigger.START)
    assert s.wait(5.0) == 0 and s.wait(9.0) == 0
    plan = s.done(6.0, Ending.ANSWERED)
    assert s.wait(6.0) == plan.at - 6.0 and s.wait(plan.at + 1) == 0


def test_recovery_is_within_the_jitter_and_keeps_a_sooner_plan() -> None:
    for seed in range(200):
        s = schedule(seed)
        s.start(0)  # the next scheduled cycle is about 300 s away
        plan = s.recovered(100.0)
        assert plan.trigger is Trigger.RECOVERY
        assert 100.0 <= plan.at <= 100.0 + JITTER
    s = schedule()
    s.start(0)
    s.done(95.0, Ending.ANSWERED)  # scheduled for about 395 s
    sooner = s.at_once(100.0, Trigger.START)  # due now: the recovery cannot come sooner
    assert s.recovered(100.0) == sooner
    s = schedule()
    soon = s.done(0, Ending.CENTRAL_FAILED)  # a retry within 30 s, sooner than most draws
    assert soon.at <= RETRY_FIRST
    assert s.recovered(soon.at - 0.001) == soon


def test_no_jitter_means_at_once() -> None:
    s = schedule(jitter=0)
    s.start(0)
    assert s.recovered(42.0) == Plan(42.0, Trigger.RECOVERY)


def test_retries_after_central_failures_grow_to_the_interval_and_reset_on_success() -> None:
    for seed in range(100):
        s = schedule(seed)
        s.start(0)
        now, delays = 0.0, []
        for _ in range(8):
            plan = s.done(now, Ending.CENTRAL_FAILED)
            assert plan.trigger is Trigger.RETRY
            delays.append(plan.at - now)
            assert s.backoff == pytest.approx(delays[-1])
            now = plan.at
        ceilings = [min(INTERVAL, RETRY_FIRST * 2**n) for n in range(8)]
        assert ceilings == [30, 60, 120, 240, 300, 300, 300, 300]
        for delay, ceiling in zip(delays, ceilings, strict=True):
            assert ceiling / 2 <= delay <= ceiling
        assert delays[:4] == sorted(delays[:4])  # growing until the interval caps it
        assert s.failures == 8
        plan = s.done(now, Ending.ANSWERED)
        assert plan.trigger is Trigger.SCHEDULED and s.failures == 0 and s.backoff == 0
        assert s.done(plan.at, Ending.CENTRAL_FAILED).at - plan.at <= RETRY_FIRST


def test_retries_scale_with_the_interval() -> None:
    s = schedule(interval=10.0)
    ceilings = [1, 2, 4, 8, 10, 10]
    for n, ceiling in enumerate(ceilings):
        plan = s.done(n * 100.0, Ending.CENTRAL_FAILED)
        assert ceiling / 2 <= plan.at - n * 100.0 <= ceiling
    s = SyncSchedule(10.0, 0, random.Random(1), retry_first=4.0)
    assert 2.0 <= s.done(0, Ending.CENTRAL_FAILED).at <= 4.0


def test_blocked_waits_an_interval_and_keeps_the_failures() -> None:
    s = schedule()
    s.done(0, Ending.CENTRAL_FAILED)
    s.done(30, Ending.CENTRAL_FAILED)
    plan = s.blocked(100.0)
    assert plan.trigger is Trigger.SCHEDULED
    assert INTERVAL * 0.9 <= plan.at - 100.0 <= INTERVAL * 1.1
    assert s.failures == 2 and s.backoff == 0
    assert s.done(plan.at, Ending.CENTRAL_FAILED).at - plan.at <= 4 * RETRY_FIRST  # third


def test_a_return_heard_during_a_cycle_keeps_its_sooner_cycle() -> None:
    s = schedule(seed=3)
    s.at_once(0, Trigger.START)  # the loop runs this cycle ...
    recovery = s.recovered(1.0)  # ... and the central comes back meanwhile
    assert recovery.trigger is Trigger.RECOVERY
    assert s.done(2.0, Ending.ANSWERED) == recovery  # the interval would be later
    assert s.backoff == 0
    s = schedule(seed=3, jitter=0)
    s.at_once(0, Trigger.START)
    s.recovered(1.0)  # due at once: already past when the cycle ends
    assert s.done(2.0, Ending.ANSWERED).trigger is Trigger.SCHEDULED


@pytest.mark.parametrize(
    "kwargs", [{"interval": 0}, {"jitter": -1}, {"spread": 1.0}, {"retry_first": 0}]
)
def test_bad_arguments(kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"interval": INTERVAL, "jitter": JITTER, **kwargs}
    interval, jitter = args.pop("interval"), args.pop("jitter")
    with pytest.raises(ValueError):
        SyncSchedule(interval, jitter, random.Random(1), **args)


# -- a fleet: 500 branches ---------------------------------------------------------------------

BRANCHES = 500


def fleet(jitter: float, seed: int = 7) -> list[SyncSchedule]:
    rng = random.Random(seed)
    return [SyncSchedule(INTERVAL, jitter, random.Random(rng.random())) for _ in range(BRANCHES)]


def per_second(times: list[float]) -> Counter[int]:
    return Counter(int(t) for t in times)


def test_fleet_after_the_central_returns_is_spread_over_the_jitter() -> None:
    """500 branches hear the central back within the same probe interval (5 s): without
    jitter they all fetch in those 5 s; with 60 s, at most a few a second, in order of plan."""
    rng = random.Random(11)
    heard = [rng.uniform(0, 5) for _ in range(BRANCHES)]

    def plans(jitter: float) -> list[float]:
        out = []
        for s, when in zip(fleet(jitter), heard, strict=True):
            s.start(-1000.0)  # a scheduled cycle long before: the outage blocked it
            s.blocked(-100.0)  # next scheduled about 200 s after the return
            out.append(s.recovered(when).at)
        return out

    herd, spread = plans(0), plans(JITTER)
    assert max(per_second(herd).values()) >= BRANCHES / 5 * 0.7  # ~100 a second
    assert max(herd) <= 5
    counts = per_second(spread)
    assert max(spread) <= 5 + JITTER and min(spread) >= 0
    assert max(counts.values()) <= 25  # ~8 a second on average
    assert len(counts) >= JITTER - 2  # nearly every second of the window has some
    for s, when in zip(fleet(JITTER), heard, strict=True):
        s.start(-1000.0)
        assert s.recovered(when).at >= when  # never before the return was heard


def test_fleet_started_together_leaves_lockstep() -> None:
    """500 branches whose first sync ran in the same second: after a few cycles their syncs
    are spread over a minute and more, not one second."""
    schedules = fleet(JITTER)
    due = [s.done(0.0, Ending.ANSWERED).at for s in schedules]
    for _ in range(3):
        due = [s.done(at, Ending.ANSWERED).at for s, at in zip(schedules, due, strict=True)]
    assert max(due) - min(due) > 120
    assert max(per_second(due).values()) <= 25


def test_fleet_against_a_refusing_central_backs_off() -> None:
    """The central refuses everyone for 20 minutes: each branch tries fewer than 10 times
    (every interval: 4 times, every 30 s: 40 times), and the tries spread out."""
    tries: list[float] = []
    for s in fleet(JITTER):
        plan = s.recovered(0.0)
        while plan.at < 1200:
            tries.append(plan.at)
            plan = s.done(plan.at, Ending.CENTRAL_FAILED)
    per_branch = len(tries) / BRANCHES
    assert 6 <= per_branch <= 10
    assert max(per_second(tries).values()) <= 40
