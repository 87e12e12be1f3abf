"""How do real phones react to their registrar? Refresh point, DNS on refresh and retry, and the
retry after a 403/500/503 or a silent registrar, for each phone of lab/softphones.py.

    .venv/bin/python bench/phone_facts.py            # as root: namespaces, lab chroot; ~11 min
    .venv/bin/python bench/phone_facts.py --only dns-stays --codes 503

Builds lab/phonebed.py's bed (synch, central, branch, baresip and linphonec registering
`sip:EXT@sip.example.local` by name at their default timers), forces synch to Normal (`Normal`
admin action: the SIP name keeps answering the central whatever the probes say), stops the
central's Asterisk and puts lab/registrar.py's scripted registrar on the central's address.
Then, per scenario, both phones are restarted (a power cycle: they register at once):

- `dns-stays`, one per code: the registrar accepts the first REGISTER granting 20 s (far less
  than the 3600 s the phones ask for: does the phone honour it, and refresh when?), then
  answers every later one with the code (403, 500, 503, or `silence`: no answer at all). The
  DNS keeps answering the central: when does the phone try again after the failure?
- `dns-flips`, one per code: the same, but right after the first REGISTER was accepted synch
  is forced to Failover, so the SIP name answers the branch (a real Asterisk). Does the
  refresh, or the retry after the failure, go to the branch (did the phone resolve again)?

Prints, per scenario and phone, one `name=value` line: the REGISTERs it sent (time since the
first was accepted, where to, what the answer was) and the DNS queries it made before each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.capture import dns_summary  # noqa: E402
from lab.chroot import lab_root  # noqa: E402
from lab.phonebed import PhonesBed  # noqa: E402
from lab.registrar import Accept, Answer, Reject, ScriptedRegistrar, Silence  # noqa: E402
from lab.softphones import Softphone  # noqa: E402
from lab.testbed import BRANCH_LAN, CENTRAL_WAN  # noqa: E402

GRANTED = 20  # seconds the scripted registrar grants on the first REGISTER


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def failure(code: str) -> Answer:
    return Silence() if code == "silence" else Reject(int(code))


def attempts(bed: PhonesBed, phone: Softphone, since: float) -> list[tuple[float, str, str]]:
    """(time, destination, answer) of each REGISTER transaction the phone started (first
    transmission only) since `since`; the answer is the final response seen, or 'none'."""
    sent = bed.capture.sip(phone.address, method="REGISTER", sent=True, since=since)
    answers = bed.capture.sip(phone.address, method="REGISTER", sent=False, since=since)
    out, seen = [], set()
    for p in sent:
        if not p.method or (p.call_id, p.cseq) in seen:
            continue
        seen.add((p.call_id, p.cseq))
        final = [a.status for a in answers if a.cseq == p.cseq and a.call_id == p.call_id
                 and a.status >= 200]  # fmt: skip
        out.append((p.at, p.dst_host, str(final[0]) if final else "none"))
    return out


def describe(bed: PhonesBed, phone: Softphone, since: float, accepted: float | None) -> str:
    zero = accepted if accepted is not None else since
    parts, previous = [], since
    for at, dst, answer in attempts(bed, phone, since):
        where = {CENTRAL_WAN: "central", BRANCH_LAN: "branch"}.get(dst, dst)
        dns = dns_summary(bed.capture.dns(phone.address, since=previous, until=at))
        dns = "no DNS" if dns == "none" else f"DNS [{dns}]"
        parts.append(f"{at - zero:+.1f}s {where} {answer} ({dns})")
        previous = at
    return "; ".join(parts) or "no REGISTER"


def scenario(bed: PhonesBed, name: str, code: str, flip: bool, window: float) -> list[str]:
    synch = bed.bed.synch_proc
    synch.admin("Normal")

    def answer(n: int, request: str) -> Answer:
        return Accept(GRANTED) if n == 0 else failure(code)

    for phone in bed.phones.values():
        phone.stop()  # before the registrar listens: their un-REGISTERs go nowhere
    registrar = ScriptedRegistrar(bed.bed.central_host.name, CENTRAL_WAN, answer)
    try:
        started = time.monotonic()
        for phone in bed.phones.values():
            phone.start()
        accepted: dict[str, float | None] = dict.fromkeys(bed.phones)
        deadline = started + 15
        while time.monotonic() < deadline and None in accepted.values():
            for kind, phone in bed.phones.items():
                ok = [r for r in registrar.received(phone.address, started)
                      if isinstance(r.answer, Accept) and r.answer.expires]  # fmt: skip
                if ok and accepted[kind] is None:
                    accepted[kind] = ok[0].at
            time.sleep(0.05)
        if flip:
            synch.admin("Failover")
        say(f"{name}: accepted {accepted}; watching {window:g} s")
        time.sleep(max(0.0, started + window - time.monotonic()))
        return [
            f"{name}_{kind}={describe(bed, phone, started, accepted[kind])}"
            for kind, phone in bed.phones.items()
        ]
    finally:
        registrar.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", choices=("dns-stays", "dns-flips"))
    parser.add_argument("--codes", default="503,500,403,silence", help="for dns-stays")
    parser.add_argument("--flip-codes", default="503,silence", help="for dns-flips")
    parser.add_argument("--window", type=float, default=100.0)
    args = parser.parse_args()
    lab_root()
    with tempfile.TemporaryDirectory(prefix="synch-phone-facts-") as tmp:
        say("building the bed (central, branch, synch, baresip, linphonec)...")
        bed = PhonesBed.build(Path(tmp))
        try:
            assert bed.bed.central is not None
            bed.bed.central.stop()  # its address and port 5060 go to the scripted registrar
            print(f"granted_expires_s={GRANTED}", flush=True)
            for family in ("dns-stays", "dns-flips"):
                if args.only and family != args.only:
                    continue
                codes = args.codes if family == "dns-stays" else args.flip_codes
                for code in codes.split(","):
                    name = f"{family.replace('-', '_')}_{code}"
                    for line in scenario(bed, name, code, family == "dns-flips", args.window):
                        print(line, flush=True)
            return 0
        finally:
            bed.close()


if __name__ == "__main__":
    sys.exit(main())
