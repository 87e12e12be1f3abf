"""`synch status` in sentences (synch/statustext.py): every state, and nothing printed as None."""

from __future__ import annotations

from synch.statustext import describe

NOW = "20261129120000"


def details(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "Version": "0.2.0",
        "Timestamp": NOW,
        "Uptime": 3 * 3600 + 4 * 60,
        "Monitor": "Stable",
        "MonitorSince": "20261129100000",
        "Service": "Normal",
        "ServiceSince": "20261129100005",
        "Forced": False,
        "DnsName": "sip.example.local",
        "DnsTarget": "10.0.0.254",
        "LastProbe": {"Result": "success", "Error": ""},
        "BranchReachable": True,
        "LastSync": {"Result": "applied", "Reason": "", "Commit": "3f2a1b9c0d4e5f60718293a4",
                     "Change": "+1004 -1002", "Accounts": 57, "Timestamp": "20261129115800"},
        "SyncPaused": None,
    }  # fmt: skip
    base.update(changes)
    return base


def test_a_healthy_branch() -> None:
    text = "\n".join(describe(details()))
    assert text == (
        "The central PBX answers since 2026-11-29 10:00:00 (2 h).\n"
        "Phones are sent to the central PBX (sip.example.local resolves to 10.0.0.254) since "
        "2026-11-29 10:00:05 (1 h 59 min).\n"
        "Last sync 2 min ago: applied (+1004 -1002, 57 accounts, commit 3f2a1b9c0d).\n"
        "The branch Asterisk answers AMI.\n"
        "\n"
        "synch 0.2.0, running for 3 h 4 min."
    )


def test_an_outage_with_everything_to_attend_to() -> None:
    lines = describe(details(
        Monitor="Failed", Service="Failover", DnsTarget="192.168.1.10", Forced=True,
        LastProbe={"Result": "error", "Error": "no answer within 4 s"}, BranchReachable=False,
        SyncPaused="rolled back to 3f2a1b9c0d",
        LastSync={"Result": "guarded", "Reason": "refusing to remove 40 of 57 synced accounts",
                  "Timestamp": "20261129090000"},
    ))  # fmt: skip
    text = "\n".join(lines)
    assert lines[0].startswith("The central PBX does not answer since")
    assert "(last probe: no answer within 4 s)" in lines[0]
    assert lines[1].startswith(
        "Phones are sent to this branch (sip.example.local resolves to 192.168.1.10)"
    ) and lines[1].endswith("An admin forced this.")
    assert lines[2] == ("Last sync 3 h ago: guarded: refusing to remove 40 of 57 synced accounts.")
    assert "The branch Asterisk answers AMI." not in text
    attention = text.split("Needs attention:\n")[1].split("\n\n")[0].splitlines()
    assert [item.split(";")[0] for item in attention] == [
        "- the remove guard refused the last sync",
        "- automatic sync is paused (rolled back to 3f2a1b9c0d)",
        "- the service is forced to Failover by an admin",
        "- the branch Asterisk does not answer AMI: failover would not help the phones",
    ]


def test_nothing_known_yet_prints_no_none() -> None:
    for sparse in (
        {},
        {"Monitor": "Init", "Service": "Init", "LastSync": {}, "LastProbe": {},
         "BranchReachable": None, "Version": None, "Uptime": None, "Timestamp": None,
         "MonitorSince": None, "ServiceSince": None, "DnsName": None, "DnsTarget": None},
    ):  # fmt: skip
        text = "\n".join(describe(sparse))
        assert "None" not in text and "null" not in text
        assert "No sync has run yet." in text


def test_durations_read_naturally() -> None:
    for seconds_ago, words in ((30, "30 s"), (600, "10 min"), (3 * 86400 + 7200, "3 d 2 h")):
        stamp = f"2026112912{0:02d}00"
        from datetime import datetime, timedelta

        when = datetime(2026, 11, 29, 12, 0, 0) - timedelta(seconds=seconds_ago)
        got = describe(details(MonitorSince=when.strftime("%Y%m%d%H%M%S"), Timestamp=stamp))
        assert f"({words})." in got[0], got[0]


def test_what_is_down_is_said() -> None:
    ami_only = describe(details(
        Outage="ami", SyncBlocked="the central's AMI does not answer",
        OutageText="the central's AMI does not answer while its SIP service does: phones stay "
                   "on the central, sync is paused until AMI answers",
    ))  # fmt: skip
    assert ami_only[0].startswith("The central PBX answers the phones since 2026-11-29 10:00:00")
    assert ami_only[0].endswith(
        ", but the central's AMI does not answer while its SIP service "
        "does: phones stay on the central, sync is paused until AMI "
        "answers."
    )
    assert "- no sync can run now: the central's AMI does not answer" in ami_only
    uplink = describe(details(
        Monitor="Failed", Outage="uplink",
        OutageText="our uplink is down: no uplink check target answers",
    ))  # fmt: skip
    assert uplink[0].endswith(" Diagnosis: our uplink is down: no uplink check target answers.")


def test_a_fallback_waiting_for_the_branchs_calls() -> None:
    held = {"Since": "20261129115956", "Until": "20261129120456", "Calls": 2, "Channels": 4}
    lines = describe(details(Service="Failover", DnsTarget="192.168.1.10", FallbackHeld=held))
    assert lines[1].endswith(
        " The central answers again; phones stay at the branch until its 2 calls end "
        "(at most 5 min, until 12:04:56)."
    )
    one = describe(details(Service="Failover", FallbackHeld={**held, "Calls": 1}))
    assert "until its call ends (at most 5 min" in one[1]
    partial = describe(details(Service="Failover", FallbackHeld={"Calls": None}))
    assert partial[1].endswith(" phones stay at the branch until its calls end.")
    # Nothing waits (null), or an admin holds the phones at the branch: no such sentence.
    for extra in ({"FallbackHeld": None}, {"Forced": True, "FallbackHeld": held}):
        text = "\n".join(describe(details(Service="Failover", **extra)))
        assert "answers again" not in text and "None" not in text


def test_a_budget_over_its_target_needs_attention() -> None:
    budget = {
        "Seconds": 7519, "HomeSeconds": 7525, "Target": 120, "OverTarget": True,
        "Advice": "set FreePBX Max Expiration (maximum_expiration) to 60 s for extension 1001 "
                  "(now 7200 s): a phone moves only when it registers again",
    }  # fmt: skip
    lines = describe(details(FailoverBudget=budget))
    assert (
        "- after a WAN cut or a central failure, a phone may be unreachable for up to 2 h 5 min, "
        "more than the 2 min of probemonitor.failoverbudgettarget: set FreePBX Max Expiration "
        "(maximum_expiration) to 60 s for extension 1001 (now 7200 s): a phone moves only when "
        "it registers again (`synch check-config` shows every term)"
    ) in lines
    within = describe(details(FailoverBudget={**budget, "Seconds": 109, "OverTarget": False}))
    assert "Needs attention:" not in within
    assert "Needs attention:" not in describe(details(FailoverBudget=None))


def test_contact_mirroring_is_told() -> None:
    mirror = {"Phones": 2, "Contacts": 2, "Learned": "20261129115900", "Active": False}
    lines = describe(details(ContactMirror=mirror))
    assert (
        "The branch knows the contacts of 2 phones at the central, learned 1 min ago, for a "
        "failover." in lines
    )
    active = describe(details(ContactMirror={**mirror, "Phones": 1, "Active": True}))
    assert (
        "The branch calls 1 phone at their contacts known at the central, learned 1 min ago."
        in active
    )
    quiet = "\n".join(describe(details(ContactMirror={"Phones": None})))
    assert "contacts" not in quiet and "None" not in quiet


def test_a_retry_after_failures_of_the_central_and_the_sync_after_its_return() -> None:
    failed = {"Result": "failed", "Reason": "central pjsip.endpoint.conf: no answer within 4 s",
              "Timestamp": "20261129115900"}  # fmt: skip
    lines = describe(details(
        LastSync=failed, NextSync={"Timestamp": "20261129120200", "In": 120.4, "Why": "retry"},
        SyncRetry={"Failures": 3, "Delay": 120.4},
    ))  # fmt: skip
    assert lines[2] == (
        "Last sync 1 min ago: failed: central pjsip.endpoint.conf: no answer within 4 s. "
        "The central failed the last 3 syncs: next try in 2 min."
    )
    once = describe(details(
        LastSync=failed, NextSync={"In": 20, "Why": "retry"}, SyncRetry={"Failures": 1},
    ))  # fmt: skip
    assert once[2].endswith("The central failed it: next try in 20 s.")
    back = describe(details(NextSync={"In": 42.0, "Why": "central back"}, SyncRetry=None))
    assert back[2].endswith("57 accounts, commit 3f2a1b9c0d). The central is back: next sync in "
                            "42 s.")  # fmt: skip
    scheduled = describe(details(NextSync={"In": 280.0, "Why": "scheduled"}))
    assert scheduled[2].endswith("commit 3f2a1b9c0d).")
