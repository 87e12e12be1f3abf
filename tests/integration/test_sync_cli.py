"""The operator's sync commands against a real central and branch Asterisk 22:
`synch sync --dry-run`, `synch history`, `synch rollback REV` (and that the daemon then leaves
the file alone), `synch resume`; local edits committed on their own; a private `.git`."""

from __future__ import annotations

import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.asterisk import AsteriskInstance
from lab.synchproc import SynchProcess
from lab.wait import wait_until
from tests.integration.test_sync_real import Synch, freepbx_central, ok, set_sites, settings_for

pytestmark = pytest.mark.asterisk

Factory = Callable[..., AsteriskInstance]


@pytest.fixture
def central(asterisk_factory: Factory) -> AsteriskInstance:
    return asterisk_factory("cli-central", configs=freepbx_central(
        {"HeadOffice": [1001, 1002, 1003], "DevOps": [2001]}, custom=False))


@pytest.fixture
def branch(asterisk_factory: Factory) -> AsteriskInstance:
    return asterisk_factory("cli-branch")


@pytest.fixture
def synch(tmp_path: Path, central: AsteriskInstance, branch: AsteriskInstance) -> Iterator[Synch]:
    config = settings_for(central, branch, tmp_path / "etc")
    config["probemonitor"].update(interval=0.5)
    config["amiremote"]["timeout"] = 0.4
    yield Synch(config, tmp_path)


def test_dry_run_history_local_edits_rollback_pause_and_resume(
    synch: Synch, central: AsteriskInstance
) -> None:
    etc = synch.directory
    (etc / "extensions.conf").write_text("[from-internal-headoffice]\n")

    # Dry run on a fresh branch: the whole file as a diff, nothing written, no repository.
    dry = ok(synch("sync", "--dry-run"))
    assert dry.startswith("--- a/pjsip_synch.conf\n+++ b/pjsip_synch.conf\n")
    assert "+[1001]\n" in dry and "+password=Pw1001secret\n" in dry and "2001" not in dry
    assert sorted(p.name for p in etc.iterdir()) == ["extensions.conf"]

    assert ok(synch("sync")).startswith("sync applied: +1001 +1002 +1003")
    assert stat.S_IMODE((etc / ".git").stat().st_mode) == 0o700
    assert synch.git("log", "--format=%s").splitlines() == [
        "sync: +1001 +1002 +1003 from 127.0.0.1 (pjsip)",
        "initial: configuration found on the branch",
    ]
    first = synch.file.read_text()
    first_rev = synch.git("rev-parse", "--short=10", "HEAD").strip()

    set_sites(central, {"HeadOffice": [1001, 1002, 1003, 1004]})
    (etc / "extensions.conf").write_text("[from-internal-headoffice]\nexten => 1,1,Hangup()\n")
    assert ok(synch("sync")).startswith("sync applied: +1004")
    assert synch.git("log", "--format=%s").splitlines()[:2] == [
        "sync: +1004 from 127.0.0.1 (pjsip)",
        "local edits: extensions.conf",  # found uncommitted: its own commit, first
    ]
    second = synch.file.read_text()

    # Dry run with a change pending: its diff only; file, HEAD and worktree untouched.
    set_sites(central, {"HeadOffice": [1001, 1002, 1003, 1004, 1005]})
    head = synch.git("rev-parse", "HEAD")
    dry = ok(synch("sync", "--dry-run"))
    assert "+[1005]\n" in dry and "-[1001]" not in dry
    assert synch.file.read_text() == second
    assert synch.git("rev-parse", "HEAD") == head
    assert synch.git("status", "--porcelain") == ""

    history = ok(synch("history")).splitlines()
    assert [line.split(None, 4)[-1] for line in history] == [
        "sync: +1004 from 127.0.0.1 (pjsip)",
        "sync: +1001 +1002 +1003 from 127.0.0.1 (pjsip)",
    ]
    assert history[1].startswith(first_rev)
    everything = ok(synch("history", "--all"))
    assert "local edits: extensions.conf" in everything

    rolled = ok(synch("rollback", first_rev))
    assert "automatic sync paused" in rolled
    assert synch.file.read_text() == first
    assert synch.git("log", "-1", "--format=%s").startswith(
        f"rollback: pjsip_synch.conf to {first_rev}")
    assert "automatic sync is paused" in ok(synch("history"))
    assert ok(synch("sync")).startswith("sync skipped: sync paused")
    assert synch.file.read_text() == first

    # The daemon leaves a rolled-back file alone, at start and when asked to sync.
    daemon = SynchProcess(synch.config, synch.proc.workdir)
    daemon.start()
    try:
        wait_until(lambda: daemon.details()["CentralReachable"], 10,
                   message=f"the central answers a probe; log:\n{daemon.log()}")
        reply = daemon.admin("Sync")
        assert reply["ok"] is False and "paused" in reply["Error"], reply
        assert daemon.details()["SyncPaused"]
        assert synch.file.read_text() == first

        assert "resumed" in ok(synch("resume"))
        reply = daemon.admin("Sync")
        assert reply["Result"] == "applied", reply
        assert daemon.status()["Sync"] == "Synced"
        text = synch.file.read_text()
        assert "[1004]" in text and "[1005]" in text
        assert synch.git("log", "-1", "--format=%s").strip() == (
            "sync: +1004 +1005 from 127.0.0.1 (pjsip)")
        assert synch.git("status", "--porcelain") == ""
    finally:
        daemon.stop()
    assert ok(synch("resume")).startswith("automatic sync was not paused")


def test_rollback_to_an_unknown_revision_is_refused(synch: Synch) -> None:
    ok(synch("sync"))
    before = synch.file.read_bytes()
    result = synch("rollback", "deadbeef")
    assert result.returncode == 1
    assert "rollback refused: unknown revision 'deadbeef'" in result.stderr
    assert synch.file.read_bytes() == before
    assert "paused" not in ok(synch("history"))


def test_dialplan_files_sync_with_the_accounts_and_load_on_the_branch(
    tmp_path: Path, central: AsteriskInstance, branch: AsteriskInstance
) -> None:
    central.write_config("voicemail.conf", "[general]\n\n[default]\n1001 => 1234,Alice\n")
    branch.write_config("extensions.conf", "#tryinclude extensions_synch.conf\n")
    branch.write_config("voicemail.conf", "[general]\n#tryinclude voicemail_synch.conf\n")
    config = settings_for(central, branch, branch.config_dir)
    config["dialplan"] = {
        "enabled": True,
        "trunk": "pstn-gw",
        "outbound": ["_0XXXXXXXXX"],
        "contexts": ["from-internal-headoffice"],
    }
    synch = Synch(config, tmp_path)

    dry = ok(synch("sync", "--dry-run"))
    assert "+++ b/extensions_synch.conf" in dry and "+++ b/voicemail_synch.conf" in dry
    assert not (branch.config_dir / "extensions_synch.conf").exists()

    assert ok(synch("sync")).startswith("sync applied: +1001 +1002 +1003")
    subject = synch.git("log", "-1", "--format=%s").strip()
    assert subject.startswith("sync: +1001 +1002 +1003 from 127.0.0.1 (pjsip), dialplan +")
    committed = synch.git("show", "--name-only", "--format=", "HEAD").split()
    assert sorted(committed) == [
        "extensions_synch.conf", "pjsip_synch.conf", "voicemail_synch.conf"
    ]
    # The sync reloaded pbx_config and app_voicemail: the branch runs the generated dialplan.
    shown = branch.cli("dialplan show from-internal-headoffice")
    assert "1002" in shown and "112" in shown, shown
    assert "1001" in branch.cli("voicemail show users")

    # A dialplan-only change (the central's voicemail) is its own commit and leaves accounts.
    central.write_config("voicemail.conf", "[general]\n\n[default]\n1001 => 1234,Alice\n"
                         "1002 => 2345,Alex\n")
    central.reload()
    assert ok(synch("sync")).startswith("sync applied")
    subject = synch.git("log", "-1", "--format=%s").strip()
    assert "voicemail" in subject and "+100" not in subject, subject
    assert "1002" in branch.cli("voicemail show users")
