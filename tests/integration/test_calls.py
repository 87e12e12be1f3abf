"""Survivable calling on a real Asterisk 22: the generated dialplan and voicemail, loaded into a
branch, carry real SIP calls between sipp phones, to voicemail, to a sipp PSTN gateway, and
to an announcement for extensions that only the central has.

The files are made the way a sync makes them: the central's files fetched over AMI (GetConfig,
in a monkey-patched subprocess as the daemon runs), the HeadOffice accounts selected, then
synch.dialplan.sync.build(). The branch loads them with `#include`s and module reloads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.asterisk import AsteriskInstance, new_instance
from lab.ports import free_port
from lab.samples import central_configs, secret_for
from lab.sipp import Uas, call, register_from
from lab.wait import wait_until
from tests.unit.fake_ami import run_patched

pytestmark = pytest.mark.asterisk

SITES = {"HeadOffice": [1001, 1002, 1003], "DevOps": [2001], "Support": [3001]}
CENTRAL_VOICEMAIL = """[general]
format=wav

[zonemessages]
eastern=America/New_York|'vm-received' Q 'digits/at' IMp

[default]
1001 => 1234,Alice,alice@example.com,,attach=no|saycid=yes
1002 => 2345,Alex
2001 => 3456,Bob
"""
RING_SECONDS = 2  # dialplan.ringtimeout: short, the no-answer test waits for it
OUTBOUND = ["_0XXXXXXXXX", "9|_00X."]
EMERGENCY = ["112", "911"]
CONTEXT = "from-internal-headoffice"

# Runs in a monkey-patched interpreter, as synch does: fetch like the sync job, then build.
BUILD = """
from synch.config import AmiSettings, DialplanSettings, Settings, SyncManagerSettings
from synch.dialplan.sync import build
from synch.sync.filter import Selector, select_pjsip
from synch.sync.getconfig import parse_getconfig
from synch.sync.render import render

central = client(ARGS["user"], ARGS["secret"], timeout=10.0)
def fetch(name):
    reply = get_config(central, name)
    return parse_getconfig(reply.headers, reply.body)
synced, warnings = select_pjsip(fetch("pjsip.endpoint.conf"), fetch("pjsip.aor.conf"),
                                fetch("pjsip.auth.conf"), Selector("accountcode", "^HeadOffice$"))
synced = type(synced)(tuple(c for c in synced))
settings = Settings(
    amiremote=AmiSettings(hostname=HOST, port=PORT),
    syncmanager=SyncManagerSettings(mode="pjsip", localfilename="pjsip_synch.conf"),
    dialplan=DialplanSettings(**ARGS["dialplan"]),
)
extras = build(settings, central, synced)
out["files"] = {"pjsip_synch.conf": render(synced, "accounts"), **extras.files}
out["warnings"] = extras.warnings
"""


@dataclass
class Site:
    central: AsteriskInstance
    branch: AsteriskInstance
    gateway_port: int  # where the PSTN gateway (a Uas) answers for the trunk pstn-gw
    files: dict[str, str]
    warnings: list[str]

    def build(self, **dialplan: object) -> dict[str, str]:
        args = {
            "user": self.central.ami_user,
            "secret": self.central.ami_secret,
            "dialplan": {
                "enabled": True,
                "trunk": "pstn-gw",
                "outbound": OUTBOUND,
                "emergency": EMERGENCY,
                "ringtimeout": RING_SECONDS,
                "contexts": [CONTEXT],
                **dialplan,
            },
        }
        out = run_patched(BUILD, self.central.ami_port, args, host=self.central.ami_host)
        files = out["files"]
        assert isinstance(files, dict)
        warnings = out["warnings"]
        assert isinstance(warnings, list)
        self.warnings = [str(w) for w in warnings]
        return {str(k): str(v) for k, v in files.items()}

    def load(self, files: dict[str, str]) -> None:
        """Write and reload as the sync job does: accounts, then dialplan and voicemail."""
        for name, text in files.items():
            self.branch.write_config(name, text)
        for module in ("res_pjsip.so", "pbx_config.so", "app_voicemail.so"):
            self.branch.reload(module)
        self.files = files

    def call(self, caller: int, number: str, **kwargs: object) -> object:
        return call(
            self.branch.sip_host,
            self.branch.sip_port,
            str(caller),
            secret_for(caller),
            number,
            **kwargs,
        )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def site(lab: Path) -> Iterator[Site]:
    central = new_instance(
        "central", configs={**central_configs(SITES), "voicemail.conf": CENTRAL_VOICEMAIL}
    )
    gateway_port = free_port("udp")
    trunk = (
        "[pstn-gw]\ntype=endpoint\ncontext=from-pstn-gw\ndisallow=all\nallow=ulaw\nallow=alaw\n"
        "aors=pstn-gw\n\n[pstn-gw]\ntype=aor\n"
        f"contact=sip:127.0.0.1:{gateway_port}\nqualify_frequency=0\n"
    )
    branch = new_instance(
        "branch",
        configs={
            "pjsip_lab.conf": trunk,
            "extensions.conf": "[general]\nstatic=yes\n\n#tryinclude extensions_synch.conf\n",
            "voicemail.conf": "[general]\nformat=wav\n\n[default]\n9999 => 42,Branch Box\n\n"
            "#tryinclude voicemail_synch.conf\n",
        },
    )
    try:
        central.start()
        branch.start()
        s = Site(central, branch, gateway_port, {}, [])
        s.load(s.build())
        yield s
    finally:
        branch.remove()
        central.remove()


def test_generated_dialplan_loads_without_errors(site: Site) -> None:
    out = site.branch.cli(f"dialplan show {CONTEXT}")
    assert "There is no existence" not in out, out
    for needed in (
        "'112' =>",
        "'1001' =>",
        "'2001' =>",
        "'_0XXXXXXXXX' =>",
        "'_900X.' =>",
        "Include =>        'synch-unknown'",
    ):
        assert needed in out, f"{needed!r} missing from:\n{out}"
    for own in (
        "synch-user",
        "synch-emergency",
        "synch-outbound",
        "synch-central",
        "synch-unknown",
        "synch-voicemail",
    ):
        assert "There is no existence" not in site.branch.cli(f"dialplan show {own}")
    log = site.branch.console_log.read_text(errors="replace")
    bad = [
        line
        for line in log.splitlines()
        if ("ERROR" in line or "WARNING" in line)
        and ("pbx_config" in line or "extensions_synch" in line or "voicemail" in line)
    ]
    assert not bad, "\n".join(bad)


def test_mailboxes_with_their_pins_reach_the_branch(site: Site) -> None:
    text = site.files["voicemail_synch.conf"]
    assert "1001=1234,Alice,alice@example.com,,attach=no|saycid=yes" in text
    assert "1002=2345,Alex" in text
    assert "2001" not in text and "zonemessages" not in text and "[general]" not in text
    users = site.branch.cli("voicemail show users")
    for box in ("1001", "1002", "9999"):
        assert box in users, users
    assert any("1003" in w and "voicemail.conf" in w for w in site.warnings), site.warnings


def test_phone_calls_phone_at_the_branch(site: Site) -> None:
    port = free_port("udp")
    reg = register_from(
        site.branch.sip_host, site.branch.sip_port, "1002", secret_for(1002), local_port=port
    )
    assert reg, reg.output
    with Uas(port=port) as callee:
        result = site.call(1001, "1002")
        answered = callee.wait()
        assert result, result.output
        assert answered, answered.output
        assert callee.numbers() == ["1002"]


def test_unanswered_call_goes_to_voicemail(site: Site) -> None:
    port = free_port("udp")
    reg = register_from(
        site.branch.sip_host, site.branch.sip_port, "1001", secret_for(1001), local_port=port
    )
    assert reg, reg.output
    with Uas(port=port, answer=False) as callee:
        import threading

        results: list[object] = []
        caller = threading.Thread(
            target=lambda: results.append(
                site.call(1002, "1001", hold_ms=4000 + 1000 * RING_SECONDS)
            )
        )
        caller.start()
        try:
            wait_until(
                lambda: site.branch.app_running("VoiceMail", "1001@default"),
                15 + RING_SECONDS,
                message=f"VoiceMail(1001@default) never ran: {site.branch.channels()}",
            )
        finally:
            caller.join(60)
        rang = callee.wait()
    assert rang, rang.output  # it rang and was cancelled after the ring timeout
    assert results and results[0], getattr(results[0], "output", results)


def test_unregistered_phone_goes_to_voicemail(site: Site) -> None:
    import threading

    results: list[object] = []
    caller = threading.Thread(target=lambda: results.append(site.call(1001, "1002", hold_ms=3000)))
    caller.start()
    try:
        wait_until(
            lambda: site.branch.app_running("VoiceMail", "1002@default"),
            15,
            message=f"VoiceMail(1002@default) never ran: {site.branch.channels()}",
        )
    finally:
        caller.join(30)
    assert results and results[0], getattr(results[0], "output", results)


@pytest.mark.parametrize(
    ("dialled", "sent"),
    [("0301234567", "0301234567"), ("90044123456", "0044123456"), ("112", "112"), ("911", "911")],
    ids=["national", "prefix-stripped", "emergency-112", "emergency-911"],
)
def test_outbound_and_emergency_reach_the_trunk(site: Site, dialled: str, sent: str) -> None:
    with Uas(port=site.gateway_port) as gateway:
        result = site.call(1001, dialled)
        answered = gateway.wait()
    assert result, result.output
    assert answered, answered.output
    assert gateway.numbers() == [sent]


def test_central_only_extension_hears_an_announcement(site: Site) -> None:
    # 2001 lives on the central (DevOps): the branch plays "all circuits busy" and hangs up.
    import threading

    results: list[object] = []
    caller = threading.Thread(
        target=lambda: results.append(site.call(1001, "2001", expect_bye=True))
    )
    caller.start()
    try:
        wait_until(
            lambda: site.branch.app_running("Playback", "all-circuits-busy-now"),
            15,
            message=f"no announcement: {site.branch.channels()}",
        )
    finally:
        caller.join(30)
    assert results and results[0], getattr(results[0], "output", results)


def test_unknown_number_hears_cannot_complete(site: Site) -> None:
    result = site.call(1001, "4711", expect_bye=True)
    assert result, result.output


def test_central_fallback_dials_the_did_through_the_trunk(site: Site) -> None:
    saved = dict(site.files)
    files = site.build(centralfallback="+4930555")
    try:
        site.load(files)
        with Uas(port=site.gateway_port) as gateway:
            result = site.call(1001, "2001")
            answered = gateway.wait()
        assert result, result.output
        assert answered, answered.output
        assert gateway.numbers() == ["+49305552001"]
    finally:
        site.load(saved)


def test_generated_files_are_json_safe_and_stable(site: Site) -> None:
    again = site.build()
    assert again == site.files, json.dumps(site.warnings)
