"""synch.ami against a real Asterisk 22 (the lab chroot).

The client runs monkey-patched in a subprocess, as in the daemon (see tests/unit/fake_ami.py).
One central serves the read-only cases; the crash and freeze cases get their own instance.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.asterisk import AsteriskInstance, running_instance
from tests.unit.fake_ami import PatchedScript, run_patched

pytestmark = pytest.mark.asterisk

Factory = Callable[..., AsteriskInstance]

TEST_CONF = r"""[general]
allow=ulaw
allow=alaw
setvar=A=B
note=semi\;colon ; a comment
x => y

[tpl](!)
context=from-internal
accountcode=HeadOffice

[1001](tpl)
type=friend
secret=s1001
callerid=Alice <1001>

[1002](tpl)
type=friend
accountcode=DevOps

[1003]
type=friend
accountcode=HeadOffice
"""

PING_ONLY_USER = "[pingonly]\nsecret = pingonly-secret\nread = system\nwrite =\n"


@pytest.fixture(scope="module")
def central(lab: Path) -> Iterator[AsteriskInstance]:
    with running_instance(
        "ami-central", configs={"test.conf": TEST_CONF}, manager_users=PING_ONLY_USER
    ) as inst:
        yield inst


def creds(inst: AsteriskInstance, **extra: object) -> dict[str, object]:
    return {"user": inst.ami_user, "secret": inst.ami_secret, **extra}


def run(inst: AsteriskInstance, body: str, **extra: object) -> dict[str, object]:
    prelude = """
    def central(**kw):
        kw.setdefault("timeout", 4.0)
        return AmiClient(HOST, PORT, ARGS["user"], ARGS["secret"], **kw)
    """
    return run_patched(prelude + body, inst.ami_port, creds(inst, **extra), host=inst.ami_host)


def test_ping_and_probe(central: AsteriskInstance) -> None:
    out = run(
        central,
        """
    c = central()
    out["ping"] = attempt(c.ping)
    out["connected"] = c.connected
    out["probe"] = probe_once(c)
    """,
    )
    assert out["ping"]["ok"], out
    assert out["connected"] is True
    assert out["probe"][0] == "success"


def test_wrong_password_is_a_failure_answer_after_the_penalty(central: AsteriskInstance) -> None:
    out = run(
        central,
        """
    c = AmiClient(HOST, PORT, ARGS["user"], "not-the-secret", timeout=4)
    out["ping"] = attempt(c.ping)
    out["probe"] = probe_once(c)
    """,
    )
    assert out["ping"]["type"] == "AmiResponseError"
    assert out["ping"]["message"] == "Authentication failed"
    # Asterisk sleeps 1 s before refusing: a probe timeout must leave room for it.
    assert out["ping"]["seconds"] >= 0.9
    assert out["probe"][0] == "failure"


def test_get_config_keeps_order_duplicates_and_whole_values(central: AsteriskInstance) -> None:
    out = run(
        central,
        """
    c = central()
    out["all"] = attempt(lambda: get_config(c, "test.conf"))
    out["filtered"] = attempt(lambda: get_config(c, "test.conf", "accountcode=^HeadOffice$"))
    out["templates"] = attempt(lambda: get_config(c, "test.conf", templates=True))
    out["none"] = attempt(lambda: get_config(c, "test.conf", "accountcode=^Nobody$"))
    out["no_cat"] = attempt(lambda: c.action("GetConfig", {"Filename": "test.conf",
                                                           "Category": "nope"}))
    """,
    )
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
    out = run(
        central,
        """
    c = central()
    out["missing"] = attempt(lambda: get_config(c, "no-such-file.conf"))
    weak = AmiClient(HOST, PORT, "pingonly", "pingonly-secret", timeout=4)
    out["weak_ping"] = attempt(weak.ping)
    out["weak_get"] = attempt(lambda: get_config(weak, "test.conf"))
    out["after"] = attempt(c.ping)
    """,
    )
    assert out["missing"]["type"] == "AmiResponseError"
    assert out["missing"]["message"] == "Config file not found"
    assert out["after"]["ok"], "an error answer does not spoil the session"
    # The original README's `write =` (empty): Ping works, sync cannot.
    assert out["weak_ping"]["ok"]
    assert out["weak_get"]["type"] == "AmiResponseError"
    assert out["weak_get"]["message"] == "Permission denied"
    assert "write = config" in out["weak_get"]["error"]


def test_core_status_and_reload(central: AsteriskInstance) -> None:
    out = run(
        central,
        """
    c = central()
    out["before"] = core_status(c)
    out["reload"] = attempt(lambda: reload_module(c, "res_pjsip.so"))
    out["chan_sip"] = attempt(lambda: reload_module(c, "chan_sip.so"))
    out["after"] = core_status(c)
    """,
    )
    for key in ("CoreReloadDate", "CoreReloadTime", "CoreCurrentCalls", "CoreStartupTime"):
        assert key in out["before"], key
    assert "Response" not in out["before"]
    assert out["reload"]["ok"], out["reload"]
    assert out["chan_sip"]["type"] == "AmiResponseError"
    assert out["chan_sip"]["message"] == "No such module"
    assert "chan_sip does not exist" in out["chan_sip"]["error"]


def test_killed_central_is_a_transport_error_and_the_client_reconnects(
    asterisk_factory: Factory,
) -> None:
    inst = asterisk_factory("ami-crash")
    script = PatchedScript(
        """
        c = AmiClient(HOST, PORT, ARGS["user"], ARGS["secret"], timeout=3)
        step(attempt(c.ping))          # 1: a live session
        step(attempt(c.ping))          # 2: Asterisk was killed meanwhile
        step(attempt(c.ping))          # 3: still down
        out["restarted"] = attempt(c.ping)
        out["status"] = attempt(lambda: core_status(c))
        """,
        inst.ami_port,
        creds(inst),
        host=inst.ami_host,
    )
    try:
        assert script.next()["ok"]  # type: ignore[index]
        inst.kill()
        script.go()
        broken = script.next()
        assert broken["type"] == "AmiTransportError", broken  # type: ignore[index]
        script.go()
        down = script.next()
        assert down["type"] == "AmiTransportError", down  # type: ignore[index]
        assert "cannot connect" in down["error"]  # type: ignore[index]
        inst.start()
        final = script.finish()
    finally:
        script.kill()
    assert final["restarted"]["ok"], final  # type: ignore[index]
    assert final["status"]["ok"]  # type: ignore[index]


def test_frozen_central_times_out_and_the_session_is_replaced(asterisk_factory: Factory) -> None:
    """SIGSTOP: the TCP connection stays up, nothing answers (a hung central or a dead WAN)."""
    inst = asterisk_factory("ami-freeze")
    assert inst.pid is not None
    script = PatchedScript(
        """
        c = AmiClient(HOST, PORT, ARGS["user"], ARGS["secret"], timeout=1)
        step(attempt(c.ping))
        step(attempt(c.ping))
        out["thawed"] = attempt(c.ping)
        """,
        inst.ami_port,
        creds(inst),
        host=inst.ami_host,
    )
    try:
        assert script.next()["ok"]  # type: ignore[index]
        os.kill(inst.pid, signal.SIGSTOP)
        try:
            script.go()
            frozen = script.next()
        finally:
            os.kill(inst.pid, signal.SIGCONT)
        assert frozen["type"] == "AmiTransportError", frozen  # type: ignore[index]
        assert "no answer within 1 s" in frozen["error"]  # type: ignore[index]
        final = script.finish()
    finally:
        script.kill()
    assert final["thawed"]["ok"], final  # type: ignore[index]
