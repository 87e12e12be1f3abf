"""The remove guard weighs what phones lose, not only which sections disappear: a central whose
pjsip.auth.conf comes back empty, one whose every password changed, and a branch file that no
longer parses are each refused (`synch sync --force` accepts once), against real Asterisk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lab.asterisk import AsteriskInstance
from tests.integration.test_sync_real import Synch, freepbx_central, ok, settings_for

pytestmark = pytest.mark.asterisk

SITES = {"HeadOffice": [1001, 1002, 1003, 1004], "DevOps": [2001]}


@pytest.fixture
def setup(
    tmp_path: Path, asterisk_factory: Callable[..., AsteriskInstance]
) -> tuple[Synch, AsteriskInstance]:
    central = asterisk_factory("guard-central", configs=freepbx_central(SITES, custom=False))
    branch = asterisk_factory("guard-branch")
    synch = Synch(settings_for(central, branch, tmp_path / "etc"), tmp_path)
    assert ok(synch("sync")).startswith("sync applied: +1001 +1002 +1003 +1004")
    return synch, central


def guarded(synch: Synch, reason: str) -> None:
    before, head = synch.file.read_bytes(), synch.git("rev-parse", "HEAD")
    result = synch("sync")
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout.startswith("sync guarded: "), result.stdout
    assert reason in result.stdout, result.stdout
    assert "synch sync --force" in result.stderr
    assert synch.file.read_bytes() == before
    assert synch.git("rev-parse", "HEAD") == head


def test_an_emptied_auth_file_trips_the_guard(setup: tuple[Synch, AsteriskInstance]) -> None:
    synch, central = setup
    central.write_config("pjsip.auth.conf", "#include pjsip.auth_custom.conf\n")
    guarded(synch, "4 of 4 synced accounts would stop working: 4 would lose an auth")
    assert ok(synch("sync", "--force")).startswith("sync applied: ~1001")
    assert "type=auth" not in synch.file.read_text()


def test_every_password_changed_trips_the_guard(setup: tuple[Synch, AsteriskInstance]) -> None:
    synch, central = setup
    auths = freepbx_central(SITES, custom=False)["pjsip.auth.conf"]
    central.write_config("pjsip.auth.conf", auths.replace("password=Pw", "password=Other"))
    guarded(synch, "4 of 4 synced accounts would get new credentials")
    # One password is an ordinary change.
    central.write_config(
        "pjsip.auth.conf", auths.replace("password=Pw1003", "password=Rotated1003")
    )
    assert ok(synch("sync")).startswith("sync applied: ~1003")


def test_a_branch_file_that_does_not_parse_is_not_zero_accounts(
    setup: tuple[Synch, AsteriskInstance],
) -> None:
    synch, central = setup
    synch.file.write_text(synch.file.read_text() + "[1005\ntype=endpoint\n")
    synch.git("commit", "-qam", "hand edit")
    # The central lost every account but one: with the file read as empty that passed.
    files = freepbx_central({"HeadOffice": [1001]}, custom=False)
    for name in ("pjsip.endpoint.conf", "pjsip.aor.conf", "pjsip.auth.conf"):
        central.write_config(name, files[name])
    guarded(synch, "pjsip_synch.conf on the branch does not parse")
    assert ok(synch("sync", "--force")).startswith("sync applied: ")
