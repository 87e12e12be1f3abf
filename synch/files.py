"""Atomic file replacement: a crash leaves the old file or the new one, never a mix."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def atomic_write(path: Path, text: str, mode: int = 0o640) -> None:
    """Write `text` to `path` via a temp file in the same directory, fsync, rename, fsync dir.

    An existing file keeps its mode and owner (Asterisk reads these as its own user). A new
    file gets `mode`, and, when we run as root, the owner of its directory: /etc/asterisk
    belongs to asterisk, and a root-owned 0640 file there is one Asterisk cannot read (its
    `#tryinclude` would skip it silently and the branch would have no users).
    Raises OSError (disk full, read-only...) with the temp file removed.
    """
    directory = path.parent
    try:
        st: os.stat_result | None = path.stat()
    except FileNotFoundError:
        st = None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, st.st_mode & 0o7777 if st else mode)
        owner = st if st is not None else directory.stat()
        if os.geteuid() == 0:
            os.chown(tmp, owner.st_uid, owner.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def owned_like_parent(path: Path) -> None:
    """As root, give `path` the owner of its directory (files we create for the asterisk user)."""
    if os.geteuid() != 0:
        return
    parent = path.parent.stat()
    st = path.lstat()
    if (st.st_uid, st.st_gid) != (parent.st_uid, parent.st_gid):
        os.chown(path, parent.st_uid, parent.st_gid, follow_symlinks=False)


def remove(path: Path) -> bool:
    """Delete `path` if it exists (and make that durable); True if it did."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True
