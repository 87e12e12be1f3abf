"""The failover budget seen from outside: `synch check-config` prints it (and warns past the
target) from a config and a synced file; the real daemon against a lab central and branch
Asterisk 22 reports it in GetDetails, /metrics and `synch status`, and follows a change of the
central's AOR maximum_expiration once a sync has applied it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lab.asterisk import AsteriskInstance
from lab.dnsmasq import Dnsmasq
from lab.samples import central_configs, freepbx_pjsip
from lab.synchproc import REPO, SynchProcess, lab_config, metric_samples, metric_value, synch_for
from lab.wait import wait_until

# -- synch check-config -------------------------------------------------------------------------


def check_config(
    tmp_path: Path, synced: str | None, **overrides: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    etc = tmp_path / "etc"
    etc.mkdir(exist_ok=True)
    if synced is not None:
        (etc / "pjsip_synch.conf").write_text(synced)
    # Every term counted: contact mirroring (on by default) drops the registration term.
    overrides.setdefault("failover", {"mirrorcontacts": False})
    config = lab_config(
        central_host="127.0.0.2", central_port=5038, central_user="synch",
        central_secret="central", branch_port=5038, branch_user="synch",
        branch_secret="branch", localconfigspath=etc, forwarders=["127.0.0.53"], **overrides,
    )  # fmt: skip
    path = tmp_path / "appsettings.json"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return subprocess.run(
        [sys.executable, "-m", "synch.cli", "check-config", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def aors(**maximum: int) -> str:
    return "".join(
        f"[{name}]\ntype=endpoint\naors={name}\n\n"
        f"[{name}]\ntype=aor\nmax_contacts=1\nmaximum_expiration={seconds}\n\n"
        for name, seconds in maximum.items()
    )


def test_check_config_prints_the_budget_and_warns_past_the_target(tmp_path: Path) -> None:
    result = check_config(
        tmp_path, aors(**{"1001": 3600, "1002": 600}),
        probemonitor={"interval": 5}, amiremote={"timeout": 4},
        dnsservice={"recordttl": 300},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert out[0].endswith("mode pjsip)") and ": OK (" in out[0]
    assert out[1] == (
        "failover budget: a phone may be unreachable for up to 3919 s (about 1 h 5 min) after a "
        "cut (detection 19 s + dns_ttl 300 s + registration 3600 s; target 120 s)"
    )
    terms = [re.split(r"\s+", line.strip(), maxsplit=2) for line in out[2:5]]
    assert [(name, value) for name, value, _ in terms] == [
        ("detection", "19"), ("dns_ttl", "300"), ("registration", "3600"),
    ]  # fmt: skip
    assert "3 probe rounds × 5 s" in out[2]
    assert "maximum_expiration 3600 s of AOR 1001" in out[4]
    assert out[5].startswith("calling out through the branch: up to 319 s")
    # lab_config's alivethreshold is 3: 3 × 5 s
    assert out[6].startswith("back on the central after it returns: up to 3915 s")
    fix = (
        "set FreePBX Max Expiration (maximum_expiration) to 60 s for extension 1001 (now 3600 s): "
        "a phone moves only when it registers again"
    )
    assert out[7] == f"largest term: registration: {fix}"
    assert result.stderr.strip() == (
        "warning: failover budget 3919 s (about 1 h 5 min) is more than "
        f"probemonitor.failoverbudgettarget 120 s: {fix}"
    )


def test_check_config_within_the_target_does_not_warn(tmp_path: Path) -> None:
    result = check_config(tmp_path, aors(**{"1001": 60}), probemonitor={"interval": 5},
                          amiremote={"timeout": 4}, dnsservice={"recordttl": 30})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to 109 s after a cut" in result.stdout
    assert result.stderr == ""


def test_check_config_before_the_first_sync_takes_asterisks_defaults(tmp_path: Path) -> None:
    result = check_config(tmp_path, None, probemonitor={"failoverbudgettarget": 0})
    assert result.returncode == 0, result.stdout + result.stderr
    # lab timers: 3 rounds × 0.5 s + 0.4 s; recordttl 5; Asterisk's maximum_expiration
    assert "up to 7206.9 s (about 2 h) after a cut" in result.stdout
    assert "(Asterisk's default: not set); no synced file yet" in result.stdout
    assert "no target" in result.stdout and result.stderr == ""


def test_with_contact_mirroring_the_registration_term_is_not_counted(tmp_path: Path) -> None:
    result = check_config(tmp_path, aors(**{"1001": 3600}), failover={},
                          probemonitor={"interval": 5}, amiremote={"timeout": 4},
                          dnsservice={"recordttl": 30})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout.splitlines()
    assert out[1] == (
        "failover budget: a phone may be unreachable for up to 49 s after a cut (detection 19 s "
        "+ dns_ttl 30 s; target 120 s)"
    )
    assert "(registration: not counted, contacts are mirrored)" in result.stdout
    # Getting home still waits for the phones' next REGISTER.
    assert "back on the central after it returns: up to 3645 s" in result.stdout
    assert result.stderr == ""


# -- the daemon -----------------------------------------------------------------------------------

HEAD_OFFICE = {"HeadOffice": [1001, 1002, 1003]}  # what lab_config's filter selects
DETECTION = 3 * 0.5 + 0.4  # lab_config: interval 0.5, timeout 0.4, 5/3/1
TTL = 5  # lab_config's recordttl


def test_the_daemon_reports_the_budget_and_follows_the_central_aors(
    tmp_path: Path,
    asterisk_factory: Callable[..., AsteriskInstance],
    dnsmasq: Callable[..., Dnsmasq],
) -> None:
    central = asterisk_factory("central", configs=central_configs(HEAD_OFFICE))
    branch = asterisk_factory("branch")
    upstream = dnsmasq({"www.example.org": "127.0.0.42"})
    synch = synch_for(tmp_path, central, upstream.port, branch=branch,
                      probemonitor={"failoverbudgettarget": 600},
                      failover={"mirrorcontacts": False})  # fmt: skip
    synch.start()
    try:
        wait_until(lambda: synch.status()["Sync"] == "Synced", 60,
                   message=f"first sync; log:\n{synch.log()}")  # fmt: skip
        # The sync's listener has run by the time the cycle is recorded: the budget is the
        # synced AORs' (the lab's FreePBX aors: maximum_expiration=7200).
        budget = budget_of(synch, lambda b: "AORs 1001" in b["Terms"]["Registration"]["Why"])
        assert budget["Seconds"] == pytest.approx(DETECTION + TTL + 7200)
        assert budget["HomeSeconds"] == pytest.approx(3 * 0.5 + TTL + 7200)
        assert list(budget["Terms"]) == ["Detection", "DnsTtl", "Registration"]
        assert budget["Terms"]["Detection"]["Seconds"] == pytest.approx(DETECTION)
        assert budget["Terms"]["DnsTtl"]["Seconds"] == TTL
        assert budget["Terms"]["Registration"]["Why"].endswith(
            "maximum_expiration 7200 s of AORs 1001, 1002, 1003"
        )
        assert (budget["Largest"], budget["Target"], budget["OverTarget"]) == (
            "Registration", 600, True,
        )  # fmt: skip
        assert budget["Advice"].startswith(
            "set FreePBX Max Expiration (maximum_expiration) to 540 s for extensions 1001, "
            "1002, 1003 (now 7200 s)"
        )
        metrics = synch.metrics()
        assert metric_value(metrics, "synch_failover_budget_seconds") == pytest.approx(
            DETECTION + TTL + 7200
        )
        assert metric_value(metrics, "synch_failover_budget_target_seconds") == 600
        assert metric_samples(metrics, "synch_failover_budget_term_seconds") == pytest.approx({
            '{term="detection"}': DETECTION, '{term="dns_ttl"}': TTL,
            '{term="registration"}': 7200,
        })  # fmt: skip
        status = synch.cli("status")
        assert "a phone may be unreachable for up to 2 h" in status.stdout, status.stdout

        # FreePBX's Max Expiration changed on the central: 1002 at 300 s, the others at 120 s.
        aor = freepbx_pjsip(HEAD_OFFICE)["pjsip.aor.conf"]
        aor = aor.replace("maximum_expiration=7200", "maximum_expiration=120").replace(
            "[1002]\ntype=aor\nmax_contacts=1\nremove_existing=yes\nminimum_expiration=60\n"
            "maximum_expiration=120", "[1002]\ntype=aor\nmax_contacts=1\nremove_existing=yes\n"
            "minimum_expiration=60\nmaximum_expiration=300",
        )  # fmt: skip
        assert aor.count("maximum_expiration=300") == 1
        central.write_config("pjsip.aor.conf", aor)
        central.reload("res_pjsip.so")

        def synced_again(b: dict[str, Any]) -> bool:
            if b["Terms"]["Registration"]["Seconds"] == 7200:
                synch.admin("Sync")  # until the sync has applied the central's change
                return False
            return True

        budget = budget_of(synch, synced_again)
        assert budget["Seconds"] == pytest.approx(DETECTION + TTL + 300)
        assert budget["Terms"]["Registration"]["Why"].endswith(
            "maximum_expiration 300 s of AOR 1002"
        )
        assert (budget["Largest"], budget["OverTarget"]) == ("Registration", False)
        metrics = synch.metrics()
        assert metric_value(metrics, "synch_failover_budget_seconds") == pytest.approx(
            DETECTION + TTL + 300
        )
        assert metric_value(metrics, "synch_fallback_budget_seconds") == pytest.approx(
            3 * 0.5 + TTL + 300
        )
        assert "unreachable" not in synch.cli("status").stdout

        # Logged at start, after the first sync (over the target), after the change (within).
        log = synch.log(tail=10**6)
        lines = [line for line in log.splitlines() if "failover budget (" in line]
        applied = [n for n, line in enumerate(log.splitlines()) if " applied ~1001 ~1002 ~1003 "
                   in line]  # fmt: skip
        assert len(applied) == 1 and log.splitlines()[applied[0] + 1] == lines[2]
        whys = [re.findall(r"failover budget \(([^)]*)\)", line)[0] for line in lines]
        assert whys == ["at start", "after a sync", "after a sync"]
        assert "Asterisk's default" in lines[0] and "WARNING" in lines[0]
        assert "more than probemonitor.failoverbudgettarget" in lines[1]
        assert "registration 300 s" in lines[2] and "WARNING" not in lines[2]
    finally:
        synch.stop()


def budget_of(synch: SynchProcess, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """GetDetails' FailoverBudget once `ready(budget)`."""

    def look() -> dict[str, Any]:
        budget: dict[str, Any] = synch.details()["FailoverBudget"]
        return budget if ready(budget) else {}

    return wait_until(look, 60, interval=0.5, message=f"failover budget; log:\n{synch.log()}")
