"""Survivable calling on a real Asterisk 22: the generated dialplan and voicemail, loaded into a
branch, carry real SIP calls between sipp phones, to voicemail, to a sipp PSTN gateway, and
to an announcement for extensions that only the central has; busy lamps (dialog
subscriptions to the generated hints) and message lights (message-summary subscriptions to
the synced mailboxes) get their NOTIFYs from the branch.

The files are made the way a sync makes them: the central's files fetched over AMI (GetConfig,
in a monkey-patched subprocess as the daemon runs), the HeadOffice accounts selected, then
synch.dialplan.sync.build(). The branch loads them with `#include`s and module reloads.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.asterisk import AsteriskInstance, new_instance
from lab.ports import free_port
from lab.samples import central_configs, secret_for
from lab.sipp import Subscriber, Uas, call, register_from
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


def freepbx_default_mwi(files: dict[str, str]) -> dict[str, str]:
    """The sample central with FreePBX's default MWI setting ("auto", FreePBX 13.9.1+): the
    extension's mailbox on its AOR as well (for a phone that subscribes) and
    `mwi_subscribe_replaces_unsolicited=yes` on the endpoint (the subscription replaces the
    unsolicited NOTIFYs instead of being refused)."""
    endpoints = re.sub(
        r"^(mailboxes=.*)$",
        r"\1\nmwi_subscribe_replaces_unsolicited=yes",
        files["pjsip.endpoint.conf"],
        flags=re.MULTILINE,
    )
    aors = re.sub(
        r"^\[(\d+)\]\ntype=aor\n",
        r"[\1]\ntype=aor\nmailboxes=\1@default\n",
        files["pjsip.aor.conf"],
        flags=re.MULTILINE,
    )
    return {**files, "pjsip.endpoint.conf": endpoints, "pjsip.aor.conf": aors}

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
        "central",
        configs={
            **freepbx_default_mwi(central_configs(SITES)),
            "voicemail.conf": CENTRAL_VOICEMAIL,
        },
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


# -- busy lamps and message lights -------------------------------------------------------------


def test_every_synced_phone_has_a_hint_at_the_branch(site: Site) -> None:
    hints = site.branch.cli("core show hints")
    for ext in (1001, 1002, 1003):
        assert re.search(rf"^{ext}@{CONTEXT}\s+: PJSIP/{ext}\s", hints, re.MULTILINE), hints
    assert "2001@" not in hints  # central-only: no phone here, no lamp


def _dialog_states(subscriber: Subscriber) -> list[str]:
    """The dialog state each NOTIFY reported, in order ("terminated" when idle)."""
    return [
        m.group(1)
        for notify in subscriber.notifies()
        if (m := re.search(r"<state>(\w+)</state>", notify))
    ]


def test_busy_lamp_follows_a_call_to_the_watched_phone(site: Site) -> None:
    port = free_port("udp")
    reg = register_from(
        site.branch.sip_host, site.branch.sip_port, "1001", secret_for(1001), local_port=port
    )
    assert reg, reg.output
    with Subscriber(
        site.branch.sip_host, site.branch.sip_port, "1002", secret_for(1002), "1001", "dialog"
    ) as lamp:
        first = lamp.wait_for("<state>terminated</state>")  # idle: the lamp is off
        assert "application/dialog-info+xml" in first and "sip:1001@" in first
        with Uas(port=port) as phone:
            result = site.call(1003, "1001", hold_ms=3000)
            answered = phone.wait()
        assert result, result.output
        assert answered, answered.output
        lamp.wait_for("<state>confirmed</state>")  # in a call: the lamp is on
        deadline = time.monotonic() + 30
        while _dialog_states(lamp)[-1] != "terminated" and time.monotonic() < deadline:
            time.sleep(0.1)  # the call ended: off again
        states = _dialog_states(lamp)
    assert states[0] == "terminated" and states[-1] == "terminated", states
    assert "confirmed" in states[1:-1], states


def test_without_a_hint_there_is_no_lamp(site: Site) -> None:
    # 2001 lives on the central only: the branch has nothing to report for it.
    with Subscriber(
        site.branch.sip_host, site.branch.sip_port, "1002", secret_for(1002), "2001", "dialog"
    ) as lamp:
        deadline = time.monotonic() + 15
        while not lamp.responses()[1:] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert lamp.responses()[1:2] == ["SIP/2.0 404 Not Found"], lamp.responses()
        assert lamp.notifies() == []


def test_message_light_after_a_voicemail_is_left(site: Site) -> None:
    with Subscriber(
        site.branch.sip_host,
        site.branch.sip_port,
        "1001",
        secret_for(1001),
        "1001",
        "message-summary",
    ) as light:
        light.wait_for("Messages-Waiting: no")
        results: list[object] = []
        caller = threading.Thread(
            target=lambda: results.append(
                # The greeting, the beep, then a silent message: app_voicemail ends the
                # recording after its maximum silence (10 s), keeps it, and hangs up.
                site.call(1002, "1001", expect_bye=True, timeout=60)
            )
        )
        caller.start()
        try:
            notify = light.wait_for("Messages-Waiting: yes", timeout=60)
        finally:
            caller.join(90)
        assert results and results[0], getattr(results[0], "output", results)
    assert "Voice-Message: 1/0" in notify, notify


def _place_message(site: Site, box: str) -> None:
    """A message file in the branch's spool, as another tool (or a restore) would put it."""
    inbox = site.branch.host_dir / "spool" / "voicemail" / "default" / box / "INBOX"
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / "msg0000.txt").write_text(
        f"[message]\norigmailbox={box}\ncontext=from-internal\nexten={box}\npriority=1\n"
        'callerid="Alice" <1001>\norigtime=1764460800\nduration=2\n'
    )
    with wave.open(str(inbox / "msg0000.wav"), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(8000)
        audio.writeframes(b"\x00\x00" * 16000)
    owner = (site.branch.host_dir / "spool").stat()  # the chroot's asterisk user
    for path in (inbox.parents[2], *inbox.parents[2].rglob("*")):
        os.chown(path, owner.st_uid, owner.st_gid)


REFRESH = """
branch = client(ARGS["user"], ARGS["secret"], timeout=10.0)
reply = branch.action("VoicemailRefresh", {"Context": "default", "Mailbox": ARGS["box"]})
out["response"] = reply.get("Response")
"""


def test_message_light_for_a_message_placed_in_the_spool(site: Site) -> None:
    with Subscriber(
        site.branch.sip_host,
        site.branch.sip_port,
        "1002",
        secret_for(1002),
        "1002",
        "message-summary",
    ) as light:
        light.wait_for("Messages-Waiting: no")
        _place_message(site, "1002")
        # app_voicemail reads the spool when asked (AMI VoicemailRefresh) or every pollfreq
        # seconds with pollmailboxes=yes in the branch's voicemail.conf.
        args = {"user": site.branch.ami_user, "secret": site.branch.ami_secret, "box": "1002"}
        out = run_patched(REFRESH, site.branch.ami_port, args, host=site.branch.ami_host)
        assert out["response"] == "Success", out
        notify = light.wait_for("Messages-Waiting: yes")
    assert "Voice-Message: 1/0" in notify, notify
