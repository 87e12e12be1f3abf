"""A phone dials a number that carries dialplan syntax (AST-2010-002): `&` adds a leg to
Dial(), `,` ends an argument, `)` ends a Gosub argument list. The dialled number must be
filtered before any application sees it, in synch's generated dialplan and in the appliance's
base extensions.conf, on a real Asterisk 22 with sipp phones and a sipp PSTN gateway.

PJSIP decodes `%40` in the request URI, so a phone can send every character of a dial string.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.asterisk import AsteriskInstance, running_instance
from lab.ports import free_port
from lab.samples import freepbx_pjsip, secret_for
from lab.sipp import SippResult, Uas, call, register_from
from synch.config import DialplanSettings
from synch.dialplan.generate import generate
from synch.sync.conftext import parse_conf_text

pytestmark = pytest.mark.asterisk

TOP = Path(__file__).resolve().parents[2]
APPLIANCE_EXTENSIONS = TOP / "appliance/asterisk/extensions.conf"
SYNCED = [1001, 1002]  # context from-internal-headoffice: the generated dialplan
APPLIANCE = [5001, 5002, 5003]  # context from-internal: the appliance's extensions.conf
SYNCED_CONTEXT = "from-internal-headoffice"
DIALPLAN = DialplanSettings(
    enabled=True,
    trunk="pstn-gw",
    outbound=("_0XXXXXXXXX", "9|_00X."),
    emergency=("112",),
    centralfallback="+4930555",
    contexts=(SYNCED_CONTEXT,),
)


def _accounts(extensions: list[int], site: str) -> str:
    files = freepbx_pjsip({site: extensions}, trunks=())
    text = "".join(files[f"pjsip.{kind}.conf"] for kind in ("endpoint", "aor", "auth"))
    return "\n".join(ln for ln in text.splitlines() if not ln.startswith("#include")) + "\n"


@dataclass
class Branch:
    asterisk: AsteriskInstance
    gateway_port: int

    def call(self, caller: int, number: str) -> SippResult:
        return call(
            self.asterisk.sip_host, self.asterisk.sip_port, str(caller), secret_for(caller),
            number, timeout=15,
        )

    def phone(self, account: int) -> int:
        """Register `account` from a fresh port (where a Uas will answer); that port."""
        port = free_port("udp")
        reg = register_from(
            self.asterisk.sip_host, self.asterisk.sip_port, str(account), secret_for(account),
            local_port=port,
        )
        assert reg, reg.output
        return port


@pytest.fixture(scope="module")
def branch(lab: Path) -> Iterator[Branch]:
    gateway_port = free_port("udp")
    synced = _accounts(SYNCED, "HeadOffice")
    plan = generate(
        parse_conf_text(synced), DIALPLAN, "pjsip", header="test",
        central=["1001", "1002", "2001"], mailboxes=set(),
    )
    appliance = _accounts(APPLIANCE, "Appliance").replace(
        "context=from-internal-appliance", "context=from-internal"
    )
    trunk = (
        "[pstn-gw]\ntype=endpoint\ncontext=from-pstn-gw\ndisallow=all\nallow=ulaw\nallow=alaw\n"
        f"aors=pstn-gw\n\n[pstn-gw]\ntype=aor\ncontact=sip:127.0.0.1:{gateway_port}\n"
        "qualify_frequency=0\n\n"
    )
    configs = {
        "pjsip_lab.conf": trunk + appliance,
        "pjsip_synch.conf": synced,
        "extensions.conf": APPLIANCE_EXTENSIONS.read_text()
        + "\n#tryinclude extensions_synch.conf\n",
        "extensions_synch.conf": plan.text,
    }
    with running_instance("inject", configs=configs) as asterisk:
        yield Branch(asterisk, gateway_port)


# -- the generated dialplan: outbound routes and Gosub arguments --------------------------------


@pytest.mark.parametrize(
    ("dialled", "sent"),
    [
        ("90044123", "0044123"),  # normal dialling still works
        ("90044123&PJSIP/00900666", "004412300900666"),  # a second leg to a premium number
        ("90044,123", "0044123"),  # ',' ends the Gosub argument (the rest was dropped)
        ("90044)123", "0044123"),  # ')' ends the Gosub argument list
    ],
    ids=["plain", "ampersand-leg", "comma", "paren"],
)
def test_outbound_route_sends_only_the_filtered_number(
    branch: Branch, dialled: str, sent: str
) -> None:
    with Uas(port=branch.gateway_port, timeout=15) as gateway:
        result = branch.call(1001, dialled)
        gateway.wait()
    assert result, result.output
    # Exactly one INVITE reached the gateway, for the digits the route allows, and nothing
    # of the dialled string became a leg of its own.
    assert gateway.numbers() == [sent]


def test_injected_leg_never_rings_a_phone_through_the_route(branch: Branch) -> None:
    # Dial(PJSIP/0044123&PJSIP/1002&PJSIP/9@pstn-gw) would ring phone 1002 directly.
    port = branch.phone(1002)
    with Uas(port=port, timeout=8) as phone, Uas(port=branch.gateway_port, timeout=8) as gateway:
        branch.call(1001, "90044123&PJSIP/1002&PJSIP/9")
        gateway.wait()
        phone.wait()
    assert phone.numbers() == []
    assert gateway.numbers() == ["004412310029"]


# -- the appliance's base extensions.conf --------------------------------------------------------


def test_appliance_dialplan_still_dials_a_phone(branch: Branch) -> None:
    port = branch.phone(5002)
    with Uas(port=port) as phone:
        result = branch.call(5001, "5002")
        answered = phone.wait()
    assert result, result.output
    assert answered, answered.output
    assert phone.numbers() == ["5002"]


@pytest.mark.parametrize(
    "dialled",
    ["5002&PJSIP/5003", "5002&PJSIP/00900666%40pstn-gw"],
    ids=["second-phone", "out-through-the-trunk"],
)
def test_appliance_dialplan_adds_no_leg(branch: Branch, dialled: str) -> None:
    near, far = branch.phone(5002), branch.phone(5003)
    with Uas(port=near, timeout=8) as dialled_phone, Uas(
        port=far, answer=False, timeout=8
    ) as injected, Uas(port=branch.gateway_port, answer=False, timeout=8) as gateway:
        branch.call(5001, dialled)
        for uas in (dialled_phone, injected, gateway):
            uas.wait()
    # Filtered, "5002&PJSIP/5003" is 50025003: no such phone. Above all, 5003 never rang
    # and nothing went out through the trunk (PJSIP turned %40 into '@').
    assert injected.numbers() == []
    assert gateway.numbers() == []
