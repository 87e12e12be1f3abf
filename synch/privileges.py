"""The repository commands, run by root, run as the user that owns the config directory.

`/etc/asterisk` and its `.git` belong to the service user. Root working there would run git on
a repository that user controls, and read or write through symlinks that user can plant. So
`synch sync|history|rollback|resume`, started as root, switch the whole process to that user
once the configuration (which may be readable by root alone) has been read.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from synch.gitlocks import user_name
from synch.gitrun import HistoryError, identity, repository_owner


class PrivilegeError(Exception):
    """Root could not become the directory's owner; the message says what to do."""


def owner_to_become(directory: Path) -> int | None:
    """The user (not root) that owns `directory` and its `.git`, or, while the directory does
    not exist yet, the one that owns its nearest parent; None: root owns them."""
    path = directory.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    if path != directory.absolute():
        return path.stat().st_uid or None
    return repository_owner(path)


def become_owner(directory: Path) -> str | None:
    """As root, become the owner of `directory` (uid, gid and groups, for good); the user's
    name, or None when there is nothing to switch (not root, or root's own directory)."""
    if os.geteuid() != 0:
        return None
    try:
        uid = owner_to_become(directory)
    except HistoryError as exc:
        raise PrivilegeError(str(exc)) from exc
    if uid is None:
        return None
    name = user_name(uid)
    _load_lazy_parts()
    existing = directory if directory.exists() else directory.parent
    gid, groups = identity(uid, existing.stat().st_gid if existing.exists() else uid)
    try:
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise PrivilegeError(
            f"cannot switch to {name}, who owns {directory}: {exc.strerror}; "
            f"run the command as {name}"
        ) from exc
    if 0 in os.getresuid():
        raise PrivilegeError(f"still root after switching to {name}: refusing to go on")
    home = _home(uid)
    os.environ.update(HOME=home, USER=name, LOGNAME=name)
    return name


def _home(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return "/"


def _load_lazy_parts() -> None:
    """Load now what the commands would otherwise load on first use, while everything root can
    read is still readable (an interpreter or virtualenv that only root may read)."""
    import gevent

    "".encode("idna")  # host names, on the first connection
    gevent.get_hub().resolver  # noqa: B018 - gevent picks and imports its resolver on first use
