"""image/boot_test.py's update checks, against a stand-in guest: `make image-test` runs them
under qemu only where the image base is cached, so their logic is checked here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TOP = Path(__file__).resolve().parents[2]


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("boot_test", TOP / "image/boot_test.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bt = load()


class FakeGuest:
    """Answers the commands upgrade_checks sends; `after` is the state once apt ran."""

    def __init__(self, before: dict[str, str], after: dict[str, str]) -> None:
        self.state, self.after = dict(before), after
        self.commands: list[str] = []

    def sh(self, command: str, timeout: float = 60) -> tuple[int, str]:
        self.commands.append(command)
        if "apt-get install" in command:
            self.state.update(self.after)
            return 0, "Setting up synch"
        for key, value in self.state.items():
            if key in command:
                return 0, value
        raise AssertionError(f"unexpected command {command!r}")


BEFORE = {
    "sha256sum": "abc  /etc/synch/appsettings.json\n600:asterisk",
    "git --no-pager -C /etc/asterisk log": "c2\nc1",
    "MainPID": "101",
    "${Version}": "0.1.0-1",
    "synch-appliance": "install ok installed",
    "is-active": "active",
}
AFTER = {"MainPID": "202", "${Version}": "0.1.0-1+upgrade"}


def run_checks(monkeypatch: pytest.MonkeyPatch, after: dict[str, str]) -> tuple[Any, FakeGuest]:
    monkeypatch.setattr(bt, "get_status", lambda port: {"Monitor": "Stable", "Sync": "Synced"})
    guest = FakeGuest(BEFORE, {**AFTER, **after})
    checks = bt.Checks()
    bt.upgrade_checks(guest, {"status": 1}, checks, "0.1.0-1+upgrade")
    return checks, guest


def test_update_that_keeps_everything_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    checks, guest = run_checks(monkeypatch, {"git --no-pager -C /etc/asterisk log": "c3\nc2\nc1"})
    assert checks.failed == []
    install = next(c for c in guest.commands if "apt-get install" in c)
    assert "--force-confold" in install and f"./{bt.UPGRADE_NAME}" in install


@pytest.mark.parametrize(("after", "failed"), [
    ({"git --no-pager -C /etc/asterisk log": "c9"}, "/etc/asterisk history kept by the update"),
    ({"sha256sum": "def  /etc/synch/appsettings.json\n600:asterisk"},
     "settings, owner and mode kept by the update"),
    ({"sha256sum": "abc  /etc/synch/appsettings.json\n644:root"},
     "settings, owner and mode kept by the update"),
    ({"${Version}": "0.1.0-1"}, "package version after the update"),
    # apt removed synch-appliance (it depended on the exact version of synch)
    ({"synch-appliance": "deinstall ok config-files"},
     "synch-appliance kept by the update of synch alone"),
])
def test_update_that_loses_something_fails(
    monkeypatch: pytest.MonkeyPatch, after: dict[str, str], failed: str
) -> None:
    checks, _ = run_checks(monkeypatch, after)
    assert checks.failed == [failed]
