"""synch.gitlog against the real git: commits, history, pause marker, repairs after a kill."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from synch.gitlog import ConfigHistory, HistoryError
from tests.helpers.hostile_git import arm, fired
from tests.helpers.owner import Owner, foreign_owner


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


def test_lock_left_by_a_dead_git_is_removed(tmp_path: Path, history: ConfigHistory) -> None:
    (tmp_path / "a.conf").write_text("a\n")
    history.commit_local_edits()
    lock = tmp_path / ".git" / "index.lock"
    lock.write_text("")  # nobody has it open, no git works in the repository: a dead git's
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



# -- repository settings that run commands ------------------------------------------------------


def tree(path: Path, rev: str = "HEAD") -> list[str]:
    """The files committed at `rev` (plumbing only: runs none of the repository's commands)."""
    return git(path, "ls-tree", "-r", "--name-only", rev).splitlines()


def exercise(history: ConfigHistory, path: Path) -> None:
    """Every git operation synch performs, twice (a second status sees the first one's index)."""
    for round_ in range(2):
        (path / "a.conf").write_text(f"a{round_}\n")
        (path / f"new{round_}.conf").write_text("x\n")
        assert history.commit_local_edits() is not None
        (path / "s.conf").write_text(f"s{round_}\n")
        commit = history.commit_files(["s.conf"], f"sync: +{round_}", "Source: c")
        assert not history.is_dirty("s.conf")
        assert history.file_at(commit, "s.conf") == f"s{round_}\n"
        assert history.resolve("HEAD") == commit == history.head()
        assert history.history(["s.conf"])[0].subject == f"sync: +{round_}"
        assert len(history.history()) >= 2
        history.close()


def test_settings_that_run_commands_are_ignored_in_our_own_repository(tmp_path: Path) -> None:
    """The daemon runs git as the repository's owner: that user's planted fsmonitor, filters,
    textconv, pager, hooks ... still never run."""
    repo = tmp_path / "etc"
    repo.mkdir()
    (repo / "a.conf").write_text("a\n")
    history = ConfigHistory(repo)
    history.commit_local_edits()
    markers = arm(repo, tmp_path)
    exercise(history, repo)
    assert fired(markers) == {}
    # Committed as they are on disk, through no filter; the embedded repository a gitlink.
    assert git(repo, "cat-file", "blob", "HEAD:a.conf") == "a1\n"
    assert {"local.inc", ".gitattributes", "vendor"} <= set(tree(repo))


@pytest.fixture
def owner() -> Iterator[Owner]:
    if os.geteuid() != 0:
        pytest.fail("needs root to hand files to another user: run as root")
    with foreign_owner() as made:
        yield made


def owned_repo(owner: Owner) -> Path:
    repo = owner.make_dir("etc")
    (repo / "a.conf").write_text("a\n")
    owner.give(repo)
    return repo


def test_as_root_git_runs_as_the_owner_of_another_users_repository(owner: Owner) -> None:
    repo = owned_repo(owner)
    history = ConfigHistory(repo)
    history.commit_local_edits()
    markers = arm(repo, owner.base)
    owner.give(repo)
    exercise(history, repo)
    history.pause("x")
    assert fired(markers) == {}
    wrong = [
        os.path.join(d, n)
        for d, dirs, files in os.walk(repo / ".git")
        for n in (*dirs, *files)
        if os.lstat(os.path.join(d, n)).st_uid != owner.uid
    ]
    assert wrong == []


def test_unreadable_files_are_warnings_and_the_rest_is_committed(owner: Owner) -> None:
    repo = owned_repo(owner)
    history = ConfigHistory(repo)
    assert history.commit_local_edits() is not None
    secret = repo / "secret.conf"  # root's, 0600: the owner (git's user) cannot read it
    secret.write_text("password=root-only\n")
    os.chmod(secret, 0o600)
    hidden = repo / "restricted"
    hidden.mkdir(mode=0o700)
    (hidden / "inside.conf").write_text("x\n")
    (repo / "a.conf").write_text("b\n")
    (repo / "more.conf").write_text("m\n")
    owner.give(repo / "a.conf", repo / "more.conf")
    commit = history.commit_local_edits()
    assert commit is not None
    assert set(tree(repo)) == {"a.conf", "more.conf"}
    assert git(repo, "log", "-1", "--format=%s").strip() == "local edits: a.conf, more.conf"
    warned = " | ".join(history.warnings)
    assert "secret.conf" in warned and "restricted/" in warned, history.warnings
    assert "root-only" not in warned
    # Nothing else changed: no commit, the same warnings.
    assert history.commit_local_edits() is None
    assert any("secret.conf" in w for w in history.warnings)


def test_private_keys_are_never_committed(tmp_path: Path, history: ConfigHistory) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".git" / "info" / "exclude").write_text("# mine\n*.bak\n")
    (tmp_path / "old.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    git(tmp_path, "add", "old.key")  # committed by an older synch's `git add --all`
    git(tmp_path, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q", "-m", "old")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "branch.key").write_text("-----BEGIN PRIVATE KEY-----\n")
    (tmp_path / "keys" / "branch.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "asterisk.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (tmp_path / "tls.p12").write_bytes(b"\x30\x82")
    (tmp_path / "pjsip.conf").write_text("[transport-tls]\n")
    assert history.commit_local_edits() is not None
    assert set(tree(tmp_path)) == {"pjsip.conf"}
    assert (tmp_path / "old.key").exists()  # out of the history, still on disk
    assert git(tmp_path, "log", "--format=%s", "-1").strip() == "local edits: old.key, pjsip.conf"
    exclude = (tmp_path / ".git" / "info" / "exclude").read_text()
    assert exclude.startswith("# mine\n*.bak\n") and "*.key" in exclude
    # Our block is rewritten in place, never appended twice.
    history.close()
    ConfigHistory(tmp_path).repo()
    assert (tmp_path / ".git" / "info" / "exclude").read_text() == exclude


# -- git's lock files -----------------------------------------------------------------------------


def holding(lock: Path, **kwargs: object) -> subprocess.Popen[bytes]:
    """A live process that has `lock` open (as an editor, a hung git or a slow disk would)."""
    proc = subprocess.Popen(
        ["sh", "-c", 'exec 9>>"$1"; echo ready; exec sleep 120', "sh", str(lock)],
        stdout=subprocess.PIPE, **kwargs,  # type: ignore[call-overload]
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_lock_held_open_by_a_live_process_is_never_removed(
    tmp_path: Path, history: ConfigHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("synch.gitlog.GIT_LOCK_WAIT", 1.0, raising=False)
    (tmp_path / "a.conf").write_text("a\n")
    history.commit_local_edits()
    lock = tmp_path / ".git" / "index.lock"
    proc = holding(lock)
    old = time.time() - 60
    os.utime(lock, (old, old))  # an old lock, still in use
    try:
        with pytest.raises(HistoryError) as err:
            history.clear_stale_locks()
        assert ".git/index.lock" in str(err.value) and f"pid {proc.pid}" in str(err.value)
        assert lock.exists()
    finally:
        proc.kill()
        proc.wait()
    assert history.clear_stale_locks() == [".git/index.lock"]


def test_lock_of_a_git_waiting_for_its_editor_is_never_removed(
    tmp_path: Path, history: ConfigHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`git commit` keeps index.lock while the editor is open, with no file descriptor on it."""
    monkeypatch.setattr("synch.gitlog.GIT_LOCK_WAIT", 1.0, raising=False)
    repo = tmp_path / "etc"
    repo.mkdir()
    (repo / "a.conf").write_text("a\n")
    history = ConfigHistory(repo)
    history.commit_local_edits()
    (repo / "a.conf").write_text("b\n")
    go = tmp_path / "go"
    editor = tmp_path / "editor"
    editor.write_text(f'#!/bin/sh\nwhile [ ! -e {go} ]; do sleep 0.05; done\necho edited > "$1"\n')
    editor.chmod(0o755)
    proc = subprocess.Popen(
        ["git", "-c", "user.name=op", "-c", "user.email=op@x", "commit", "-a"], cwd=repo,
        env={**os.environ, "GIT_EDITOR": str(editor)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    lock = repo / ".git" / "index.lock"
    try:
        deadline = time.monotonic() + 10
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lock.exists()
        with pytest.raises(HistoryError, match=rf"index\.lock.*pid {proc.pid}"):
            history.clear_stale_locks()
        assert lock.exists()
        go.touch()
        assert proc.wait(10) == 0  # the operator's commit completes
    finally:
        if proc.poll() is None:
            proc.kill()
    assert git(repo, "log", "-1", "--format=%s").strip() == "edited"
    assert history.clear_stale_locks() == []


def test_git_directory_that_is_a_symlink_is_refused(owner: Owner) -> None:
    """Its owner could point `.git` anywhere: root must not chmod or chown what it points to."""
    repo = owned_repo(owner)
    elsewhere = owner.base / "elsewhere"
    subprocess.run(["git", "init", "-q", "--bare", str(elsewhere)], check=True)
    os.chmod(elsewhere, 0o755)
    before = {p: (p.stat().st_mode, p.stat().st_uid) for p in [elsewhere, *elsewhere.rglob("*")]}
    (repo / ".git").symlink_to(elsewhere)
    os.lchown(repo / ".git", owner.uid, owner.gid)
    history = ConfigHistory(repo)
    with pytest.raises(HistoryError, match=r"\.git is not a directory"):
        history.commit_local_edits()
    with pytest.raises(HistoryError, match=r"\.git is not a directory"):
        history.pause("x")
    assert history.paused is None
    after = {p: (p.stat().st_mode, p.stat().st_uid) for p in [elsewhere, *elsewhere.rglob("*")]}
    assert after == before


def test_many_local_edits_are_added_in_batches(
    tmp_path: Path, history: ConfigHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("synch.gitlog.ADD_BATCH", 3)
    names = [f"f{i:02}.conf" for i in range(10)] + ["with space.conf", "star*.conf"]
    for name in names:
        (tmp_path / name).write_text(f"{name}\n")
    assert history.commit_local_edits() is not None
    assert sorted(tree(tmp_path)) == sorted(names)
