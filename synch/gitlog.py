"""The branch's config directory as a git repository: `git log` is the config history.

GitPython drives the real `git`, and commits are made by `git commit` itself: git writes every
object, the index and the branch ref through a lock file and a rename, so a process killed at
any moment leaves a repository that `git fsck` accepts.

The daemon runs as the asterisk user while an operator may run `synch history` as root: git's
"dubious ownership" check would refuse one of them, so this repository is declared safe for
our own git calls only (environment, not global config). Likewise our author, no hooks and no
signing come from the environment, so a repository made by someone else works the same. When
we run as root, whatever we create in `.git` is given the directory's owner, or the daemon
(as asterisk) could no longer commit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import git

from synch.files import atomic_write, owned_like_parent, read_text, remove

log = logging.getLogger("synch.git")

AUTHOR_NAME = "synch"
PAUSE_MARKER = "synch-paused"  # inside .git: automatic sync paused by a rollback
EXCLUDES = (".synch.lock", ".*.tmp")  # our lock and in-flight temp files are not configuration
# git's own lock files; one left by a killed git would block every later commit.
GIT_LOCKS = ("index.lock", "HEAD.lock", "config.lock", "packed-refs.lock")
STALE_LOCK_SECONDS = 5.0


class HistoryError(Exception):
    """A git operation failed; the message says which and why."""


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
        self._repo: git.Repo | None = None

    @property
    def git_dir(self) -> Path:
        return self.path / ".git"

    # -- repository ---------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self.git_dir.is_dir()

    def repo(self) -> git.Repo:
        """Open the repository, making it (mode 0700, our excludes) if needed."""
        if self._repo is None:
            try:
                self._repo = self._open()
            except git.GitError as exc:
                raise HistoryError(f"git repository in {self.path}: {_git_text(exc)}") from exc
        return self._repo

    def _open(self) -> git.Repo:
        if not self.exists:
            git.Repo.init(self.path).close()
        try:
            repo = git.Repo(self.path)
        except git.InvalidGitRepositoryError:
            # A `git init` killed half-way: running it again fills in what is missing.
            git.Repo.init(self.path).close()
            repo = git.Repo(self.path)
        email = f"synch@{socket.gethostname()}"
        settings = {
            "safe.directory": str(self.path.resolve()),
            "core.hooksPath": "/dev/null",
            "commit.gpgSign": "false",
            "gc.auto": "0",  # no background gc racing with a kill; history stays small
        }
        env: dict[str, str] = {"GIT_CONFIG_COUNT": str(len(settings))}
        for i, (key, value) in enumerate(settings.items()):
            env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
        env.update(
            GIT_AUTHOR_NAME=AUTHOR_NAME, GIT_AUTHOR_EMAIL=email,
            GIT_COMMITTER_NAME=AUTHOR_NAME, GIT_COMMITTER_EMAIL=email,
        )
        repo.git.update_environment(**env)
        self._secure()
        return repo

    def _secure(self) -> None:
        """`.git` mode 0700 (the history holds passwords) and our excludes, every time we open
        it: a repository made by hand, or by a killed `git init`, gets them too."""
        if self.git_dir.stat().st_mode & 0o777 != 0o700:
            os.chmod(self.git_dir, 0o700)
        exclude = self.git_dir / "info" / "exclude"
        current = read_text(exclude) or ""
        missing = [p for p in EXCLUDES if p not in current.splitlines()]
        if missing:
            exclude.parent.mkdir(exist_ok=True)
            text = current + ("" if not current or current.endswith("\n") else "\n")
            atomic_write(exclude, text + "".join(f"{p}\n" for p in missing), mode=0o644)
        self.fix_ownership()

    def close(self) -> None:
        """End git's helper processes (cat-file); the repository reopens on next use."""
        repo, self._repo = self._repo, None
        if repo is not None:
            repo.close()

    def clear_stale_locks(self) -> list[str]:
        """Remove git lock files left by a killed git. Call only while holding synch's own lock
        (no other synch process runs git then); a lock still in use by an orphaned git child
        vanishes within milliseconds, so only one older than STALE_LOCK_SECONDS is removed."""
        removed = []
        candidates = [self.git_dir / name for name in GIT_LOCKS]
        heads = self.git_dir / "refs" / "heads"
        if heads.is_dir():
            candidates.extend(heads.rglob("*.lock"))
        for lock in candidates:
            while True:
                try:
                    age = time.time() - lock.stat().st_mtime
                except FileNotFoundError:
                    break
                if age >= STALE_LOCK_SECONDS:
                    with contextlib.suppress(FileNotFoundError):
                        lock.unlink()
                        removed.append(str(lock.relative_to(self.path)))
                        log.warning("removed stale git lock %s", lock)
                    break
                time.sleep(0.05)
        return removed

    def fix_ownership(self) -> None:
        """As root, give everything in `.git` the owner of the config directory."""
        if os.geteuid() != 0 or not self.exists:
            return
        want = self.path.stat()
        if want.st_uid == 0 and want.st_gid == 0:
            return
        for parent, dirs, files in os.walk(self.git_dir):
            for name in (".", *dirs, *files):
                entry = os.path.join(parent, name)
                st = os.lstat(entry)
                if (st.st_uid, st.st_gid) != (want.st_uid, want.st_gid):
                    os.chown(entry, want.st_uid, want.st_gid, follow_symlinks=False)

    def _git(self, *args: str) -> str:
        try:
            out: str = self.repo().git.execute(["git", *args])
            return out
        except git.GitError as exc:
            raise HistoryError(f"git {args[0]} in {self.path}: {_git_text(exc)}") from exc

    # -- commits ------------------------------------------------------------------------------

    def commit_local_edits(self) -> str | None:
        """Commit whatever changed in the directory outside synch, as its own commit."""
        if not self._git("status", "--porcelain", "--untracked-files=all").strip():
            return None
        self._git("add", "--all")
        if self.head() is None:
            subject = "initial: configuration found on the branch"
        else:
            changed = self._git("diff", "--cached", "--name-only", "-z").split("\0")
            changed = [name for name in changed if name]
            if not changed:
                return None
            subject = (
                "local edits: " + ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
            )
        return self._commit(subject, "", [])

    def is_dirty(self, name: str) -> bool:
        """True if `name` differs from the last commit (or is not committed at all)."""
        return bool(self._git("status", "--porcelain", "--untracked-files=all", "--", name))

    def commit_files(self, files: list[str], subject: str, body: str) -> str:
        """Commit exactly `files` (nothing else that is staged); HEAD if they are unchanged."""
        self._git("add", "--all", "--", *files)
        if self.head() is not None and not self._git(
            "diff", "--cached", "--name-only", "--", *files
        ):
            head = self.head()
            assert head is not None
            return head
        return self._commit(subject, body, files)

    def _commit(self, subject: str, body: str, files: list[str]) -> str:
        message = ["-m", subject] + (["-m", body] if body else [])
        paths = ["--only", "--", *files] if files else []
        self._git("commit", "-q", "--no-verify", "--cleanup=verbatim", *message, *paths)
        self.fix_ownership()
        head = self.head()
        assert head is not None
        return head

    # -- reading ------------------------------------------------------------------------------

    def head(self) -> str | None:
        if not self.exists:
            return None
        try:
            return self.repo().git.execute(["git", "rev-parse", "--verify", "-q", "HEAD"]).strip()
        except git.GitCommandError:
            return None  # no commit yet

    def history(self, files: list[str] | None = None, limit: int = 50) -> list[HistoryEntry]:
        if not self.exists or self.head() is None:
            return []
        entries = []
        try:
            for commit in self.repo().iter_commits(paths=files or [], max_count=limit):
                entries.append(
                    HistoryEntry(
                        commit=commit.hexsha,
                        date=commit.committed_datetime.strftime("%Y-%m-%d %H:%M:%S"),
                        author=str(commit.author.name),
                        subject=str(commit.summary),
                        files=tuple(str(f) for f in commit.stats.files),
                    )
                )
        except git.GitError as exc:
            raise HistoryError(f"git log in {self.path}: {_git_text(exc)}") from exc
        finally:
            self.close()
        return entries

    def file_at(self, rev: str, name: str) -> str | None:
        """The text of `name` as of `rev`, or None if it did not exist then."""
        commit = self.resolve(rev)
        try:
            data = self.repo().git.execute(
                ["git", "cat-file", "blob", f"{commit}:{name}"], strip_newline_in_stdout=False
            )
        except git.GitCommandError:
            return None
        return str(data)

    def resolve(self, rev: str) -> str:
        """The full commit id of `rev` (a hash, a prefix, HEAD~2 ...)."""
        if not rev or rev.startswith("-"):
            raise HistoryError(f"unknown revision {rev!r}")
        try:
            return self.repo().git.execute(
                ["git", "rev-parse", "--verify", "-q", f"{rev}^{{commit}}"]
            ).strip()
        except git.GitCommandError as exc:
            raise HistoryError(f"unknown revision {rev!r}") from exc

    # -- state kept in .git (not configuration, never committed) ------------------------------

    def state_file(self, name: str) -> Path:
        return self.git_dir / name

    def write_state(self, name: str, text: str) -> None:
        path = self.state_file(name)
        atomic_write(path, text, mode=0o600)
        owned_like_parent(path)

    def read_state(self, name: str) -> str | None:
        try:
            return read_text(self.state_file(name))
        except NotADirectoryError:
            return None

    def clear_state(self, name: str) -> bool:
        return remove(self.state_file(name))

    # -- pause (rollback) ---------------------------------------------------------------------

    @property
    def paused(self) -> str | None:
        """Why automatic sync is paused, or None."""
        text = self.read_state(PAUSE_MARKER)
        return None if text is None else (text.strip() or "paused")

    def pause(self, reason: str) -> None:
        self.write_state(PAUSE_MARKER, reason + "\n")

    def resume(self) -> bool:
        return self.clear_state(PAUSE_MARKER)


def _git_text(exc: BaseException) -> str:
    """git's own words (stderr) rather than GitPython's multi-line repr."""
    stderr = getattr(exc, "stderr", "") or ""
    text = " ".join(str(stderr).replace("stderr:", "").split()).strip("' ")
    return text or " ".join(str(exc).split())
