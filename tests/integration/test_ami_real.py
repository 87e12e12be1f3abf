"""synch.ami against a real Asterisk 22 (the lab chroot).

The client runs monkey-patched in a subprocess, as in the daemon (see tests/unit/fake_ami.py).
One central (the configs of tests/helpers/record_ami.py) serves the read-only cases and checks
that the recorded transcripts the unit tests replay are still what it answers; the crash and
freeze cases get their own instance.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.asterisk import AsteriskInstance, running_instance
from lab.sipp import register
from tests.helpers.record_ami import CONFIGS, PING_ONLY_USER, record_all
from tests.integration import ami_real_scenarios as scenarios
from tests.unit.ami_transcripts import Transcript, format_request, load
from tests.unit.fake_ami import Scenario, ScenarioScript, run_scenario

pytestmark = pytest.mark.asterisk

Factory = Callable[..., AsteriskInstance]


@pytest.fixture(scope="module")
def central(lab: Path) -> Iterator[AsteriskInstance]:
    with running_instance(
        "ami-central", configs=dict(CONFIGS), manager_users=PING_ONLY_USER
    ) as inst:
        yield inst


def creds(inst: AsteriskInstance, **extra: object) -> dict[str, object]:
    return {"user": inst.ami_user, "secret": inst.ami_secret, **extra}


def run(inst: AsteriskInstance, scenario: Scenario) -> dict[str, Any]:
    return run_scenario(scenario, inst.ami_port, creds(inst), host=inst.ami_host)


def script(inst: AsteriskInstance, scenario: Scenario) -> ScenarioScript:
    return ScenarioScript(scenario, inst.ami_port, creds(inst), host=inst.ami_host)


# Values that differ from one run to the next: compared by key only.
VOLATILE = {
    "timestamp", "corestartupdate", "corestartuptime", "corereloaddate", "corereloadtime",
    "coreprocessedcalls",
}  # fmt: skip


def normalised(transcript: Transcript) -> list[object]:
    """A transcript without its run-to-run differences (times, a module's use count)."""

    def answer(data: bytes) -> list[str]:
        lines = []
        for line in data.decode().split("\r\n"):
            key, colon, value = line.partition(": ")
            if key.lower() in VOLATILE:
                value = "*"
            elif key == "Output":
                value = re.sub(r"\s+", " ", re.sub(r"\d+", "N", value))
            lines.append(f"{key}{colon}{value}")
        return lines

    return [transcript.greeting] + [
        (format_request(e.request), answer(e.answer), e.closed) for e in transcript.exchanges
    ]


def test_the_recorded_transcripts_are_what_asterisk_answers(central: AsteriskInstance) -> None:
    """tests/fixtures/ami, which the unit tests replay, against the lab's Asterisk now.
    If this fails after an Asterisk upgrade, re-record (tests/helpers/record_ami.py)."""
    for fresh in record_all(central):
        assert normalised(fresh) == normalised(load(fresh.name)), fresh.name


def test_ping_and_probe(central: AsteriskInstance) -> None:
    out = run(central, scenarios.ping_and_probe)
    assert out["ping"]["ok"], out
    assert out["connected"] is True
    assert out["probe"][0] == "success"


def test_wrong_password_is_a_failure_answer_after_the_penalty(central: AsteriskInstance) -> None:
    out = run(central, scenarios.wrong_password)
    assert out["ping"]["type"] == "AmiResponseError"
    assert out["ping"]["message"] == "Authentication failed"
    # Asterisk sleeps 1 s before refusing: a probe timeout must leave room for it.
    assert out["ping"]["seconds"] >= 0.9
    assert out["probe"][0] == "failure"


def test_get_config_keeps_order_duplicates_and_whole_values(central: AsteriskInstance) -> None:
    out = run(central, scenarios.get_configs)
    headers = [tuple(h) for h in out["all"]["value"]["headers"]]
    assert headers[0] == ("Response", "Success")
    assert headers[2:8] == [
        ("Category-000000", "general"),
        ("Line-000000-000000", "allow=ulaw"),
        ("Line-000000-000001", "allow=alaw"),
        ("Line-000000-000002", "setvar=A=B"),
        ("Line-000000-000003", "note=semi;colon"),
        ("Line-000000-000004", "x=y"),
    ]
    categories = [v for k, v in headers if k.startswith("Category-")]
    assert categories == ["general", "1001", "1002", "1003"], "templates left out by default"
    # inherited template variables come first, then the section's own (duplicates kept)
    lines_1002 = [v for k, v in headers if k.startswith("Line-000002-")]
    assert lines_1002 == [
        "context=from-internal",
        "accountcode=HeadOffice",
        "type=friend",
        "accountcode=DevOps",
    ]
    assert ("Line-000001-000004", "callerid=Alice <1001>") in headers

    filtered = [tuple(h) for h in out["filtered"]["value"]["headers"]]
    assert [v for k, v in filtered if k.startswith("Category-")] == ["1001", "1002", "1003"]

    templates = [tuple(h) for h in out["templates"]["value"]["headers"]]
    assert "tpl" in [v for k, v in templates if k.startswith("Category-")]
    assert any(k.startswith("IsTemplate-") for k, _ in templates)

    # Nothing matched the filter: a bare Success, as for an empty file (sync must guard).
    assert [h[0] for h in out["none"]["value"]["headers"]] == ["Response", "ActionID"]
    assert out["none"]["value"]["body"] == ""
    # Only a missing Category gets the bare line.
    assert out["no_cat"]["value"]["body"] == "No categories found"


def test_get_config_errors_name_the_problem(central: AsteriskInstance) -> None:
    out = run(central, scenarios.get_config_errors)
    assert out["missing"]["type"] == "AmiResponseError"
    assert out["missing"]["message"] == "Config file not found"
    assert out["after"]["ok"], "an error answer does not spoil the session"
    # The original README's `write =` (empty): Ping works, sync cannot.
    assert out["weak_ping"]["ok"]
    assert out["weak_get"]["type"] == "AmiResponseError"
    assert out["weak_get"]["message"] == "Permission denied"
    assert "write = config" in out["weak_get"]["error"]


def test_core_status_and_reload(central: AsteriskInstance) -> None:
    out = run(central, scenarios.status_and_reload)
    for key in ("CoreReloadDate", "CoreReloadTime", "CoreCurrentCalls", "CoreStartupTime"):
        assert key in out["before"], key
    assert "Response" not in out["before"]
    assert out["reload"]["ok"], out["reload"]
    assert out["chan_sip"]["type"] == "AmiResponseError"
    assert out["chan_sip"]["message"] == "No such module"
    assert "chan_sip does not exist" in out["chan_sip"]["error"]


def test_pjsip_contacts_lists_the_registered_phones(asterisk_factory: Factory) -> None:
    accounts = "".join(
        f"[{ext}]\ntype=endpoint\naors={ext}\nauth={ext}-auth\ncontext=default\n"
        f"[{ext}]\ntype=aor\nmax_contacts=1\n"
        f"[{ext}-auth]\ntype=auth\nauth_type=userpass\nusername={ext}\npassword=pw{ext}\n"
        for ext in (1001, 1002, 1003)
    )
    inst = asterisk_factory("ami-contacts", configs={"pjsip_lab.conf": accounts})
    for ext in (1001, 1002):
        assert register(inst.sip_host, inst.sip_port, str(ext), f"pw{ext}", expires=300).ok
    out = run(inst, scenarios.contacts)
    assert out["contacts"]["ok"], out["contacts"]
    found = {c["Endpoint"]: c for c in out["contacts"]["value"]}
    assert sorted(found) == ["1001", "1002"]  # 1003 never registered
    for ext, contact in found.items():
        assert contact["Uri"].startswith(f"sip:{ext}@127.0.0.1:")
        assert int(contact["ExpirationTime"]) > 0
    assert out["after"]["ok"]


def test_killed_central_is_a_transport_error_and_the_client_reconnects(
    asterisk_factory: Factory,
) -> None:
    inst = asterisk_factory("ami-crash")
    steps = script(inst, scenarios.ping_across_a_crash)
    try:
        assert steps.next()["ok"]  # type: ignore[index]
        inst.kill()
        steps.go()
        broken = steps.next()
        assert broken["type"] == "AmiTransportError", broken  # type: ignore[index]
        steps.go()
        down = steps.next()
        assert down["type"] == "AmiTransportError", down  # type: ignore[index]
        assert "cannot connect" in down["error"]  # type: ignore[index]
        inst.start()
        final = steps.finish()
    finally:
        steps.kill()
    assert final["restarted"]["ok"], final  # type: ignore[index]
    assert final["status"]["ok"]  # type: ignore[index]


def test_frozen_central_times_out_and_the_session_is_replaced(asterisk_factory: Factory) -> None:
    """SIGSTOP: the TCP connection stays up, nothing answers (a hung central or a dead WAN)."""
    inst = asterisk_factory("ami-freeze")
    assert inst.pid is not None
    steps = script(inst, scenarios.ping_across_a_freeze)
    try:
        assert steps.next()["ok"]  # type: ignore[index]
        os.kill(inst.pid, signal.SIGSTOP)
        try:
            steps.go()
            frozen = steps.next()
        finally:
            os.kill(inst.pid, signal.SIGCONT)
        assert frozen["type"] == "AmiTransportError", frozen  # type: ignore[index]
        assert "no answer within 1 s" in frozen["error"]  # type: ignore[index]
        final = steps.finish()
    finally:
        steps.kill()
    assert final["thawed"]["ok"], final  # type: ignore[index]
