"""The failover budget: how long, at worst, a phone of this site cannot be reached after the WAN
or the central fails, and how long it takes to get home once the central is back, computed from
what synch sees: its own settings and the accounts it synced. Every term is named, so that the
operator can be told which one to shrink and how.

**After a cut** (the central, or the WAN to it, stops answering), the terms add up:

- `detection` = rounds to Failed × `probemonitor.interval` + one probe timeout. The cut comes
  just after a good round; each later round errs only at its timeout; the rounds are what
  `ProbeMonitor.rounds_to_fail` counts for errors, `ceil(failuretolerance / (1 +
  errorpenaltypoints))`. (A central that still answers, with 503 or a refused AMI login, takes
  `failuretolerance` rounds instead, each ended by the answer rather than the timeout.)
- `dns_ttl` = `dnsservice.recordttl`: a phone, or a resolver between it and synch, may keep the
  old answer (the central) that long after the DNS flipped.
- `registration` = the wait until the phone's next REGISTER, which is what moves it to the
  branch and makes the branch know where it is. A phone registers again at the latest when its
  registration expires, and the registrar never grants more than its limit: the largest
  `maximum_expiration` of the synced AORs that accept registrations (PJSIP; Asterisk's default
  7200 s where it is not set), or `maxexpiry` (chan_sip: `[general]` of the central's sip.conf,
  which synch does not sync: its default, 3600 s). When the phones' registration intervals are
  known (observed), the longest of them is used instead.

The terms differ **per direction**:

- *reachable from the branch* (a call the branch Asterisk sends to the phone: another phone of
  the site, the branch's trunk): detection + dns_ttl + registration, since the branch knows the
  phone once it registered there. With `contacts_mirrored` (the branch learns the phones'
  contacts from the central while it answers) the registration term drops: the branch can call
  the phone where it already is. The phone is still counted as back only once it could also call
  out through the branch (detection + dns_ttl).
- *able to call through the branch*: detection + dns_ttl, for phones that resolve the SIP name
  for each request (baresip). A phone that resolves it only when it registers needs the
  registration term too, and one that never resolves it again (linphonec) moves only when it
  restarts: no budget covers that phone.

`seconds`, exported as `synch_failover_budget_seconds`, is the worse of the two: reachable from
the branch.

**Getting home** (the central answers again): `fallback_detection` (`alivethreshold` good rounds
× `interval`) + dns_ttl + registration, the latter now granted by the branch, whose AORs are the
synced ones (their `maximum_expiration` is the central's). The phone stays served by the branch
meanwhile; this is how long until every phone is on the central again.

These are bounds, not measurements: each term is taken at its worst, one after the other. Pure:
settings and the synced file's text in, numbers and sentences out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from synch.config import Settings
from synch.probe import ProbeMonitor
from synch.registration import RegistrationLimit
from synch.registration import names_text as _names
from synch.registration import rounded as _round
from synch.registration import seconds_text as _s

# What the advice proposes when no target tells how far to go; and how far it ever goes
# (Asterisk's minimum_expiration default is 60 s; a zero TTL makes every call wait for DNS).
SUGGESTED = {"registration": 120.0, "dns_ttl": 30.0}
FLOOR = {"registration": 60.0, "dns_ttl": 10.0}


class Term(StrEnum):
    """A term of the budget; the value is the metric's label."""

    DETECTION = "detection"
    DNS_TTL = "dns_ttl"
    REGISTRATION = "registration"
    FALLBACK_DETECTION = "fallback_detection"

    @property
    def field(self) -> str:
        """The name GetDetails uses: `Detection`, `DnsTtl`, ..."""
        return "".join(part.capitalize() for part in self.value.split("_"))


CUT_TERMS = (Term.DETECTION, Term.DNS_TTL, Term.REGISTRATION)


@dataclass(frozen=True)
class Timers:
    """The settings the budget reads."""

    interval: float = 5.0
    timeout: float = 4.0  # the probe timeout, at most interval
    failure_tolerance: int = 5
    alive_threshold: int = 5
    error_penalty_points: int = 1
    record_ttl: float = 300.0
    target: float = 120.0  # 0: no target

    @classmethod
    def of(cls, settings: Settings) -> Timers:
        pm = settings.probemonitor
        return cls(
            interval=pm.interval,
            timeout=settings.probe_timeout,
            failure_tolerance=pm.failuretolerance,
            alive_threshold=pm.alivethreshold,
            error_penalty_points=pm.errorpenaltypoints,
            record_ttl=float(settings.dnsservice.recordttl),
            target=pm.failoverbudgettarget,
        )


@dataclass(frozen=True)
class Part:
    """One term: its seconds and why, in words."""

    term: Term
    seconds: float
    why: str

    def as_dict(self) -> dict[str, object]:
        return {"Seconds": _round(self.seconds), "Why": self.why}


@dataclass(frozen=True)
class Budget:
    """The worst cases, their terms (in order) and what to do about the largest."""

    seconds: float  # after a cut, until a phone can be reached from the branch
    call_out_seconds: float  # after a cut, until a phone can call through the branch
    home_seconds: float  # after the central is back, until every phone is on it again
    terms: tuple[Part, ...]  # of `seconds`
    home_terms: tuple[Part, ...]  # of `home_seconds`
    largest: Part
    advice: str
    target: float
    contacts_mirrored: bool
    registration: RegistrationLimit

    @property
    def over_target(self) -> bool:
        return self.target > 0 and self.seconds > self.target

    def term(self, term: Term) -> float:
        """A term's seconds in `seconds` (0 when it is not counted, as registration with
        contacts mirrored)."""
        return next((p.seconds for p in self.terms if p.term is term), 0.0)

    def as_dict(self) -> dict[str, object]:
        """GetDetails' `FailoverBudget`."""
        return {
            "Seconds": _round(self.seconds),
            "CallOutSeconds": _round(self.call_out_seconds),
            "HomeSeconds": _round(self.home_seconds),
            "Terms": {p.term.field: p.as_dict() for p in self.terms},
            "HomeTerms": {p.term.field: p.as_dict() for p in self.home_terms},
            "Largest": self.largest.term.field,
            "Target": _round(self.target),
            "OverTarget": self.over_target,
            "ContactsMirrored": self.contacts_mirrored,
            "Advice": self.advice,
        }

    def summary(self) -> str:
        """One sentence: the worst case, its terms, the target."""
        terms = " + ".join(f"{p.term.value} {_s(p.seconds)}" for p in self.terms)
        target = f"target {_s(self.target)}" if self.target > 0 else "no target"
        return (
            f"a phone may be unreachable for up to {_s(self.seconds)}{_about(self.seconds)} "
            f"after a cut ({terms}; {target})"
        )

    def warning(self) -> str:
        """What to say when over the target ("" when not)."""
        if not self.over_target:
            return ""
        return (
            f"failover budget {_s(self.seconds)}{_about(self.seconds)} is more than "
            f"probemonitor.failoverbudgettarget {_s(self.target)}: {self.advice}"
        )

    def lines(self) -> list[str]:
        """The budget as `synch check-config` prints it: totals, each term and why, the
        largest term's fix."""
        width = max(len(p.term.value) for p in self.terms)
        out = [f"failover budget: {self.summary()}"]
        out += [f"  {p.term.value:<{width}}  {_s(p.seconds):>8}  {p.why}" for p in self.terms]
        if self.contacts_mirrored:
            out.append(f"  {'':<{width}}  {'':>8}  (registration: not counted, contacts are "
                       "mirrored)")  # fmt: skip
        out.append(
            f"calling out through the branch: up to {_s(self.call_out_seconds)} (detection + "
            "dns_ttl; for phones that resolve the SIP name for each call)"
        )
        home = " + ".join(f"{p.term.value} {_s(p.seconds)}" for p in self.home_terms)
        out.append(f"back on the central after it returns: up to {_s(self.home_seconds)}"
                   f"{_about(self.home_seconds)} ({home})")  # fmt: skip
        out.append(f"largest term: {self.largest.term.value}: {self.advice}")
        return out


def compute(
    timers: Timers,
    registration: RegistrationLimit,
    *,
    contacts_mirrored: bool = False,
) -> Budget:
    """The budget of a site with these timers and this registration bound (see the module's
    docstring for each term)."""
    monitor = ProbeMonitor(timers.failure_tolerance, timers.alive_threshold,
                           timers.error_penalty_points)  # fmt: skip
    timeout = min(timers.timeout, timers.interval)
    rounds = monitor.rounds_to_fail()
    detection = Part(
        Term.DETECTION,
        rounds * timers.interval + timeout,
        f"{rounds} probe round{'s' if rounds > 1 else ''} × {_s(timers.interval)} "
        f"(failuretolerance {timers.failure_tolerance}, errorpenaltypoints "
        f"{timers.error_penalty_points}) + one {_s(timeout)} probe timeout",
    )
    ttl = Part(
        Term.DNS_TTL,
        timers.record_ttl,
        "dnsservice.recordttl: phones may keep the old answer that long",
    )
    reg = Part(
        Term.REGISTRATION,
        registration.seconds,
        f"until the phone's next REGISTER: {registration.describe()}",
    )
    back = monitor.rounds_to_recover()
    fallback = Part(
        Term.FALLBACK_DETECTION,
        back * timers.interval,
        f"{back} good probe round{'s' if back > 1 else ''} (alivethreshold) × "
        f"{_s(timers.interval)}",
    )
    terms = (detection, ttl) if contacts_mirrored else (detection, ttl, reg)
    seconds = sum(p.seconds for p in terms)
    call_out = detection.seconds + ttl.seconds
    home_terms = (fallback, ttl, reg)
    # The first of the largest: ties go to the term listed first.
    largest = max(terms, key=lambda p: p.seconds)
    return Budget(
        seconds=seconds,
        call_out_seconds=call_out,
        home_seconds=sum(p.seconds for p in home_terms),
        terms=terms,
        home_terms=home_terms,
        largest=largest,
        advice=_advice(largest, seconds, timers, registration),
        target=timers.target,
        contacts_mirrored=contacts_mirrored,
        registration=registration,
    )


def _advice(largest: Part, total: float, timers: Timers, registration: RegistrationLimit) -> str:
    """What shrinks the largest term, as one sentence."""
    if largest.term is Term.DETECTION:
        return (
            f"detect a cut sooner: lower probemonitor.interval (now {_s(timers.interval)}) or "
            f"failuretolerance (now {timers.failure_tolerance}), or raise errorpenaltypoints "
            f"(now {timers.error_penalty_points}): {largest.why}"
        )
    kind = largest.term.value
    now = largest.seconds
    if timers.target > 0 and total > timers.target:
        room = timers.target - (total - now)  # what this term may be for the target to hold
        wanted = max(FLOOR[kind], _nice(room))
        if wanted >= now:
            return (
                f"the largest term, {kind}, is {_s(now)} already: the target of "
                f"{_s(timers.target)} cannot be met by lowering it; lower the others, or raise "
                "probemonitor.failoverbudgettarget"
            )
    else:
        wanted = SUGGESTED[kind] if now > SUGGESTED[kind] else FLOOR[kind]
        if wanted >= now:
            return f"nothing to gain: the largest term, {kind}, is {_s(now)} already"
    if largest.term is Term.DNS_TTL:
        return f"lower dnsservice.recordttl to {_s(wanted)} (now {_s(now)})"
    return _registration_advice(registration, wanted)


def _registration_advice(registration: RegistrationLimit, wanted: float) -> str:
    now = _s(registration.seconds)
    if registration.key == "observed":
        return (
            f"make the phones register every {_s(wanted)} at most (now up to {now}): FreePBX "
            f"Max Expiration (maximum_expiration) of their extensions caps what they get"
        )
    if registration.key == "maxexpiry":
        return (
            f"set maxexpiry={wanted:g} in [general] of the central's sip.conf and the branch's "
            f"(now {now}{'' if registration.explicit else ', the default'})"
        )
    which = (
        f"extension{'s' if len(registration.accounts) > 1 else ''} {_names(registration.accounts)}"
        if registration.accounts
        else "this site's extensions"
    )
    default = "" if registration.explicit else ", Asterisk's default"
    return (
        f"set FreePBX Max Expiration (maximum_expiration) to {_s(wanted)} for {which} "
        f"(now {now}{default}): a phone moves only when it registers again"
    )


def _nice(seconds: float) -> float:
    """Rounded down to a figure one would type: a multiple of 10 s (of 60 s from 5 min)."""
    step = 60 if seconds >= 300 else 10
    return float(max(0, int(seconds) // step * step))


def _about(seconds: float) -> str:
    """` (about 2 h 5 min)` for a long span, "" under two minutes."""
    total = round(seconds)
    if total < 120:
        return ""
    minutes = total // 60
    if minutes < 60:
        return f" (about {minutes} min)"
    hours, minutes = divmod(minutes, 60)
    return f" (about {hours} h {minutes} min)" if minutes else f" (about {hours} h)"
