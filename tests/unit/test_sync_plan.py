"""Per-account diff, the remove guard, commit subjects, text diffs (synch.sync.plan)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from synch.sync.conftext import parse_conf_text
from synch.sync.filter import Selector, select_pjsip, select_sip
from synch.sync.model import Category, ConfigFile
from synch.sync.plan import Change, accounts, commit_subject, diff, guard, unified_diff
from synch.sync.render import render
from tests.helpers.getconfig import load

SIP = load("sip_additional.ami")
ENDPOINTS, AORS, AUTHS = (load(f"pjsip_{n}.ami") for n in ("endpoint", "aor", "auth"))


def pjsip(value: str, endpoints: ConfigFile = ENDPOINTS, aors: ConfigFile = AORS,
          auths: ConfigFile = AUTHS) -> ConfigFile:
    return select_pjsip(endpoints, aors, auths, Selector("accountcode", value)).config


def edit(config: ConfigFile, name: str, type_: str, key: str, value: str) -> ConfigFile:
    """A copy of `config` where the first `key` of section (name, type) is `value`."""
    cats = []
    for cat in config:
        if cat.name == name and cat.type == type_:
            lines = [(k, value if k == key else v) for k, v in cat.lines]
            cat = replace(cat, lines=tuple(lines))
        cats.append(cat)
    return ConfigFile(tuple(cats))


def without(config: ConfigFile, *names: str) -> ConfigFile:
    return ConfigFile(tuple(c for c in config if c.name not in names))


# -- accounts -----------------------------------------------------------------------------------


def test_accounts_sip_are_non_template_sections() -> None:
    assert accounts(SIP, "sip") == ["1001", "1002", "1003", "2001", "3001", "Dev_Trunk",
                                    "Prod_Trunk"]
    assert accounts(load("templates.ami"), "sip") == ["1001"]


def test_accounts_pjsip_are_endpoints() -> None:
    assert accounts(pjsip("HeadOffice"), "pjsip") == ["1001", "1002"]
    assert accounts(pjsip("."), "pjsip") == ["1001", "1002", "2001", "2002"]


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown sync mode 'iax'"):
        accounts(SIP, "iax")
    with pytest.raises(ValueError, match="unknown sync mode"):
        diff(SIP, SIP, "SIP")


# -- diff ---------------------------------------------------------------------------------------


def test_sip_diff_added_removed_changed() -> None:
    old = select_sip(SIP, Selector("accountcode", "HeadOffice"))
    new = edit(without(select_sip(SIP, Selector("accountcode", "HeadOffice|DevOps")), "1002"),
               "1001", "friend", "secret", "new-secret")
    assert diff(old, new, "sip") == Change(
        added=("2001",), removed=("1002",), changed=("1001",), rekeyed=("1001",)
    )
    callerid = edit(old, "1001", "friend", "callerid", "Alicia <1001>")
    assert diff(old, callerid, "sip") == Change(changed=("1001",))


def test_identical_configs_have_no_change() -> None:
    assert diff(SIP, SIP, "sip").empty
    assert diff(pjsip("."), pjsip("."), "pjsip") == Change()


def test_duplicate_keys_count_in_order() -> None:
    old = ConfigFile((Category("1001", (("allow", "ulaw"), ("allow", "alaw"))),))
    new = ConfigFile((Category("1001", (("allow", "alaw"), ("allow", "ulaw"))),))
    assert diff(old, new, "sip").changed == ("1001",)


def test_templates_reported_by_getconfig_do_not_count_as_a_change() -> None:
    # The file on disk cannot carry `templates` (flattened): reading it back must be "same".
    fetched = select_sip(load("templates.ami"), Selector("type", "friend"))
    assert fetched.categories[0].templates
    on_disk = parse_conf_text(render(fetched, "h"))
    assert diff(on_disk, fetched, "sip").empty


def test_pjsip_auth_or_aor_change_is_the_endpoint_changed() -> None:
    old = pjsip("HeadOffice")
    password = edit(old, "1002-auth", "auth", "password", "rotated")
    assert diff(old, password, "pjsip") == Change(changed=("1002",), rekeyed=("1002",))
    contacts = edit(old, "1001", "aor", "max_contacts", "2")
    assert diff(old, contacts, "pjsip") == Change(changed=("1001",))


def test_pjsip_missing_aor_is_a_change_and_added_endpoint_is_added() -> None:
    old = pjsip("HeadOffice")
    lost_aor = ConfigFile(tuple(c for c in old if not (c.name == "1001" and c.type == "aor")))
    assert diff(old, lost_aor, "pjsip") == Change(changed=("1001",), broken=("1001",))
    # Missing before and after: an account that was never whole is not newly broken.
    assert diff(lost_aor, edit(lost_aor, "1001", "endpoint", "callerid", "x"), "pjsip") == Change(
        changed=("1001",)
    )
    assert diff(old, pjsip("HeadOffice|DevOps"), "pjsip") == Change(added=("2001", "2002"))
    assert diff(pjsip("HeadOffice|DevOps"), old, "pjsip") == Change(removed=("2001", "2002"))


def test_diff_against_what_was_written_is_empty() -> None:
    for mode, config in (("sip", SIP), ("pjsip", pjsip("."))):
        assert diff(parse_conf_text(render(config, "h")), config, mode).empty


def test_names_sort_naturally() -> None:
    new = ConfigFile(tuple(Category(n, ()) for n in ["1001", "20", "3", "b", "A", "1001a"]))
    assert diff(ConfigFile(()), new, "sip").added == ("3", "20", "1001", "1001a", "A", "b")


# -- guard --------------------------------------------------------------------------------------


def test_guard_first_sync_is_allowed() -> None:
    assert guard(0, Change(added=("1001",)), 50) is None
    assert guard(0, Change(), 0) is None


def test_guard_refuses_removing_more_than_the_share() -> None:
    assert guard(4, Change(removed=("1", "2")), 50) is None  # exactly 50%: allowed
    reason = guard(4, Change(removed=("1", "2", "3")), 50)
    assert reason == ("refusing to remove 3 of 4 synced accounts "
                      "(75% > maxremovepercent 50%)")
    assert guard(10, Change(removed=("1",)), 0) is not None
    assert guard(10, Change(changed=("1", "2", "3")), 0) is None


def test_guard_counts_broken_accounts_as_lost_and_weighs_new_credentials() -> None:
    assert guard(4, Change(changed=("1", "2"), broken=("1",), rekeyed=("2",)), 50) is None
    reason = guard(4, Change(removed=("4",), changed=("1", "2"), broken=("1", "2")), 50)
    assert reason == (
        "refusing this change: 3 of 4 synced accounts would stop working: 1 would be removed, "
        "2 would lose an auth or aor they name (missing on the central) "
        "(75% > maxremovepercent 50%)"
    )
    rekeyed = ("1", "2", "3")
    assert guard(4, Change(changed=rekeyed, rekeyed=rekeyed), 50) == (
        "refusing this change: 3 of 4 synced accounts would get new credentials "
        "(75% > maxremovepercent 50%)"
    )
    # Removals and new credentials are weighed apart: a few of each is an ordinary change.
    assert guard(4, Change(removed=("4",), changed=("1", "2"), rekeyed=("1", "2")), 50) is None


def test_guard_refuses_emptying_whatever_the_share() -> None:
    reason = guard(3, Change(removed=("1", "2", "3")), 100)
    assert reason == ("refusing to remove all 3 synced accounts "
                      "(the central's filtered list is empty)")
    # All replaced by others is not "empty", but still a removal share.
    assert guard(1, Change(added=("2",), removed=("1",)), 100) is None


# -- commit subject -----------------------------------------------------------------------------


def test_commit_subject_exact_shape() -> None:
    change = Change(added=("1004",), removed=("1002",), changed=("1001",))
    assert commit_subject(change, "10.0.0.254", "pjsip") == (
        "sync: +1004 -1002 ~1001 from 10.0.0.254 (pjsip)"
    )


def test_commit_subject_many_names_are_counted() -> None:
    change = Change(added=tuple(str(n) for n in range(1001, 1013)), removed=("2001", "2002"))
    assert commit_subject(change, "pbx", "sip") == (
        "sync: +1001 +1002 +1003 +1004 +1005 (+7 more) -2001 -2002 from pbx (sip)"
    )


def test_commit_subject_without_account_changes() -> None:
    assert commit_subject(Change(), "pbx", "sip") == "sync: no account changes from pbx (sip)"
    assert str(Change(changed=("1001",))) == "~1001"


# -- unified diff -------------------------------------------------------------------------------


def test_unified_diff() -> None:
    assert unified_diff("a\n", "a\n", "sip_synch.conf") == ""
    text = unified_diff("[1001]\nsecret=a\n", "[1001]\nsecret=b\n", "sip_synch.conf")
    assert text == (
        "--- a/sip_synch.conf\n"
        "+++ b/sip_synch.conf\n"
        "@@ -1,2 +1,2 @@\n"
        " [1001]\n"
        "-secret=a\n"
        "+secret=b\n"
    )


def test_unified_diff_from_nothing_and_missing_newline() -> None:
    text = unified_diff("", "[1001]\n", "f.conf")
    assert text.endswith("@@ -0,0 +1 @@\n+[1001]\n")
    text = unified_diff("x", "y\n", "f.conf")
    assert "-x\n\\ No newline at end of file\n+y\n" in text


def test_unified_diff_splits_only_on_newline() -> None:
    text = unified_diff("k=a\u2028b\n", "k=a\u2028c\n", "f.conf")
    assert "-k=a\u2028b\n+k=a\u2028c\n" in text
