"""The failover bed (lab.testbed) with real phones instead of sipp phones.

`PhonesBed.build(workdir)` makes a TestBed whose central also has the Branch accounts of the
real phones and of the answering extension, with survivable calling on at the branch (synch's
generated dialplan) and a plain dialplan at the central (a synced phone's context dials any
extension), then starts on the phones' LAN:

- a capture of DNS and SIP (lab.capture),
- the answering extension ANSWER_EXT (lab.phonecheck.Answerer), registered at both sides,
- one phone of each kind in `kinds` (lab.softphones), each with its own address, registering
  `sip:EXT@sip.example.local` through synch's DNS with its default timers,

and waits until the central holds every phone's contact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lab.capture import Capture
from lab.phonecheck import Answerer, PhoneCheck
from lab.samples import secret_for
from lab.softphones import PHONE_KINDS, Softphone
from lab.testbed import BRANCH_SITE, SIP_NAME, TestBed, Timers
from lab.wait import wait_until

# Extension and address on the phones' LAN of each kind of phone, and of the answerer.
REAL_PHONES = {"baresip": (2011, "10.232.1.14"), "linphone": (2012, "10.232.1.15")}
ANSWER_EXT, ANSWER_ADDR = 2019, "10.232.1.19"
CONTEXT = f"from-internal-{BRANCH_SITE.lower()}"  # the synced phones' context
# The central's dialplan for the synced phones: any extension, dialled as is.
CENTRAL_DIALPLAN = (
    f"[{CONTEXT}]\nexten => _X.,1,Dial(PJSIP/${{FILTER(0-9,${{EXTEN}})}},15)\n"
    " same => n,Hangup()\n"
)


@dataclass
class PhonesBed:
    bed: TestBed
    capture: Capture
    answerer: Answerer
    check: PhoneCheck
    phones: dict[str, Softphone] = field(default_factory=dict)

    @classmethod
    def build(
        cls, workdir: Path, kinds: Iterable[str] = REAL_PHONES, timers: Timers | None = None
    ) -> PhonesBed:
        exts = (*(ext for ext, _ in REAL_PHONES.values()), ANSWER_EXT)
        bed = TestBed.build(
            workdir,
            timers,
            dialplan={"contexts": [CONTEXT]},
            extra_exts=exts,
            sipp_phones=False,
        )
        capture: Capture | None = None
        answerer: Answerer | None = None
        phones: dict[str, Softphone] = {}
        try:
            assert bed.central is not None and bed.branch is not None
            bed.central.write_config("extensions.conf", CENTRAL_DIALPLAN)
            bed.central.cli("dialplan reload")
            for _, address in (*REAL_PHONES.values(), (ANSWER_EXT, ANSWER_ADDR)):
                bed.phones_host.ip("addr", "add", f"{address}/24", "dev", "lan0")
            capture = Capture(bed.phones_host.name, "lan0")
            sites = {"central": bed.central, "branch": bed.branch}
            answerer = Answerer(
                ANSWER_EXT,
                secret_for(ANSWER_EXT),
                netns=bed.phones_host.name,
                address=ANSWER_ADDR,
                sites=sites,
            ).start()
            self = cls(bed, capture, answerer, PhoneCheck(sites, capture, answerer), phones)
            for kind in kinds:
                ext, address = REAL_PHONES[kind]
                phones[kind] = PHONE_KINDS[kind](
                    ext,
                    secret_for(ext),
                    netns=bed.phones_host,
                    address=address,
                    server=SIP_NAME,
                    workdir=workdir / kind,
                ).start()
            wait_until(
                lambda: all(
                    self.check.registered_at(p) == ["central"] for p in self.phones.values()
                ),
                30,
                interval=0.2,
                message=f"real phones registered at the central: {self.phones}",
            )
            return self
        except BaseException:
            for phone in phones.values():
                with contextlib.suppress(Exception):
                    phone.stop()
            for closing in (answerer, capture):
                if closing is not None:
                    closing.close()
            bed.close()
            raise

    def close(self) -> None:
        for phone in self.phones.values():
            with contextlib.suppress(Exception):
                phone.stop()
        self.answerer.close()
        self.capture.close()
        self.bed.close()
