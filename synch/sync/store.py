"""The branch's side of a sync: the directory synch writes in, one writer at a time, each write
crash-safe and committed.

Crash safety: each file is replaced atomically (files.atomic_write) and committed by git itself.
Before the write, a journal (`.git/synch-pending`) records the new texts' hashes and the commit
message; it is removed only once the branch has reloaded (`reloaded()`). A process killed
anywhere in between leaves the old file or the new one, and the next writer finishes the job
(`recover()`): it commits a file that was written but not committed, with the message it was
meant to have, and the reload stays owed, which also retries a reload that failed (even across
restarts).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from synch.files import atomic_write, owned_like_parent, read_text
from synch.gitlog import ConfigHistory
from synch.sync.outcome import SyncFailed

log = logging.getLogger("synch.sync")

PENDING = "synch-pending"  # the journal, inside .git
LOCK_NAME = ".synch.lock"
LOCK_WAIT = 30.0


class BranchStore:
    """`directory` (localconfigspath) and its history; `owned` are the files synch writes."""

    def __init__(self, directory: Path, owned: tuple[str, ...]):
        self.directory = directory
        self.owned = owned
        self.history = ConfigHistory(directory)

    @property
    def reload_owed(self) -> bool:
        """A written file has not been reloaded yet (journal present)."""
        return self.history.read_state(PENDING) is not None

    def reloaded(self) -> None:
        self.history.clear_state(PENDING)

    def read(self, names: list[str] | dict[str, str]) -> dict[str, str | None]:
        """name → text of each file now (None: no such file)."""
        return {name: read_text(self.directory / name) for name in names}

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time across processes (daemon, `synch sync --force`, rollback)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_path = self.directory / LOCK_NAME
        try:
            # Never through a symlink: whoever owns the directory could plant one pointing at
            # a file that root (the CLI under sudo) would then create or chown.
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SyncFailed(f"{lock_path} is a symbolic link: remove it") from exc
            raise
        try:
            owned_like_parent(lock_path)
            deadline = time.monotonic() + LOCK_WAIT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() > deadline:
                        raise SyncFailed("another synch process holds the sync lock") from exc
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def prepare(self) -> list[str]:
        """Under the lock, before a write: finish what a killed writer left, and commit the
        operator's local edits as their own commit. Returns warnings (files git could not
        read, left out of the history)."""
        self.recover()
        self.history.commit_local_edits()
        return list(self.history.warnings)

    def write(self, files: dict[str, str], subject: str, body: str) -> str:
        """Write `files` (name → text) and commit them; the commit. Journal first (see the
        module's docstring); the reload is owed after."""
        digests = {name: _digest(text) for name, text in files.items()}
        journal = {"files": digests, "subject": subject, "body": body}
        self.history.write_state(PENDING, json.dumps(journal) + "\n")
        for name, text in files.items():
            if read_text(self.directory / name) != text:
                atomic_write(self.directory / name, text)
        return self.history.commit_files(list(files), subject, body)

    def read_overlay(self, name: str) -> str:
        """A file synch writes but does not commit (the failover file); "" when absent."""
        return read_text(self.directory / name) or ""

    def write_overlay(self, name: str, text: str) -> None:
        """Replace an uncommitted file of ours (kept out of git by the managed exclude block)."""
        atomic_write(self.directory / name, text)

    def files_at(self, rev: str) -> tuple[str, dict[str, str | None]]:
        """(the full commit id of `rev`, each owned file's text there, None where absent)."""
        full = self.history.resolve(rev)
        return full, {name: self.history.file_at(full, name) for name in self.owned}

    def recover(self) -> None:
        """Finish a write that was killed between the write and the commit."""
        self._remove_stale_temp_files()
        if self.history.exists:
            self.history.clear_stale_locks()
        raw = self.history.read_state(PENDING)
        if raw is None:
            return
        try:
            journal = json.loads(raw)
        except ValueError:
            journal = {}
        digests = journal.get("files") if isinstance(journal, dict) else None
        if not isinstance(digests, dict):
            return
        # Each file is whole (atomic rename); commit those the interrupted cycle had written.
        written = [
            name
            for name, digest in digests.items()
            if (text := read_text(self.directory / name)) is not None
            and digest == _digest(text)
            and self.history.is_dirty(name)
        ]
        if written:
            body = str(journal.get("body", ""))
            commit = self.history.commit_files(
                written,
                str(journal.get("subject", "sync: interrupted sync")),
                body + ("\n\n" if body else "") + "Committed by the next cycle: the sync that "
                "wrote it was interrupted before its commit.",
            )
            log.warning(
                "committed %s left uncommitted by an interrupted sync as %s",
                ", ".join(written),
                commit[:10],
            )

    def _remove_stale_temp_files(self) -> None:
        """Temp files of a write that was killed before its rename (we hold the lock: no
        other synch process is writing one now)."""
        leftovers = [
            *(p for name in self.owned for p in self.directory.glob(f".{name}.*.tmp")),
            *self.history.git_dir.glob(f".{PENDING}.*.tmp"),
        ]
        for path in leftovers:
            path.unlink(missing_ok=True)
            log.info("removed %s left by an interrupted sync", path)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
