"""The probe service's bookkeeping of rounds (synch.services.probing.ProbeService.record), fed
rounds by hand: what it counts, reports, exports, and when it wakes the sync."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from synch.ami.client import AmiClient
from synch.metrics import Metrics
from synch.probe import Check, ProbeResult, ProbeRound
from synch.services.probing import ProbeService
from tests.unit.test_config import parse

S, F, E = ProbeResult.SUCCESS, ProbeResult.FAILURE, ProbeResult.ERROR


def service(**probemonitor: Any) -> tuple[ProbeService, Metrics, list[str]]:
    settings = parse(probemonitor={"alivethreshold": 2, **probemonitor})
    metrics = Metrics()
    client = AmiClient("127.0.0.2", 5038, "synch", "x", timeout=1)
    probes = ProbeService(settings, client, metrics)
    woken: list[str] = []
    probes.ami_answers.append(lambda: woken.append(probes.monitor.state.value))
    return probes, metrics, woken


def sip_round(ami: ProbeResult, sip: ProbeResult, uplink: ProbeResult | None = None) -> ProbeRound:
    return ProbeRound(
        ami=Check(ami, 0.01, "" if ami is S else "central AMI: no answer within 4 s"),
        sip={"udp": Check(sip, 0.01, "" if sip is S else "central SIP UDP: refused",
                          answer="401 Unauthorized" if sip is S else "")},
        uplink=None if uplink is None else Check(uplink, 0.01, "" if uplink is S else "down"),
    )  # fmt: skip


def sample(metrics: Metrics, name: str) -> float:
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not exported")


def test_ami_only_outage_keeps_stable_blocks_sync_and_wakes_it_when_ami_is_back() -> None:
    probes, metrics, woken = service()
    probes.record(sip_round(S, S))
    assert woken == ["Unstable"]  # the first answer: the first sync runs at once
    probes.record(sip_round(S, S))
    assert probes.monitor.state.value == "Stable" and probes.ami_problem() == ""
    for _ in range(10):
        probes.record(sip_round(E, S))
    details = probes.details()
    assert (details["Monitor"], details["Service"], details["Outage"]) == (
        "Stable",
        "Normal",
        "ami",
    )
    assert details["CentralReachable"] is False and details["CentralSipReachable"] is True
    assert details["Probes"] == {"success": 12, "failure": 0, "error": 0}
    assert details["AmiProbes"] == {"success": 2, "failure": 0, "error": 10}
    assert probes.ami_problem().startswith("central AMI does not answer (central AMI: no answer")
    assert sample(metrics, "synch_central_ami_up") == 0
    assert sample(metrics, 'synch_central_sip_up{transport="udp"}') == 1
    assert sample(metrics, 'synch_outage_cause{cause="ami"}') == 1
    assert woken == ["Unstable"]
    probes.record(sip_round(S, S))
    assert woken == ["Unstable", "Stable"]  # AMI back while Stable: sync now
    assert probes.details()["Outage"] == "none"


def test_sip_outage_fails_over_and_no_wake_until_stable_again() -> None:
    probes, metrics, woken = service(uplinkcheck=["192.0.2.1"])
    for _ in range(2):
        probes.record(sip_round(S, S, S))
    woken.clear()
    for _ in range(3):
        probes.record(sip_round(S, E, S))
    details = probes.details()
    assert (details["Monitor"], details["Service"], details["Outage"]) == (
        "Failed", "Failover", "central")  # fmt: skip
    assert details["LastProbe"]["Sip"]["udp"]["Error"] == "central SIP UDP: refused"
    assert sample(metrics, "synch_uplink_up") == 1
    # Both down (the uplink too): one error per round; then everything back.
    probes.record(sip_round(E, E, E))
    assert probes.details()["Outage"] == "uplink"
    assert sample(metrics, 'synch_outage_cause{cause="uplink"}') == 1
    probes.record(sip_round(S, S, S))
    assert probes.monitor.state.value == "Unstable"
    assert woken == []  # AMI back after a failover: entering Stable will sync, not this
    probes.record(sip_round(S, S, S))
    assert (probes.monitor.state.value, probes.service.value) == ("Stable", "Normal")
    # defaultstate Failover: the first Stable was a fallback too.
    assert probes.failovers == 1 and probes.fallbacks == 2


def test_without_sip_probing_ami_is_the_round_and_no_sip_series() -> None:
    probes, metrics, _ = service(siptransports=[])
    probes.record(ProbeRound(ami=Check(F, 0.01, "Authentication failed")))
    details = probes.details()
    assert details["Probes"]["failure"] == 1 and "SipProbes" not in details
    assert details["CentralSipReachable"] is None and details["UplinkReachable"] is None
    assert details["Outage"] == "unknown"
    text = generate_latest(metrics.registry).decode()
    assert "synch_central_sip_up{" not in text and "synch_uplink_up" not in text
    assert "synch_sip_probes_total{" not in text
