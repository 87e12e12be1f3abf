"""The failover overlay service (synch.services.failover) with AMI doubles: when it learns,
what it writes for each service state, and that a failure costs a retry, never the daemon."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from synch.ami.message import AmiReply, AmiTransportError
from synch.config import Settings
from synch.config.settings import FailoverSettings, SyncManagerSettings
from synch.metrics import Metrics
from synch.services.failover import STATE_NAME, FailoverOverlay
from synch.states import Service
from synch.sync.mirror import INCLUDE_LINE, OVERLAY_FILE, overlay_aors
from synch.sync.store import BranchStore

SYNCED = (
    "[1001]\ntype=endpoint\naors=1001\n\n[1001]\ntype=aor\n\n"
    "[1002]\ntype=endpoint\naors=1002\n\n[1002]\ntype=aor\n\n" + INCLUDE_LINE + "\n"
)


def pjsip_settings(directory: Path) -> Settings:
    sm = SyncManagerSettings(
        mode="pjsip", localconfigspath=str(directory), localfilename="pjsip_synch.conf"
    )
    return Settings(syncmanager=sm)


class FakeAmi:
    def __init__(self, name: str, contacts: Sequence[Mapping[str, str]] = ()):
        self.name = name
        self.contacts = list(contacts)
        self.actions: list[tuple[str, dict[str, str]]] = []
        self.fail: Exception | None = None

    def action(
        self, action: str, headers: Mapping[str, str | Sequence[str]] | None = None,
        timeout: float | None = None,
    ) -> AmiReply:  # fmt: skip
        self.actions.append((action, {k: str(v) for k, v in (headers or {}).items()}))
        if self.fail is not None:
            raise self.fail
        events = tuple(AmiReply(tuple(c.items())) for c in self.contacts)
        return AmiReply((("Response", "Success"),), events=events)


def contact(aor: str, address: str) -> dict[str, str]:
    return {"ObjectName": f"{aor};@ab12", "Uri": f"sip:{aor}@{address}:5060", "Path": ""}


class Bed:
    def __init__(self, tmp_path: Path, **failover: object):
        self.dir = tmp_path / "etc"
        self.dir.mkdir()
        (self.dir / ".git").mkdir()
        (self.dir / "pjsip_synch.conf").write_text(SYNCED)
        settings = Settings(
            syncmanager=SyncManagerSettings(
                mode="pjsip", localconfigspath=str(self.dir), localfilename="pjsip_synch.conf"
            ),
            failover=FailoverSettings(**failover),  # type: ignore[arg-type]
        )
        self.central = FakeAmi("central", [contact("1001", "192.168.1.50"),
                                           contact("1003", "192.168.1.53")])  # fmt: skip
        self.branch = FakeAmi("branch")
        self.service = Service.NORMAL
        self.usable = True
        self.metrics = Metrics()
        self.store = BranchStore(self.dir, ("pjsip_synch.conf",))
        self.overlay = self.make(settings)

    def make(self, settings: Settings) -> FailoverOverlay:
        return FailoverOverlay(
            settings, self.central, self.branch, self.store, self.metrics,
            lambda: self.service, lambda: self.usable,
        )  # fmt: skip

    @property
    def file(self) -> str:
        path = self.dir / OVERLAY_FILE
        return path.read_text() if path.exists() else ""

    def reloads(self) -> int:
        return sum(1 for action, _ in self.branch.actions if action == "Reload")

    def metric(self, name: str) -> float | None:
        return self.metrics.registry.get_sample_value(name)


def test_learns_while_normal_and_writes_nothing(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.overlay.step()
    assert bed.overlay.contacts == {"1001": ("sip:1001@192.168.1.50:5060",)}  # 1003: not synced
    assert bed.file == "" and bed.reloads() == 0
    assert bed.overlay.active is False
    assert bed.metric("synch_mirrored_contacts") == 1
    saved = json.loads((bed.dir / ".git" / STATE_NAME).read_text())
    assert saved["Contacts"] == {"1001": ["sip:1001@192.168.1.50:5060"]}
    # Not again before the interval.
    bed.overlay.step()
    assert [a for a, _ in bed.central.actions] == ["PJSIPShowContacts"]


def test_failover_writes_the_file_and_reloads_once_then_fallback_empties_it(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.overlay.step()
    bed.service = Service.FAILOVER
    bed.overlay.step()
    assert overlay_aors(bed.file) == {"1001", "1002"}
    assert "contact=sip:1001@192.168.1.50:5060" in bed.file
    assert bed.branch.actions == [("Reload", {"Module": "res_pjsip.so"})]
    assert bed.metric("synch_failover_overlay_active") == 1
    bed.overlay.step()  # nothing changed: no second reload
    assert bed.reloads() == 1
    calls = len(bed.central.actions)
    bed.overlay.step()
    assert len(bed.central.actions) == calls  # the central is not asked while in Failover
    bed.service = Service.NORMAL
    bed.overlay.step()
    assert bed.file == "" and bed.reloads() == 2
    assert bed.metric("synch_failover_overlay_active") == 0


def test_a_restart_during_an_outage_uses_the_saved_contacts(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.overlay.step()
    bed.usable, bed.service = False, Service.FAILOVER
    again = bed.make(pjsip_settings(bed.dir))
    again.step()
    assert "contact=sip:1001@192.168.1.50:5060" in bed.file


def test_a_tampered_state_file_is_checked_again(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    (bed.dir / ".git" / STATE_NAME).write_text(json.dumps({"Contacts": {
        "1001": ["sip:1001@192.168.1.50:5060\n[evil]"], "1002": ["sip:1002@192.168.1.52"],
    }}))  # fmt: skip
    bed.service, bed.usable = Service.FAILOVER, False
    overlay = bed.make(pjsip_settings(bed.dir))
    assert overlay.contacts == {"1002": ("sip:1002@192.168.1.52",)}
    (bed.dir / ".git" / STATE_NAME).write_text("{not json")
    assert bed.make(Settings()).contacts == {}


def test_a_failed_reload_is_tried_again(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    bed.service = Service.FAILOVER
    bed.branch.fail = AmiTransportError("branch AMI: connection refused")
    bed.overlay.step()
    assert bed.overlay.active is None
    bed.branch.fail = None
    bed.overlay.step()
    assert bed.overlay.active is True and bed.reloads() == 2


def test_a_central_that_cannot_list_contacts_keeps_the_known_ones(tmp_path: Path) -> None:
    bed = Bed(tmp_path, contactsinterval=0.0)
    bed.overlay.step()
    bed.central.fail = AmiTransportError("central AMI: timeout")
    bed.overlay.step()
    assert bed.overlay.contacts == {"1001": ("sip:1001@192.168.1.50:5060",)}
    assert (
        bed.metrics.registry.get_sample_value("synch_contact_learns_total", {"result": "failure"})
        == 1
    )


@pytest.mark.parametrize("failover", [{"mirrorcontacts": False}, {"expiration": 0}])
def test_either_half_works_alone(tmp_path: Path, failover: dict[str, object]) -> None:
    bed = Bed(tmp_path, **failover)
    bed.overlay.step()
    bed.service = Service.FAILOVER
    bed.overlay.step()
    if failover.get("mirrorcontacts") is False:
        assert "contact=" not in bed.file and "maximum_expiration=" in bed.file
        assert bed.central.actions == []
    else:
        assert overlay_aors(bed.file) == {"1001"} and "expiration" not in bed.file


def test_off_in_chan_sip_mode(tmp_path: Path) -> None:
    bed = Bed(tmp_path)
    overlay = bed.make(Settings(syncmanager=SyncManagerSettings(
        mode="sip", localconfigspath=str(bed.dir))))  # fmt: skip
    assert not overlay.enabled and overlay.details() == {}


def test_a_lasting_refusal_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bed = Bed(tmp_path, contactsinterval=0.0)
    bed.central.fail = AmiTransportError(
        "central AMI: PJSIPShowContacts refused: Permission denied"
    )
    with caplog.at_level("DEBUG", logger="synch"):
        for _ in range(3):
            bed.overlay.step()
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "contacts" in r.message]
    assert len(warned) == 1 and "Permission denied" in warned[0].message
