"""The branch's config directory as a git repository: `git log` is the config history.

GitPython drives the real `git`. The daemon runs as the asterisk user while an operator may run
`synch history` as root: git's "dubious ownership" check would refuse one of them, so this
repository is declared safe for our own git calls only (environment, not global config).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import git

AUTHOR_NAME = "synch"
PAUSE_MARKER = "synch-paused"  # inside .git: automatic sync paused by a rollback


class HistoryError(Exception):
    pass


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

    # -- repository ---------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return (self.path / ".git").is_dir()

    def repo(self) -> git.Repo:
        """Open the repository, making it (with an initial commit of what is there) if needed."""
        if self._repo is None:
            if not self.exists:
                self._init()
            repo = git.Repo(self.path)
            repo.git.update_environment(
                GIT_CONFIG_COUNT="1",
                GIT_CONFIG_KEY_0="safe.directory",
                GIT_CONFIG_VALUE_0=str(self.path.resolve()),
            )
            self._repo = repo
        return self._repo

    def _init(self) -> None:
        repo = git.Repo.init(self.path)
        os.chmod(self.path / ".git", 0o700)  # the history holds passwords
        # synch's own lock and in-flight temp files are not configuration.
        (self.path / ".git" / "info").mkdir(exist_ok=True)
        (self.path / ".git" / "info" / "exclude").write_text(".synch.lock\n.*.tmp\n")
        with repo.config_writer() as cfg:
            cfg.set_value("user", "name", AUTHOR_NAME)
            cfg.set_value("user", "email", f"synch@{socket.gethostname()}")
        self._repo = None

    def _actor(self) -> git.Actor:
        return git.Actor(AUTHOR_NAME, f"synch@{socket.gethostname()}")

    # -- commits ------------------------------------------------------------------------------

    def commit_local_edits(self) -> str | None:
        """Commit whatever changed in the directory outside synch, as its own commit."""
        repo = self.repo()
        if not repo.is_dirty(untracked_files=True):
            return None
        repo.git.add("--all")
        if not repo.head.is_valid():
            subject = "initial: configuration found on the branch"
        else:
            changed = repo.git.diff("--cached", "--name-only").split()
            if not changed:
                return None
            subject = (
                "local edits: " + ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
            )
        return self._commit(subject, "")

    def commit_files(self, files: list[str], subject: str, body: str) -> str:
        repo = self.repo()
        repo.git.add("--", *files)
        return self._commit(subject, body)

    def _commit(self, subject: str, body: str) -> str:
        repo = self.repo()
        message = subject + ("\n\n" + body if body else "") + "\n"
        commit = repo.index.commit(
            message, author=self._actor(), committer=self._actor(), skip_hooks=True
        )
        return commit.hexsha

    # -- reading ------------------------------------------------------------------------------

    def head(self) -> str | None:
        if not self.exists:
            return None
        repo = self.repo()
        return repo.head.commit.hexsha if repo.head.is_valid() else None

    def history(self, files: list[str] | None = None, limit: int = 50) -> list[HistoryEntry]:
        if not self.exists:
            return []
        repo = self.repo()
        if not repo.head.is_valid():
            return []
        entries = []
        for commit in repo.iter_commits(paths=files or [], max_count=limit):
            entries.append(
                HistoryEntry(
                    commit=commit.hexsha,
                    date=commit.committed_datetime.strftime("%Y-%m-%d %H:%M:%S"),
                    author=str(commit.author.name),
                    subject=str(commit.summary),
                    files=tuple(str(f) for f in commit.stats.files),
                )
            )
        return entries

    def file_at(self, rev: str, name: str) -> str | None:
        """The text of `name` as of `rev`, or None if it did not exist then."""
        repo = self.repo()
        try:
            commit = repo.commit(rev)
        except (git.BadName, ValueError) as exc:
            raise HistoryError(f"unknown revision {rev!r}") from exc
        try:
            blob = commit.tree / name
        except KeyError:
            return None
        data: bytes = blob.data_stream.read()
        return data.decode("utf-8")

    def resolve(self, rev: str) -> str:
        try:
            return self.repo().commit(rev).hexsha
        except (git.BadName, ValueError) as exc:
            raise HistoryError(f"unknown revision {rev!r}") from exc

    # -- pause (rollback) ---------------------------------------------------------------------

    @property
    def paused(self) -> str | None:
        """Why automatic sync is paused, or None."""
        marker = self.path / ".git" / PAUSE_MARKER
        try:
            return marker.read_text().strip() or "paused"
        except FileNotFoundError:
            return None

    def pause(self, reason: str) -> None:
        (self.path / ".git" / PAUSE_MARKER).write_text(reason + "\n")

    def resume(self) -> bool:
        try:
            (self.path / ".git" / PAUSE_MARKER).unlink()
            return True
        except FileNotFoundError:
            return False
