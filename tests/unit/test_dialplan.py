"""synch.dialplan: the generated extensions_synch.conf, its settings, and the sync glue."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lab.samples import ORIGINAL_README_SIP_ADDITIONAL, freepbx_pjsip
from synch import names
from synch.ami import AmiReply, AmiResponseError
from synch.config import (
    ConfigError,
    DialplanSettings,
    Settings,
    SyncManagerSettings,
    parse_settings,
)
from synch.dialplan.generate import DialplanError, accounts_of, central_extensions, generate
from synch.dialplan.sync import (
    EXTENSIONS_FILE,
    RELOAD_MODULES,
    VOICEMAIL_FILE,
    DialplanStage,
    build,
    change_summary,
)
from synch.sync.conftext import parse_conf_text
from synch.sync.model import Category, ConfigFile
from synch.sync.stages import StageFailed

TOP = Path(__file__).resolve().parents[2]
# The contexts of the sample accounts below (lab/samples.py and endpoint()).
SAMPLE_CONTEXTS = ("from-internal-headoffice", "from-internal-devops", "from-internal-a", "ctx")
ON = DialplanSettings(
    enabled=True,
    trunk="pstn-gw",
    outbound=("_0XXXXXXXXX", "9|_00X."),
    contexts=SAMPLE_CONTEXTS,
)


def pjsip(sites: dict[str, list[int]]) -> ConfigFile:
    files = freepbx_pjsip(sites, trunks=())
    return parse_conf_text(
        files["pjsip.endpoint.conf"] + files["pjsip.aor.conf"] + files["pjsip.auth.conf"]
    )


def endpoint(name: str, **lines: str) -> Category:
    return Category(name, (("type", "endpoint"), *lines.items()))


def contexts(text: str) -> dict[str, list[str]]:
    """Section name → its lines (comments and blank lines left out)."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("["):
            current = found.setdefault(line.strip("[]"), [])
        elif line.strip() and not line.startswith(";"):
            current.append(line.split(";")[0].rstrip())
    return found


def extensions(lines: list[str]) -> list[str]:
    return [m.group(1) for line in lines if (m := re.match(r"exten => ([^,]+),1,", line))]


# -- generation --------------------------------------------------------------------------------


def test_pjsip_context_dials_synced_phones_with_ring_timeout_and_mailbox() -> None:
    plan = generate(pjsip({"HeadOffice": [1001, 1002]}), ON, "pjsip", header="h")
    ctx = contexts(plan.text)["from-internal-headoffice"]
    assert "exten => 1001,1,Gosub(synch-user,s,1(PJSIP/1001,1001@default))" in ctx
    assert "exten => 1002,1,Gosub(synch-user,s,1(PJSIP/1002,1002@default))" in ctx
    user = contexts(plan.text)["synch-user"]
    assert user[0] == "exten => s,1,Dial(${ARG1},20)"
    assert " same => n,VoiceMail(${ARG2},u)" in user
    assert " same => n,VoiceMail(${ARG2},b)" in user
    assert plan.contexts == ("from-internal-headoffice",)


def test_sip_mode_uses_chan_sip_names_and_mailbox_key() -> None:
    synced = parse_conf_text(ORIGINAL_README_SIP_ADDITIONAL)
    plan = generate(synced, ON, "sip", header="h", mailboxes={("1001", "default")})
    sections = contexts(plan.text)
    head = sections["from-internal-headoffice"]
    assert "exten => 1001,1,Gosub(synch-user,s,1(SIP/1001,1001@default))" in head
    assert "exten => 1002,1,Gosub(synch-user,s,1(SIP/1002,))" in head  # no such mailbox
    assert " same => n,Dial(SIP/pstn-gw/112)" in sections["synch-emergency"]
    assert "exten => *97,1,Goto(synch-voicemail,${CHANNEL(peername)},1)" in head
    assert "exten => s,1,Dial(SIP/pstn-gw/${FILTER(0-9*#+,${ARG1})})" in sections["synch-outbound"]
    # The README's trunks (Dev_Trunk, Prod_Trunk) are no extensions: no context of theirs.
    assert not any(name.startswith("from-trunk") for name in sections)
    assert any("Dev_Trunk" in w for w in plan.warnings)


def test_every_synced_context_gets_the_emergency_numbers_before_any_pattern() -> None:
    plan = generate(pjsip({"HeadOffice": [1001], "DevOps": [2001]}), ON, "pjsip", header="h")
    sections = contexts(plan.text)
    for name in ("from-internal-headoffice", "from-internal-devops"):
        exts = extensions(sections[name])
        assert exts[:4] == ["112", "911", "999", "000"], exts
        # Explicit numbers always beat patterns; the catch-all is an include, which loses to
        # everything in the context itself.
        assert "_X." not in exts and not any(e.startswith("_[") for e in exts)
        assert sections[name][-1] == "include => synch-unknown"
        assert "exten => 112,1,Goto(synch-emergency,112,1)" in sections[name]
    emergency = sections["synch-emergency"]
    assert extensions(emergency) == ["112", "911", "999", "000"]
    assert " same => n,Dial(PJSIP/112@pstn-gw)" in emergency
    assert not any("Playback" in line for line in emergency)


def test_phones_of_every_context_reach_each_other() -> None:
    plan = generate(pjsip({"HeadOffice": [1001], "DevOps": [2001]}), ON, "pjsip", header="h")
    for lines in (
        contexts(plan.text)[c] for c in ("from-internal-headoffice", "from-internal-devops")
    ):
        assert {"1001", "2001"} <= set(extensions(lines))


def test_outbound_routes_and_prefix_stripping() -> None:
    plan = generate(pjsip({"HeadOffice": [1001]}), ON, "pjsip", header="h")
    ctx = contexts(plan.text)["from-internal-headoffice"]
    assert "exten => _0XXXXXXXXX,1,Gosub(synch-outbound,s,1(${FILTER(0-9*#+,${EXTEN})}))" in ctx
    assert "exten => _900X.,1,Gosub(synch-outbound,s,1(${FILTER(0-9*#+,${EXTEN:1})}))" in ctx
    outbound = contexts(plan.text)["synch-outbound"]
    assert "exten => s,1,Dial(PJSIP/${FILTER(0-9*#+,${ARG1})}@pstn-gw)" in outbound


def test_no_outbound_routes_means_emergency_only() -> None:
    settings = DialplanSettings(enabled=True, trunk="gw", contexts=SAMPLE_CONTEXTS)
    ctx = contexts(generate(pjsip({"A": [1001]}), settings, "pjsip", header="h").text)
    assert not any("synch-outbound" in line for line in ctx["from-internal-a"])
    assert extensions(ctx["synch-emergency"]) == list(settings.emergency)


def test_central_only_extensions_get_the_announcement_or_the_fallback() -> None:
    central = central_extensions(pjsip({"HeadOffice": [1001], "DevOps": [2001]}), "pjsip")
    assert central == {"1001", "2001"}
    synced = pjsip({"HeadOffice": [1001]})
    plan = generate(synced, ON, "pjsip", header="h", central=central)
    ctx = contexts(plan.text)
    assert "exten => 2001,1,Goto(synch-central,2001,1)" in ctx["from-internal-headoffice"]
    assert "1001,1,Goto(synch-central" not in plan.text
    assert " same => n,Playback(all-circuits-busy-now)" in ctx["synch-central"]
    with_fallback = generate(
        synced,
        DialplanSettings(enabled=True, trunk="gw", centralfallback="+4930555"),
        "pjsip",
        header="h",
        central=central,
    )
    central_ctx = contexts(with_fallback.text)["synch-central"]
    assert "exten => _[0-9*#+].,1,Dial(PJSIP/+4930555${FILTER(0-9*#+,${EXTEN})}@gw)" in central_ctx
    # If the fallback fails too, the caller still hears why.
    assert " same => n,Playback(all-circuits-busy-now)" in central_ctx


def test_unknown_numbers_hear_an_announcement_not_silence() -> None:
    ctx = contexts(generate(pjsip({"A": [1001]}), ON, "pjsip", header="h").text)
    unknown = ctx["synch-unknown"]
    assert extensions(unknown) == ["_[0-9*#+]", "_[0-9*#+]."]
    assert " same => n,Playback(cannot-complete-as-dialed)" in unknown


def test_mailbox_only_when_it_exists_on_the_central() -> None:
    synced = pjsip({"A": [1001, 1002]})
    plan = generate(synced, ON, "pjsip", header="h", mailboxes={("1001", "default")})
    ctx = contexts(plan.text)
    assert "exten => 1002,1,Gosub(synch-user,s,1(PJSIP/1002,))" in ctx["from-internal-a"]
    assert any("1002@default" in w for w in plan.warnings)
    assert extensions(ctx["synch-voicemail"]) == ["1001", "i"]
    user = ctx["synch-user"]
    assert " same => n(nobody),Answer()" in user and " same => n(engaged),Busy(10)" in user


def test_freepbx_device_mailbox_means_no_voicemail_without_warning() -> None:
    synced = ConfigFile((endpoint("1001", context="ctx", mailboxes="1001@device"),))
    plan = generate(synced, ON, "pjsip", header="h", mailboxes=set())
    assert "Gosub(synch-user,s,1(PJSIP/1001,))" in plan.text
    assert plan.warnings == []
    assert "synch-voicemail" not in plan.text  # nobody has a mailbox: no *97


def test_extension_equal_to_an_emergency_number_is_not_dialled_locally() -> None:
    synced = ConfigFile((endpoint("112", context="ctx"), endpoint("1001", context="ctx")))
    plan = generate(synced, ON, "pjsip", header="h")
    lines = contexts(plan.text)["ctx"]
    assert extensions(lines).count("112") == 1
    assert "exten => 112,1,Goto(synch-emergency,112,1)" in lines
    assert any("112" in w and "service" in w for w in plan.warnings)


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ({"context": "from-internal]\n[evil"}, "context="),
        ({"context": "a,b"}, "context="),
        ({"context": "from(x)"}, "context="),
        ({"context": "synch-user"}, "synch's own"),
        ({"context": "general"}, "reserved"),
        ({"context": "globals"}, "reserved"),
        ({"context": "ok", "mailboxes": "1001)@default"}, "mailbox"),
        ({"context": "ok", "mailboxes": "1001 x@default"}, "mailbox"),
        ({"context": "ok", "mailboxes": "1001@${EVIL}"}, "voicemail context"),
        ({"context": "ok", "mailboxes": "1001@general"}, "settings"),
    ],
)
def test_unsafe_names_from_the_central_are_refused_with_a_reason(
    lines: dict[str, str], reason: str
) -> None:
    synced = ConfigFile((endpoint("1001", **lines),))
    with pytest.raises(DialplanError) as err:
        generate(synced, ON, "pjsip", header="h")
    assert "'1001'" in str(err.value) and reason in str(err.value)


@pytest.mark.parametrize("name", ["_X.", "s", "i", "1001,1", "1001)", "alice", "+4930"])
def test_accounts_that_are_not_numbers_are_never_dialplan(name: str) -> None:
    synced = ConfigFile((endpoint(name, context="ctx"), endpoint("1001", context="ctx")))
    plan = generate(synced, ON, "pjsip", header="h")
    assert extensions(contexts(plan.text)["ctx"]).count(name) == 0
    assert any(repr(name) in w for w in plan.warnings)


def test_central_only_names_that_are_not_numbers_are_ignored() -> None:
    plan = generate(pjsip({"A": [1001]}), ON, "pjsip", header="h", central={"_X.", "2001"})
    assert "exten => _X.," not in plan.text
    assert "exten => 2001,1,Goto(synch-central" in plan.text


def test_output_is_deterministic_and_independent_of_endpoint_order() -> None:
    synced = pjsip({"A": [1003, 1001, 1002]})
    first = generate(synced, ON, "pjsip", header="h", central={"3001", "2001"})
    again = generate(synced, ON, "pjsip", header="h", central={"2001", "3001"})
    shuffled = ConfigFile(tuple(reversed(synced.categories)))
    third = generate(shuffled, ON, "pjsip", header="h", central=["3001", "2001"])
    assert first.text == again.text == third.text
    assert extensions(contexts(first.text)["from-internal-a"])[4:9] == [
        "1001",
        "1002",
        "1003",
        "2001",
        "3001",
    ]


_FILTERED = re.compile(r"\$\{FILTER\(0-9\*#\+,\$\{(?:EXTEN(?::\d+)?|ARG1)\}\)\}")


def _unfiltered(text: str) -> list[str]:
    """Dialplan lines where the dialled number (EXTEN) reaches an application unfiltered."""
    code = [line.split(";")[0] for line in text.splitlines()]
    return [line for line in code if "${EXTEN" in _FILTERED.sub("", line)]


@pytest.mark.parametrize("mode", ["pjsip", "sip"])
def test_dialled_numbers_reach_applications_only_filtered(mode: str) -> None:
    settings = DialplanSettings(
        enabled=True,
        trunk="gw",
        outbound=("_0X.", "9|_00X.", "0|_+X."),
        centralfallback="+49",
        contexts=SAMPLE_CONTEXTS,
    )
    synced = pjsip({"A": [1001]}) if mode == "pjsip" else parse_conf_text(
        ORIGINAL_README_SIP_ADDITIONAL
    )
    plan = generate(synced, settings, mode, header="h", central={"1001", "2001"})
    assert _unfiltered(plan.text) == []
    trunk_dials = [ln for ln in plan.text.splitlines() if "Dial(" in ln and "gw" in ln]
    assert trunk_dials and all(
        "${" not in ln or _FILTERED.search(ln) for ln in trunk_dials
    ), trunk_dials


def test_appliance_dialplan_filters_the_dialled_number() -> None:
    text = (TOP / "appliance/asterisk/extensions.conf").read_text()
    assert "FILTER(0-9*#+,${EXTEN})" in text
    assert _unfiltered(text) == []


def test_only_listed_contexts_are_written_others_left_out_with_a_warning() -> None:
    synced = ConfigFile(
        (
            endpoint("1001", context="from-internal"),
            endpoint("1002", context="from-pstn"),
            endpoint("1003", context="from-pstn"),
            endpoint("1004", context="From-Internal"),  # Asterisk's names are case-sensitive
        )
    )
    settings = DialplanSettings(enabled=True, trunk="gw", outbound=("_00X.",))
    plan = generate(synced, settings, "pjsip", header="h", central={"1001", "1002"})
    sections = contexts(plan.text)
    assert plan.contexts == ("from-internal",)
    assert [n for n in sections if not n.startswith("synch-")] == ["from-internal"]
    # Left out: not dialled as a local phone (1002 is the central's, 1003 unknown).
    ctx = sections["from-internal"]
    assert "exten => 1001,1,Gosub(synch-user,s,1(PJSIP/1001,))" in ctx
    assert "exten => 1002,1,Goto(synch-central,1002,1)" in ctx
    assert "1003" not in extensions(ctx)
    warned = [w for w in plan.warnings if "dialplan.contexts" in w]
    assert len(warned) == 2, plan.warnings
    assert "1002, 1003" in warned[0] and "context=from-pstn" in warned[0]
    assert "[from-pstn] is not written" in warned[0]
    assert "1004" in warned[1] and "From-Internal" in warned[1]


def test_header_lines_stay_comments() -> None:
    plan = generate(pjsip({"A": [1001]}), ON, "pjsip", header="one\n[evil]\x00")
    assert plan.text.startswith("; one\n; [evil]?\n")


def test_accounts_of_reads_endpoints_only() -> None:
    got = accounts_of(pjsip({"A": [1001]}), "pjsip")
    assert [(a.name, a.context, a.mailboxes) for a in got] == [
        ("1001", "from-internal-a", (("1001", "default"),))
    ]


def aor(name: str, **lines: str) -> Category:
    return Category(name, (("type", "aor"), *lines.items()))


def test_accounts_of_takes_the_mailboxes_of_the_endpoint_then_of_its_aors() -> None:
    synced = ConfigFile(
        (
            # FreePBX "solicited": the mailbox only on the AOR
            endpoint("1001", context="ctx", aors="1001"),
            aor("1001", mailboxes="1001@default"),
            # FreePBX "auto" (its default): on both, named once
            endpoint("1002", context="ctx", aors="1002", mailboxes="1002@default"),
            aor("1002", mailboxes="1002@default"),
            # two AORs, one of them with a second mailbox; an AOR that is not synced
            endpoint("1003", context="ctx", aors="1003, 1003b,gone", mailboxes="1003"),
            aor("1003"),
            aor("1003b", mailboxes="1003@default,2000@sales"),
        )
    )
    got = {a.name: a.mailboxes for a in accounts_of(synced, "pjsip")}
    assert got == {
        "1001": (("1001", "default"),),
        "1002": (("1002", "default"),),
        "1003": (("1003", "default"), ("2000", "sales")),
    }
    plan = generate(synced, ON, "pjsip", header="h")
    assert "exten => 1001,1,Gosub(synch-user,s,1(PJSIP/1001,1001@default))" in plan.text


def test_an_unsafe_aor_mailbox_is_refused_like_an_endpoint_one() -> None:
    synced = ConfigFile(
        (endpoint("1001", context="ctx", aors="1001"), aor("1001", mailboxes="1001)@default"))
    )
    with pytest.raises(DialplanError, match="mailbox"):
        generate(synced, ON, "pjsip", header="h")


@pytest.mark.parametrize("mode", ["pjsip", "sip"])
def test_every_synced_phone_has_its_hint_in_every_context(mode: str) -> None:
    if mode == "pjsip":
        synced = pjsip({"HeadOffice": [1001, 1002], "DevOps": [2001]})
    else:
        synced = parse_conf_text(ORIGINAL_README_SIP_ADDITIONAL)
    central = {"1001", "1002", "2001", "3001"}
    plan = generate(synced, ON, mode, header="h", central=central)
    sections = contexts(plan.text)
    tech = "PJSIP" if mode == "pjsip" else "SIP"
    phones = ["1001", "1002", "2001"] if mode == "pjsip" else ["1001", "1002", "1003", "2001"]
    for name in ("from-internal-headoffice", "from-internal-devops"):
        hints = [line for line in sections[name] if ",hint," in line]
        assert hints == [f"exten => {n},hint,{tech}/{n}" for n in phones], hints
    # No hint for what has no phone at the branch: central-only extensions, services.
    assert "3001,hint" not in plan.text and "112,hint" not in plan.text
    assert sum(",hint," in line for lines in sections.values() for line in lines) == 2 * len(
        phones
    )


def test_split_mailboxes() -> None:
    assert names.split_mailboxes("1001@default, 1002 & 1003@x,1001@default") == [
        ("1001", "default"),
        ("1002", "default"),
        ("1003", "x"),
    ]


# -- settings ----------------------------------------------------------------------------------

BASE = {
    "amiremote": {"hostname": "10.0.0.254", "password": "p"},
    "amilocal": {"password": "p"},
    "dnsservice": {
        "targetnormal": "10.0.0.254",
        "targetfailover": "10.0.1.1",
        "forwarders": ["127.0.0.1:5353"],
        "port": 5300,
    },
    "servicecontrol": {"token": "t"},
}


def settings_with(dialplan: object) -> Settings:
    return parse_settings(json.dumps({**BASE, "DialPlan": dialplan}))


def problems_of(dialplan: object) -> dict[str, str]:
    with pytest.raises(ConfigError) as err:
        settings_with(dialplan)
    return dict(err.value.problems)


def test_dialplan_is_off_by_default_and_defaults_are_documented() -> None:
    s = parse_settings(json.dumps(BASE))
    assert s.dialplan == DialplanSettings()
    assert not s.dialplan.enabled
    assert s.dialplan.emergency == ("112", "911", "999", "000")
    assert s.dialplan.contexts == ("from-internal",)
    assert DialplanStage(s).reload_modules == ()


def test_dialplan_contexts_setting() -> None:
    assert settings_with({"contexts": "from-internal-xyz"}).dialplan.contexts == (
        "from-internal-xyz",
    )
    both = settings_with({"Contexts": ["from-internal", "ext-local", "from-internal"]})
    assert both.dialplan.contexts == ("from-internal", "ext-local")


def test_dialplan_settings_are_read_case_insensitively() -> None:
    s = settings_with(
        {
            "Enabled": True,
            "TRUNK": "pstn-gw",
            "outbound": "_00X.",
            "emergency": ["112", "110", "112"],
            "ringTimeout": "15",
            "centralfallback": "+4930555",
            "voicemailaccess": "",
        }
    )
    assert s.dialplan == DialplanSettings(
        enabled=True,
        trunk="pstn-gw",
        outbound=("_00X.",),
        emergency=("112", "110"),
        ringtimeout=15,
        centralfallback="+4930555",
        voicemailaccess="",
    )
    assert DialplanStage(s).reload_modules == RELOAD_MODULES


@pytest.mark.parametrize(
    ("dialplan", "key", "text"),
    [
        ({"enabled": True}, "dialplan.trunk", "required"),
        ({"trunk": "pstn gw"}, "dialplan.trunk", "endpoint"),
        ({"trunk": "gw", "outbound": ["_0X.;evil"]}, "dialplan.outbound[0]", "pattern"),
        ({"trunk": "gw", "outbound": ["_0X.,1,System(x)"]}, "dialplan.outbound[0]", "pattern"),
        ({"trunk": "gw", "outbound": ["x|_0X."]}, "dialplan.outbound[0]", "prefix"),
        ({"trunk": "gw", "outbound": [5]}, "dialplan.outbound[0]", "double quotes"),
        ({"trunk": "gw", "emergency": []}, "dialplan.emergency", "at least one"),
        ({"trunk": "gw", "emergency": ["11 2"]}, "dialplan.emergency[0]", "number"),
        ({"trunk": "gw", "ringtimeout": 0}, "dialplan.ringtimeout", "from 1 to 600"),
        ({"trunk": "gw", "centralfallback": "0${X}"}, "dialplan.centralfallback", "prefix"),
        ({"trunk": "gw", "voicemailaccess": "112"}, "dialplan.voicemailaccess", "emergency"),
        ({"trunk": "gw", "emergancy": ["112"]}, "dialplan.emergancy", "unknown key"),
        ({"contexts": []}, "dialplan.contexts", "at least one"),
        ({"contexts": ["from pstn"]}, "dialplan.contexts[0]", "context name"),
        ({"contexts": ["ok", "a][b"]}, "dialplan.contexts[1]", "context name"),
        ({"contexts": ["a]\n[b"]}, "dialplan.contexts[0]", "control characters"),
        ({"contexts": ["synch-user"]}, "dialplan.contexts[0]", "synch's own"),
        ({"contexts": ["General"]}, "dialplan.contexts[0]", "reserved"),
        ({"contexts": [1]}, "dialplan.contexts[0]", "double quotes"),
    ],
)
def test_bad_dialplan_settings_are_named(dialplan: object, key: str, text: str) -> None:
    problems = problems_of(dialplan)
    assert key in problems, problems
    assert text in problems[key]


# -- sync glue ---------------------------------------------------------------------------------


class StubCentral:
    """Answers GetConfig from ConfigFiles, as a central Asterisk would (`=>` already `=`)."""

    def __init__(self, files: dict[str, ConfigFile]):
        self.files = files
        self.asked: list[str] = []

    def action(
        self, action: str, headers: dict[str, str] | None = None, timeout: float | None = None
    ) -> AmiReply:
        assert action == "GetConfig" and headers is not None
        name = headers["Filename"]
        self.asked.append(name)
        if name not in self.files:
            reply = AmiReply((("Response", "Error"), ("Message", "Config file not found")))
            raise AmiResponseError(
                "refused", action=action, message="Config file not found", reply=reply
            )
        out: list[tuple[str, str]] = [("Response", "Success")]
        for i, cat in enumerate(self.files[name]):
            out.append((f"Category-{i:06d}", cat.name))
            out += [(f"Line-{i:06d}-{j:06d}", f"{k}={v}") for j, (k, v) in enumerate(cat.lines)]
        return AmiReply(tuple(out))


def enabled_settings() -> Settings:
    return Settings(
        syncmanager=SyncManagerSettings(mode="pjsip", localfilename="pjsip_synch.conf"),
        dialplan=DialplanSettings(enabled=True, trunk="pstn-gw", contexts=SAMPLE_CONTEXTS),
    )


def test_disabled_dialplan_fetches_nothing_and_writes_nothing() -> None:
    central = StubCentral({})
    assert build(Settings(), central, pjsip({"A": [1001]})).files == {}
    assert central.asked == []


def test_build_fetches_accounts_and_voicemail_and_renders_both_files() -> None:
    everyone = freepbx_pjsip({"A": [1001], "B": [2001]}, trunks=())
    vm = parse_conf_text("[general]\nformat=wav\n[default]\n1001 => 1234,Alice\n2001 => 1,B\n")
    central = StubCentral(
        {
            "pjsip.endpoint.conf": parse_conf_text(everyone["pjsip.endpoint.conf"]),
            "voicemail.conf": vm,
        }
    )
    s = enabled_settings()
    extras = build(s, central, pjsip({"A": [1001]}))
    assert set(extras.files) == {EXTENSIONS_FILE, VOICEMAIL_FILE}
    assert central.asked == ["pjsip.endpoint.conf", "voicemail.conf"]
    assert "exten => 2001,1,Goto(synch-central" in extras.files[EXTENSIONS_FILE]
    assert "Gosub(synch-user,s,1(PJSIP/1001,1001@default))" in extras.files[EXTENSIONS_FILE]
    assert "[default]\n1001=1234,Alice\n" in extras.files[VOICEMAIL_FILE]
    assert "2001" not in extras.files[VOICEMAIL_FILE]


def test_build_without_central_voicemail_warns_and_still_writes_both() -> None:
    central = StubCentral({"pjsip.endpoint.conf": ConfigFile(())})
    extras = build(enabled_settings(), central, pjsip({"A": [1001]}))
    assert "Gosub(synch-user,s,1(PJSIP/1001,))" in extras.files[EXTENSIONS_FILE]
    assert any("no voicemail.conf" in w for w in extras.warnings)
    assert "[" not in extras.files[VOICEMAIL_FILE]  # header only


def test_build_refuses_unsafe_central_data() -> None:
    central = StubCentral({"pjsip.endpoint.conf": ConfigFile(())})
    synced = ConfigFile((endpoint("1001", context="bad,ctx"),))
    with pytest.raises(StageFailed, match="context="):
        build(enabled_settings(), central, synced)


def test_change_summary_counts_contexts_and_mailboxes() -> None:
    old = {
        EXTENSIONS_FILE: "[a]\nexten => 1,1,Noop()\n[b]\nexten => 2,1,Noop()\n",
        VOICEMAIL_FILE: "[default]\n1001=1\n",
    }
    new = {
        EXTENSIONS_FILE: "[a]\nexten => 1,1,Noop()\n[b]\nexten => 3,1,Noop()\n[c]\n",
        VOICEMAIL_FILE: "[default]\n1001=2\n1002=1\n",
    }
    assert change_summary(old, new) == "dialplan +1 ~1 contexts, voicemail +1 ~1 mailboxes"
    assert change_summary(new, new) == ""
    assert change_summary({}, {VOICEMAIL_FILE: "[x]\n1=1\n"}) == "voicemail +1 mailboxes"
