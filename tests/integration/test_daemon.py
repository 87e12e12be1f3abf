"""`synch run` against a real central and branch Asterisk 22: probes, failover, fallback, DNS,
status socket and metrics, seen from outside as an operator and a phone would."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.asterisk import AsteriskInstance
from lab.dnsmasq import Dnsmasq
from lab.netns import Netns
from lab.samples import central_configs
from lab.synchproc import TOKEN, SynchProcess, synch_for
from lab.wait import wait_until

pytestmark = pytest.mark.asterisk

# Probe timers of lab_config: interval 0.5 s, timeout 0.4 s, failureTolerance 5,
# errorPenaltyPoints 1 (2 points per error: Failed after 3 errors), aliveThreshold 3.
INTERVAL, TIMEOUT, ERRORS_TO_FAIL, ALIVE = 0.5, 0.4, 3, 3
# SPEC bound: Failed (and the DNS flip) within ERRORS_TO_FAIL probes plus one timeout. The
# margin absorbs process scheduling on a loaded 2-core machine; it is a bound, not a speed test.
FAILOVER_BOUND = ERRORS_TO_FAIL * INTERVAL + TIMEOUT + 3.0


@pytest.fixture
def central(asterisk_factory: Callable[..., AsteriskInstance]) -> AsteriskInstance:
    return asterisk_factory("central", configs=central_configs())


@pytest.fixture
def branch(asterisk_factory: Callable[..., AsteriskInstance]) -> AsteriskInstance:
    return asterisk_factory("branch")


@pytest.fixture
def upstream(dnsmasq: Callable[..., Dnsmasq]) -> Dnsmasq:
    return dnsmasq({"www.example.org": "127.0.0.42"})


def make_synch(
    tmp_path: Path,
    central: AsteriskInstance,
    branch: AsteriskInstance,
    upstream: Dnsmasq,
    central_host: str | None = None,
    **overrides: dict[str, Any],
) -> SynchProcess:
    return synch_for(tmp_path, central, upstream.port, branch=branch, central_host=central_host,
                     **overrides)  # fmt: skip


@pytest.fixture
def synch(
    tmp_path: Path, central: AsteriskInstance, branch: AsteriskInstance, upstream: Dnsmasq
) -> Iterator[SynchProcess]:
    proc = make_synch(tmp_path, central, branch, upstream)
    yield proc.start()
    proc.stop()


def test_healthy_central_is_stable_and_dns_answers_the_central(synch: SynchProcess) -> None:
    # defaultstate Failover until the central proves healthy.
    synch.wait_state(10, Monitor="Stable", Service="Normal")
    assert synch.resolve_a() == "127.0.0.10"
    assert synch.resolve_a("SIP.Example.LOCAL") == "127.0.0.10"
    details = synch.details()
    assert details["Probes"]["success"] >= ALIVE
    assert details["CentralReachable"] is True


def test_dead_central_fails_over_within_the_bound_and_falls_back(
    synch: SynchProcess, central: AsteriskInstance
) -> None:
    synch.wait_state(10, Monitor="Stable", Service="Normal")
    serial = synch.soa_serial()
    central.kill()  # process dead: connections refused
    cut = time.monotonic()
    wait_until(
        lambda: synch.resolve_a() == "127.0.0.20",
        FAILOVER_BOUND,
        message=f"DNS flips to the branch; log:\n{synch.log()}",
    )
    assert time.monotonic() - cut <= FAILOVER_BOUND
    status = synch.wait_state(2, Monitor="Failed", Service="Failover")
    assert status["Service"] == "Failover"
    assert synch.soa_serial() > serial
    before = synch.details()["Probes"]

    central.start()
    synch.wait_state(30, Monitor="Stable", Service="Normal")
    assert synch.resolve_a() == "127.0.0.10"
    after = synch.details()
    # Fallback needed aliveThreshold good probes in a row after the central came back.
    assert after["Probes"]["success"] - before["success"] >= ALIVE
    assert after["Failovers"] >= 1 and after["Fallbacks"] >= 1


def test_silent_central_host_fails_over_within_the_bound(
    tmp_path: Path,
    asterisk_factory: Callable[..., AsteriskInstance],
    branch: AsteriskInstance,
    upstream: Dnsmasq,
    netns_factory: Callable[..., Netns],
) -> None:
    ns = netns_factory()
    central = asterisk_factory(
        "central-ns",
        netns=ns.name,
        ami_host=ns.ns_addr,
        ami_port=5038,
        sip_port=5060,
        sip_host=ns.ns_addr,
        configs=central_configs(),
    )
    synch = make_synch(tmp_path, central, branch, upstream, central_host=ns.ns_addr)
    synch.start()
    try:
        synch.wait_state(15, Monitor="Stable", Service="Normal")
        ns.drop_all()  # packets vanish: connects and replies time out
        cut = time.monotonic()
        wait_until(
            lambda: synch.resolve_a() == "127.0.0.20",
            FAILOVER_BOUND,
            message=f"DNS flips on a silent host; log:\n{synch.log()}",
        )
        assert time.monotonic() - cut <= FAILOVER_BOUND
        details = synch.details()
        assert details["Monitor"] == "Failed"
        assert details["Probes"]["error"] >= ERRORS_TO_FAIL
        ns.restore()
        synch.wait_state(30, Monitor="Stable", Service="Normal")
    finally:
        synch.stop()


def test_dns_local_and_forwarded_answers(synch: SynchProcess) -> None:
    from dnslib import QTYPE, RCODE

    for tcp in (False, True):
        srv = synch.query("_sip._udp.example.local", "SRV", tcp=tcp)
        assert [str(rr.rdata) for rr in srv.rr] == [
            "0 0 5060 sip.example.local.",  # the current target (Failover at start here)
            "10 0 5060 sip-central.example.local.",  # the other side, for phones that fail over
        ]
        aaaa = synch.query("sip.example.local", "AAAA", tcp=tcp)
        assert aaaa.header.rcode == RCODE.NOERROR and not aaaa.rr
        assert aaaa.auth and aaaa.auth[0].rtype == QTYPE.SOA
        nx = synch.query("nothere.example.local", tcp=tcp)
        assert nx.header.rcode == RCODE.NXDOMAIN and nx.header.aa
        fwd = synch.query("www.example.org", tcp=tcp)
        assert [str(rr.rdata) for rr in fwd.rr] == ["127.0.0.42"]


def test_status_socket_is_byte_exact(synch: SynchProcess) -> None:
    reply = synch.ask(f"GetStatus({TOKEN})")
    assert reply.startswith('[{"Timestamp":"') and reply.endswith('"}]\n')
    ts = reply[len('[{"Timestamp":"') :][:14]
    assert ts.isdigit() and len(ts) == 14
    assert reply[len('[{"Timestamp":"') + 14 :].startswith('","Monitor":"')
    assert synch.ask("GetStatus(wrong)") == "Token error. Bye bye!\n"
    assert synch.ask("GetStatus()") == "Token error. Bye bye!\n"
    assert synch.ask(f"Reboot({TOKEN})") == "Action error. Bye bye!\n"
    nc = subprocess.run(
        ["nc", "-N", "127.0.0.1", str(synch.config["servicecontrol"]["port"])],
        input=f"GetStatus({TOKEN})\n",
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    assert nc.stdout.startswith('[{"Timestamp":"') and nc.stdout.count("\n") == 1


def test_status_socket_serves_100_clients_at_once(synch: SynchProcess) -> None:
    port = synch.config["servicecontrol"]["port"]
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(100)]
    try:
        for s in sockets:
            s.sendall(f"GetStatus({TOKEN})\n".encode())
        replies = []
        for s in sockets:
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            replies.append(data.decode())
    finally:
        for s in sockets:
            s.close()
    assert len(replies) == 100
    assert all(r.startswith('[{"Timestamp":"') and r.endswith("}]\n") for r in replies)


def test_admin_override_forces_failover_until_auto(synch: SynchProcess) -> None:
    synch.wait_state(10, Monitor="Stable", Service="Normal")
    assert synch.admin("Failover")["ok"] is True
    assert synch.resolve_a() == "127.0.0.20"
    assert synch.status()["Service"] == "Failover"
    assert synch.ask("Failover(token1)") == "Token error. Bye bye!\n"  # needs the admin token
    synch.admin("Auto")
    assert synch.resolve_a() == "127.0.0.10"


def test_synch_status_speaks_in_sentences(synch: SynchProcess) -> None:
    synch.wait_state(10, Monitor="Stable", Service="Normal")
    wait_until(lambda: synch.details()["LastSync"].get("Result"), 15, message="a first sync")
    synch.admin("Failover")
    result = synch.cli("status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("The central PBX answers since "), result.stdout
    assert lines[1].startswith(
        "Phones are sent to this branch (sip.example.local resolves to 127.0.0.20) since "
    ) and lines[1].endswith("An admin forced this."), result.stdout
    assert lines[2].startswith("Last sync ") and "accounts" in lines[2], result.stdout
    assert "- the service is forced to Failover by an admin" in result.stdout
    assert "None" not in result.stdout and "null" not in result.stdout
    raw = synch.cli("status", "--json")
    assert json.loads(raw.stdout)["Service"] == "Failover"
    synch.admin("Auto")
    synch.config["servicecontrol"]["token"] = "not-the-token"
    synch.write_config()
    refused = synch.cli("status")
    assert refused.returncode == 1
    assert refused.stderr == "synch answered: Token error. Bye bye!\n"


def test_metrics_pass_promtool(synch: SynchProcess) -> None:
    synch.wait_state(10, Monitor="Stable")
    synch.query("sip.example.local")
    body = urllib.request.urlopen(synch.metrics_url, timeout=5).read().decode()
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert 'synch_monitor_state{state="Stable"} 1.0' in body
    assert 'synch_service_state{state="Normal"} 1.0' in body
    assert 'synch_dns_queries_total{answer="local"}' in body
    assert 'synch_build_info{version="' in body


def test_sigterm_stops_within_two_seconds(synch: SynchProcess) -> None:
    assert synch.proc is not None
    start = time.monotonic()
    code = synch.stop(signal.SIGTERM, timeout=5)
    assert code == 0, synch.log()
    assert time.monotonic() - start < 2.0, synch.log()
    assert "stopped" in synch.log()


def test_bind_failure_is_fatal_and_never_reported_started(
    tmp_path: Path, central: AsteriskInstance, branch: AsteriskInstance, upstream: Dnsmasq
) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        proc = make_synch(
            tmp_path, central, branch, upstream, servicecontrol={"port": taken.getsockname()[1]}
        )
        result = subprocess.run(
            proc.command("run"), capture_output=True, text=True, timeout=20, check=False
        )
    finally:
        taken.close()
    assert result.returncode != 0
    assert "cannot listen for status socket" in result.stderr
    assert "started" not in result.stderr


def test_check_config_names_every_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"probemonitor": {"interval": -1, "failuretolerence": 5}, "dnsservice": {"port": 70000}}'
    )
    result = subprocess.run(
        [sys.executable, "-m", "synch.cli", "check-config", "-c", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    for key in (
        "probemonitor.interval",
        "probemonitor.failuretolerence",
        "dnsservice.port",
        "amiremote.hostname",
    ):
        assert key in result.stderr, result.stderr


def test_systemd_notify_readiness_watchdog_and_stopping(
    tmp_path: Path, central: AsteriskInstance, branch: AsteriskInstance, upstream: Dnsmasq
) -> None:
    notify_path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(notify_path))
    listener.settimeout(10)
    proc = make_synch(tmp_path, central, branch, upstream)
    proc.start(env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "1000000"})
    try:
        messages: list[str] = []

        def received(wanted: str, count: int = 1) -> bool:
            messages.append(listener.recv(4096).decode())
            return sum(wanted in m for m in messages) >= count

        wait_until(lambda: received("READY=1"), 10, message=f"READY=1 in {messages}")
        ready_at = next(i for i, m in enumerate(messages) if "READY=1" in m)
        # Readiness comes after every socket is bound: DNS answers by then.
        assert synch_dns_answers(proc)
        wait_until(lambda: received("WATCHDOG=1", 3), 10, message=f"pings in {messages}")
        assert all("WATCHDOG=1" not in m for m in messages[:ready_at])
        proc.stop()
        wait_until(lambda: received("STOPPING=1"), 5, message=f"STOPPING=1 in {messages}")
    finally:
        proc.stop()
        listener.close()


def synch_dns_answers(proc: SynchProcess) -> bool:
    return proc.resolve_a() in ("127.0.0.10", "127.0.0.20")


def test_sigterm_while_starting_stops_cleanly(
    tmp_path: Path, central: AsteriskInstance, branch: AsteriskInstance, upstream: Dnsmasq
) -> None:
    proc = make_synch(tmp_path, central, branch, upstream)
    proc.start(wait=False)
    # The first socket is bound: from here on SIGTERM must be a clean stop, even before the
    # daemon reports ready.
    wait_until(lambda: "DNS listening" in proc.log(), 15, message=proc.log())
    assert proc.stop(signal.SIGTERM, timeout=10) == 0, proc.log()
