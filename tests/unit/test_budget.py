"""The failover budget (synch.budget): each term, the directions, the largest term's advice,
the registration bound read from a synced chan_sip or PJSIP file, Asterisk's defaults."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lab.samples import ORIGINAL_README_SIP_ADDITIONAL, freepbx_pjsip
from synch.budget import Budget, Term, Timers, compute
from synch.config import parse_settings
from synch.probe import ProbeMonitor
from synch.registration import (
    CHAN_SIP_MAXEXPIRY,
    PJSIP_MAXIMUM_EXPIRATION,
    RegistrationLimit,
    observed_limit,
    registration_limit,
)
from tests.unit.test_config import config_text

SHIPPED = Timers()  # interval 5, timeout 4, 5/5/1, recordttl 300, target 120


def aor(name: str, *lines: str, contacts: int | None = 1) -> str:
    head = f"[{name}]\ntype=aor\n" + (f"max_contacts={contacts}\n" if contacts is not None else "")
    return head + "".join(f"{line}\n" for line in lines)


def pjsip(text: str) -> RegistrationLimit:
    return registration_limit(text, "pjsip")


def seconds(limit: float, **timers: Any) -> Budget:
    registration = RegistrationLimit(limit, "maximum_expiration", "pjsip", explicit=True,
                                     accounts=("1001",))  # fmt: skip
    return compute(replace(SHIPPED, **timers), registration)


# -- the terms ------------------------------------------------------------------------------------


def test_shipped_timers_with_freepbx_defaults() -> None:
    limit = pjsip(freepbx_pjsip()["pjsip.aor.conf"])
    budget = compute(SHIPPED, limit)
    # 3 error rounds × 5 s + a 4 s timeout; recordttl 300; FreePBX's maximum_expiration 7200.
    assert [(p.term, p.seconds) for p in budget.terms] == [
        (Term.DETECTION, 19.0), (Term.DNS_TTL, 300.0), (Term.REGISTRATION, 7200.0),
    ]  # fmt: skip
    assert budget.seconds == 7519.0
    assert budget.call_out_seconds == 319.0
    # home: 5 good rounds × 5 s + the TTL + the registration granted by the branch
    assert [(p.term, p.seconds) for p in budget.home_terms] == [
        (Term.FALLBACK_DETECTION, 25.0), (Term.DNS_TTL, 300.0), (Term.REGISTRATION, 7200.0),
    ]  # fmt: skip
    assert budget.home_seconds == 7525.0
    assert budget.largest.term is Term.REGISTRATION
    assert budget.over_target


def test_detection_follows_the_probe_arithmetic() -> None:
    for tolerance, penalty, interval, timeout in [(5, 1, 5, 4), (5, 0, 2, 1), (1, 0, 1, 3),
                                                  (10, 2, 0.5, 0.4), (7, 3, 3, 3)]:  # fmt: skip
        timers = replace(SHIPPED, failure_tolerance=tolerance, error_penalty_points=penalty,
                         interval=interval, timeout=timeout)  # fmt: skip
        rounds = ProbeMonitor(tolerance, 5, penalty).rounds_to_fail()
        # the timeout never outlasts the interval (amiremote.timeout is capped at it)
        expected = rounds * interval + min(timeout, interval)
        assert seconds(60, **vars(timers)).term(Term.DETECTION) == expected


def test_detection_with_shipped_timers_matches_the_readme_figure() -> None:
    # README "Probe rules and timings": Failed after 3 rounds, the DNS flips within 15 s plus
    # one timeout.
    assert seconds(60).term(Term.DETECTION) == 3 * 5 + 4


def test_fallback_detection_is_alivethreshold_rounds() -> None:
    budget = seconds(60, alive_threshold=3, interval=2)
    fallback = budget.home_terms[0]
    assert (fallback.term, fallback.seconds) == (Term.FALLBACK_DETECTION, 6.0)
    assert budget.home_seconds == 6 + 300 + 60


def test_the_dns_ttl_term_is_recordttl_in_both_directions() -> None:
    budget = seconds(60, record_ttl=42)
    assert budget.term(Term.DNS_TTL) == 42
    assert [p.seconds for p in budget.home_terms if p.term is Term.DNS_TTL] == [42]


def test_timers_are_read_from_settings() -> None:
    settings = parse_settings(config_text(
        probemonitor={"interval": 2, "failuretolerance": 4, "alivethreshold": 3,
                      "errorpenaltypoints": 0, "failoverbudgettarget": 600},
        amiremote={"timeout": 9},  # capped at the interval
        dnsservice={"recordttl": 30},
    ))  # fmt: skip
    timers = Timers.of(settings)
    assert timers == Timers(interval=2, timeout=2, failure_tolerance=4, alive_threshold=3,
                            error_penalty_points=0, record_ttl=30, target=600)  # fmt: skip
    assert compute(timers, pjsip("")).term(Term.DETECTION) == 4 * 2 + 2


# -- directions: contacts mirrored ----------------------------------------------------------------


def test_mirrored_contacts_drop_the_registration_term_after_a_cut_only() -> None:
    plain = seconds(3600)
    mirrored = compute(SHIPPED, plain.registration, contacts_mirrored=True)
    assert [p.term for p in mirrored.terms] == [Term.DETECTION, Term.DNS_TTL]
    assert mirrored.term(Term.REGISTRATION) == 0
    assert mirrored.seconds == mirrored.call_out_seconds == 19 + 300
    # getting home still waits for the REGISTER that moves the phone back
    assert mirrored.home_seconds == plain.home_seconds == 25 + 300 + 3600
    assert mirrored.largest.term is Term.DNS_TTL
    assert mirrored.as_dict()["ContactsMirrored"] is True
    assert "Registration" not in mirrored.as_dict()["Terms"]  # type: ignore[operator]


def test_calling_out_is_detection_plus_ttl_whatever_the_registration() -> None:
    for limit in (60, 3600, 7200):
        assert seconds(limit).call_out_seconds == 19 + 300


# -- the registration bound from the synced file --------------------------------------------------


def test_pjsip_takes_the_largest_maximum_expiration_of_the_synced_aors() -> None:
    text = (
        aor("1001", "maximum_expiration=300")
        + aor("1002", "maximum_expiration=900")
        + aor("1003", "maximum_expiration=900")
        + aor("1004", "maximum_expiration=120")
    )
    limit = pjsip(text)
    assert (limit.seconds, limit.key, limit.explicit) == (900, "maximum_expiration", True)
    assert limit.accounts == ("1002", "1003")
    assert "maximum_expiration 900 s of AORs 1002, 1003" in limit.describe()


def test_a_missing_maximum_expiration_is_asterisks_default() -> None:
    limit = pjsip(aor("1001", "maximum_expiration=300") + aor("1002", "default_expiration=60"))
    assert (limit.seconds, limit.explicit, limit.accounts) == (PJSIP_MAXIMUM_EXPIRATION, False,
                                                               ("1002",))  # fmt: skip
    assert "Asterisk's default" in limit.describe()


def test_aors_that_take_no_registration_do_not_count() -> None:
    # A trunk's AOR: a fixed contact, max_contacts unset (0): no phone registers there.
    text = (
        aor("1001", "maximum_expiration=120")
        + aor("Prod_Trunk", "contact=sip:127.0.0.202:5060", contacts=None)
        + aor("1002", contacts=0)
        + "[1001]\ntype=endpoint\naors=1001\n"
        + "[tmpl](!)\ntype=aor\nmax_contacts=1\nmaximum_expiration=99999\n"
    )
    limit = pjsip(text)
    assert (limit.seconds, limit.accounts, limit.explicit) == (120, ("1001",), True)


@pytest.mark.parametrize(
    ("text", "note"),
    [
        (None, "no synced account yet"),
        ("", "no synced account yet"),
        ("[1001]\ntype=endpoint\n", "no synced AOR accepts registrations"),
        ("type=aor\n", "does not parse"),
    ],
)
def test_pjsip_without_a_usable_aor_takes_asterisks_default(text: str | None, note: str) -> None:
    limit = pjsip(text) if text is not None else registration_limit(None, "pjsip")
    assert (limit.seconds, limit.explicit) == (7200, False)
    assert note in limit.describe()


def test_a_caller_note_explains_the_default() -> None:
    limit = registration_limit(None, "pjsip", "no synced file yet (/etc/asterisk/x.conf)")
    assert "no synced file yet" in limit.describe()


def test_the_synced_lab_files_give_freepbx_defaults() -> None:
    files = freepbx_pjsip({"HeadOffice": [1001, 1002]})
    synced = files["pjsip.endpoint.conf"] + files["pjsip.aor.conf"] + files["pjsip.auth.conf"]
    limit = pjsip(synced)
    assert (limit.seconds, limit.explicit) == (7200, True)
    assert limit.accounts == ("1001", "1002")  # the trunks' AORs take no registration


def test_chan_sip_peers_hold_no_maxexpiry_so_the_default_applies() -> None:
    limit = registration_limit(ORIGINAL_README_SIP_ADDITIONAL, "sip")
    assert (limit.seconds, limit.key, limit.explicit) == (CHAN_SIP_MAXEXPIRY, "maxexpiry", False)
    assert "chan_sip's default maxexpiry" in limit.describe()
    budget = compute(replace(SHIPPED, record_ttl=30), limit)
    assert budget.seconds == 19 + 30 + 3600
    # 120 - 19 - 30 = 71 s left for the registration
    assert budget.advice == (
        "set maxexpiry=70 in [general] of the central's sip.conf and the branch's "
        "(now 3600 s, the default)"
    )


def test_chan_sip_maxexpiry_of_a_synced_general_section() -> None:
    limit = registration_limit("[general]\nmaxexpiry=240\n\n[1001]\ntype=friend\n", "sip")
    assert (limit.seconds, limit.explicit) == (240, True)


def test_the_same_file_differs_by_mode() -> None:
    text = aor("1001", "maximum_expiration=300")
    assert pjsip(text).seconds == 300
    assert registration_limit(text, "sip").seconds == CHAN_SIP_MAXEXPIRY
    with pytest.raises(ValueError):
        registration_limit(text, "iax")


def test_observed_intervals_replace_the_bound() -> None:
    assert observed_limit([], "pjsip") is None
    assert observed_limit([0.0], "pjsip") is None
    limit = observed_limit([600, 1800.5, 300], "pjsip")
    assert limit is not None
    assert (limit.seconds, limit.key, limit.explicit) == (1800.5, "observed", True)
    budget = compute(SHIPPED, limit)
    assert budget.term(Term.REGISTRATION) == 1800.5
    assert "observed" in budget.largest.why
    assert budget.advice.startswith("make the phones register every 60 s at most")


# -- the largest term and its advice --------------------------------------------------------------


def test_registration_advice_fits_the_target_and_names_the_extensions() -> None:
    limit = pjsip(aor("1001", "maximum_expiration=3600") + aor("1002", "maximum_expiration=60"))
    budget = compute(replace(SHIPPED, record_ttl=30, target=300), limit)
    assert budget.largest.term is Term.REGISTRATION
    # 300 - 19 - 30 = 251 s left for the registration: rounded down to 250 s
    assert budget.advice == (
        "set FreePBX Max Expiration (maximum_expiration) to 250 s for extension 1001 "
        "(now 3600 s): a phone moves only when it registers again"
    )
    assert budget.warning().startswith(
        "failover budget 3649 s (about 1 h) is more than probemonitor.failoverbudgettarget "
        "300 s: set FreePBX Max Expiration"
    )


def test_registration_advice_never_goes_below_a_minute() -> None:
    budget = seconds(7200, target=120)  # 120 - 19 - 300 < 0
    assert "to 60 s for extension 1001 (now 7200 s)" in budget.advice


def test_registration_advice_for_a_default_names_it() -> None:
    budget = compute(SHIPPED, pjsip(aor("1001")))
    assert "to 60 s for extension 1001 (now 7200 s, Asterisk's default)" in budget.advice


def test_many_extensions_are_counted_not_listed() -> None:
    text = "".join(aor(str(n), "maximum_expiration=3600") for n in range(1001, 1009))
    budget = compute(SHIPPED, pjsip(text))
    assert "extensions 1001, 1002, 1003, 1004, 1005 and 3 more" in budget.advice


def test_ttl_advice_when_the_ttl_is_largest() -> None:
    budget = seconds(60, record_ttl=3600, target=600)
    assert budget.largest.term is Term.DNS_TTL
    # 600 - 19 - 60 = 521 s: rounded down to whole minutes
    assert budget.advice == "lower dnsservice.recordttl to 480 s (now 3600 s)"


def test_detection_advice_when_detection_is_largest() -> None:
    budget = seconds(60, record_ttl=30, interval=60, timeout=4)
    assert budget.largest.term is Term.DETECTION
    assert budget.term(Term.DETECTION) == 3 * 60 + 4
    assert budget.advice.startswith(
        "detect a cut sooner: lower probemonitor.interval (now 60 s) or failuretolerance (now "
        "5), or raise errorpenaltypoints (now 1)"
    )


def test_without_a_target_the_advice_proposes_usual_values() -> None:
    budget = seconds(7200, target=0)
    assert not budget.over_target and budget.warning() == ""
    assert "to 120 s for extension 1001" in budget.advice
    ttl = seconds(60, target=0)
    assert ttl.advice == "lower dnsservice.recordttl to 30 s (now 300 s)"


def test_within_the_target_nothing_is_warned() -> None:
    budget = seconds(60, record_ttl=30)  # 19 + 30 + 60 = 109 <= 120
    assert budget.seconds == 109 and not budget.over_target and budget.warning() == ""
    assert budget.advice == "nothing to gain: the largest term, registration, is 60 s already"
    assert budget.as_dict()["OverTarget"] is False


def test_a_target_out_of_reach_says_so() -> None:
    budget = seconds(60, record_ttl=10, target=30)  # 19 + 10 + 60; every term at its floor
    assert budget.over_target
    assert budget.advice.startswith("the largest term, registration, is 60 s already")
    assert "raise probemonitor.failoverbudgettarget" in budget.advice


def test_ties_go_to_the_first_term() -> None:
    budget = seconds(300, record_ttl=300)
    assert budget.largest.term is Term.DNS_TTL


# -- what GetDetails and check-config show --------------------------------------------------------


def test_details_carry_every_term_in_order() -> None:
    details = seconds(600, interval=0.5, timeout=0.4, record_ttl=5).as_dict()
    assert details["Seconds"] == 1.5 + 0.4 + 5 + 600
    assert details["CallOutSeconds"] == 6.9
    assert details["HomeSeconds"] == 2.5 + 5 + 600
    terms = details["Terms"]
    assert isinstance(terms, dict)
    assert list(terms) == ["Detection", "DnsTtl", "Registration"]
    assert terms["Detection"]["Seconds"] == 1.9
    assert terms["Registration"] == {
        "Seconds": 600,
        "Why": "until the phone's next REGISTER: maximum_expiration 600 s of AOR 1001",
    }
    home = details["HomeTerms"]
    assert isinstance(home, dict)
    assert list(home) == ["FallbackDetection", "DnsTtl", "Registration"]
    assert (details["Largest"], details["Target"], details["OverTarget"]) == (
        "Registration", 120, True,
    )  # fmt: skip
    assert details["Advice"] == seconds(600, interval=0.5, timeout=0.4, record_ttl=5).advice


def test_check_config_lines_name_each_term_and_the_fix() -> None:
    lines = seconds(7200).lines()
    assert lines[0] == (
        "failover budget: a phone may be unreachable for up to 7519 s (about 2 h 5 min) after a "
        "cut (detection 19 s + dns_ttl 300 s + registration 7200 s; target 120 s)"
    )
    assert [line.split()[0] for line in lines[1:4]] == ["detection", "dns_ttl", "registration"]
    assert lines[4].startswith("calling out through the branch: up to 319 s")
    assert lines[5].startswith("back on the central after it returns: up to 7525 s")
    assert lines[6].startswith("largest term: registration: set FreePBX Max Expiration")
