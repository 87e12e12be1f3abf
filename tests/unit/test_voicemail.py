"""synch.dialplan.voicemail: the synced users' mailboxes from the central's voicemail.conf."""

from __future__ import annotations

import pytest

from synch.dialplan.voicemail import VoicemailError, render_mailboxes
from synch.sync.conftext import parse_conf_text
from synch.sync.getconfig import parse_getconfig
from synch.sync.model import ConfigFile

# What GetConfig of a FreePBX voicemail.conf looks like: `=>` already turned into `=`.
GETCONFIG = [
    ("Response", "Success"),
    ("Category-000000", "general"),
    ("Line-000000-000000", "format=wav49|wav"),
    ("Line-000000-000001", "serveremail=vm@central.example"),
    ("Category-000001", "zonemessages"),
    ("Line-000001-000000", "eastern=America/New_York|'vm-received' Q 'digits/at' IMp"),
    ("Category-000002", "default"),
    ("Line-000002-000000", "1001=1234,Alice,alice@example.com,,attach=yes|saycid=yes"),
    ("Line-000002-000001", "1002=-4321,Alex,,,delete=no"),
    ("Line-000002-000002", "2001=1111,Bob"),
    ("Category-000003", "sales"),
    ("Line-000003-000000", "7001=7,Sales; desk"),
]


def central() -> ConfigFile:
    return parse_getconfig(GETCONFIG)


def sections(text: str) -> dict[str, list[tuple[str, str]]]:
    return {c.name: list(c.lines) for c in parse_conf_text(text)}


def test_wanted_mailboxes_are_copied_whole_with_their_pins() -> None:
    out = render_mailboxes(central(), [("1002", "default"), ("1001", "default")], header="h")
    assert out.text.startswith("; h\n")
    assert sections(out.text) == {
        "default": [
            ("1001", "1234,Alice,alice@example.com,,attach=yes|saycid=yes"),
            ("1002", "-4321,Alex,,,delete=no"),
        ]
    }
    assert out.found == {("1001", "default"), ("1002", "default")}
    assert out.warnings == []


def test_settings_sections_and_other_users_stay_on_the_central() -> None:
    out = render_mailboxes(central(), [("1001", "default")], header="h")
    assert "general" not in out.text and "zonemessages" not in out.text
    assert "serveremail" not in out.text and "2001" not in out.text


def test_several_contexts_in_the_order_first_named_and_semicolons_escaped() -> None:
    out = render_mailboxes(central(), [("7001", "sales"), ("1001", "default")], header="h")
    assert list(sections(out.text)) == ["sales", "default"]
    assert "7001=7,Sales\\; desk" in out.text  # read back by Asterisk as `Sales; desk`
    assert sections(out.text)["sales"] == [("7001", "7,Sales; desk")]


def test_missing_mailbox_is_a_warning_not_an_error() -> None:
    out = render_mailboxes(central(), [("1003", "default"), ("1001", "nowhere")], header="h")
    assert out.found == frozenset()
    assert sections(out.text) == {}
    assert len(out.warnings) == 2 and "1003@default" in out.warnings[0]


def test_freepbx_device_context_means_no_voicemail() -> None:
    out = render_mailboxes(central(), [("1001", "device")], header="h")
    assert out.found == frozenset() and out.warnings == []


def test_a_context_split_in_two_sections_is_read_as_one() -> None:
    split = parse_conf_text("[default]\n1001 => 1,A\n[other]\n[default]\n1002 => 2,B\n")
    out = render_mailboxes(split, [("1002", "default"), ("1001", "default")], header="h")
    assert sections(out.text) == {"default": [("1001", "1,A"), ("1002", "2,B")]}


def test_output_is_sorted_and_deterministic() -> None:
    wanted = [("2001", "default"), ("1002", "default"), ("1001", "default")]
    first = render_mailboxes(central(), wanted, header="h").text
    assert first == render_mailboxes(central(), list(reversed(wanted)), header="h").text
    assert [k for k, _ in sections(first)["default"]] == ["1001", "1002", "2001"]


@pytest.mark.parametrize(
    ("wanted", "reason"),
    [
        (("1001", "general"), "holds settings"),
        (("1001", "zonemessages"), "holds settings"),
        (("10 01", "default"), "mailbox"),
        (("1001", "def]ault"), "voicemail context"),
    ],
)
def test_unsafe_mailbox_names_are_refused(wanted: tuple[str, str], reason: str) -> None:
    with pytest.raises(VoicemailError, match=reason):
        render_mailboxes(central(), [wanted], header="h")


def test_unsafe_values_from_the_central_are_refused() -> None:
    evil = parse_getconfig(
        [
            ("Category-000000", "default"),
            ("Line-000000-000000", "1001=1234,Alice\n#exec /bin/sh"),
        ]
    )
    with pytest.raises(VoicemailError, match="control character"):
        render_mailboxes(evil, [("1001", "default")], header="h")
