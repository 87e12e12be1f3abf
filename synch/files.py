"""Atomic file replacement: a crash leaves the old file or the new one, never a mix."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path


def read_text(path: Path) -> str | None:
    """The file's text, or None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def atomic_write(path: Path, text: str, mode: int = 0o640, *, dir_fd: int | None = None) -> None:
    """Write `text` to `path` via a temp file in the same directory, fsync, rename, fsync dir.

    An existing file keeps its mode and owner (Asterisk reads these as its own user). A new
    file gets `mode`, and, when we run as root, the owner of its directory: /etc/asterisk
    belongs to asterisk, and a root-owned 0640 file there is one Asterisk cannot read (its
    `#tryinclude` would skip it silently and the branch would have no users).
    With `dir_fd`, `path` is a name in that directory (opened by the caller without following
    symlinks). The directory's owner controls its entries, so nothing here follows a symlink:
    a symlink at `path` is replaced, not written through, and the temp file is set up through
    its descriptor, never by name.
    Raises OSError (disk full, read-only...) with the temp file removed.
    """
    if dir_fd is not None:
        _write_at(dir_fd, path.name, text, mode)
        return
    try:
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _write_at(fd, path.name, text, mode)
        finally:
            os.close(fd)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, str(path)) from exc


def _write_at(dir_fd: int, name: str, text: str, mode: int) -> None:
    try:
        st: os.stat_result | None = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        st = None  # a symlink (or anything but a file) is replaced like a missing file
    owner = st if st is not None else os.fstat(dir_fd)
    tmp = f".{name}.{secrets.token_hex(4)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            if os.geteuid() == 0:
                os.fchown(fd, owner.st_uid, owner.st_gid)
            os.fchmod(fd, st.st_mode & 0o7777 if st else mode)
            os.fsync(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


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
