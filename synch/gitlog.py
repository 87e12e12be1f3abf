"""The branch's config directory as a git repository: `git log` is the config history.

GitPython drives the real `git`, and commits are made by `git commit` itself: git writes every
object, the index and the branch ref through a lock file and a rename, so a process killed at
any moment leaves a repository that `git fsck` accepts.

The repository belongs to the service user, who must never get a command run by synch: git
runs with every command-running setting overridden and as the repository's owner
(synch.gitrun); our own writes in `.git` go through directory descriptors opened without
following symlinks (synch.gitstate); git's lock files left by a killed git are removed only
when no live process may be using them (synch.gitlocks).

What is committed: what synch writes, and the local edits git can read. Private keys never
(a managed block in `.git/info/exclude`, which the operator's own git honours too); a file git
cannot read is left out with a warning instead of failing the sync (synch.gitexclude).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import git

from synch import gitexclude, gitstate
from synch.files import atomic_write
from synch.gitlocks import lock_user
from synch.gitrun import GitRunner, HistoryError, clean_stderr

__all__ = ["ConfigHistory", "HistoryEntry", "HistoryError"]

log = logging.getLogger("synch.git")

# git's own lock files; one left by a killed git would block every later commit.
GIT_LOCKS = ("index.lock", "HEAD.lock", "config.lock", "packed-refs.lock")
GIT_LOCK_WAIT = 10.0  # seconds a lock in use may take to go away before a sync gives up
ADD_BATCH = 500  # paths per `git add`, well within any command line's length


@dataclass(frozen=True)
class HistoryEntry:
    commit: str
    date: str
    author: str
    subject: str
    files: tuple[str, ...]


class ConfigHistory:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._runner = GitRunner(self.path)
        self.warnings: list[str] = []  # what the last commit_local_edits() left out, and why

    @property
    def git_dir(self) -> Path:
        return self.path / ".git"

    # -- repository ---------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self.git_dir.is_dir()

    def repo(self) -> git.Git:
        """Open the repository, making it (mode 0700, our excludes) if needed."""
        cmd = self._runner.cmd
        if cmd is None:
            cmd = self._runner.start()
            try:
                self._open()
            except BaseException:
                self._runner.stop()
                raise
        return cmd

    def _open(self) -> None:
        if not all((self.git_dir / p).exists() for p in ("HEAD", "objects", "refs")):
            # Not made yet, or a `git init` killed half-way: running it again fills in the rest.
            env = {
                k: v for k, v in self._runner.env.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")
            }
            self._runner.exec(["init", "-q", "."], env=env)
        self._secure()
        self._runner.refresh_drivers()

    def _secure(self) -> None:
        """`.git` mode 0700 (the history holds passwords) and our excludes, every time we open
        it: a repository made by hand, or by a killed `git init`, gets them too."""
        with gitstate.git_dir_fd(self.git_dir) as fd:
            if stat.S_IMODE(os.fstat(fd).st_mode) != 0o700:
                os.fchmod(fd, 0o700)
            with contextlib.suppress(FileExistsError):
                os.mkdir("info", 0o755, dir_fd=fd)
            info = os.open("info", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            try:
                current = gitstate.read_at(info, "exclude") or ""
                wanted = gitexclude.with_managed_block(current)
                if wanted != current:
                    atomic_write(Path("exclude"), wanted, mode=0o644, dir_fd=info)
            finally:
                os.close(info)

    def close(self) -> None:
        """Forget the open repository; it reopens (and rereads its configuration) on next use."""
        self._runner.stop()

    def clear_stale_locks(self) -> list[str]:
        """Remove git lock files left by a dead git. Call only while holding synch's own lock
        (no other synch process runs git then). A lock that may still be in use (see
        synch.gitlocks) is waited for up to GIT_LOCK_WAIT seconds, then left alone:
        HistoryError says which lock and what to do."""
        removed = []
        candidates = [self.git_dir / name for name in GIT_LOCKS]
        heads = self.git_dir / "refs" / "heads"
        if heads.is_dir():
            candidates.extend(heads.rglob("*.lock"))
        for lock in candidates:
            deadline = time.monotonic() + GIT_LOCK_WAIT
            while True:
                try:
                    user = lock_user(lock, self.path)
                except FileNotFoundError:
                    break  # its git finished
                if user is None:
                    with contextlib.suppress(FileNotFoundError):
                        lock.unlink()
                        removed.append(str(lock.relative_to(self.path)))
                        log.warning("removed git lock %s left by a git that is gone", lock)
                    break
                if time.monotonic() >= deadline:
                    raise HistoryError(
                        f"git's lock {lock} may be in use by {user}; synch waited "
                        f"{GIT_LOCK_WAIT:g} s and left it in place. If that git is still "
                        f"working, let it finish (or end it); if no git is running in "
                        f"{self.path}, remove {lock}. Then sync again."
                    )
                time.sleep(0.1)
        return removed

    # -- running git --------------------------------------------------------------------------

    def _git(self, *args: str, check: bool = True) -> tuple[int, bytes, str]:
        """Run git in the repository, opening it first (see GitRunner.run)."""
        self.repo()
        return self._runner.run(list(args), check=check)

    def _text(self, *args: str) -> str:
        return os.fsdecode(self._git(*args)[1])

    # -- commits ------------------------------------------------------------------------------

    def _status(self, *paths: str) -> tuple[list[tuple[str, str]], str]:
        """(XY code, path) of every change, and git's stderr (unreadable directories)."""
        _, out, err = self._git(
            "status", "--porcelain", "-z", "--untracked-files=all", "--ignore-submodules=all",
            "--no-renames", *(("--", *paths) if paths else ()),
        )
        entries = [
            (item[:2], item[3:]) for item in os.fsdecode(out).split("\0") if len(item) > 3
        ]
        return entries, err

    def commit_local_edits(self) -> str | None:
        """Commit whatever changed in the directory outside synch, as its own commit. A file
        git cannot read is left out (see `warnings`); ignored files (keys) leave the history."""
        self.warnings = []
        self._untrack_ignored()
        changed, err = self._status()
        unreadable = gitexclude.unreadable(err)
        pending = [p for xy, p in changed if xy == "??" or xy[1] != " "]
        reasons: dict[str, str] = {}
        for start in range(0, len(pending), ADD_BATCH):
            status, _, err = self._git("add", "--all", "--ignore-errors", "--",
                                       *pending[start:start + ADD_BATCH], check=False)
            if status != 0:
                if "fatal:" in err or status != 1:
                    raise HistoryError(f"git add in {self.path}: {clean_stderr(err)}")
                reasons.update(gitexclude.unreadable(err))
        if reasons:  # what is still not staged, and git named in its errors, is left out
            left = {p for xy, p in self._status()[0] if xy == "??" or xy[1] != " "}
            unreadable.update({p: why for p, why in reasons.items() if p in left})
        self.warnings = [
            f"not committed to the history: {p} (cannot read it: {why})"
            for p, why in sorted(unreadable.items())
        ]
        for warning in self.warnings:
            log.debug("%s", warning)
        staged = [n for n in self._text("diff", "--cached", "--name-only", "--no-renames",
                                        "-z").split("\0") if n]
        if not staged:
            return None
        if self.head() is None:
            subject = "initial: configuration found on the branch"
        else:
            subject = "local edits: " + ", ".join(staged[:8]) + (" ..." if len(staged) > 8 else "")
        return self._commit(subject, "", [])

    def _untrack_ignored(self) -> None:
        """Files that the ignore rules now exclude (keys committed by an older version) leave
        the index: the next commit removes them from the history's tip, not from the disk."""
        if self.head() is None:
            return
        names = [n for n in self._text("ls-files", "-z", "--cached", "--ignored",
                                       "--exclude-standard").split("\0") if n]
        if names:
            self._git("rm", "--cached", "-q", "--ignore-unmatch", "--", *names)
            log.warning("no longer kept in the history (ignored): %s", ", ".join(names))

    def is_dirty(self, name: str) -> bool:
        """True if `name` differs from the last commit (or is not committed at all)."""
        return bool(self._status(name)[0])

    def commit_files(self, files: list[str], subject: str, body: str) -> str:
        """Commit exactly `files` (nothing else that is staged); HEAD if they are unchanged."""
        self._git("add", "--all", "--", *files)
        head = self.head()
        if head is not None and not self._text("diff", "--cached", "--name-only", "--", *files):
            return head
        return self._commit(subject, body, files)

    def _commit(self, subject: str, body: str, files: list[str]) -> str:
        message = ["-m", subject] + (["-m", body] if body else [])
        paths = ["--only", "--", *files] if files else []
        self._git("commit", "-q", "--no-verify", "--no-gpg-sign", "--cleanup=verbatim",
                  *message, *paths)
        head = self.head()
        assert head is not None
        return head

    # -- reading ------------------------------------------------------------------------------

    def head(self) -> str | None:
        if not self.exists:
            return None
        status, out, _ = self._git("rev-parse", "--verify", "-q", "HEAD", check=False)
        return out.decode().strip() if status == 0 else None  # no commit yet

    def history(self, files: list[str] | None = None, limit: int = 50) -> list[HistoryEntry]:
        if not self.exists or self.head() is None:
            return []
        try:
            out = self._git(
                "log", "-z", f"--max-count={limit}", "--name-only", "--diff-merges=first-parent",
                "--no-textconv", "--no-ext-diff", "--no-color", "--no-notes",
                "--format=%x1e%H%x1f%cd%x1f%an%x1f%s", "--date=format:%Y-%m-%d %H:%M:%S",
                *(("--full-diff", "--", *files) if files else ()),
            )[1]
        finally:
            self.close()
        entries = []
        for record in out.split(b"\x1e")[1:]:
            header, _, names = record.partition(b"\0")
            commit, date, author, subject = os.fsdecode(header).split("\x1f", 3)
            files_ = tuple(os.fsdecode(n) for n in names.lstrip(b"\n").split(b"\0") if n)
            entries.append(HistoryEntry(commit, date, author, subject, files_))
        return entries

    def file_at(self, rev: str, name: str) -> str | None:
        """The text of `name` as of `rev`, or None if it did not exist then."""
        commit = self.resolve(rev)
        status, out, _ = self._git("cat-file", "blob", f"{commit}:{name}", check=False)
        if status != 0:
            return None
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HistoryError(f"{name} as of {rev} is not UTF-8 text") from exc

    def resolve(self, rev: str) -> str:
        """The full commit id of `rev` (a hash, a prefix, HEAD~2 ...)."""
        if not rev or rev.startswith("-"):
            raise HistoryError(f"unknown revision {rev!r}")
        status, out, _ = self._git("rev-parse", "--verify", "-q", f"{rev}^{{commit}}",
                                   check=False)
        if status != 0:
            raise HistoryError(f"unknown revision {rev!r}")
        return out.decode().strip()

    # -- state kept in .git (not configuration, never committed) ------------------------------

    def state_file(self, name: str) -> Path:
        return self.git_dir / name

    def write_state(self, name: str, text: str) -> None:
        gitstate.write_state(self.git_dir, name, text)

    def read_state(self, name: str) -> str | None:
        return gitstate.read_state(self.git_dir, name)

    def clear_state(self, name: str) -> bool:
        return gitstate.clear_state(self.git_dir, name)

    # -- pause (rollback) ---------------------------------------------------------------------

    @property
    def paused(self) -> str | None:
        """Why automatic sync is paused, or None."""
        text = self.read_state(gitstate.PAUSE_MARKER)
        return None if text is None else (text.strip() or "paused")

    def pause(self, reason: str) -> None:
        self.repo()
        self.write_state(gitstate.PAUSE_MARKER, reason + "\n")

    def resume(self) -> bool:
        return self.clear_state(gitstate.PAUSE_MARKER)

