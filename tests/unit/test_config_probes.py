"""The probe keys of appsettings.json: the SIP probe (`siptransports`, `sipport`, `siptlsport`,
`sipuser`) and the uplink check (`uplinkcheck`), their defaults and their errors."""

from __future__ import annotations

from typing import Any

import pytest

from synch.config import Endpoint, ProbeMonitorSettings
from tests.unit.test_config import parse, problem


def test_defaults_probe_sip_over_udp_at_5060_and_check_no_uplink() -> None:
    pm = parse().probemonitor
    assert pm == ProbeMonitorSettings()
    assert (pm.siptransports, pm.sipport, pm.siptlsport) == (("udp",), 5060, 5061)
    assert (pm.sipuser, pm.uplinkcheck) == ("", ())


def test_sip_and_uplink_keys_are_read_case_insensitively() -> None:
    pm = parse(
        probemonitor={
            "SipTransports": ["UDP", " tcp", "tls"],
            "SipPort": "5080",
            "sipTlsPort": 5081,
            "SipUser": "2001",
            "UplinkCheck": ["192.0.2.1", "192.0.2.2:443", "[2001:db8::1]:80", "192.0.2.1:53"],
        }
    ).probemonitor
    assert pm.siptransports == ("udp", "tcp", "tls")
    assert (pm.sipport, pm.siptlsport, pm.sipuser) == (5080, 5081, "2001")
    assert pm.uplinkcheck == (
        Endpoint("192.0.2.1", 53), Endpoint("192.0.2.2", 443), Endpoint("2001:db8::1", 80),
    )  # fmt: skip


def test_no_sip_transport_turns_the_sip_probe_off_and_a_lone_value_is_a_list() -> None:
    assert parse(probemonitor={"siptransports": []}).probemonitor.siptransports == ()
    assert parse(probemonitor={"siptransports": "tcp"}).probemonitor.siptransports == ("tcp",)
    assert parse(probemonitor={"uplinkcheck": "192.0.2.9"}).probemonitor.uplinkcheck == (
        Endpoint("192.0.2.9", 53),
    )
    assert parse(probemonitor={"sipuser": ""}).probemonitor.sipuser == ""


@pytest.mark.parametrize(
    ("values", "key", "words"),
    [
        ({"siptransports": ["udp", "sctp"]}, "probemonitor.siptransports[1]", "must be one of"),
        ({"siptransports": ["udp", "UDP"]}, "probemonitor.siptransports[1]", "listed twice"),
        ({"siptransports": [5060]}, "probemonitor.siptransports[0]", "double quotes"),
        ({"sipport": 0}, "probemonitor.sipport", "from 1 to 65535"),
        ({"siptlsport": "x"}, "probemonitor.siptlsport", "whole number"),
        ({"sipuser": "a b"}, "probemonitor.sipuser", "SIP user name"),
        ({"sipuser": "2001@x"}, "probemonitor.sipuser", "SIP user name"),
        ({"uplinkcheck": ["gateway.example"]}, "probemonitor.uplinkcheck[0]", "IP address"),
        ({"uplinkcheck": ["192.0.2.1:0"]}, "probemonitor.uplinkcheck[0]", "IP address"),
        ({"uplinkcheck": [53]}, "probemonitor.uplinkcheck[0]", "double quotes"),
        ({"uplinkchecks": ["192.0.2.1"]}, "probemonitor.uplinkchecks", "did you mean"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_naming_the_key(
    values: dict[str, Any], key: str, words: str
) -> None:
    problems = problem(probemonitor=values)
    assert key in problems, problems
    assert words in problems[key]


def test_fallbackholdmax_defaults_to_five_minutes_and_zero_turns_it_off() -> None:
    assert parse().probemonitor.fallbackholdmax == 300.0
    assert parse(probemonitor={"FallbackHoldMax": 0}).probemonitor.fallbackholdmax == 0.0
    assert parse(probemonitor={"fallbackholdmax": "90"}).probemonitor.fallbackholdmax == 90.0
    for bad, words in ((-1, "at least 0"), ("soon", "must be a number"), (10**7, "at most")):
        assert words in problem(probemonitor={"fallbackholdmax": bad})[
            "probemonitor.fallbackholdmax"
        ]


def test_failover_budget_target_defaults_to_two_minutes_and_zero_turns_it_off() -> None:
    assert parse().probemonitor.failoverbudgettarget == 120
    assert parse(probemonitor={"FailoverBudgetTarget": 0}).probemonitor.failoverbudgettarget == 0
    assert parse(probemonitor={"failoverbudgettarget": "90.5"}).probemonitor.failoverbudgettarget \
        == 90.5


@pytest.mark.parametrize("value", [-1, "soon", 8 * 86400])
def test_a_bad_failover_budget_target_is_refused_naming_the_key(value: Any) -> None:
    problems = problem(probemonitor={"failoverbudgettarget": value})
    assert "probemonitor.failoverbudgettarget" in problems, problems
