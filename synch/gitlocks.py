"""Who may still be using one of git's lock files (`.git/index.lock` ...).

git writes no pid into its locks, and a lock does not always have an open descriptor: `git
commit` closes index.lock and keeps it while the operator's editor is open. So a lock counts
as in use while any live process has it open, or while a git process works in the repository
(its working directory is inside it, or its command line or GIT_* environment names it), or
while a git process of the lock's owner cannot be inspected. A lock whose owner's processes we
cannot see at all (another user's while we are not root: hidden by ProtectProc=invisible, or
permission denied) counts as in use: it is never removed.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

PROC = Path("/proc")


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def lock_user(lock: Path, repository: Path) -> str | None:
    """Why `lock` may be in use (for a message), or None: no live process can be using it.
    Raises FileNotFoundError when the lock is gone."""
    st = lock.lstat()
    me = os.geteuid()
    if me not in (0, st.st_uid):
        return f"{user_name(st.st_uid)}, whose processes synch cannot see"
    target = (st.st_dev, st.st_ino)
    top = os.path.realpath(repository)
    for entry in os.scandir(PROC):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            comm = (PROC / entry.name / "comm").read_text().strip()
            uids = _uids(pid)
        except OSError:
            continue  # gone, or not ours to see at all (then it is not the lock's owner's)
        try:
            if _has_open(pid, target):
                return f"{comm} (pid {pid}), which has it open"
            if comm.startswith("git") and _works_in(pid, top):
                return f"{comm} (pid {pid}), which works in {top}"
        except PermissionError:
            # A git of the lock's owner that we may not look into (not dumpable): perhaps the
            # one that made it. Other programs make no git locks, and hold one only open,
            # which every process we can inspect shows.
            if st.st_uid in uids and comm.startswith("git"):
                return f"{comm} (pid {pid}) of {user_name(st.st_uid)}, which synch cannot inspect"
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended while we looked
    return None


def _uids(pid: int) -> set[int]:
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(u) for u in line.split()[1:]}
    return set()


def _has_open(pid: int, target: tuple[int, int]) -> bool:
    fds = PROC / str(pid) / "fd"
    for fd in os.listdir(fds):
        try:
            st = os.stat(fds / fd)
        except PermissionError:
            raise  # not ours to inspect: the caller decides
        except OSError:
            continue  # closed meanwhile, or nothing stat can follow
        if (st.st_dev, st.st_ino) == target:
            return True
    return False


def _works_in(pid: int, top: str) -> bool:
    base = PROC / str(pid)
    cwd = os.readlink(base / "cwd").removesuffix(" (deleted)")
    if cwd == top or cwd.startswith(top.rstrip("/") + "/"):
        return True
    if top.encode() in (base / "cmdline").read_bytes():
        return True
    environ = (base / "environ").read_bytes().split(b"\0")
    return any(v.startswith(b"GIT_") and top.encode() in v for v in environ)
