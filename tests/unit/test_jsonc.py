"""synch.jsonc's helpers for other readers of a settings file: loads() and set_member()."""

from __future__ import annotations

import pytest

from synch.config import parse_settings
from synch.jsonc import loads, set_member

LENIENT = '\ufeff{ // c\n "A": { "x": "1\\.2", }, /* d */ "b": [1, 2,], "n": null, }\n'


def test_loads_reads_what_synch_reads() -> None:
    assert loads(LENIENT) == {"A": {"x": "1\\.2"}, "b": [1, 2], "n": None}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"amilocal": {"password": "old"}}', '{"amilocal": {"password": "new"}}'),
        ('{"AmiLocal": {"PassWord": 12}}', '{"AmiLocal": {"PassWord": "new"}}'),
        ('{"amilocal": {}}', '{"amilocal": { "password": "new" }}'),
        ('{"amilocal": {"port": 1}}', '{"amilocal": { "password": "new", "port": 1}}'),
        ('{"amilocal": null}', '{"amilocal": {"password": "new"}}'),
        ("{}", '{ "amilocal": {"password": "new"} }'),
        ('{ // c\n"a": 1,}', '{ "amilocal": {"password": "new"},  // c\n"a": 1,}'),
    ],
)
def test_set_member_edits_only_that_value(text: str, expected: str) -> None:
    assert set_member(text, "amilocal", "password", "new") == expected


def test_set_member_keeps_comments_escapes_and_trailing_commas() -> None:
    edited = set_member(LENIENT, "a", "x", 'q"\\')
    assert edited == '{ // c\n "A": { "x": "q\\"\\\\", }, /* d */ "b": [1, 2,], "n": null, }\n'
    assert loads(edited) == {"A": {"x": 'q"\\'}, "b": [1, 2], "n": None}


def test_set_member_refuses_what_it_cannot_edit() -> None:
    with pytest.raises(ValueError, match="line 1:1"):
        set_member("[1]", "amilocal", "password", "x")
    with pytest.raises(ValueError, match="amilocal is not an object"):
        set_member('{"amilocal": "x"}', "amilocal", "password", "x")
    with pytest.raises(ValueError, match=r"line 2:\d+: invalid JSON"):
        set_member('{\n "a": hunter2 }', "amilocal", "password", "x")


def test_an_edited_settings_file_means_the_same_to_synch() -> None:
    text = (
        '{ "amiremote": {"hostname": "10.0.0.1", "password": "p",},\n'
        '  "syncmanager": {"filtervalue": "^10\\.1\\."},\n'
        '  "dnsservice": {"targetnormal": "10.0.0.1", "targetfailover": "10.0.0.2",\n'
        '                 "forwarders": ["10.0.0.53"]},\n'
        '  "servicecontrol": {"token": "t"}, "amilocal": {"password": "old"} }\n'
    )
    before = parse_settings(text)
    after = parse_settings(set_member(text, "AMILOCAL", "password", "s"))
    assert after.amilocal.password == "s"
    assert after.syncmanager == before.syncmanager and after.amiremote == before.amiremote
