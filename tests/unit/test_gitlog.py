"""synch.gitlog against the real git: commits, history, pause marker, repairs after a kill."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from synch.gitlog import ConfigHistory, HistoryError


def git(path: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", f"safe.directory={path}", "-C", str(path), *args],
        capture_output=True, text=True, check=True,
    ).stdout


def subjects(path: Path) -> list[str]:
    return git(path, "log", "--format=%s").splitlines()


@pytest.fixture
def history(tmp_path: Path) -> ConfigHistory:
    return ConfigHistory(tmp_path)


def test_repository_is_private_and_ignores_our_own_files(
    tmp_path: Path, history: ConfigHistory
) -> None:
    (tmp_path / ".synch.lock").write_text("")
    (tmp_path / ".pjsip_synch.conf.abc.tmp").write_text("half")
    assert history.commit_local_edits() is None  # nothing but our own files: no commit
    assert stat.S_IMODE((tmp_path / ".git").stat().st_mode) == 0o700
    assert history.head() is None
    assert history.history() == []


def test_existing_repository_is_made_private(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    os.chmod(tmp_path / ".git", 0o755)
    ConfigHistory(tmp_path).repo()
    assert stat.S_IMODE((tmp_path / ".git").stat().st_mode) == 0o700


def test_local_edits_are_their_own_commits(tmp_path: Path, history: ConfigHistory) -> None:
    (tmp_path / "extensions.conf").write_text("[default]\n")
    (tmp_path / "pjsip.conf").write_text("[transport-udp]\n")
    first = history.commit_local_edits()
    assert first is not None and history.head() == first
    assert history.commit_local_edits() is None
    (tmp_path / "extensions.conf").write_text("[default]\nexten => 1,1,Hangup()\n")
    (tmp_path / "new.conf").write_text("x=1\n")
    history.commit_local_edits()
    assert subjects(tmp_path) == [
        "local edits: extensions.conf, new.conf",
        "initial: configuration found on the branch",
    ]
    assert git(tmp_path, "log", "-1", "--format=%an").strip() == "synch"


def test_commit_files_commits_only_those_files(tmp_path: Path, history: ConfigHistory) -> None:
    (tmp_path / "other.conf").write_text("a\n")
    history.commit_local_edits()
    (tmp_path / "other.conf").write_text("b\n")
    git(tmp_path, "add", "other.conf")  # staged by someone: must not ride along
    (tmp_path / "pjsip_synch.conf").write_text("[1001]\n")
    commit = history.commit_files(["pjsip_synch.conf"], "sync: +1001 from c (pjsip)", "Body")
    assert git(tmp_path, "show", "--name-only", "--format=", commit).split() == [
        "pjsip_synch.conf"
    ]
    message = git(tmp_path, "log", "-1", "--format=%B", commit).rstrip("\n")
    assert message == "sync: +1001 from c (pjsip)\n\nBody"
    # Unchanged: no new commit, HEAD is returned.
    assert history.commit_files(["pjsip_synch.conf"], "again", "") == commit
    assert history.is_dirty("other.conf") and not history.is_dirty("pjsip_synch.conf")


def test_history_file_at_and_resolve(tmp_path: Path, history: ConfigHistory) -> None:
    f = tmp_path / "s.conf"
    f.write_text("one\n")
    c1 = history.commit_files(["s.conf"], "sync: +1", "")
    f.write_text("two\n")
    c2 = history.commit_files(["s.conf"], "sync: +2", "")
    (tmp_path / "x.conf").write_text("x\n")
    history.commit_local_edits()
    entries = history.history(["s.conf"])
    assert [e.commit for e in entries] == [c2, c1]
    assert entries[0].subject == "sync: +2" and entries[0].files == ("s.conf",)
    assert len(history.history()) == 3
    assert history.file_at(c1[:8], "s.conf") == "one\n"
    assert history.file_at(c1, "x.conf") is None
    assert history.resolve("HEAD~1") == c2
    for bad in ("nosuchrev", "--all", ""):
        with pytest.raises(HistoryError, match="unknown revision"):
            history.resolve(bad)


def test_pause_and_resume(history: ConfigHistory) -> None:
    assert history.paused is None  # no repository yet: not paused, nothing made
    history.repo()
    history.pause("rolled back to abc")
    assert history.paused == "rolled back to abc"
    assert history.resume() is True
    assert history.paused is None
    assert history.resume() is False


def test_stale_git_lock_is_removed_but_a_fresh_one_is_waited_for(
    tmp_path: Path, history: ConfigHistory
) -> None:
    (tmp_path / "a.conf").write_text("a\n")
    history.commit_local_edits()
    lock = tmp_path / ".git" / "index.lock"
    lock.write_text("")
    old = time.time() - 60
    os.utime(lock, (old, old))
    assert history.clear_stale_locks() == [".git/index.lock"]
    (tmp_path / "a.conf").write_text("b\n")
    assert history.commit_local_edits() is not None
    git(tmp_path, "fsck", "--strict")


def test_git_failure_is_a_history_error(tmp_path: Path, history: ConfigHistory) -> None:
    (tmp_path / "a.conf").write_text("a\n")
    history.commit_local_edits()
    (tmp_path / ".git" / "index.lock").write_text("")  # fresh: a git at work right now
    (tmp_path / "a.conf").write_text("b\n")
    with pytest.raises(HistoryError, match=r"index\.lock"):
        history.commit_local_edits()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")
def test_as_root_git_files_belong_to_the_directory_owner(
    tmp_path: Path, history: ConfigHistory
) -> None:
    os.chown(tmp_path, 4321, 4322)
    (tmp_path / "a.conf").write_text("a\n")
    history.commit_local_edits()
    history.pause("x")
    wrong = [
        os.path.join(d, n)
        for d, dirs, files in os.walk(tmp_path / ".git")
        for n in (*dirs, *files)
        if os.lstat(os.path.join(d, n)).st_uid != 4321
    ]
    assert wrong == []
