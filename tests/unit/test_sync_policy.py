"""The per-kind rules for values Asterisk acts on (synch/sync/policy.py)."""

from __future__ import annotations

import pytest

from synch.sync.conftext import parse_conf_text
from synch.sync.model import Category, ConfigFile
from synch.sync.policy import (
    channel_variable_problem,
    policy_problems,
    voicemail_problems,
    without_dropped,
)


@pytest.mark.parametrize(
    "assignment",
    [
        "SITE=HeadOffice",
        "__SITE=HeadOffice",
        "_X1=a b, c; d",
        "NOTE=desk 1001; HeadOffice",
        "EMPTY=",
        "REALCALLERIDNUM=1001",
        "PRICE=5$",
    ],
)
def test_plain_channel_variables_pass(assignment: str) -> None:
    assert channel_variable_problem(assignment) is None


@pytest.mark.parametrize(
    ("assignment", "why"),
    [
        ("FILE(/tmp/x,,,a)=1", "dialplan function"),
        ("SHELL(id)=1", "dialplan function"),
        ("DB(a/b)=1", "dialplan function"),
        ("CHANNEL(language)=de", "dialplan function"),
        ("ODBC_WRITE(x)=1", "dialplan function"),
        ("___X=1", "plain channel variable"),
        ("1X=1", "plain channel variable"),
        ("A B=1", "plain channel variable"),
        ("=1", "plain channel variable"),
        ("NOTHING", "NAME=value"),
        ("TRANSFER_CONTEXT=from-pstn", "sends calls elsewhere"),
        ("__dynamic_features=x", "sends calls elsewhere"),
        ("X=${SHELL(id)}", "expression"),
        ("X=$[1+1]", "expression"),
        ("X=\\x41", "backslash"),
        ("X=a\\;b", "backslash"),
    ],
)
def test_anything_but_a_plain_variable_is_refused(assignment: str, why: str) -> None:
    problem = channel_variable_problem(assignment)
    assert problem is not None and why in problem


def test_problems_name_section_and_key_per_mode() -> None:
    config = parse_conf_text(
        "[1001]\ntype=endpoint\nSet_Var=FILE(/x)=1\ncontext=from internal\n"
        "[1001]\ntype=aor\nset_var=FILE(/x)=1\n"  # not an endpoint option: data for an aor
    )
    assert policy_problems(config, "pjsip") == [
        "section '1001': Set_Var= may set a plain channel variable only, not 'FILE(/x)' "
        "(a name with '(' is a dialplan function, run on every call)",
        "section '1001': context= 'from internal' is not a plain dialplan context name",
    ]
    sip = parse_conf_text("[2001]\ntype=friend\nsetvar=SHELL(x)=1\nsubscribecontext=a b\n")
    assert [p.split(":")[1].strip().split("=")[0] for p in policy_problems(sip, "sip")] == [
        "setvar",
        "subscribecontext",
    ]
    assert policy_problems(sip, "pjsip") == []  # no type=endpoint there


def test_voicemail_options_that_reach_a_context_are_refused() -> None:
    config = ConfigFile(
        (
            Category(
                "default",
                (
                    ("1001", "1234,Alice,alice@example.org,,attach=yes|saycid=yes"),
                    ("1002", "1234,Alex"),
                    ("1003", "1234,Aiden,,,attach=no|dialout=from-pstn"),
                    ("1004", "1234,Bea,,,Callback = from-pstn"),
                ),
            ),
        )
    )
    assert voicemail_problems(config) == [
        "mailbox 1003@default: voicemail option dialout= would let a caller reach a dialplan "
        "context",
        "mailbox 1004@default: voicemail option callback= would let a caller reach a dialplan "
        "context",
    ]


def test_sip_mode_drops_nothing() -> None:
    config = parse_conf_text("[2001]\ntype=friend\ntransport=udp\n")
    assert without_dropped(config, "sip") == config
