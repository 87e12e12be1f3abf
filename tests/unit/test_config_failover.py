"""The `failover` section: contact mirroring and short registrations, defaults and errors."""

from __future__ import annotations

from typing import Any

import pytest

from synch.config import FailoverSettings
from tests.unit.test_config import parse, problem


def test_defaults_mirror_contacts_on_private_networks_with_60_s_registrations() -> None:
    fo = parse().failover
    assert fo == FailoverSettings()
    assert (fo.mirrorcontacts, fo.contactsinterval, fo.expiration) == (True, 120.0, 60)
    assert fo.contactnetworks == ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


def test_keys_are_read_case_insensitively_and_a_lone_network_is_a_list() -> None:
    keys = {"MirrorContacts": False, "ContactsInterval": 30}
    fo = parse(failover={**keys, "ContactNetworks": "192.168.7.0/24", "Expiration": 0}).failover
    assert fo == FailoverSettings(False, 30.0, ("192.168.7.0/24",), 0)


@pytest.mark.parametrize(
    ("values", "key", "words"),
    [
        ({"expiration": 4000}, "failover.expiration", "3600"),
        ({"expiration": -1}, "failover.expiration", "0"),
        ({"contactnetworks": ["lan"]}, "failover.contactnetworks[0]", "must be a network"),
        ({"contactnetworks": []}, "failover.contactnetworks", "at least one network"),
        ({"contactsinterval": 0}, "failover.contactsinterval", ""),
        ({"mirrorcontacts": "yes please"}, "failover.mirrorcontacts", ""),
        ({"mirrorcontact": True}, "failover.mirrorcontact", "did you mean"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_naming_the_key(
    values: dict[str, Any], key: str, words: str
) -> None:
    problems = problem(failover=values)
    assert key in problems, problems
    assert words in problems[key]
