"""Contact mirroring and the failover file (synch.sync.mirror): what the central's contacts
may become on the branch, and what the failover file says."""

from __future__ import annotations

import pytest

from synch.sync.conftext import parse_conf_text
from synch.sync.mirror import (
    MAX_CONTACTS_PER_AOR,
    check_uri,
    learn,
    overlay_aors,
    overlay_for,
    parse_networks,
    prune,
    spread_expiration,
    synced_aors,
)

LAN = parse_networks(["192.168.0.0/16", "fd00::/8"])
SYNCED = parse_conf_text(
    "[1001]\ntype=endpoint\naors=1001\n[1001]\ntype=aor\nmax_contacts=1\n"
    "[1002]\ntype=endpoint\naors=1002\n[1002]\ntype=aor\n"
    "[tpl](!)\ntype=aor\n[1001-auth]\ntype=auth\n"
)


def contact(aor: str, uri: str, **more: str) -> dict[str, str]:
    return {"ObjectName": f"{aor};@0123abcd", "Endpoint": aor, "Uri": uri, "Path": "",
            "ExpirationTime": "0", **more}  # fmt: skip


def test_the_synced_aors_are_the_aor_sections() -> None:
    assert synced_aors(SYNCED) == {"1001", "1002"}


@pytest.mark.parametrize("uri", [
    "sip:1001@192.168.1.50:5060",
    "sip:1001@192.168.1.50",
    "sips:1001@192.168.1.50:5061;transport=tls",
    "sip:1001@192.168.1.50:5060;line=q7sdgy1;transport=udp",
    "sip:1001@[fd00::50]:5060",
    "sip:192.168.1.50:5060;ob",
])  # fmt: skip
def test_plain_contacts_on_the_lan_are_kept(uri: str) -> None:
    assert check_uri(uri, LAN) is None


@pytest.mark.parametrize("uri, why", [
    ("sip:1001@10.9.9.9:5060", "not in the networks"),
    ("sip:1001@phone.example.com:5060", "not an IP address"),
    ("tel:+4412345", "not a sip: URI"),
    ("sip:10&01@192.168.1.50", "user part"),
    ("sip:1001,PJSIP/evil@192.168.1.50", "user part"),
    ("sip:1001@192.168.1.50:99999", "port out of range"),
    ("sip:1001@192.168.1.50:5060;x=${SHELL(id)}", "parameter"),
    ("sip:1001@192.168.1.50:5060;transport=carrier-pigeon", "unknown transport"),
    ("sip:1001@192.168.1.50:5060\n[evil]", "not a plain URI"),
    ("sip:1001@192.168.1.50:5060 ;a", "not a plain URI"),
    ("sip:1001@192.168.1.50:5060" + ";a=b" * 7, "too many"),
    ("sip:" + "1" * 300 + "@192.168.1.50", "not a plain URI"),
])  # fmt: skip
def test_anything_else_is_refused_with_a_reason(uri: str, why: str) -> None:
    problem = check_uri(uri, LAN)
    assert problem is not None and why in problem


def test_learn_keeps_the_synced_phones_reachable_contacts() -> None:
    events = [
        contact("1001", "sip:1001@192.168.1.50:5060"),
        contact("1001", "sip:1001@192.168.1.51:5060"),
        contact("1002", "sip:1002@203.0.113.7:5060"),  # a NAT's public address
        contact("1003", "sip:1003@192.168.1.53:5060"),  # not synced: none of our business
        contact("1002", "sip:1002@192.168.1.52:5060", Path="<sip:edge.example.com;lr>"),
        contact("1002", "sip:1002@192.168.1.54:5060", ExpirationTime="100"),
    ]
    learned = learn(events, {"1001", "1002"}, LAN, now=1000.0)
    assert learned.contacts == {
        "1001": ("sip:1001@192.168.1.50:5060", "sip:1001@192.168.1.51:5060"),
    }
    assert learned.count == 2
    assert [s.split(": ", 2)[2] for s in learned.skipped] == [
        "203.0.113.7 is not in the networks the branch reaches (failover.contactnetworks)",
        "registered through a proxy (Path): the branch cannot reach it directly",
        "expired",
    ]


def test_learn_keeps_a_few_contacts_per_phone() -> None:
    events = [contact("1001", f"sip:1001@192.168.1.{n}:5060") for n in range(10, 20)]
    learned = learn(events, {"1001"}, LAN, now=0)
    assert len(learned.contacts["1001"]) == MAX_CONTACTS_PER_AOR
    assert learned.skipped == [f"1001: 10 contacts, kept {MAX_CONTACTS_PER_AOR}"]


def test_the_failover_file_appends_to_the_aors_with_escaped_parameters() -> None:
    text = overlay_for(
        {"1001", "1002"}, {"1001": ["sip:1001@192.168.1.50:5060;line=ab;transport=udp"]}, 60
    )
    assert overlay_aors(text) == {"1001", "1002"}
    body = text.split("\n\n", 1)[1]
    e1, e2 = spread_expiration("1001", 60), spread_expiration("1002", 60)
    assert body == (
        "[1001](+type=aor)\ncontact=sip:1001@192.168.1.50:5060\\;line=ab\\;transport=udp\n"
        f"maximum_expiration={e1}\ndefault_expiration={e1}\n\n"
        f"[1002](+type=aor)\nmaximum_expiration={e2}\ndefault_expiration={e2}\n"
    )
    # What Asterisk reads back: the whole URI (the escaped ';' is no comment).
    appended = parse_conf_text(text.replace("](+type=aor)", "]"))
    assert appended.categories[0].get("contact") == (
        "sip:1001@192.168.1.50:5060;line=ab;transport=udp"
    )


def test_without_short_registrations_only_phones_with_contacts_are_named() -> None:
    text = overlay_for({"1001", "1002"}, {"1001": ["sip:1001@192.168.1.50"]}, 0)
    assert overlay_aors(text) == {"1001"}
    assert "expiration" not in text


def test_registrations_are_spread_but_stable() -> None:
    seconds = [spread_expiration(f"{n}", 60) for n in range(1000, 1400)]
    assert min(seconds) >= 60 and max(seconds) <= 90
    assert len(set(seconds)) > 20  # hundreds of phones do not share one refresh second
    assert seconds == [spread_expiration(f"{n}", 60) for n in range(1000, 1400)]
    assert spread_expiration("1001", 0) == 0


def test_prune_drops_the_aors_that_are_gone() -> None:
    text = overlay_for({"1001", "1002"}, {"1001": ["sip:1001@192.168.1.50"]}, 60)
    assert prune(text, {"1001", "1002", "1003"}) is None
    pruned = prune(text, {"1002"})
    assert pruned is not None and overlay_aors(pruned) == {"1002"}
    assert "1001" not in pruned and pruned.startswith("; Written by synch")
    assert overlay_aors(prune(text, set()) or "") == set()
