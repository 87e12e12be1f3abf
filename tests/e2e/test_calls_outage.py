"""Survivable calling through a WAN outage: with `dialplan` enabled, synch's generated dialplan
on the branch carries the phones' calls while the central is out of reach.

One bed (lab/testbed.py, with `dialplan=`) serves the module: it is built healthy and
synced, then the WAN is cut until synch is in Failover and every phone is registered at the
branch; the calls are placed from the phones' namespace; the WAN is restored at the end.

- phone → phone: the callee's phone answers (a sipp uas on the address and port it registered);
- phone → a ringing phone nobody answers: after `ringtimeout`, VoiceMail runs for its mailbox;
- an outbound number and an emergency number: the PSTN gateway (a sipp uas behind the branch's
  trunk `pstn-gw`, on the phones' LAN) is asked for them;
- a central-only extension: the configured fallback, its DID through the same gateway.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.phones import Phone
from lab.samples import secret_for
from lab.sipp import SippResult, Uas, call, register_from
from lab.testbed import (
    BRANCH_LAN,
    BRANCH_SITE,
    CENTRAL_WAN,
    GATEWAY_ADDR,
    HEADOFFICE_EXTS,
    PHONE_EXTS,
    TestBed,
)
from lab.wait import wait_until

pytestmark = [pytest.mark.asterisk, pytest.mark.netns, pytest.mark.slow]

RING_SECONDS = 2  # dialplan.ringtimeout: short, the unanswered call waits for it
OUTBOUND = "_0XXXXXXXXX"
FALLBACK = "+4930555"  # dialplan.centralfallback: the central's DID range via the PSTN
CONTEXT = f"from-internal-{BRANCH_SITE.lower()}"  # the synced phones' context
DIALPLAN = {
    "outbound": [OUTBOUND],
    "emergency": ["112", "911"],
    "ringtimeout": RING_SECONDS,
    "centralfallback": FALLBACK,
    "contexts": [CONTEXT],
}
SIP_PORT = 5060
CALLER, CALLEE, SILENT = PHONE_EXTS  # 2001 calls; 2002 answers; 2003 rings unanswered
CENTRAL_ONLY = HEADOFFICE_EXTS[0]  # an extension only the central has


@pytest.fixture(scope="module")
def outage(lab: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestBed]:
    """The bed, healthy and synced with the dialplan, then with its WAN cut: synch in
    Failover and every phone registered at the branch. Restored (and checked) at the end."""
    bed = TestBed.build(tmp_path_factory.mktemp("e2e-calls"), dialplan=DIALPLAN)
    try:
        # build() waited for Stable/Normal/Synced: the first sync wrote the dialplan too.
        for name in ("extensions_synch.conf", "voicemail_synch.conf"):
            assert bed.branch is not None
            assert (bed.branch.config_dir / name).is_file(), f"{name} not written by the sync"
        bed.wait_phones(CENTRAL_WAN, bed.timers.phone_move_bound + 10)
        cut = time.monotonic()
        bed.wan.cut()
        bed.wait_state(bed.timers.failover_bound, Monitor="Failed", Service="Failover")
        bed.wait_phones(BRANCH_LAN, bed.timers.failover_bound + bed.timers.phone_move_bound, cut)
        yield bed
        assert bed.wan.state == "cut", "the WAN came back during the calls"
        bed.heal()  # the restore: WAN up, Stable/Normal, phones back at the central
    finally:
        bed.close()


def in_outage(bed: TestBed) -> None:
    """Each call is placed during the outage, with every phone registered at the branch (a
    phone that was busy in the previous call registers again as soon as it is resumed)."""
    status = bed.synch_proc.status()
    assert status["Service"] == "Failover", status
    wait_until(
        lambda: all(p.registered_at(BRANCH_LAN) for p in bed.phones),
        bed.timers.phone_move_bound,
        interval=0.1,
        message=f"all phones registered at the branch:\n{bed.phones_timeline(0)}",
    )


def phone(bed: TestBed, ext: int) -> Phone:
    return next(p for p in bed.phones if p.ext == ext)


@contextlib.contextmanager
def in_a_call(bed: TestBed, ext: int) -> Iterator[Phone]:
    """Phone `ext` busy in a call: the call's sipp uses the phone's own address (and may take
    its SIP port, as a desk phone does), so its registration loop pauses meanwhile. Its
    registration at the branch stays; the loop resumes afterwards."""
    handset = phone(bed, ext)
    handset.stop()
    try:
        yield handset
    finally:
        handset.start()


def place_call(bed: TestBed, number: str, **kwargs: object) -> SippResult:
    """A call from the caller's phone (its own LAN address) to `number` at the branch."""
    with in_a_call(bed, CALLER) as handset:
        return call(
            BRANCH_LAN,
            SIP_PORT,
            str(CALLER),
            secret_for(CALLER),
            number,
            local_ip=handset.local_ip,
            netns=bed.phones_host.name,
            **kwargs,  # type: ignore[arg-type]
        )


@contextlib.contextmanager
def answering_phone(bed: TestBed, ext: int, *, answer: bool) -> Iterator[Uas]:
    """Phone `ext` as a sipp uas on its own address and port, registered once more from there
    (longer than the call), so calls to `ext` reach the uas."""
    with in_a_call(bed, ext) as handset:
        reg = register_from(
            BRANCH_LAN,
            SIP_PORT,
            str(ext),
            secret_for(ext),
            local_ip=handset.local_ip,
            local_port=handset.local_port,
            expires=60,
            netns=bed.phones_host.name,
        )
        assert reg, f"{ext} could not register at the branch:\n{reg.output}"
        netns = bed.phones_host.name
        with Uas(
            answer=answer, local_ip=handset.local_ip, port=handset.local_port, netns=netns
        ) as uas:
            yield uas


def gateway(bed: TestBed) -> Uas:
    """The PSTN gateway behind the branch's trunk, answering one call."""
    return Uas(local_ip=GATEWAY_ADDR, port=SIP_PORT, netns=bed.phones_host.name)


def in_background(work: Callable[[], SippResult]) -> tuple[threading.Thread, list[SippResult]]:
    results: list[SippResult] = []
    thread = threading.Thread(target=lambda: results.append(work()), daemon=True)
    thread.start()
    return thread, results


# -- the calls ---------------------------------------------------------------------------------


def test_generated_dialplan_loads_on_the_branch_without_errors(outage: TestBed) -> None:
    bed = outage
    assert bed.branch is not None
    out = bed.branch.cli(f"dialplan show {CONTEXT}")
    assert "There is no existence" not in out, out
    for needed in ("'112' =>", f"'{CALLEE}' =>", f"'{OUTBOUND}' =>"):
        assert needed in out, f"{needed!r} missing from:\n{out}"
    for own in ("synch-user", "synch-emergency", "synch-outbound", "synch-central"):
        shown = bed.branch.cli(f"dialplan show {own}")
        assert "There is no existence" not in shown, shown
    # The whole dialplan lists to its end, with an extension for every synced and central one.
    whole = bed.branch.cli("dialplan show")
    footer = re.search(r"-= (\d+) extensions? \(\d+ priorities\) in (\d+) contexts?\. =-", whole)
    assert footer, whole[-500:]
    assert int(footer[1]) > len(PHONE_EXTS) + len(HEADOFFICE_EXTS), footer[0]
    log = bed.branch.console_log.read_text(errors="replace")
    bad = [
        line
        for line in log.splitlines()
        if ("ERROR" in line or "WARNING" in line)
        and ("pbx_config" in line or "extensions" in line or "voicemail" in line)
    ]
    assert not bad, "\n".join(bad)
    users = bed.branch.cli("voicemail show users")
    for ext in PHONE_EXTS:
        assert str(ext) in users, users


def test_phone_calls_phone_at_the_branch_and_it_answers(outage: TestBed) -> None:
    bed = outage
    in_outage(bed)
    with answering_phone(bed, CALLEE, answer=True) as callee:
        result = place_call(bed, str(CALLEE))
        answered = callee.wait()
    assert result, result.output
    assert answered, answered.output
    assert callee.numbers() == [str(CALLEE)]


def test_unanswered_phone_sends_the_caller_to_voicemail(outage: TestBed) -> None:
    bed = outage
    branch = bed.branch
    assert branch is not None
    in_outage(bed)
    with answering_phone(bed, SILENT, answer=False) as callee:
        # Answered by VoiceMail after the ring timeout; held long enough to be seen there.
        thread, results = in_background(
            lambda: place_call(bed, str(SILENT), hold_ms=4000 + 1000 * RING_SECONDS)
        )
        try:
            wait_until(
                lambda: branch.app_running("VoiceMail", f"{SILENT}@default"),
                15 + RING_SECONDS,
                message=f"VoiceMail({SILENT}@default) never ran: {branch.channels()}",
            )
        finally:
            thread.join(60)
        rang = callee.wait()
    assert rang, rang.output  # it rang, and was cancelled after the ring timeout
    assert results and results[0], results[0].output if results else "the call never ended"


@pytest.mark.parametrize("dialled", ["0301234567", "112"], ids=["outbound", "emergency"])
def test_outbound_and_emergency_reach_the_pstn_gateway(outage: TestBed, dialled: str) -> None:
    bed = outage
    in_outage(bed)
    with gateway(bed) as pstn:
        result = place_call(bed, dialled)
        answered = pstn.wait()
    assert result, result.output
    assert answered, answered.output
    assert pstn.numbers() == [dialled]


def test_central_only_extension_gets_the_configured_fallback(outage: TestBed) -> None:
    bed = outage
    in_outage(bed)
    with gateway(bed) as pstn:
        result = place_call(bed, str(CENTRAL_ONLY))
        answered = pstn.wait()
    assert result, result.output
    assert answered, answered.output
    assert pstn.numbers() == [f"{FALLBACK}{CENTRAL_ONLY}"]
