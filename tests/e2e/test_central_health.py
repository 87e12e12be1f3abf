"""The central's health as the phones need it, on the three-namespace bed (lab/testbed.py):
synch probes the central's SIP service where the phones register (beside its AMI) and checks
its own uplink (a host beyond the WAN, here an address of the WAN namespace, 10.232.3.1).

- the WAN cut: failover, reported as "our uplink is down";
- the central's Asterisk stopped with the WAN up: failover, reported as "the central is down";
- the central's SIP port firewalled while its AMI answers: failover, and the phones, which
  cannot register at the central any more, register at the branch; back when SIP is;
- the central's AMI port firewalled while SIP answers: no failover, the phones stay.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.synchproc import metric_value
from lab.testbed import BRANCH_LAN, CENTRAL_WAN, PHONE_EXTS, TestBed
from lab.wait import wait_until

pytestmark = [pytest.mark.asterisk, pytest.mark.netns, pytest.mark.slow]

UPLINK_TARGET = "10.232.3.1"  # "the provider's gateway": beyond the WAN link, not the central
CENTRAL_FIREWALL = "synch_e2e_central_fw"


@pytest.fixture(scope="module")
def bed(lab: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    testbed = TestBed.build(tmp_path_factory.mktemp("health-bed"))
    try:
        # A host beyond the WAN: an address of the WAN side's namespace that is not the
        # central's. Nothing listens on it: its kernel's TCP reset is the answer.
        testbed.central_host.ip("addr", "add", f"{UPLINK_TARGET}/32", "dev", "lo")
        testbed.branch_host.ip("route", "add", f"{UPLINK_TARGET}/32", "via", CENTRAL_WAN)
        synch = testbed.synch_proc
        synch.config["probemonitor"]["uplinkcheck"] = [f"{UPLINK_TARGET}:53"]
        synch.write_config()
        synch.stop()
        synch.start()
        yield testbed
    finally:
        testbed.close()


@pytest.fixture
def healthy(bed: TestBed) -> Iterator[TestBed]:
    bed.heal()
    # A link that went down lost its routes; the WAN's own comes back with it (Wan.restore),
    # this one is put back here, as a router's configuration would.
    bed.branch_host.ip("route", "replace", f"{UPLINK_TARGET}/32", "via", CENTRAL_WAN)
    synch = bed.synch_proc
    wait_until(
        lambda: synch.details()["Outage"] == "none" and synch.details()["UplinkReachable"],
        10, message=f"healthy with the uplink answering: {synch.details()}",
    )  # fmt: skip
    assert synch.details()["CentralSipReachable"] is True
    yield bed
    bed.central_host.nft_delete(CENTRAL_FIREWALL)


def test_wan_cut_is_reported_as_our_uplink_down(healthy: TestBed) -> None:
    bed = healthy
    synch = bed.synch_proc
    bed.wan.cut()
    bed.wait_dns(BRANCH_LAN, bed.timers.failover_bound)
    details = synch.details()
    assert details["Outage"] == "uplink", details
    assert details["OutageText"].startswith("our uplink is down")
    assert details["UplinkReachable"] is False
    assert "uplink check" in details["LastProbe"]["Uplink"]["Error"]
    metrics = synch.metrics()
    assert metric_value(metrics, "synch_uplink_up") == 0
    assert metric_value(metrics, 'synch_outage_cause{cause="uplink"}') == 1
    assert metric_value(metrics, 'synch_uplink_checks_total{result="error"}') >= 1
    assert "our uplink is down" in synch.log(20000)


def test_central_stopped_with_wan_up_is_reported_as_central_down(healthy: TestBed) -> None:
    bed = healthy
    assert bed.central is not None
    synch = bed.synch_proc
    bed.central.stop()
    bed.wait_dns(BRANCH_LAN, bed.timers.failover_bound)
    details = synch.details()
    assert details["Outage"] == "central", details
    assert details["OutageText"].startswith("the central is down")
    assert details["UplinkReachable"] is True
    assert details["CentralReachable"] is False and details["CentralSipReachable"] is False
    metrics = synch.metrics()
    assert metric_value(metrics, "synch_uplink_up") == 1
    assert metric_value(metrics, 'synch_outage_cause{cause="central"}') == 1
    assert "the central is down" in synch.log(20000)


def test_central_sip_firewalled_with_ami_open_moves_the_phones(healthy: TestBed) -> None:
    bed = healthy
    synch = bed.synch_proc
    t = bed.timers
    cut = time.monotonic()
    # The central's SIP port drops everything (phones' REGISTERs and synch's OPTIONS alike);
    # its AMI stays open.
    bed.central_host.nft_drop(CENTRAL_FIREWALL, "wan0", "udp dport 5060")
    bed.wait_dns(BRANCH_LAN, t.failover_bound)
    details = synch.details()
    assert details["CentralReachable"] is True and details["CentralSipReachable"] is False
    assert details["Outage"] == "central", details
    bed.wait_phones(BRANCH_LAN, t.phone_move_bound, after=cut)
    assert set(PHONE_EXTS) <= bed.contacts(bed.branch)

    restored = time.monotonic()
    bed.central_host.nft_delete(CENTRAL_FIREWALL)
    bed.wait_state(30, Monitor="Stable", Service="Normal")
    bed.wait_phones(CENTRAL_WAN, t.phone_move_bound + 5, after=restored)


def test_central_ami_firewalled_with_sip_fine_keeps_the_phones(healthy: TestBed) -> None:
    bed = healthy
    synch = bed.synch_proc
    before = synch.details()
    cut = time.monotonic()
    bed.central_host.nft_drop(CENTRAL_FIREWALL, "wan0", "tcp dport 5038")
    wait_until(
        lambda: synch.details()["AmiProbes"]["error"] >= before["AmiProbes"]["error"] + 8, 30,
        message="AMI probes failing",
    )  # fmt: skip
    details = synch.details()
    assert (details["Monitor"], details["Service"]) == ("Stable", "Normal"), details
    assert details["Failovers"] == before["Failovers"]
    assert details["Outage"] == "ami" and details["SyncBlocked"], details
    assert bed.dns() == CENTRAL_WAN
    for phone in bed.phones:
        assert phone.registered_at(CENTRAL_WAN), phone.timeline(cut)
        assert not phone.failures_between(cut, time.monotonic()), phone.timeline(cut)
