"""Files synch keeps in `.git` (not configuration, never committed): the pause marker,
the sync journal.

Our own writes in `.git` go through directory descriptors opened without following symlinks,
so a planted symlink cannot redirect them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from synch.files import atomic_write
from synch.gitrun import HistoryError

PAUSE_MARKER = "synch-paused"  # inside .git: automatic sync paused by a rollback


@contextlib.contextmanager
def git_dir_fd(git_dir: Path) -> Iterator[int]:
    try:
        fd = os.open(git_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise HistoryError(f"{git_dir}: not a plain directory ({exc.strerror})") from exc
    try:
        yield fd
    finally:
        os.close(fd)


def write_state(git_dir: Path, name: str, text: str) -> None:
    with git_dir_fd(git_dir) as fd:
        atomic_write(Path(name), text, mode=0o600, dir_fd=fd)


def read_state(git_dir: Path, name: str) -> str | None:
    try:
        fd = os.open(git_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None  # no state (a .git that is no directory fails the next git call)
        raise HistoryError(f"{git_dir}: {exc.strerror}") from exc
    try:
        return read_at(fd, name)
    finally:
        os.close(fd)


def clear_state(git_dir: Path, name: str) -> bool:
    if not git_dir.is_dir():
        return False
    with git_dir_fd(git_dir) as fd:
        try:
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            return False
        os.fsync(fd)
    return True


def read_at(dir_fd: int, name: str) -> str | None:
    """The text of `name` in the directory `dir_fd` (a symlink is not followed), or None."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, encoding="utf-8") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read()
