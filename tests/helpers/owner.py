"""Directories that belong to a user other than root, for tests of what root does in them.

The user is a bare uid/gid with no passwd entry (like the lab chroot's asterisk user seen from
the host): nothing else on the machine runs as it, so its processes are only the test's own,
and no account is created or left behind. Its directories live under a world-traversable base
in /tmp (pytest's own tmp_path is private to root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    base: Path  # world-traversable scratch directory, removed afterwards

    def make_dir(self, name: str, mode: int = 0o755) -> Path:
        path = self.base / name
        path.mkdir(mode=mode)
        os.chmod(path, mode)
        os.chown(path, self.uid, self.gid)
        return path

    def give(self, *paths: Path) -> None:
        """Hand `paths` (recursively) to the owner."""
        for path in paths:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)
            if path.is_dir() and not path.is_symlink():
                for parent, dirs, files in os.walk(path):
                    for name in (*dirs, *files):
                        os.chown(os.path.join(parent, name), self.uid, self.gid,
                                 follow_symlinks=False)

    @property
    def popen_kwargs(self) -> dict[str, Any]:
        """subprocess arguments that run a child as the owner (no supplementary groups)."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _unused_uid() -> int:
    """A uid in the dynamic range with no passwd entry, different for each test process."""
    start = 61000 + os.getpid() % 3000
    for uid in range(start, start + 1000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise RuntimeError("no free uid found")


@contextmanager
def foreign_owner() -> Iterator[Owner]:
    base = Path(tempfile.mkdtemp(prefix="synch-owner-", dir="/tmp"))
    os.chmod(base, 0o755)
    uid = _unused_uid()
    try:
        yield Owner(uid, uid, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
