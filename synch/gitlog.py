"""The branch's config directory as a git repository: `git log` is the config history.

GitPython drives the real `git`, and commits are made by `git commit` itself: git writes every
object, the index and the branch ref through a lock file and a rename, so a process killed at
any moment leaves a repository that `git fsck` accepts.

The repository belongs to the service user (asterisk), and git runs commands named in a
repository's configuration (core.fsmonitor, filter and diff drivers, hooks, the pager ...).
So whoever owns it must never get a command run by synch, least of all as root:

- every git call ignores the system and global configuration and overrides each setting that
  runs a command (SAFE_SETTINGS), including the per-name driver keys found in the repository's
  own configuration (reading configuration runs nothing);
- git never runs as root in another user's repository: as root, git runs as the repository's
  owner (the CLI switches its whole process to that user first; this is the backstop for a
  daemon started as root). There is no `safe.directory`: the ownership check is ours, and git
  is given the repository explicitly (GIT_DIR, GIT_WORK_TREE), so it discovers nothing itself;
- our own writes in `.git` go through directory descriptors opened without following
  symlinks, so a planted symlink cannot redirect them.

What is committed: what synch writes, and the local edits git can read. Private keys never
(a managed block in `.git/info/exclude`, which the operator's own git honours too); a file git
cannot read is left out with a warning instead of failing the sync.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import re
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git

from synch.files import atomic_write
from synch.gitlocks import lock_user, user_name

log = logging.getLogger("synch.git")

AUTHOR_NAME = "synch"
PAUSE_MARKER = "synch-paused"  # inside .git: automatic sync paused by a rollback

# The managed block of .git/info/exclude. Our lock and in-flight temp files are not
# configuration; private keys must never enter a history that is copied around with backups.
OWN_FILES = (".synch.lock", ".*.tmp")
PRIVATE_KEYS = (
    "*.key", "*.pem", "*.p12", "*.pfx", "*.jks", "*.keystore",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "keys/", "private/",
)
EXCLUDE_BEGIN = "# >>> synch: managed block, rewritten by synch (add your own lines outside it)"
EXCLUDE_END = "# <<< synch"

# git's own lock files; one left by a killed git would block every later commit.
GIT_LOCKS = ("index.lock", "HEAD.lock", "config.lock", "packed-refs.lock")
GIT_LOCK_WAIT = 10.0  # seconds a lock in use may take to go away before a sync gives up
ADD_BATCH = 500  # paths per `git add`, well within any command line's length

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
# What `git status` and `git add` say about a path they could not read.
_UNREADABLE = (
    re.compile(r"^warning: could not open directory '(?P<path>.+)': (?P<why>.+)$"),
    re.compile(r"^error: open\(\"(?P<path>.+)\"\): (?P<why>.+)$"),
    re.compile(r"^(?P<path>[^:]+): (?P<why>Permission denied)$"),
)


class HistoryError(Exception):
    """A git operation failed; the message says which and why."""


@dataclass(frozen=True)
class HistoryEntry:
    commit: str
    date: str
    author: str
    subject: str
    files: tuple[str, ...]


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


class ConfigHistory:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._cmd: git.Git | None = None
        self._env: dict[str, str] = {}
        self._run_as: dict[str, Any] = {}
        self.warnings: list[str] = []  # what the last commit_local_edits() left out, and why

    @property
    def git_dir(self) -> Path:
        return self.path / ".git"

    # -- repository ---------------------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self.git_dir.is_dir()

    def repo(self) -> git.Git:
        """Open the repository, making it (mode 0700, our excludes) if needed."""
        if self._cmd is None:
            self._run_as = self._identity()
            self._cmd = git.Git(self.path)
            self._env = self._environment({})
            try:
                self._open()
            except BaseException:
                self._cmd = None
                raise
        return self._cmd

    def _open(self) -> None:
        if not all((self.git_dir / p).exists() for p in ("HEAD", "objects", "refs")):
            # Not made yet, or a `git init` killed half-way: running it again fills in the rest.
            env = {k: v for k, v in self._env.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")}
            self._exec(["init", "-q", "."], env=env)
        self._secure()
        self._env = self._environment(self._driver_overrides())

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
        out = self._exec(["config", "--list", "--name-only", "-z"])[1]
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

    def _secure(self) -> None:
        """`.git` mode 0700 (the history holds passwords) and our excludes, every time we open
        it: a repository made by hand, or by a killed `git init`, gets them too."""
        with self._git_dir_fd() as fd:
            if stat.S_IMODE(os.fstat(fd).st_mode) != 0o700:
                os.fchmod(fd, 0o700)
            with contextlib.suppress(FileExistsError):
                os.mkdir("info", 0o755, dir_fd=fd)
            info = os.open("info", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            try:
                current = _read_at(info, "exclude") or ""
                wanted = _with_managed_block(current)
                if wanted != current:
                    atomic_write(Path("exclude"), wanted, mode=0o644, dir_fd=info)
            finally:
                os.close(info)

    @contextlib.contextmanager
    def _git_dir_fd(self) -> Iterator[int]:
        try:
            fd = os.open(self.git_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise HistoryError(f"{self.git_dir}: not a plain directory ({exc.strerror})") from exc
        try:
            yield fd
        finally:
            os.close(fd)

    def close(self) -> None:
        """Forget the open repository; it reopens (and rereads its configuration) on next use."""
        cmd, self._cmd = self._cmd, None
        if cmd is not None:
            cmd.clear_cache()

    def clear_stale_locks(self) -> list[str]:
        """Remove git lock files left by a dead git. Call only while holding synch's own lock
        (no other synch process runs git then). A lock that may still be in use (see
        synch.gitlocks) is waited for up to GIT_LOCK_WAIT seconds, then left alone:
        HistoryError says which lock and what to do."""
        removed = []
        candidates = [self.git_dir / name for name in GIT_LOCKS]
        heads = self.git_dir / "refs" / "heads"
        if heads.is_dir():
            candidates.extend(heads.rglob("*.lock"))
        for lock in candidates:
            deadline = time.monotonic() + GIT_LOCK_WAIT
            while True:
                try:
                    user = lock_user(lock, self.path)
                except FileNotFoundError:
                    break  # its git finished
                if user is None:
                    with contextlib.suppress(FileNotFoundError):
                        lock.unlink()
                        removed.append(str(lock.relative_to(self.path)))
                        log.warning("removed git lock %s left by a git that is gone", lock)
                    break
                if time.monotonic() >= deadline:
                    raise HistoryError(
                        f"git's lock {lock} may be in use by {user}; synch waited "
                        f"{GIT_LOCK_WAIT:g} s and left it in place. If that git is still "
                        f"working, let it finish (or end it); if no git is running in "
                        f"{self.path}, remove {lock}. Then sync again."
                    )
                time.sleep(0.1)
        return removed

    # -- running git --------------------------------------------------------------------------

    def _exec(
        self, args: list[str], *, check: bool = True, env: dict[str, str] | None = None
    ) -> tuple[int, bytes, str]:
        cmd = self._cmd
        assert cmd is not None
        try:
            status, out, err = cmd.execute(
                ["git", *args],
                with_extended_output=True,
                with_exceptions=False,
                stdout_as_string=False,
                strip_newline_in_stdout=False,
                env=self._env if env is None else env,
                **self._run_as,
            )
        except (git.GitError, OSError) as exc:
            raise HistoryError(f"git {args[0]} in {self.path}: {_git_text(exc)}") from exc
        assert isinstance(out, bytes)
        if check and status != 0:
            raise HistoryError(f"git {args[0]} in {self.path}: {_clean(err) or f'exit {status}'}")
        return status, out, err

    def _git(self, *args: str, check: bool = True) -> tuple[int, bytes, str]:
        """Run git. Before a command that may run a driver, the driver overrides are read
        afresh: the configuration may have changed since the repository was opened."""
        self.repo()
        if args[0] in DRIVER_COMMANDS:
            self._env = self._environment(self._driver_overrides())
        return self._exec(list(args), check=check)

    def _text(self, *args: str) -> str:
        return os.fsdecode(self._git(*args)[1])

    # -- commits ------------------------------------------------------------------------------

    def _status(self, *paths: str) -> tuple[list[tuple[str, str]], str]:
        """(XY code, path) of every change, and git's stderr (unreadable directories)."""
        _, out, err = self._git(
            "status", "--porcelain", "-z", "--untracked-files=all", "--ignore-submodules=all",
            "--no-renames", *(("--", *paths) if paths else ()),
        )
        entries = [
            (item[:2], item[3:]) for item in os.fsdecode(out).split("\0") if len(item) > 3
        ]
        return entries, err

    def commit_local_edits(self) -> str | None:
        """Commit whatever changed in the directory outside synch, as its own commit. A file
        git cannot read is left out (see `warnings`); ignored files (keys) leave the history."""
        self.warnings = []
        self._untrack_ignored()
        changed, err = self._status()
        unreadable = _unreadable(err)
        pending = [p for xy, p in changed if xy == "??" or xy[1] != " "]
        reasons: dict[str, str] = {}
        for start in range(0, len(pending), ADD_BATCH):
            status, _, err = self._git("add", "--all", "--ignore-errors", "--",
                                       *pending[start:start + ADD_BATCH], check=False)
            if status != 0:
                if "fatal:" in err or status != 1:
                    raise HistoryError(f"git add in {self.path}: {_clean(err)}")
                reasons.update(_unreadable(err))
        if reasons:  # what is still not staged, and git named in its errors, is left out
            left = {p for xy, p in self._status()[0] if xy == "??" or xy[1] != " "}
            unreadable.update({p: why for p, why in reasons.items() if p in left})
        self.warnings = [
            f"not committed to the history: {p} (cannot read it: {why})"
            for p, why in sorted(unreadable.items())
        ]
        for warning in self.warnings:
            log.debug("%s", warning)
        staged = [n for n in self._text("diff", "--cached", "--name-only", "--no-renames",
                                        "-z").split("\0") if n]
        if not staged:
            return None
        if self.head() is None:
            subject = "initial: configuration found on the branch"
        else:
            subject = "local edits: " + ", ".join(staged[:8]) + (" ..." if len(staged) > 8 else "")
        return self._commit(subject, "", [])

    def _untrack_ignored(self) -> None:
        """Files that the ignore rules now exclude (keys committed by an older version) leave
        the index: the next commit removes them from the history's tip, not from the disk."""
        if self.head() is None:
            return
        names = [n for n in self._text("ls-files", "-z", "--cached", "--ignored",
                                       "--exclude-standard").split("\0") if n]
        if names:
            self._git("rm", "--cached", "-q", "--ignore-unmatch", "--", *names)
            log.warning("no longer kept in the history (ignored): %s", ", ".join(names))

    def is_dirty(self, name: str) -> bool:
        """True if `name` differs from the last commit (or is not committed at all)."""
        return bool(self._status(name)[0])

    def commit_files(self, files: list[str], subject: str, body: str) -> str:
        """Commit exactly `files` (nothing else that is staged); HEAD if they are unchanged."""
        self._git("add", "--all", "--", *files)
        head = self.head()
        if head is not None and not self._text("diff", "--cached", "--name-only", "--", *files):
            return head
        return self._commit(subject, body, files)

    def _commit(self, subject: str, body: str, files: list[str]) -> str:
        message = ["-m", subject] + (["-m", body] if body else [])
        paths = ["--only", "--", *files] if files else []
        self._git("commit", "-q", "--no-verify", "--no-gpg-sign", "--cleanup=verbatim",
                  *message, *paths)
        head = self.head()
        assert head is not None
        return head

    # -- reading ------------------------------------------------------------------------------

    def head(self) -> str | None:
        if not self.exists:
            return None
        status, out, _ = self._git("rev-parse", "--verify", "-q", "HEAD", check=False)
        return out.decode().strip() if status == 0 else None  # no commit yet

    def history(self, files: list[str] | None = None, limit: int = 50) -> list[HistoryEntry]:
        if not self.exists or self.head() is None:
            return []
        try:
            out = self._git(
                "log", "-z", f"--max-count={limit}", "--name-only", "--diff-merges=first-parent",
                "--no-textconv", "--no-ext-diff", "--no-color", "--no-notes",
                "--format=%x1e%H%x1f%cd%x1f%an%x1f%s", "--date=format:%Y-%m-%d %H:%M:%S",
                *(("--full-diff", "--", *files) if files else ()),
            )[1]
        finally:
            self.close()
        entries = []
        for record in out.split(b"\x1e")[1:]:
            header, _, names = record.partition(b"\0")
            commit, date, author, subject = os.fsdecode(header).split("\x1f", 3)
            files_ = tuple(os.fsdecode(n) for n in names.lstrip(b"\n").split(b"\0") if n)
            entries.append(HistoryEntry(commit, date, author, subject, files_))
        return entries

    def file_at(self, rev: str, name: str) -> str | None:
        """The text of `name` as of `rev`, or None if it did not exist then."""
        commit = self.resolve(rev)
        status, out, _ = self._git("cat-file", "blob", f"{commit}:{name}", check=False)
        if status != 0:
            return None
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HistoryError(f"{name} as of {rev} is not UTF-8 text") from exc

    def resolve(self, rev: str) -> str:
        """The full commit id of `rev` (a hash, a prefix, HEAD~2 ...)."""
        if not rev or rev.startswith("-"):
            raise HistoryError(f"unknown revision {rev!r}")
        status, out, _ = self._git("rev-parse", "--verify", "-q", f"{rev}^{{commit}}",
                                   check=False)
        if status != 0:
            raise HistoryError(f"unknown revision {rev!r}")
        return out.decode().strip()

    # -- state kept in .git (not configuration, never committed) ------------------------------

    def state_file(self, name: str) -> Path:
        return self.git_dir / name

    def write_state(self, name: str, text: str) -> None:
        with self._git_dir_fd() as fd:
            atomic_write(Path(name), text, mode=0o600, dir_fd=fd)

    def read_state(self, name: str) -> str | None:
        try:
            fd = os.open(self.git_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                return None  # no state (a .git that is no directory fails the next git call)
            raise HistoryError(f"{self.git_dir}: {exc.strerror}") from exc
        try:
            return _read_at(fd, name)
        finally:
            os.close(fd)

    def clear_state(self, name: str) -> bool:
        if not self.exists:
            return False
        with self._git_dir_fd() as fd:
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                return False
            os.fsync(fd)
        return True

    # -- pause (rollback) ---------------------------------------------------------------------

    @property
    def paused(self) -> str | None:
        """Why automatic sync is paused, or None."""
        text = self.read_state(PAUSE_MARKER)
        return None if text is None else (text.strip() or "paused")

    def pause(self, reason: str) -> None:
        self.repo()
        self.write_state(PAUSE_MARKER, reason + "\n")

    def resume(self) -> bool:
        return self.clear_state(PAUSE_MARKER)


def _read_at(dir_fd: int, name: str) -> str | None:
    """The text of `name` in the directory `dir_fd` (a symlink is not followed), or None."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, encoding="utf-8") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read()


def _with_managed_block(current: str) -> str:
    """`current` (the operator's lines kept, in order) with our block at the end."""
    ours = (*OWN_FILES, *PRIVATE_KEYS)
    kept, inside = [], False
    for line in current.splitlines():
        if line == EXCLUDE_BEGIN:
            inside = True
        elif line == EXCLUDE_END:
            inside = False
        elif not inside and line not in ours:  # a bare copy: what older versions appended
            kept.append(line)
    block = [EXCLUDE_BEGIN, *ours, EXCLUDE_END]
    return "".join(f"{line}\n" for line in (*kept, *block))


def _unreadable(stderr: str) -> dict[str, str]:
    """Path → reason, for each path git reported it could not read."""
    found = {}
    for line in stderr.splitlines():
        for pattern in _UNREADABLE:
            match = pattern.match(line.strip())
            if match:
                found[match["path"]] = match["why"]
                break
    return found


def _clean(stderr: str) -> str:
    return " ".join(stderr.replace("stderr:", "").split()).strip("' ")


def _git_text(exc: BaseException) -> str:
    """git's own words (stderr) rather than GitPython's multi-line repr."""
    stderr = getattr(exc, "stderr", "") or ""
    return _clean(str(stderr)) or " ".join(str(exc).split())

