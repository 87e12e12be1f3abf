"""Running git in the config repository without running anything its owner put there.

The repository belongs to the service user (asterisk), and git runs commands named in a
repository's configuration (core.fsmonitor, filter and diff drivers, hooks, the pager ...).
So whoever owns it must never get a command run by synch, least of all as root:

- every git call ignores the system and global configuration and overrides each setting that
  runs a command (SAFE_SETTINGS), including the per-name driver keys found in the repository's
  own configuration (reading configuration runs nothing);
- git never runs as root in another user's repository: as root, git runs as the repository's
  owner (the CLI switches its whole process to that user first; this is the backstop for a
  daemon started as root). There is no `safe.directory`: the ownership check is ours, and git
  is given the repository explicitly (GIT_DIR, GIT_WORK_TREE), so it discovers nothing itself.
"""

from __future__ import annotations

import os
import pwd
import socket
import stat
from pathlib import Path
from typing import Any

import git

from synch.gitlocks import user_name

AUTHOR_NAME = "synch"

# Every setting that makes git run a command, or reach beyond the repository, neutralised.
SAFE_SETTINGS = {
    "core.hooksPath": "/dev/null",
    "core.fsmonitor": "false",
    "core.untrackedCache": "false",
    "core.pager": "cat",
    "core.editor": ":",
    "core.askPass": "",
    "core.attributesFile": "/dev/null",
    "core.excludesFile": "/dev/null",
    "credential.helper": "",
    "diff.external": "",
    "diff.ignoreSubmodules": "all",
    "status.submoduleSummary": "false",
    "submodule.recurse": "false",
    "protocol.allow": "never",
    "commit.gpgSign": "false",
    "tag.gpgSign": "false",
    "log.showSignature": "false",
    "log.showRoot": "true",
    "gc.auto": "0",  # no background gc racing with a kill; history stays small
    "maintenance.auto": "false",
    "safe.bareRepository": "explicit",
}
# Drivers are named in .gitattributes and defined per name in the configuration.
DRIVER_SETTINGS = {
    "filter": {"clean": "", "smudge": "", "process": "", "required": "false"},
    "diff": {"command": "", "textconv": ""},
    "merge": {"driver": ""},
}
# The commands we run that read or write file contents through attributes (filters, textconv).
DRIVER_COMMANDS = frozenset({"status", "add", "commit", "diff"})
SAFE_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_PAGER": "cat",
    "GIT_EDITOR": ":",
    "GIT_SEQUENCE_EDITOR": ":",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_OPTIONAL_LOCKS": "0",  # `git status` never takes index.lock behind an operator's back
    "GIT_LITERAL_PATHSPECS": "1",  # a file name is a file name, never a pattern
    "GIT_NO_REPLACE_OBJECTS": "1",
}


class HistoryError(Exception):
    """A git operation failed; the message says which and why."""


def repository_owner(path: Path) -> int | None:
    """The one user other than root that owns `path` or its `.git`; None when root owns both
    (or nothing exists yet). HistoryError when `.git` is not a plain directory or two different
    users own them."""
    owners = set()
    try:
        owners.add(path.stat().st_uid)
    except FileNotFoundError:
        return None
    git_dir = path / ".git"
    try:
        st = git_dir.lstat()
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISDIR(st.st_mode):
            raise HistoryError(
                f"{git_dir} is not a directory (a symlink or a git file): synch keeps the "
                "history in a plain .git directory; move it away"
            )
        owners.add(st.st_uid)
    owners.discard(0)
    if len(owners) > 1:
        names = " and ".join(sorted(user_name(u) for u in owners))
        raise HistoryError(
            f"{path} and its .git belong to different users ({names}): give both to the "
            f"service user (chown -R), then try again"
        )
    return owners.pop() if owners else None


def identity(uid: int, fallback_gid: int) -> tuple[int, list[int]]:
    """The primary and supplementary groups of `uid` (a uid without an account: `fallback_gid`)."""
    try:
        account = pwd.getpwuid(uid)
    except KeyError:
        return fallback_gid, [fallback_gid]
    return account.pw_gid, os.getgrouplist(account.pw_name, account.pw_gid)


class GitRunner:
    """git in one repository (`path`, its `.git`), with the environment above, as its owner.

    `start()` decides who runs git; the driver overrides need the repository to exist, so its
    opener calls `refresh_drivers()` once it does."""

    def __init__(self, path: Path):
        self.path = path
        self.cmd: git.Git | None = None
        self.env: dict[str, str] = {}
        self._run_as: dict[str, Any] = {}

    @property
    def git_dir(self) -> Path:
        return self.path / ".git"

    def start(self) -> git.Git:
        self._run_as = self._identity()
        self.cmd = git.Git(self.path)
        self.env = self._environment({})
        return self.cmd

    def stop(self) -> None:
        cmd, self.cmd = self.cmd, None
        if cmd is not None:
            cmd.clear_cache()

    def _identity(self) -> dict[str, Any]:
        """How git is run: as the repository's owner when we are root and it is another user's;
        refused when we are neither root nor its owner."""
        owner = repository_owner(self.path)
        if owner is None or owner == os.geteuid():
            return {}
        if os.geteuid() != 0:
            name = user_name(owner)
            raise HistoryError(
                f"{self.path} belongs to {name}: run synch as {name} "
                f"(or as root, which runs it as {name})"
            )
        gid, groups = identity(owner, self.path.stat().st_gid)
        return {"user": owner, "group": gid, "extra_groups": groups}

    def _environment(self, overrides: dict[str, str]) -> dict[str, str]:
        email = f"synch@{socket.gethostname()}"
        settings = {**SAFE_SETTINGS, **overrides}
        env = {
            **SAFE_ENV,
            "GIT_DIR": str(self.git_dir.absolute()),
            "GIT_WORK_TREE": str(self.path.absolute()),
            "GIT_AUTHOR_NAME": AUTHOR_NAME,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": AUTHOR_NAME,
            "GIT_COMMITTER_EMAIL": email,
            "GIT_CONFIG_COUNT": str(len(settings)),
        }
        for i, (key, value) in enumerate(settings.items()):
            env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
        return env

    def _driver_overrides(self) -> dict[str, str]:
        """Empty commands for every filter, diff and merge driver and `pager.<cmd>` that the
        repository's configuration (includes too) defines."""
        out = self.exec(["config", "--list", "--name-only", "-z"])[1]
        overrides: dict[str, str] = {}
        for raw in out.split(b"\0"):
            key = os.fsdecode(raw)
            section, _, rest = key.partition(".")
            name, _, _variable = rest.rpartition(".")
            if section in DRIVER_SETTINGS and name:
                for variable, value in DRIVER_SETTINGS[section].items():
                    overrides[f"{section}.{name}.{variable}"] = value
            elif section == "pager" and rest:
                overrides[key] = "false"
        return overrides

    def refresh_drivers(self) -> None:
        self.env = self._environment(self._driver_overrides())

    def exec(
        self, args: list[str], *, check: bool = True, env: dict[str, str] | None = None
    ) -> tuple[int, bytes, str]:
        cmd = self.cmd
        assert cmd is not None
        try:
            status, out, err = cmd.execute(
                ["git", *args],
                with_extended_output=True,
                with_exceptions=False,
                stdout_as_string=False,
                strip_newline_in_stdout=False,
                env=self.env if env is None else env,
                **self._run_as,
            )
        except (git.GitError, OSError) as exc:
            raise HistoryError(f"git {args[0]} in {self.path}: {_git_text(exc)}") from exc
        assert isinstance(out, bytes)
        if check and status != 0:
            raise HistoryError(
                f"git {args[0]} in {self.path}: {clean_stderr(err) or f'exit {status}'}"
            )
        return status, out, err

    def run(self, args: list[str], *, check: bool = True) -> tuple[int, bytes, str]:
        """Run git. Before a command that may run a driver, the driver overrides are read
        afresh: the configuration may have changed since the repository was opened."""
        if args[0] in DRIVER_COMMANDS:
            self.refresh_drivers()
        return self.exec(args, check=check)


def clean_stderr(stderr: str) -> str:
    return " ".join(stderr.replace("stderr:", "").split()).strip("' ")


def _git_text(exc: BaseException) -> str:
    """git's own words (stderr) rather than GitPython's multi-line repr."""
    stderr = getattr(exc, "stderr", "") or ""
    return clean_stderr(str(stderr)) or " ".join(str(exc).split())

