"""The branch's config history against a hostile or careless local user, with real git, a real
central and branch Asterisk 22 and the real `synch` CLI and daemon as subprocesses.

- `/etc/asterisk` (and its `.git`) belongs to the service user: whatever that user planted in
  the repository's configuration (fsmonitor, filter drivers, textconv, pager, hooks ...) must
  never run, above all not as root when an operator runs `sudo synch history|sync|rollback|resume`.
- a file the service user cannot read, and private keys, in the config directory: the sync
  goes on, says which file it left out, and never puts a key in the history.
- git's `index.lock`: one that a live process holds is never removed; one left by a dead git is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.asterisk import AsteriskInstance
from lab.synchproc import SynchProcess
from lab.wait import wait_until
from tests.helpers.hostile_git import arm, fired
from tests.helpers.owner import Owner, foreign_owner
from tests.integration.test_sync_real import Synch, freepbx_central, ok, set_sites, settings_for

pytestmark = pytest.mark.asterisk

Factory = Callable[..., AsteriskInstance]


@pytest.fixture
def owner() -> Iterator[Owner]:
    with foreign_owner() as made:
        yield made


@pytest.fixture
def central(asterisk_factory: Factory) -> AsteriskInstance:
    return asterisk_factory("adv-git-central", configs=freepbx_central(
        {"HeadOffice": [1001, 1002, 1003], "DevOps": [2001]}, custom=False))


@pytest.fixture
def branch(asterisk_factory: Factory) -> AsteriskInstance:
    return asterisk_factory("adv-git-branch")


@pytest.fixture
def synch(
    owner: Owner, central: AsteriskInstance, branch: AsteriskInstance
) -> Synch:
    """`synch` against a config directory that belongs to `owner`; its settings file too, so
    the owner (as the service runs) can read it."""
    etc = owner.make_dir("etc")
    (etc / "extensions.conf").write_text("[from-internal-headoffice]\n")
    owner.give(etc)
    work = owner.make_dir("work", 0o711)
    made = Synch(settings_for(central, branch, etc), work)
    owner.give(made.proc.config_path)
    return made


def git(directory: Path, *args: str) -> str:
    """Plumbing only, as root, with nothing of the repository's configuration that runs."""
    out = subprocess.run(
        ["git", "-c", f"safe.directory={directory}", "-c", "core.fsmonitor=false",
         "-C", str(directory), *args],
        capture_output=True, text=True, check=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"},
    )
    return out.stdout


def tree(directory: Path) -> set[str]:
    return set(git(directory, "ls-tree", "-r", "--name-only", "HEAD").split())


def not_root_owned(directory: Path) -> list[str]:
    return [
        os.path.join(d, n)
        for d, dirs, files in os.walk(directory)
        for n in (*dirs, *files)
        if os.lstat(os.path.join(d, n)).st_uid == 0
    ]


# -- 1. root never runs what the repository's owner planted ------------------------------------


def test_root_runs_none_of_the_repository_owners_git_commands(
    owner: Owner, synch: Synch, central: AsteriskInstance
) -> None:
    etc = synch.directory
    assert ok(synch("sync")).startswith("sync applied: +1001 +1002 +1003")
    markers = arm(etc, owner.base)
    owner.give(etc)
    first = git(etc, "rev-parse", "--short=10", "HEAD").strip()
    first_text = synch.file.read_text()

    # The operator, as root: every command that touches the repository.
    set_sites(central, {"HeadOffice": [1001, 1002, 1003, 1004]})
    assert "+[1004]" in ok(synch("sync", "--dry-run"))
    (etc / "extensions.conf").write_text("[from-internal-headoffice]\nexten => 1,1,Hangup()\n")
    owner.give(etc / "extensions.conf")
    assert ok(synch("sync")).startswith("sync applied: +1004")
    history = ok(synch("history"))
    assert "sync: +1004 from 127.0.0.1 (pjsip)" in history
    assert "local edits: " in ok(synch("history", "--all"))
    assert "automatic sync paused" in ok(synch("rollback", first))
    assert synch.file.read_text() == first_text
    assert "automatic sync is paused" in ok(synch("history"))
    assert "resumed" in ok(synch("resume"))

    # The daemon (here started as root) runs git as the owner too.
    daemon = SynchProcess(synch.config, synch.proc.workdir)
    daemon.start()
    try:
        wait_until(lambda: daemon.details()["CentralReachable"], 15,
                   message=f"the central answers a probe; log:\n{daemon.log()}")
        reply = daemon.admin("Sync")
        assert reply["Result"] in ("applied", "unchanged"), (reply, daemon.log())
        assert "[1004]" in synch.file.read_text()
    finally:
        daemon.stop()
    assert ok(synch("sync")).startswith("sync unchanged")

    assert fired(markers) == {}
    assert not_root_owned(etc) == []  # nothing in the directory was made by root
    subjects = git(etc, "log", "--format=%s").splitlines()
    assert subjects[0].startswith("sync: +1004"), subjects
    assert any(s.startswith("rollback: pjsip_synch.conf to") for s in subjects)


def test_repository_of_two_users_is_refused_with_a_clear_message(
    owner: Owner, synch: Synch
) -> None:
    """A config directory of one user with a .git of another: root becomes neither, and the
    operator is told who owns what (not git's advice to trust the repository globally)."""
    ok(synch("sync"))
    before = git(synch.directory, "rev-parse", "HEAD")
    os.chown(synch.directory / ".git", owner.uid + 1, owner.gid)
    for command in (("history",), ("sync",), ("resume",), ("rollback", "HEAD")):
        result = synch(*command)
        assert result.returncode == 1, (command, result.stdout + result.stderr)
        assert "belong to different users" in result.stderr, (command, result.stderr)
        assert "chown" in result.stderr and "safe.directory" not in result.stderr
    os.chown(synch.directory / ".git", owner.uid, owner.gid)
    assert git(synch.directory, "rev-parse", "HEAD") == before


# -- 2. an unreadable file, and private keys -------------------------------------------------


def test_unreadable_file_is_a_warning_and_keys_never_enter_the_history(
    owner: Owner, synch: Synch, central: AsteriskInstance
) -> None:
    etc = synch.directory
    keys = etc / "keys"
    keys.mkdir()
    (keys / "branch.key").write_text("-----BEGIN PRIVATE KEY-----\nMIIEvQ\n")
    (keys / "branch.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (etc / "asterisk.pem").write_text("-----BEGIN PRIVATE KEY-----\nMIIEvQ\n")
    owner.give(etc)
    secret = etc / "root-only.conf"  # root's, 0600: the service user cannot read it
    secret.write_text("secret=do-not-leak\n")
    os.chmod(secret, 0o600)

    result = synch("sync")  # as root: it switches to the owner, who cannot read that file
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("sync applied: +1001 +1002 +1003")
    assert "warning: " in result.stderr and "root-only.conf" in result.stderr, result.stderr
    assert "do-not-leak" not in result.stdout + result.stderr
    assert tree(etc) == {"extensions.conf", "pjsip_synch.conf"}

    # The next change still syncs, with the same warning; the rotated key stays out.
    set_sites(central, {"HeadOffice": [1001, 1002, 1003, 1004]})
    (keys / "branch.key").write_text("-----BEGIN PRIVATE KEY-----\nrotated\n")
    result = synch("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("sync applied: +1004")
    assert "root-only.conf" in result.stderr
    assert tree(etc) == {"extensions.conf", "pjsip_synch.conf"}
    assert git(etc, "log", "--all", "--format=%H", "--", "keys", "asterisk.pem",
               "root-only.conf") == ""


# -- 3. git's lock files ---------------------------------------------------------------------


def hold_open(owner: Owner, lock: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["sh", "-c", 'exec 9>>"$1"; echo ready; exec sleep 300', "sh", str(lock)],
        stdout=subprocess.PIPE, **owner.popen_kwargs,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_live_lock_is_left_alone_and_a_dead_holders_lock_is_cleared(
    owner: Owner, synch: Synch, central: AsteriskInstance
) -> None:
    etc = synch.directory
    ok(synch("sync"))
    head = git(etc, "rev-parse", "HEAD")
    before = synch.file.read_bytes()
    set_sites(central, {"HeadOffice": [1001, 1002, 1003, 1004]})

    lock = etc / ".git" / "index.lock"
    holder = hold_open(owner, lock)  # an operator's git, an editor, a hung process ...
    try:
        started = time.monotonic()
        result = synch("sync")
        held_for = time.monotonic() - started
        assert result.returncode == 1, result.stdout + result.stderr
        assert "sync failed" in result.stdout
        assert ".git/index.lock" in result.stdout and f"pid {holder.pid}" in result.stdout
        assert held_for > 5  # longer than the old rule's five seconds: still not removed
        assert lock.exists() and holder.poll() is None
        assert git(etc, "rev-parse", "HEAD") == head
        assert synch.file.read_bytes() == before
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    # Its holder is gone: the next sync removes it and goes on.
    assert ok(synch("sync")).startswith("sync applied: +1004")
    assert not lock.exists()
    git(etc, "fsck", "--strict", "--no-dangling")


def test_lock_of_a_user_synch_cannot_see_is_left_for_the_operator(
    owner: Owner, synch: Synch, central: AsteriskInstance
) -> None:
    """Under ProtectProc=invisible the service user cannot see root's processes: a lock root
    made might be in use, so synch leaves it and says what to do."""
    etc = synch.directory
    ok(synch("sync"))
    set_sites(central, {"HeadOffice": [1001, 1002, 1003, 1004]})
    lock = etc / ".git" / "index.lock"
    lock.write_text("")  # root's, held by nobody synch (the owner) could see
    old = time.time() - 60
    os.utime(lock, (old, old))

    result = synch("sync")  # as root: it switches to the owner, who cannot see root's
    assert result.returncode == 1, result.stdout + result.stderr
    assert ".git/index.lock" in result.stdout and "remove" in result.stdout, result.stdout
    assert lock.exists()
    lock.unlink()
    assert ok(synch("sync")).startswith("sync applied: +1004")


def test_the_sync_lock_is_never_opened_through_a_symlink(tmp_path: Path) -> None:
    from synch.config import parse_settings
    from synch.sync.job import SyncFailed, SyncJob

    etc = tmp_path / "etc"
    etc.mkdir()
    target = tmp_path / "elsewhere"
    (etc / ".synch.lock").symlink_to(target)
    text = (
        '{"amiremote": {"hostname": "127.0.0.1", "password": "x"}, "amilocal": {"password": "x"},'
        f'"syncmanager": {{"localconfigspath": "{etc}"}},'
        '"dnsservice": {"forwarder": "127.0.0.1", "targetnormal": "10.0.0.1",'
        ' "targetfailover": "10.0.0.2"},'
        '"servicecontrol": {"token": "t"}}'
    )
    job = SyncJob(parse_settings(text), None, None)  # type: ignore[arg-type]
    with pytest.raises(SyncFailed, match="is a symbolic link"), job.store.lock():
        pass
    assert not target.exists()
