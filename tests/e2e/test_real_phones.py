"""Real SIP phones (Debian's baresip and linphonec, default timers) on the failover bed.

Each phone registers `sip:EXT@sip.example.local`, resolving the name through synch's DNS. The
first tests prove the checks of lab.phonecheck against a healthy central: registered there,
reachable from there, places a call through it. The last one cuts the WAN (synch in Failover)
and records when a call from the branch reaches each phone (at the contact synch mirrored from
the central: the phone has not registered at the branch) and when it can place a call through
the branch; after the WAN is back, when it is reachable from the central again. Those times
are printed as figures (and written to .pytest_cache/d/synch-e2e/real-phones-figures.txt),
never asserted on; what is asserted is that the branch reaches every phone within the window
watched, which no phone at its default timers did before contact mirroring.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.asterisk import AsteriskInstance
from lab.capture import dns_summary
from lab.phonebed import ANSWER_EXT, REAL_PHONES, PhonesBed
from lab.phonecheck import Verdict
from lab.softphones import Softphone
from lab.testbed import BRANCH_LAN, CENTRAL_WAN, SIP_NAME
from lab.wait import wait_until
from tests.figures import report_figures

pytestmark = [pytest.mark.asterisk, pytest.mark.netns]

KINDS = list(REAL_PHONES)
OBSERVE_CUT = 90.0  # seconds the test watches the phones after the WAN cut
OBSERVE_RESTORE = 90.0  # and after the WAN is back
FIGURES: list[str] = []


@pytest.fixture(scope="module")
def phones_bed(
    lab: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[PhonesBed]:
    bed = PhonesBed.build(tmp_path_factory.mktemp("e2e-real-phones"))
    try:
        yield bed
    finally:
        bed.close()
        _report_figures(request, bed)


def _report_figures(request: pytest.FixtureRequest, bed: PhonesBed) -> None:
    synch_timers = bed.bed.timers.describe().split(" phone_")[0]  # the phones keep their own
    if FIGURES:
        lines = [*FIGURES, f"timers={synch_timers} phones=package defaults"]
        report_figures(
            request,
            lines,
            title="real phone figures",
            cache_dir="synch-e2e",
            filename="real-phones-figures.txt",
            fallback_dir=bed.bed.workdir,
        )


@pytest.fixture(autouse=True)
def phone_logs(phones_bed: PhonesBed, tmp_path: Path) -> Iterator[None]:
    """Each test keeps its own part of every phone's log (in its tmp_path)."""
    offsets = {kind: phone.log_offset() for kind, phone in phones_bed.phones.items()}
    yield
    for kind, phone in phones_bed.phones.items():
        (tmp_path / f"{kind}.log").write_text(phone.log_since(offsets[kind]))


def figure(name: str, value: object) -> None:
    FIGURES.append(f"{name}={value}")


def seconds(at: float | None, since: float, window: float) -> str:
    return f"none within {window:g} s" if at is None else f"{at - since:.1f}"


# -- the checks, against a healthy central --------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_real_phone_registers_at_the_central_by_name(phones_bed: PhonesBed, kind: str) -> None:
    phone = phones_bed.phones[kind]
    check, capture = phones_bed.check, phones_bed.capture
    assert check.registered_at(phone) == ["central"]
    # It asked synch for the SIP name, from its own address, and registered where it pointed.
    asked = capture.dns(phone.address)
    assert ("A", SIP_NAME) in {(q.qtype, q.name) for q in asked}, dns_summary(asked)
    registers = capture.sip(phone.address, method="REGISTER", sent=True)
    assert registers, "no REGISTER seen on the wire"
    assert {p.dst_host for p in registers} == {CENTRAL_WAN}
    accepted = [
        p for p in capture.sip(phone.address, method="REGISTER", sent=False) if p.status == 200
    ]
    assert accepted, capture.sip(phone.address)
    figure(f"real_phone_{kind}_register_expires_asked_s", registers[0].expires)
    figure(f"real_phone_{kind}_register_expires_granted_s", accepted[0].expires)
    figure(f"real_phone_{kind}_dns_at_start", f"[{dns_summary(asked)}]")


@pytest.mark.parametrize("kind", KINDS)
def test_real_phone_is_reachable_from_the_central_only(phones_bed: PhonesBed, kind: str) -> None:
    phone = phones_bed.phones[kind]
    verdict = phones_bed.check.verdict(phone, reach_from=("central", "branch"))
    assert verdict.reachable["central"][0], verdict.describe()
    # The branch holds no contact for it, so a call from there fails at once.
    assert not verdict.reachable["branch"][0], verdict.describe()
    assert phone.wait_idle(10), phone.active_calls()


@pytest.mark.parametrize("kind", KINDS)
def test_real_phone_places_a_call_through_the_central(phones_bed: PhonesBed, kind: str) -> None:
    phone = phones_bed.phones[kind]
    call = phones_bed.check.places_call(phone)
    assert call, f"{call}\n{phone.log_since(0)[-4000:]}"
    assert call.phone_sent_to == [CENTRAL_WAN]
    assert call.answered_via == CENTRAL_WAN
    assert phones_bed.answerer.uas is not None and phones_bed.answerer.uas.running
    assert call.result.established is not None
    figure(f"real_phone_{kind}_call_answered_s",
           f"{call.result.established - call.result.started:.2f}")  # fmt: skip


# -- a WAN cut and its restore -----------------------------------------------------------------


class Watch:
    """Repeated verdicts of one phone, in a thread of its own, until `until`; records the
    first time each wanted state was seen."""

    def __init__(self, bed: PhonesBed, phone: Softphone, site: str, since: float) -> None:
        self.bed, self.phone, self.site, self.since = bed, phone, site, since
        self.verdicts: list[Verdict] = []
        self.reachable_at: float | None = None
        self.call_at: float | None = None
        self.registered_at: float | None = None
        self.error: BaseException | None = None

    def run(self, until: float) -> None:
        try:
            while time.monotonic() < until:
                want_call = self.call_at is None
                v = self.bed.check.verdict(
                    self.phone, reach_from=(self.site,), call=want_call, answer_within=6
                )
                self.verdicts.append(v)
                if self.registered_at is None and self.site in v.registered_at():
                    self.registered_at = v.at
                if self.reachable_at is None and v.reachable[self.site][0]:
                    self.reachable_at = v.at
                if want_call and v.call and v.call.answered_via == self.site_address:
                    self.call_at = v.call.result.established
                if self.reachable_at is not None and self.call_at is not None:
                    return
                time.sleep(2)
        except BaseException as exc:  # reported by the test
            self.error = exc

    @property
    def site_address(self) -> str:
        return BRANCH_LAN if self.site == "branch" else CENTRAL_WAN

    def states(self) -> str:
        """The distinct verdicts seen, in order, each with when it was first seen."""
        seen: dict[str, float] = {}
        for v in self.verdicts:
            text = v.describe().split(": ", 1)[1]
            seen.setdefault(text, v.at - self.since)
        return " | ".join(f"+{at:.0f}s {text}" for text, at in seen.items())


def watch_all(bed: PhonesBed, site: str, since: float, window: float) -> dict[str, Watch]:
    watches = {kind: Watch(bed, phone, site, since) for kind, phone in bed.phones.items()}
    threads = [
        threading.Thread(target=w.run, args=(since + window,), daemon=True)
        for w in watches.values()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(window + 60)
    for kind, w in watches.items():
        assert w.error is None, f"{kind}: the checks failed: {w.error!r}"
    return watches


@pytest.mark.slow
def test_wan_cut_and_restore_with_default_timers(phones_bed: PhonesBed) -> None:
    bed = phones_bed.bed
    t = bed.timers
    for phone in phones_bed.phones.values():
        assert phones_bed.check.registered_at(phone) == ["central"], phone
    assert bed.synch_proc.status()["Service"] == "Normal"

    cut = time.monotonic()
    bed.wan.cut()
    bed.wait_state(t.failover_bound, Monitor="Failed", Service="Failover")
    failover = time.monotonic()
    figure("real_phones_failover_detect_s", f"{failover - cut:.1f}")
    during = watch_all(phones_bed, "branch", cut, OBSERVE_CUT)
    for kind, w in during.items():
        figure(f"real_phone_{kind}_branch_reachable_after_cut_s",
               seconds(w.reachable_at, cut, OBSERVE_CUT))  # fmt: skip
        figure(f"real_phone_{kind}_call_via_branch_after_cut_s",
               seconds(w.call_at, cut, OBSERVE_CUT))  # fmt: skip
        # A contact at the branch: the mirrored one at first (the phone has not registered).
        figure(f"real_phone_{kind}_contact_at_branch_after_cut_s",
               seconds(w.registered_at, cut, OBSERVE_CUT))  # fmt: skip
        figure(f"real_phone_{kind}_states_after_cut", w.states())
        # The branch calls it at its mirrored contact: before mirroring, none within 90 s.
        assert w.reachable_at is not None, f"{kind}: the branch never reached it: {w.states()}"
        # The checks answered throughout, and saw the phone's contact where it was.
        assert w.verdicts, f"{kind}: no verdict during the cut"
        assert all(set(v.contacts) == {"central", "branch"} for v in w.verdicts)
        assert all(v.registered_at() for v in w.verdicts), w.states()
    assert bed.synch_proc.status()["Service"] == "Failover"
    dns_during = {
        kind: dns_summary(phones_bed.capture.dns(p.address, since=cut))
        for kind, p in phones_bed.phones.items()
    }
    for kind, summary in dns_during.items():
        figure(f"real_phone_{kind}_dns_during_cut", f"[{summary}]")
    for kind, p in phones_bed.phones.items():
        registers = phones_bed.capture.sip(p.address, method="REGISTER", sent=True, since=cut)
        figure(f"real_phone_{kind}_registers_sent_during_cut",
               [f"+{r.at - cut:.0f}s->{r.dst_host}" for r in registers if r.method])  # fmt: skip

    restored = time.monotonic()
    bed.wan.restore()
    bed.wait_state(30, Monitor="Stable", Service="Normal")
    figure("real_phones_fallback_s", f"{time.monotonic() - restored:.1f}")
    # The answerer is test equipment: the central marked it unreachable during the cut and
    # would wait for its next qualify (qualify_frequency) to call it again; have it qualified
    # now, so that "places a call" measures the phone, not the answerer. The phones are left
    # to the central's own qualify timer: that wait is part of what they see.
    assert bed.central is not None
    bed.central.cli(f"pjsip qualify {ANSWER_EXT}")
    after = watch_all(phones_bed, "central", restored, OBSERVE_RESTORE)
    for kind, w in after.items():
        figure(f"real_phone_{kind}_central_reachable_after_restore_s",
               seconds(w.reachable_at, restored, OBSERVE_RESTORE))  # fmt: skip
        figure(f"real_phone_{kind}_call_via_central_after_restore_s",
               seconds(w.call_at, restored, OBSERVE_RESTORE))  # fmt: skip
        figure(f"real_phone_{kind}_states_after_restore", w.states())
        assert w.verdicts, f"{kind}: no verdict after the restore"
    # Today every phone is still registered at the central after the restore (it never left).
    for kind, phone in phones_bed.phones.items():
        assert "central" in phones_bed.check.registered_at(phone), kind
    # The answerer kept answering: its uas ran throughout.
    assert phones_bed.answerer.uas is not None and phones_bed.answerer.uas.running


def rtp_counts(branch: AsteriskInstance, channel: str) -> tuple[int, int]:
    """RTP packets the branch has received and sent on `channel` (its RTCP statistics)."""
    counts = []
    for what in ("rxcount", "txcount"):
        reply = branch.ami({"Action": "Getvar", "Channel": channel,
                            "Variable": f"CHANNEL(rtcp,{what})"})  # fmt: skip
        value = reply.get("Value", "")
        counts.append(int(value) if value.isdigit() else -1)
    return counts[0], counts[1]


@pytest.mark.slow
def test_a_branch_call_spans_the_wan_restore_and_falling_back_waits_for_it(
    phones_bed: PhonesBed,
) -> None:
    """Goal: a call at the branch during the WAN restore survives, 0 calls dropped by the
    fallback. The branch calls baresip (at its mirrored contact), the WAN comes back: the
    service stays Failover while the call is up, audio keeps flowing both ways, and the DNS
    flips once the phone hangs up."""
    bed, phone = phones_bed.bed, phones_bed.phones["baresip"]
    assert bed.branch is not None
    t = bed.timers
    # synch knows the phones' contacts (it looks every contactsinterval while the central answers).
    wait_until(lambda: bed.synch_proc.details()["ContactMirror"]["Phones"] >= len(KINDS), 30,
               message="the phones' contacts were not learned")  # fmt: skip
    bed.wan.cut()
    try:
        bed.wait_state(t.failover_bound, Monitor="Failed", Service="Failover")
        ext = phone.ext
        wait_until(lambda: str(ext) in bed.branch.contacts(), 15,  # type: ignore[union-attr]
                   message="no contact for the phone at the branch")  # fmt: skip
        reply = bed.branch.ami({
            # Echo: the branch sends back what it gets, so audio flows both ways.
            "Action": "Originate", "Channel": f"PJSIP/{ext}", "Application": "Echo",
            "Async": "true", "CallerID": "branch <100>",
        })  # fmt: skip
        assert reply.get("Response") == "Success", reply
        wait_until(lambda: phone.active_calls(), 15, message="the phone did not answer")
        channel = wait_until(
            lambda: next((row[0] for row in bed.branch.channels()  # type: ignore[union-attr]
                          if row[0].startswith(f"PJSIP/{ext}-") and row[4] == "Up"), None),
            10, message="no call up at the branch",
        )  # fmt: skip
    finally:
        bed.wan.restore()
    restored = time.monotonic()
    assert isinstance(channel, str)
    before = rtp_counts(bed.branch, channel)
    status = bed.wait_state(30, Monitor="Stable")
    assert status["Service"] == "Failover", status
    probes = bed.synch_proc.details()["Probes"]["success"]
    wait_until(lambda: bed.synch_proc.details()["Probes"]["success"] >= probes + 3, 30,
               message="no probe rounds after the restore")  # fmt: skip
    details = bed.synch_proc.details()
    assert details["Service"] == "Failover" and details["FallbackHeld"]["Calls"] == 1, details
    assert bed.dns() == BRANCH_LAN
    assert phone.active_calls(), "the call was dropped"
    assert min(before) >= 0, before
    branch = bed.branch

    def grown() -> tuple[int, int] | None:
        # The counters move with each RTCP report (every 5 s or so).
        counts = rtp_counts(branch, channel)
        return counts if counts[0] > before[0] and counts[1] > before[1] else None

    after = wait_until(grown, 20, message=f"no audio both ways after the restore: {before}")
    figure("real_phone_call_rtp_received_sent_during_restore", f"{before}->{after}")
    assert phone.active_calls() and bed.synch_proc.status()["Service"] == "Failover"
    held = time.monotonic()
    phone.hangup()
    bed.wait_state(30, Service="Normal")
    figure("real_phone_call_held_fallback_s", f"{held - restored:.1f}")
    figure("real_phone_fallback_after_hangup_s", f"{time.monotonic() - held:.1f}")
    figure("real_phone_calls_dropped_by_fallback", 0)
    assert bed.dns() == CENTRAL_WAN
