"""`synch run` against a real central Asterisk 22: when the sync runs after the central comes
back (within `syncmanager.jitter`, at the time GetDetails planned, never before the return), and
how it retries against a central that refuses (growing delays, read from GetDetails, ended by the
first success); and that the sync's AMI session to the central is closed between uses.
Ordering and states are asserted, never speed."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.asterisk import AsteriskInstance
from lab.dnsmasq import Dnsmasq
from lab.samples import central_configs
from lab.synchproc import SynchProcess, synch_for
from lab.wait import wait_until
from synch.services.syncing import SESSION_IDLE_CLOSE

pytestmark = pytest.mark.asterisk

JITTER = 5.0


@pytest.fixture
def upstream(dnsmasq: Callable[..., Dnsmasq]) -> Dnsmasq:
    return dnsmasq({"www.example.org": "127.0.0.42"})


@pytest.fixture
def synchs() -> Iterator[list[SynchProcess]]:
    started: list[SynchProcess] = []
    yield started
    for proc in started:
        proc.stop()


def details_when(synch: SynchProcess, timeout: float, check: Callable[[dict[str, Any]], bool],
                 what: str) -> dict[str, Any]:  # fmt: skip
    def look() -> dict[str, Any] | None:
        details = synch.details()
        return details if check(details) else None

    return wait_until(look, timeout, interval=0.05, message=f"{what}; log:\n{synch.log()}")


def metric(synch: SynchProcess, name: str) -> float:
    for line in synch.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exported")


def test_sync_after_the_central_returns_waits_its_planned_moment_within_the_jitter(
    tmp_path: Path, asterisk_factory: Callable[..., AsteriskInstance], upstream: Dnsmasq,
    synchs: list[SynchProcess],
) -> None:  # fmt: skip
    central = asterisk_factory("sched-central", configs=central_configs())
    synch = synch_for(tmp_path, central, upstream.port, syncmanager={"jitter": JITTER}).start()
    synchs.append(synch)
    details_when(synch, 30, lambda d: d["Monitor"] == "Stable" and d["Sync"] == "Synced",
                 "Stable and Synced")  # fmt: skip
    first = synch.details()
    # The first sync at start is not delayed: it ran when the central first answered.
    assert first["LastSync"]["Why"] in ("start", "central stable")
    assert first["SyncJitter"] == JITTER and first["SyncRetry"] is None

    central.kill()
    details_when(synch, 30, lambda d: d["Monitor"] == "Failed", "Failed")
    central.start()
    seen = details_when(synch, 60, lambda d: d["Monitor"] == "Stable", "Stable again")
    seen_at = time.monotonic()
    last = seen["LastSync"]
    if last.get("Why") == "central back":
        # Drawn so short that it ran before this first look: it still came after the return.
        assert last["Timestamp"] >= seen["MonitorSince"]
    else:
        plan = seen["NextSync"]
        assert plan["Why"] == "central back", seen
        assert 0 <= plan["In"] <= JITTER
        assert metric(synch, "synch_sync_next_timestamp_seconds") <= time.time() + JITTER
        done = details_when(
            synch, JITTER + 30, lambda d: d["LastSync"].get("Why") == "central back",
            "the sync after the return",
        )  # fmt: skip
        # Not before its planned moment (0.5 s: the reply's way here), after the return.
        assert time.monotonic() - seen_at >= plan["In"] - 0.5
        assert done["LastSync"]["Timestamp"] >= seen["MonitorSince"]
        last = done["LastSync"]
    assert last["Result"] in ("applied", "unchanged"), last
    after = synch.details()
    assert after["Sync"] == "Synced" and after["NextSync"]["Why"] == "scheduled"
    assert "the central is back; next sync in" in synch.log()


def test_a_refusing_central_gets_growing_retry_delays_until_it_answers(
    tmp_path: Path, asterisk_factory: Callable[..., AsteriskInstance], upstream: Dnsmasq,
    synchs: list[SynchProcess],
) -> None:  # fmt: skip
    central = asterisk_factory("sched-refuses", configs=central_configs())
    # The central answers every GetConfig of the accounts with an error (its probes are fine).
    endpoints = central.config_dir / "pjsip.endpoint.conf"
    kept = endpoints.read_text()
    endpoints.unlink()
    # interval 10 s: retries after about 1, 2, 4, 8 s (a tenth of it, doubling up to it).
    synch = synch_for(tmp_path, central, upstream.port, syncmanager={"interval": 10}).start()
    synchs.append(synch)
    retries: dict[int, dict[str, Any]] = {}

    def four_failures(details: dict[str, Any]) -> bool:
        retry = details.get("SyncRetry")
        if retry:
            retries.setdefault(retry["Failures"], details)
        return len(retries) >= 4 and max(retries) >= 4

    details_when(synch, 60, four_failures, "four failed syncs in a row")
    assert all(d["Monitor"] != "Failed" for d in retries.values())  # Ping works: no failover
    delays = []
    for failures in sorted(retries)[:4]:
        details = retries[failures]
        assert details["Sync"] == "Unsynced"
        assert "GetConfig refused" in details["LastSync"]["Reason"]
        assert details["NextSync"]["Why"] == "retry"
        ceiling = min(10.0, 1.0 * 2 ** (failures - 1))
        delay = details["SyncRetry"]["Delay"]
        assert ceiling / 2 - 0.05 <= delay <= ceiling + 0.05, (failures, delay)
        delays.append(delay)
    assert delays == sorted(delays)  # growing
    # Retries, besides the cycles at the first answer and the first Stable (at once).
    whys = [retries[n]["LastSync"]["Why"] for n in sorted(retries)]
    assert set(whys) <= {"start", "central stable", "retry"} and "retry" in whys, whys
    assert metric(synch, "synch_sync_backoff_seconds") > 0

    central.write_config("pjsip.endpoint.conf", kept)  # the central answers again
    synced = details_when(synch, 60, lambda d: d["Sync"] == "Synced", "Synced once it answers")
    assert synced["SyncRetry"] is None and synced["NextSync"]["Why"] == "scheduled"
    assert synced["LastSync"]["Why"] == "retry"
    assert metric(synch, "synch_sync_backoff_seconds") == 0


def manager_sessions(central: AsteriskInstance) -> int:
    """AMI sessions open at the central (`manager show connected`)."""
    out = central.cli("manager show connected")
    match = re.search(r"(\d+) users? connected", out)
    assert match, out
    return int(match.group(1))


def test_the_sync_session_is_closed_between_uses(
    tmp_path: Path, asterisk_factory: Callable[..., AsteriskInstance], upstream: Dnsmasq,
    synchs: list[SynchProcess],
) -> None:  # fmt: skip
    """Asterisk wakes every manager session for each event it emits: synch keeps only its
    probes' session open to the central, and opens the sync's when a cycle needs it."""
    central = asterisk_factory("sched-sessions", configs=central_configs())
    # This lab synch reloads the central itself as its branch: that session stays open too.
    synch = synch_for(tmp_path, central, upstream.port).start()
    synchs.append(synch)
    details_when(synch, 30, lambda d: d["Sync"] == "Synced" and d["Monitor"] == "Stable",
                 "Synced and Stable")  # fmt: skip
    wait_until(lambda: manager_sessions(central) == 2, SESSION_IDLE_CLOSE + 20, interval=0.5,
               message="the sync's session closed once idle: the probes' and the branch's left")
    assert synch.admin("Sync")["ok"] is True
    assert manager_sessions(central) == 3  # opened for the cycle...
    wait_until(lambda: manager_sessions(central) == 2, SESSION_IDLE_CLOSE + 20, interval=0.5,
               message="...and closed again")  # fmt: skip
    assert synch.status()["Sync"] == "Synced"
