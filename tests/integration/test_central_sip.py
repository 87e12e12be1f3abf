"""The central's SIP service, probed beside its AMI, against a real Asterisk 22 in a network
namespace (so that its SIP and AMI ports can be dropped apart with nftables inside it):

- `res_pjsip` unloaded while AMI answers, and the SIP port dropped while AMI is open: synch
  fails over (phones would fail), and falls back once SIP answers again; the detection time with
  the default timers is measured and printed (never asserted as a speed);
- the AMI port dropped while SIP answers: no failover, the sync paused and reported;
- UDP, TCP and TLS probed at once: one transport failing fails over.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.asterisk import AsteriskInstance, new_instance
from lab.dnsmasq import Dnsmasq
from lab.netns import Netns
from lab.samples import central_configs
from lab.synchproc import SynchProcess, metric_samples, metric_value, synch_for
from lab.wait import wait_until
from tests.figures import report_figures

pytestmark = [pytest.mark.asterisk, pytest.mark.netns]

FAILOVER_TARGET = "127.0.0.20"  # lab_config's targetfailover
NFT_TABLE = "synch_sip_test"
# lab_config's timers: interval 0.5 s, timeout 0.4 s, Failed after 3 errors, Stable after 3.
LAB_BOUND = 3 * 0.5 + 0.4 + 3.0
# The defaults (failuretolerance 5, alivethreshold 5, errorpenaltypoints 1, interval 5 s,
# timeout 4 s): Failed within 3 probes plus one timeout; the margin absorbs a loaded machine.
DEFAULTS = {"failureTolerance": 5, "aliveThreshold": 5, "errorPenaltyPoints": 1, "interval": 5}
DEFAULT_BOUND = 3 * 5 + 4 + 5.0
FIGURES: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def figures_at_the_end(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    title = "SIP-only failure detection, default timers (5, 5, 1, 5 s, 4 s)"
    report_figures(request, FIGURES, title=title, cache_dir="synch-sip", filename="figures.txt")


@pytest.fixture
def ns(netns_factory: Callable[..., Netns]) -> Netns:
    return netns_factory()


@pytest.fixture
def branch(asterisk_factory: Callable[..., AsteriskInstance]) -> AsteriskInstance:
    return asterisk_factory("branch")


@pytest.fixture
def upstream(dnsmasq: Callable[..., Dnsmasq]) -> Dnsmasq:
    return dnsmasq({"www.example.org": "127.0.0.42"})


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def sip_central(lab: Path, ns: Netns, tmp_path: Path) -> Iterator[Callable[..., AsteriskInstance]]:
    """`sip_central(tls=False)`: the central in `ns`, AMI on 5038, PJSIP on UDP and TCP 5060
    (and TLS 5061 with a self-signed certificate), started."""
    made: list[AsteriskInstance] = []

    def start(tls: bool = False) -> AsteriskInstance:
        inst = new_instance(
            "central-sip", netns=ns.name, ami_host=ns.ns_addr, ami_port=5038,
            sip_host=ns.ns_addr, sip_port=5060, configs=central_configs(),
        )  # fmt: skip
        made.append(inst)
        extra = f"[transport-tcp]\ntype = transport\nprotocol = tcp\nbind = {ns.ns_addr}:5060\n"
        if tls:
            openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=central", "-keyout", "sip.key", "-out", "sip.pem",
                    cwd=tmp_path)  # fmt: skip
            for name in ("sip.pem", "sip.key"):
                inst.write_config(f"keys/{name}", (tmp_path / name).read_text())
            keys = inst.inside(inst.config_dir / "keys")
            extra += (
                f"\n[transport-tls]\ntype = transport\nprotocol = tls\nbind = {ns.ns_addr}:5061\n"
                f"cert_file = {keys}/sip.pem\npriv_key_file = {keys}/sip.key\nmethod = tlsv1_2\n"
            )
        pjsip = inst.read_config("pjsip.conf").replace(
            "\n#tryinclude", f"\n{extra}\n#tryinclude", 1
        )
        inst.write_config("pjsip.conf", pjsip)
        inst.start()
        return inst

    yield start
    for inst in made:
        inst.remove()


def start_synch(
    tmp_path: Path,
    central: AsteriskInstance,
    branch: AsteriskInstance,
    upstream: Dnsmasq,
    ns: Netns,
    *,
    transports: list[str],
    defaults: bool = False,
) -> SynchProcess:
    probemonitor: dict[str, Any] = {"siptransports": transports}
    dnsservice: dict[str, Any] = {"targetnormal": ns.ns_addr}
    amiremote: dict[str, Any] = {}
    if defaults:  # the shipped timers; start in Normal to measure from the first probe
        probemonitor.update(DEFAULTS)
        amiremote["timeout"] = 4
        dnsservice["defaultstate"] = "Normal"
    proc = synch_for(
        tmp_path, central, upstream.port, branch=branch, central_host=ns.ns_addr,
        probemonitor=probemonitor, dnsservice=dnsservice, amiremote=amiremote,
    )  # fmt: skip
    return proc.start()


@pytest.fixture
def synchs() -> Iterator[list[SynchProcess]]:
    procs: list[SynchProcess] = []
    yield procs
    for proc in procs:
        proc.stop()


def wait_failover(synch: SynchProcess, since: float, bound: float) -> float:
    """Poll the SIP name until it answers the branch; seconds from `since`."""
    wait_until(
        lambda: synch.resolve_a() == FAILOVER_TARGET, bound, interval=0.05,
        message=f"DNS flips to the branch; log:\n{synch.log()}",
    )  # fmt: skip
    return time.monotonic() - since


def drop(ns: Netns, match: str) -> None:
    """Drop what reaches the central's namespace and matches `match` (e.g. `udp dport 5060`),
    without a reply: a firewall in front of that port."""
    ns.nft_drop(NFT_TABLE, ns.ns_if, match)


def sip_answer(details: dict[str, Any], transport: str = "udp") -> str:
    return str(details["LastProbe"].get("Sip", {}).get(transport, {}).get("Answer", ""))


def healthy(synch: SynchProcess, timeout: float, transports: tuple[str, ...] = ("udp",)) -> None:
    """Stable, Normal, and every transport answered by Asterisk (a 401: the probe's From user
    is a synced account, challenged like a phone)."""
    synch.wait_state(timeout, Monitor="Stable", Service="Normal")
    wait_until(
        lambda: all(sip_answer(synch.details(), t).startswith("401") for t in transports),
        timeout, message=f"SIP answers on {transports}: {synch.details()}",
    )  # fmt: skip


@pytest.mark.slow
def test_sip_port_dropped_with_ami_open_fails_over_then_falls_back(
    tmp_path: Path, ns: Netns, sip_central: Callable[..., AsteriskInstance],
    branch: AsteriskInstance, upstream: Dnsmasq, synchs: list[SynchProcess],
) -> None:  # fmt: skip
    central = sip_central()
    synch = start_synch(tmp_path, central, branch, upstream, ns, transports=["udp"],
                        defaults=True)  # fmt: skip
    synchs.append(synch)
    wait_until(lambda: sip_answer(synch.details()).startswith("401"), 15,
               message=f"a first SIP answer; log:\n{synch.log()}")  # fmt: skip
    assert synch.resolve_a() == ns.ns_addr
    # Once the branch has synced, the probe's From user is one of its accounts: the central
    # logs no request from an unknown endpoint (fail2ban counts "No matching endpoint found").
    wait_until(lambda: synch.details()["Sync"] == "Synced", 15, message="first sync")
    wait_until(lambda: "From user 1001" in synch.log(), 15, message="From user from the sync")
    probes = synch.details()["SipProbes"]["udp"]["success"]
    unknown = central.messages_log.read_text().count("No matching endpoint found")
    wait_until(lambda: synch.details()["SipProbes"]["udp"]["success"] >= probes + 2, 15,
               message="two more probes")  # fmt: skip
    assert central.messages_log.read_text().count("No matching endpoint found") == unknown

    cut = time.monotonic()
    drop(ns, "udp dport 5060")
    detected = wait_failover(synch, cut, DEFAULT_BOUND)
    FIGURES.append(f"sip_port_dropped_detect_seconds={detected:.2f}")
    details = synch.details()
    assert details["Monitor"] == "Failed" and details["Service"] == "Failover"
    assert details["CentralReachable"] is True, "AMI stayed open all along"
    assert details["CentralSipReachable"] is False
    assert "no answer within 4 s" in details["LastProbe"]["Sip"]["udp"]["Error"]
    assert details["Outage"] == "unknown"  # no uplink check configured: central or uplink
    assert details["AmiProbes"]["error"] == 0 and details["AmiProbes"]["failure"] == 0
    metrics = synch.metrics()
    assert metric_value(metrics, 'synch_central_sip_up{transport="udp"}') == 0
    assert metric_value(metrics, "synch_central_ami_up") == 1
    assert metric_value(metrics, 'synch_outage_cause{cause="unknown"}') == 1
    assert metric_value(metrics, 'synch_sip_probes_total{result="error",transport="udp"}') >= 3
    assert "central is Failed" in details["SyncBlocked"]

    ns.nft_delete(NFT_TABLE)
    restored = time.monotonic()
    synch.wait_state(5 * 5 + 4 + 10, Monitor="Stable", Service="Normal")
    assert synch.resolve_a() == ns.ns_addr
    after = synch.details()
    assert after["Fallbacks"] >= 1 and after["Outage"] == "none"
    FIGURES.append(f"sip_port_restored_fallback_seconds={time.monotonic() - restored:.2f}")


@pytest.mark.slow
def test_res_pjsip_unloaded_while_ami_answers_fails_over_then_falls_back(
    tmp_path: Path, ns: Netns, sip_central: Callable[..., AsteriskInstance],
    branch: AsteriskInstance, upstream: Dnsmasq, synchs: list[SynchProcess],
) -> None:  # fmt: skip
    central = sip_central()
    synch = start_synch(tmp_path, central, branch, upstream, ns, transports=["udp"],
                        defaults=True)  # fmt: skip
    synchs.append(synch)
    wait_until(lambda: sip_answer(synch.details()).startswith("401"), 15,
               message=f"a first SIP answer; log:\n{synch.log()}")  # fmt: skip
    cut = time.monotonic()
    # res_pjsip has dependants, so only a hard unload takes it away: the SIP stack is gone
    # (UDP 5060 refused or silent) while the rest of Asterisk, AMI included, keeps running.
    assert "Unloaded res_pjsip.so" in central.cli("module unload -h res_pjsip.so")
    detected = wait_failover(synch, cut, DEFAULT_BOUND)
    FIGURES.append(f"res_pjsip_unloaded_detect_seconds={detected:.2f}")
    details = synch.details()
    assert details["Monitor"] == "Failed" and details["Service"] == "Failover"
    assert central.running
    assert details["CentralReachable"] is True, f"AMI should still answer: {details}"
    assert details["CentralSipReachable"] is False
    error = details["LastProbe"]["Sip"]["udp"]["Error"]
    assert "refused" in error or "no answer within" in error, error

    # SIP comes back with a restart of the central (a hard-unloaded res_pjsip cannot be
    # loaded again): phones may go back once it has answered aliveThreshold probes in a row.
    central.stop()
    central.start()
    restarted = time.monotonic()
    synch.wait_state(5 * 5 + 4 + 10, Monitor="Stable", Service="Normal")
    assert synch.resolve_a() == ns.ns_addr
    assert sip_answer(synch.details()).startswith("401")
    FIGURES.append(f"res_pjsip_back_fallback_seconds={time.monotonic() - restarted:.2f}")


def test_ami_port_dropped_with_sip_fine_keeps_phones_and_pauses_sync(
    tmp_path: Path, ns: Netns, sip_central: Callable[..., AsteriskInstance],
    branch: AsteriskInstance, upstream: Dnsmasq, synchs: list[SynchProcess],
) -> None:  # fmt: skip
    central = sip_central()
    synch = start_synch(tmp_path, central, branch, upstream, ns, transports=["udp"])
    synchs.append(synch)
    healthy(synch, 15)
    wait_until(lambda: synch.details()["Sync"] == "Synced", 15, message="first sync")

    drop(ns, "tcp dport 5038")
    wait_until(lambda: synch.details()["AmiProbes"]["error"] >= 2, 20,
               message=f"AMI probes failing; log:\n{synch.log()}")  # fmt: skip
    runs_before = metric_samples(synch.metrics(), "synch_sync_runs_total")
    # Far more AMI errors than the 3 that fail over when AMI is all synch probes.
    wait_until(lambda: synch.details()["AmiProbes"]["error"] >= 8, 20,
               message=f"AMI probes failing; log:\n{synch.log()}")  # fmt: skip
    details = synch.details()
    assert (details["Monitor"], details["Service"]) == ("Stable", "Normal"), details
    assert synch.resolve_a() == ns.ns_addr, "the phones stay on the central"
    assert details["Failovers"] == 0
    assert details["CentralReachable"] is False and details["CentralSipReachable"] is True
    assert details["Outage"] == "ami"
    assert "sync is paused" in details["OutageText"]
    assert details["SyncBlocked"].startswith("central AMI does not answer"), details
    assert details["Sync"] == "Synced", "the branch's copy is as good as it was"
    # An admin's Sync is refused with the same reason; no cycle ran.
    reply = synch.admin("Sync")
    assert reply["ok"] is False and "central AMI does not answer" in reply["Error"]
    metrics = synch.metrics()
    assert metric_samples(metrics, "synch_sync_runs_total") == runs_before
    assert metric_value(metrics, "synch_central_ami_up") == 0
    assert metric_value(metrics, 'synch_central_sip_up{transport="udp"}') == 1
    assert metric_value(metrics, 'synch_outage_cause{cause="ami"}') == 1
    assert "sync is paused until AMI answers" in synch.log()

    ns.nft_delete(NFT_TABLE)
    wait_until(lambda: synch.details()["CentralReachable"], 10, message="AMI back")
    # AMI answering again wakes the sync at once (not one syncmanager.interval later).
    wait_until(
        lambda: metric_samples(synch.metrics(), "synch_sync_runs_total") != runs_before, 10,
        message=f"a sync after AMI came back; log:\n{synch.log()}",
    )  # fmt: skip
    after = synch.details()
    assert after["SyncBlocked"] == "" and after["Outage"] == "none"
    assert after["Sync"] == "Synced"


def test_udp_tcp_and_tls_probed_and_one_failing_fails_over(
    tmp_path: Path, ns: Netns, sip_central: Callable[..., AsteriskInstance],
    branch: AsteriskInstance, upstream: Dnsmasq, synchs: list[SynchProcess],
) -> None:  # fmt: skip
    central = sip_central(tls=True)
    transports = ("udp", "tcp", "tls")
    synch = start_synch(tmp_path, central, branch, upstream, ns, transports=list(transports))
    synchs.append(synch)
    healthy(synch, 15, transports)
    assert set(synch.details()["SipProbes"]) == set(transports)

    cut = time.monotonic()
    drop(ns, "tcp dport 5060")  # TCP only: UDP and TLS keep answering
    wait_failover(synch, cut, LAB_BOUND)
    details = synch.details()
    assert details["Monitor"] == "Failed"
    sip = details["LastProbe"]["Sip"]
    assert sip["udp"]["Result"] == "success" and sip["tls"]["Result"] == "success"
    assert sip["tcp"]["Result"] == "error", sip
    metrics = synch.metrics()
    assert metric_value(metrics, 'synch_central_sip_up{transport="tcp"}') == 0
    assert metric_value(metrics, 'synch_central_sip_up{transport="tls"}') == 1

    ns.nft_delete(NFT_TABLE)
    synch.wait_state(15, Monitor="Stable", Service="Normal")
