"""One probe round (synch.probe.ProbeRound): what the AMI, SIP and uplink checks together count
as in the probe arithmetic, and what they say is down."""

from __future__ import annotations

import itertools

import pytest

from synch.probe import Cause, Check, ProbeMonitor, ProbeResult, ProbeRound
from synch.states import Monitor
from synch.sync.conftext import parse_conf_text
from synch.sync.plan import accounts, first_account

S, F, E = ProbeResult.SUCCESS, ProbeResult.FAILURE, ProbeResult.ERROR


def check(result: ProbeResult, error: str = "") -> Check:
    return Check(result, 0.01, error or ("" if result is S else f"{result.value}!"))


def round_of(
    ami: ProbeResult, sip: dict[str, ProbeResult] | None = None, uplink: ProbeResult | None = None
) -> ProbeRound:
    return ProbeRound(
        ami=check(ami),
        sip={t: check(r) for t, r in (sip or {}).items()},
        uplink=None if uplink is None else check(uplink),
    )


@pytest.mark.parametrize("ami", [S, F, E])
def test_without_sip_probing_the_round_is_the_ami_probe(ami: ProbeResult) -> None:
    assert round_of(ami).verdict is ami
    assert round_of(ami).sip_result is None


@pytest.mark.parametrize("ami", [S, F, E])
def test_sip_answering_is_a_success_whatever_ami_says(ami: ProbeResult) -> None:
    assert round_of(ami, {"udp": S}).verdict is S
    assert round_of(ami, {"udp": S, "tcp": S}).verdict is S


@pytest.mark.parametrize(("ami", "sip"), list(itertools.product([S, F, E], [F, E])))
def test_sip_failing_is_the_worse_of_sip_and_ami(ami: ProbeResult, sip: ProbeResult) -> None:
    expected = E if E in (ami, sip) else F
    assert round_of(ami, {"udp": sip}).verdict is expected


def test_one_transport_failing_fails_the_sip_probe() -> None:
    probe = round_of(S, {"udp": S, "tcp": E})
    assert probe.sip_result is E
    assert probe.verdict is E
    assert round_of(S, {"udp": S, "tls": F}).verdict is F


@pytest.mark.parametrize(
    ("ami", "sip", "uplink", "cause"),
    [
        (S, None, None, Cause.NONE),
        (S, S, None, Cause.NONE),
        (S, S, E, Cause.NONE),  # the uplink check failing alone is no outage of the central
        (E, S, None, Cause.AMI),
        (F, S, S, Cause.AMI),
        (S, E, None, Cause.UNKNOWN),
        (E, E, None, Cause.UNKNOWN),
        (S, E, S, Cause.CENTRAL),
        (E, E, S, Cause.CENTRAL),
        (S, F, S, Cause.CENTRAL),  # 503: the central answers that it cannot serve
        (E, E, E, Cause.UPLINK),
        (S, E, E, Cause.UPLINK),
        (E, None, S, Cause.CENTRAL),  # AMI only: AMI is what the phones' side is judged by
        (E, None, E, Cause.UPLINK),
        (E, None, None, Cause.UNKNOWN),
    ],
)
def test_diagnosis(
    ami: ProbeResult, sip: ProbeResult | None, uplink: ProbeResult | None, cause: Cause
) -> None:
    assert round_of(ami, None if sip is None else {"udp": sip}, uplink).diagnose() is cause


def test_error_text_names_every_failing_check_sip_first() -> None:
    probe = ProbeRound(
        ami=check(E, "AMI timed out"),
        sip={"udp": check(S), "tcp": check(E, "SIP TCP refused")},
    )
    assert probe.error == "SIP TCP refused; AMI timed out"
    assert round_of(S, {"udp": S}).error == ""


def test_round_takes_as_long_as_its_slowest_check() -> None:
    probe = ProbeRound(ami=Check(S, 0.2), sip={"udp": Check(S, 0.5)}, uplink=Check(S, 0.1))
    assert probe.seconds == 0.5


def test_ami_down_with_sip_up_never_fails_over() -> None:
    monitor = ProbeMonitor(5, 5, 1)
    for _ in range(50):
        monitor.record(round_of(E, {"udp": S}).verdict)
    assert monitor.state is Monitor.STABLE
    assert (monitor.ok, monitor.points) == (50, 0)


def test_sip_down_with_ami_up_fails_over_like_a_dead_central() -> None:
    """The defaults (5, 5, 1): three SIP errors are Failed, as three AMI errors were."""
    monitor = ProbeMonitor(5, 5, 1)
    for _ in range(5):
        monitor.record(round_of(S, {"udp": S}).verdict)
    states = [monitor.record(round_of(S, {"udp": E}).verdict)[1] for _ in range(3)]
    assert states == [Monitor.UNSTABLE, Monitor.UNSTABLE, Monitor.FAILED]
    # A central answering 503 costs one point a probe: five of them.
    monitor = ProbeMonitor(5, 5, 1)
    states = [monitor.record(round_of(S, {"udp": F}).verdict)[1] for _ in range(5)]
    assert states[-2:] == [Monitor.UNSTABLE, Monitor.FAILED]


@pytest.mark.parametrize("mode", ["sip", "pjsip"])
def test_first_account_of_a_synced_file_is_the_first_of_accounts(mode: str) -> None:
    """The SIP probe's From user: the first account, as the full parse would find it."""
    text = (
        "; synced by synch\n\n[tmpl](!)\ntype=endpoint\n\n[1001-auth]\ntype=auth\n"
        "username=1001\n\n[1001]\ntype = endpoint\naors=1001\n\n[1002]\ntype=endpoint\n"
    )
    expected = accounts(parse_conf_text(text), mode)[0]
    assert first_account(text, mode) == expected == ("1001-auth" if mode == "sip" else "1001")
    assert first_account("; nothing synced yet\n", mode) is None
