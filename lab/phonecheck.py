"""Where a real phone stands, asked from the outside: registered where, reachable from where,
able to place a call through whom.

- registered: which Asterisk holds a contact for its extension (`pjsip show contacts` of the
  central and of the branch, over their console sockets: this works while the WAN is cut),
  with the status Asterisk gives the contact (Avail, Unavail, ...);
- reachable from a site: a call originated there (AMI Originate to PJSIP/EXT, into Wait(1))
  is answered within `ring_seconds`; an Asterisk with no usable contact fails at once, so an
  unreachable phone costs no time, a silent contact up to `ring_seconds`;
- places a call: the phone dials the answering extension (`Answerer`: a sipp uas registered
  as that extension at both Asterisks, answering every call and the registrars' OPTIONS); the
  call counts when the phone reports it answered, and the capture on the phones' LAN tells
  which Asterisk the INVITE reached the answerer from, and where the phone sent its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from lab.asterisk import AsteriskInstance
from lab.capture import Capture
from lab.sipp import Uas, register_from
from lab.softphones import CallResult, Softphone


@dataclass(frozen=True)
class CallCheck:
    result: CallResult
    phone_sent_to: list[str]  # where the phone sent its INVITEs, in order
    answered_via: str  # the address the answerer got the INVITE from ("" if none)

    def __bool__(self) -> bool:
        return bool(self.result)


@dataclass
class Verdict:
    """One look at a phone; `sites` maps a site's name to its address."""

    phone: str
    at: float
    contacts: dict[str, list[tuple[str, str]]]  # site → [(contact URI, status)]
    reachable: dict[str, tuple[bool, str]] = field(default_factory=dict)
    call: CallCheck | None = None

    def registered_at(self) -> list[str]:
        return [site for site, rows in self.contacts.items() if rows]

    def describe(self) -> str:
        regs = ", ".join(
            f"{site}:{'/'.join(status for _, status in rows)}"
            for site, rows in self.contacts.items()
            if rows
        )
        reach = ", ".join(
            f"{site}={'yes' if ok else 'no'}" for site, (ok, _) in self.reachable.items()
        )
        text = f"{self.phone}: registered at [{regs or 'nowhere'}]; reachable from [{reach}]"
        if self.call is not None:
            c = self.call
            sent = ",".join(c.phone_sent_to) or "-"
            text += (
                f"; call {'answered' if c else 'failed'} (INVITE to {sent}, answered via "
                f"{c.answered_via or '-'}: {c.result.detail[:80]})"
            )
        return text


class Answerer:
    """Extension `ext` answered by a sipp uas on `address:5060` of the phones' namespace,
    registered at every Asterisk of `sites` (where each can be reached), for a whole module."""

    def __init__(
        self,
        ext: int,
        password: str,
        *,
        netns: str,
        address: str,
        sites: dict[str, AsteriskInstance],
        lifetime: float = 3600,
    ) -> None:
        self.ext, self.password, self.netns, self.address = ext, password, netns, address
        self.sites = sites
        self.lifetime = lifetime
        self.uas: Uas | None = None

    def start(self) -> Answerer:
        self.register()
        self.uas = Uas(local_ip=self.address, port=5060, timeout=self.lifetime,
                       netns=self.netns, max_calls=None)  # fmt: skip
        return self

    def register(self) -> dict[str, bool]:
        """(Re-)register the answering contact at every site (only while no uas holds the
        port); {site: accepted}."""
        assert self.uas is None or not self.uas.running, "register before the uas starts"
        accepted = {}
        for site, inst in self.sites.items():
            result = register_from(
                inst.sip_host, inst.sip_port, str(self.ext), self.password,
                local_ip=self.address, local_port=5060, expires=int(self.lifetime), timeout=5,
                netns=self.netns,
            )  # fmt: skip
            accepted[site] = bool(result)
        return accepted

    def close(self) -> None:
        if self.uas is not None:
            self.uas.close()
            self.uas = None


class PhoneCheck:
    """The checks of one bed: `sites` ({"central": inst, "branch": inst}), the capture on
    the phones' LAN, and the answering extension."""

    def __init__(
        self, sites: dict[str, AsteriskInstance], capture: Capture, answerer: Answerer
    ) -> None:
        self.sites, self.capture, self.answerer = sites, capture, answerer

    def contacts(self, phone: Softphone) -> dict[str, list[tuple[str, str]]]:
        out = {}
        for site, inst in self.sites.items():
            try:
                out[site] = inst.contact_details().get(str(phone.ext), [])
            except Exception as exc:  # an Asterisk that is down holds nothing
                out[site] = [("", f"unknown: {exc}")] if inst.running else []
        return out

    def registered_at(self, phone: Softphone) -> list[str]:
        """The sites holding a contact of the phone's extension."""
        return [site for site, rows in self.contacts(phone).items() if rows]

    def reachable_from(
        self, phone: Softphone, site: str, ring_seconds: float = 5
    ) -> tuple[bool, str]:
        """A call from `site` to the phone is answered within `ring_seconds`."""
        try:
            return self.sites[site].originate(f"PJSIP/{phone.ext}", ring_seconds)
        except Exception as exc:  # AMI down: not reachable from there
            return False, f"originate failed: {exc}"

    def places_call(self, phone: Softphone, answer_within: float = 8) -> CallCheck:
        """The phone dials the answering extension; answered or not, and via whom."""
        started = time.monotonic()
        result = phone.call(str(self.answerer.ext), answer_within=answer_within)
        sent = [p.dst_host for p in self.capture.sip(phone.address, method="INVITE",
                                                     sent=True, since=started)
                if p.method == "INVITE"]  # fmt: skip
        # The INVITEs the answerer got for this call: Asterisk keeps the caller's extension.
        received = [p.src_host for p in self.capture.sip(self.answerer.address,
                                                         method="INVITE", sent=False,
                                                         since=started)
                    if p.method == "INVITE" and p.from_user == str(phone.ext)]  # fmt: skip
        return CallCheck(result, list(dict.fromkeys(sent)), received[0] if received else "")

    def verdict(
        self,
        phone: Softphone,
        *,
        reach_from: tuple[str, ...] = (),
        call: bool = False,
        ring_seconds: float = 5,
        answer_within: float = 8,
    ) -> Verdict:
        v = Verdict(phone.name, time.monotonic(), self.contacts(phone))
        for site in reach_from:
            v.reachable[site] = self.reachable_from(phone, site, ring_seconds)
        if call:
            v.call = self.places_call(phone, answer_within)
        return v
