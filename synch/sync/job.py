"""One sync cycle: fetch → select → check → render → compare → guard → write → commit → reload.

Every failure leaves the branch's file and its git history as they were, and comes back as an
outcome with a reason (the daemon turns it into Unsynced, a metric and a log line).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from synch.ami import AmiClient, AmiError, core_status, get_config, reload_module
from synch.config import Settings
from synch.files import atomic_write, read_text
from synch.gitlog import ConfigHistory
from synch.sync.filter import Selector, central_filter, select_pjsip, select_sip
from synch.sync.model import ConfigFile, ConfigParseError, parse_conf_text, parse_getconfig
from synch.sync.plan import Change, accounts, commit_subject, diff, guard, unified_diff
from synch.sync.render import check_safe, render

log = logging.getLogger("synch.sync")

PJSIP_FILES = ("pjsip.endpoint.conf", "pjsip.aor.conf", "pjsip.auth.conf")
RELOAD_MODULE = {"sip": "chan_sip.so", "pjsip": "res_pjsip.so"}


class SyncFailed(Exception):
    """A cycle could not complete; the message is the operator-facing reason."""


@dataclass
class Outcome:
    result: str  # applied | unchanged | skipped | guarded | failed | dry-run
    reason: str = ""
    change: Change | None = None
    commit: str | None = None
    diff: str = ""
    accounts: int | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Fetched:
    config: ConfigFile
    warnings: list[str]
    reload_mark: str | None


class SyncJob:
    def __init__(self, settings: Settings, central: AmiClient, branch: AmiClient):
        self.settings = settings
        self.central = central
        self.branch = branch
        sm = settings.syncmanager
        self.mode = sm.mode
        self.selector = Selector(sm.filterkey, sm.filtervalue)
        self.directory = Path(sm.localconfigspath)
        self.filename = sm.localfilename
        self.history = ConfigHistory(self.directory)
        # The central's reload time (CoreStatus) at the last good full fetch. It has a one-second
        # resolution, so a reload in the same second as our look would be invisible: a mark only
        # counts as confirmed when a full fetch started at least a second after we first saw it.
        self._last_mark: str | None = None
        self._seen_mark: str | None = None
        self._seen_at = 0.0
        self._cycles_since_full = 0
        self._reload_pending = False

    @property
    def path(self) -> Path:
        return self.directory / self.filename

    @property
    def source(self) -> str:
        files = PJSIP_FILES if self.mode == "pjsip" else (self.settings.syncmanager.remotefilename,)
        return f"{self.settings.amiremote.hostname}:{','.join(files)}"

    # -- the cycle ----------------------------------------------------------------------------

    def run(self, *, force: bool = False, dry_run: bool = False, full: bool = False) -> Outcome:
        try:
            return self._run(force=force, dry_run=dry_run, full=full)
        except SyncFailed as exc:
            return Outcome("failed", str(exc))
        except AmiError as exc:
            return Outcome("failed", f"central AMI: {exc}")
        except OSError as exc:
            return Outcome("failed", f"cannot write {self.directory}: {exc.strerror or exc}")

    def _run(self, *, force: bool, dry_run: bool, full: bool) -> Outcome:
        mark = self._central_mark()
        if mark != self._seen_mark:
            self._seen_mark, self._seen_at = mark, time.monotonic()
        every = self.settings.syncmanager.fullcheckevery
        if (
            not (force or dry_run or full or self._reload_pending)
            and mark is not None
            and mark == self._last_mark
            and self._cycles_since_full < every - 1
        ):
            self._cycles_since_full += 1
            return Outcome("skipped", "central unchanged since the last sync")
        fetch_started = time.monotonic()
        confirmed = mark if fetch_started - self._seen_at >= 1.0 else None
        fetched = self._fetch()
        problems = check_safe(fetched.config)
        if problems:
            raise SyncFailed("refused unsafe central config: " + "; ".join(problems[:5]))
        new_text = render(fetched.config, self._header())
        old_text = read_text(self.path)
        old_config = self._parse_local(old_text)
        change = diff(old_config, fetched.config, self.mode)
        count = len(accounts(fetched.config, self.mode))
        if dry_run:
            return Outcome(
                "dry-run",
                change=change,
                diff=unified_diff(old_text or "", new_text, self.filename),
                accounts=count,
                warnings=fetched.warnings,
            )
        if old_text == new_text:
            if self._reload_pending:
                self._reload()
            self._good(confirmed)
            return Outcome("unchanged", change=change, accounts=count, warnings=fetched.warnings)
        reason = guard(
            len(accounts(old_config, self.mode)), change, self.settings.syncmanager.maxremovepercent
        )
        if reason and not force:
            return Outcome("guarded", reason, change=change, accounts=count)
        with self.lock():
            self.history.commit_local_edits()
            atomic_write(self.path, new_text)
            commit = self.history.commit_files(
                [self.filename],
                commit_subject(change, self.settings.amiremote.hostname, self.mode),
                self._commit_body(force and bool(reason)),
            )
        self._reload_pending = True
        self._reload()
        self._good(confirmed)
        return Outcome(
            "applied", change=change, commit=commit, accounts=count, warnings=fetched.warnings
        )

    def _good(self, confirmed_mark: str | None) -> None:
        self._last_mark = confirmed_mark
        self._cycles_since_full = 0

    def _central_mark(self) -> str | None:
        """The central's last reload time: unchanged means nothing to fetch (FACTS: CoreStatus)."""
        status = core_status(self.central)
        date, when = status.get("CoreReloadDate"), status.get("CoreReloadTime")
        return f"{date} {when}" if date and when else None

    def _fetch(self) -> _Fetched:
        pushed = central_filter(self.selector)
        if self.mode == "pjsip":
            endpoints = self._get("pjsip.endpoint.conf", pushed)
            aors = self._get("pjsip.aor.conf", None)
            auths = self._get("pjsip.auth.conf", None)
            config, warnings = select_pjsip(endpoints, aors, auths, self.selector)
        else:
            config = select_sip(
                self._get(self.settings.syncmanager.remotefilename, pushed), self.selector
            )
            warnings = []
        return _Fetched(config, list(warnings), None)

    def _get(self, filename: str, pushed: str | None) -> ConfigFile:
        reply = get_config(self.central, filename, pushed)
        try:
            return parse_getconfig(reply.headers, reply.body)
        except ConfigParseError as exc:
            raise SyncFailed(f"central {filename}: {exc}") from exc

    def _parse_local(self, text: str | None) -> ConfigFile:
        if text is None:
            return ConfigFile(())
        try:
            return parse_conf_text(text)
        except ConfigParseError as exc:
            # A hand-mangled local file must not stop the sync that will replace it.
            log.warning("%s is unreadable (%s); treating it as empty", self.path, exc)
            return ConfigFile(())

    def reload_branch(self) -> None:
        self._reload()

    def _reload(self) -> None:
        module = RELOAD_MODULE[self.mode]
        try:
            reload_module(self.branch, module)
        except AmiError as exc:
            raise SyncFailed(f"reload failed: {module} on the branch: {exc}") from exc
        self._reload_pending = False

    def _header(self) -> str:
        return (
            f"Generated by synch from {self.source} (filter {self.selector.key}="
            f"{self.selector.value!r}). Do not edit: the next sync overwrites it."
        )

    def _commit_body(self, forced: bool) -> str:
        lines = [
            f"Source: {self.source}",
            f"Filter: {self.selector.key} =~ {self.selector.value}",
            f"Mode: {self.mode}",
        ]
        if forced:
            lines.append("Forced past the remove guard by the operator.")
        return "\n".join(lines)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time across processes (daemon, `synch sync --force`, rollback)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        lock_path = self.directory / ".synch.lock"
        with open(lock_path, "a") as handle:
            os.chmod(lock_path, 0o600)
            deadline = time.monotonic() + 30
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError as exc:
                    if time.monotonic() > deadline:
                        raise SyncFailed("another synch process holds the sync lock") from exc
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
