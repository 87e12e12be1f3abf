"""Falling back waits for the branch's calls, against a real central and branch Asterisk 22:
a call up at the branch (an AMI Originate of a Local channel pair that answers and waits: one
call, two channels) keeps the phones at the branch after the central recovers, until it is
hung up, or until `probemonitor.fallbackholdmax`; a branch AMI user that may not list the
channels holds nothing. States and their order are asserted, never how long anything took."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.asterisk import AsteriskInstance
from lab.dnsmasq import Dnsmasq
from lab.samples import central_configs
from lab.synchproc import SynchProcess, metric_value, synch_for
from lab.wait import wait_until

pytestmark = pytest.mark.asterisk

CENTRAL, BRANCH = "127.0.0.10", "127.0.0.20"  # lab_config's targetnormal / targetfailover
# A call that answers and stays up until hung up: Local/hold@holding;2 runs this, ;1 Wait().
HOLDING = "[holding]\nexten => hold,1,Answer()\n same => n,Wait(600)\n"
LIMITED_USER, LIMITED_SECRET = "limited", "limited-secret-1"
# Ping, GetConfig and Reload, but not CoreShowChannels (write = reporting or system).
LIMITED = f"[{LIMITED_USER}]\nsecret = {LIMITED_SECRET}\nread = system,config\nwrite = config\n"


@pytest.fixture
def central(asterisk_factory: Callable[..., AsteriskInstance]) -> AsteriskInstance:
    return asterisk_factory("central", configs=central_configs())


@pytest.fixture
def branch(asterisk_factory: Callable[..., AsteriskInstance]) -> AsteriskInstance:
    return asterisk_factory("branch", configs={"extensions.conf": HOLDING}, manager_users=LIMITED)


@pytest.fixture
def upstream(dnsmasq: Callable[..., Dnsmasq]) -> Dnsmasq:
    return dnsmasq({"www.example.org": "127.0.0.42"})


@pytest.fixture
def start_synch(
    tmp_path: Path, central: AsteriskInstance, branch: AsteriskInstance, upstream: Dnsmasq
) -> Iterator[Callable[..., SynchProcess]]:
    """`start_synch(**sections)`: synch between the two, in Failover at start (lab_config)."""
    procs: list[SynchProcess] = []

    def start(**overrides: dict[str, Any]) -> SynchProcess:
        proc = synch_for(tmp_path, central, upstream.port, branch=branch, **overrides)
        procs.append(proc)
        return proc.start()

    yield start
    for proc in procs:
        proc.stop()


def place_call(branch: AsteriskInstance) -> None:
    reply = branch.ami({"Action": "Originate", "Channel": "Local/hold@holding",
                        "Application": "Wait", "Data": "600", "Async": "true"})  # fmt: skip
    assert reply.get("Response") == "Success", reply
    wait_until(lambda: len(branch.channels()) == 2, 15,
               message=f"the call is up at the branch: {branch.channels()}")  # fmt: skip


def hang_up(branch: AsteriskInstance) -> None:
    branch.cli("channel request hangup all")
    wait_until(lambda: branch.channels() == [], 15, message="the call ended at the branch")


def in_order(log: str, *lines: str) -> bool:
    """Every one of `lines` is in `log`, each after the one before it."""
    at = 0
    for line in lines:
        at = log.find(line, at)
        if at < 0:
            return False
    return True


def test_fallback_waits_while_a_call_is_up_and_goes_when_it_ends(
    start_synch: Callable[..., SynchProcess], central: AsteriskInstance,
    branch: AsteriskInstance,
) -> None:  # fmt: skip
    synch = start_synch()
    synch.wait_state(15, Monitor="Stable", Service="Normal")
    assert synch.details()["FallbackHeld"] is None  # no call at start: fell back at once
    central.kill()
    synch.wait_state(15, Monitor="Failed", Service="Failover")
    place_call(branch)
    assert synch.resolve_a() == BRANCH

    central.start()
    held = synch.wait_state(30, Monitor="Stable")
    assert held["Service"] == "Failover", f"fell back during a call; log:\n{synch.log()}"
    assert held["FallbackHeld"]["Calls"] == 1 and held["FallbackHeld"]["Channels"] == 2
    assert synch.resolve_a() == BRANCH
    # Probe rounds go on, each counting the call again; the phones stay at the branch.
    rounds = held["Probes"]["success"]
    wait_until(lambda: synch.details()["Probes"]["success"] >= rounds + 3, 15,
               message="three more probe rounds")  # fmt: skip
    still = synch.details()
    assert (still["Monitor"], still["Service"]) == ("Stable", "Failover")
    assert still["FallbackHeld"]["Since"] == held["FallbackHeld"]["Since"]
    assert synch.resolve_a() == BRANCH
    metrics = synch.metrics()
    assert metric_value(metrics, "synch_fallback_held") == 1
    assert metric_value(metrics, "synch_fallback_held_calls") == 1
    status = synch.cli("status").stdout
    assert "The central answers again; phones stay at the branch until its call ends" in status

    hang_up(branch)
    done = synch.wait_state(15, Service="Normal")
    assert done["FallbackHeld"] is None and done["Monitor"] == "Stable"
    assert synch.resolve_a() == CENTRAL
    assert metric_value(synch.metrics(), "synch_fallback_held") == 0
    assert in_order(
        synch.log(20000),
        "monitor Failed -> Unstable",
        "monitor Unstable -> Stable",
        "falling back waits for 1 call (2 channels) at the branch",
        "the calls at the branch ended: falling back after waiting",
        "service Failover -> Normal",
    ), synch.log()


def test_the_maximum_ends_the_wait_with_the_call_still_up(
    start_synch: Callable[..., SynchProcess], branch: AsteriskInstance
) -> None:
    # synch starts in Failover while the branch has a call up (say, restarted mid-outage):
    # the central answers, and falling back waits, here for at most 3 s.
    place_call(branch)
    synch = start_synch(probemonitor={"fallbackholdmax": 3})
    synch.wait_state(30, Monitor="Stable", Service="Normal")
    assert synch.resolve_a() == CENTRAL
    assert len(branch.channels()) == 2  # the call is still up
    assert in_order(
        synch.log(20000),
        "monitor Unstable -> Stable",
        "falling back waits for 1 call (2 channels) at the branch (at most 3 s",
        "falling back after waiting the maximum (probemonitor.fallbackholdmax 3 s) with "
        "1 call (2 channels) still up at the branch",
        "service Failover -> Normal",
    ), synch.log()
    assert synch.details()["FallbackHeld"] is None


def test_a_branch_user_that_may_not_list_channels_waits_for_nothing(
    start_synch: Callable[..., SynchProcess], branch: AsteriskInstance
) -> None:
    place_call(branch)
    synch = start_synch(amilocal={"username": LIMITED_USER, "password": LIMITED_SECRET})
    synch.wait_state(30, Monitor="Stable", Service="Normal")
    log = synch.log(20000)
    assert "cannot count the calls at the branch, so falling back does not wait" in log, log
    assert "needs `write = reporting` (or system) for CoreShowChannels" in log, log
    assert "falling back waits" not in log
    assert synch.details()["BranchReachable"] is True  # its Ping needs no permission
