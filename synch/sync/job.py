"""One sync cycle: fetch → select → check → render → compare → guard → write → commit → reload.

Every failure leaves the branch's file and its git history as they were, and comes back as an
outcome with a reason (the daemon turns it into Unsynced, a metric and a log line).

Crash safety: the file is replaced atomically (files.atomic_write) and committed by git itself.
Before the write, a journal (`.git/synch-pending`) records the new text's hash and the commit
message; it is removed only once the branch has reloaded. A process killed anywhere in between
leaves the old file or the new one, and the next cycle finishes the job: it commits a new file
that was written but not committed (with the message it was meant to have), and reloads the
branch, which also retries a reload that failed (even across restarts).
"""

from __future__ import annotations

import errno
import fcntl
import gc
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from synch.ami import AmiError, AmiLike, core_status, get_config, reload_module
from synch.config import Settings
from synch.dialplan import sync as dialplan_sync
from synch.files import atomic_write, owned_like_parent, read_text
from synch.gitlog import ConfigHistory, HistoryError
from synch.sync.filter import (
    Selector,
    central_filter,
    referenced_names,
    select_pjsip,
    select_sip,
)
from synch.sync.model import (
    ConfigFile,
    ConfigParseError,
    parse_conf_text,
    parse_getconfig,
)
from synch.sync.plan import Change, accounts, commit_subject, diff, guard, unified_diff
from synch.sync.policy import TRANSPORT_NOTE, policy_problems, without_dropped
from synch.sync.render import check_safe, render

log = logging.getLogger("synch.sync")

PJSIP_FILES = ("pjsip.endpoint.conf", "pjsip.aor.conf", "pjsip.auth.conf")
RELOAD_MODULE = {"sip": "chan_sip.so", "pjsip": "res_pjsip.so"}
PENDING = "synch-pending"  # the journal, inside .git
LOCK_NAME = ".synch.lock"
LOCK_WAIT = 30.0


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


class SyncJob:
    def __init__(
        self,
        settings: Settings,
        central: AmiLike,
        branch: AmiLike,
        *,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.central = central
        self.branch = branch
        sm = settings.syncmanager
        self.mode = sm.mode
        self.selector = Selector(sm.filterkey, sm.filtervalue)
        self.directory = Path(sm.localconfigspath)
        self.filename = sm.localfilename
        self.history = ConfigHistory(self.directory)
        self._clock = clock
        # The central's reload time (CoreStatus) at the last good full fetch. It has a one-second
        # resolution, so a reload in the same second as our look would be invisible: a mark only
        # counts as confirmed when a full fetch started at least a second after we first saw it.
        self._last_mark: str | None = None
        self._seen_mark: str | None = None
        self._seen_at = 0.0
        self._cycles_since_full = 0

    @property
    def path(self) -> Path:
        return self.directory / self.filename

    @property
    def source_files(self) -> tuple[str, ...]:
        return PJSIP_FILES if self.mode == "pjsip" else (self.settings.syncmanager.remotefilename,)

    @property
    def source(self) -> str:
        return f"{self.settings.amiremote.hostname}:{','.join(self.source_files)}"

    @property
    def owned_files(self) -> tuple[str, ...]:
        """Every file synch writes in localconfigspath."""
        return (self.filename, *dialplan_sync.FILES)

    @property
    def reload_owed(self) -> bool:
        """A written file has not been reloaded yet (journal present)."""
        return self.history.read_state(PENDING) is not None

    # -- the cycle ----------------------------------------------------------------------------

    def run(self, *, force: bool = False, dry_run: bool = False, full: bool = False) -> Outcome:
        """One cycle. `force`: accept what the remove guard refuses (and sync while paused);
        `dry_run`: compute the diff, write nothing; `full`: fetch even if the central looks
        unchanged. Never raises: every failure is an outcome with a reason."""
        try:
            with _gc_paused():
                outcome = self._run(force=force, dry_run=dry_run, full=full)
        except SyncFailed as exc:
            outcome = Outcome("failed", str(exc))
        except AmiError as exc:
            outcome = Outcome("failed", f"central AMI: {exc}")
        except HistoryError as exc:
            outcome = Outcome("failed", f"git history: {exc}")
        except OSError as exc:
            where = exc.filename or self.directory
            outcome = Outcome("failed", f"cannot write {where}: {exc.strerror or exc}")
        except Exception as exc:  # a bug must cost one cycle, never the daemon (DNS failover)
            log.exception("sync cycle crashed")
            outcome = Outcome("failed", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.history.close()
        if outcome.result in ("failed", "guarded"):
            self._last_mark = None  # look again in full next time
        return outcome

    def _paused(self, force: bool, dry_run: bool) -> Outcome | None:
        paused = self.history.paused
        if paused and not (force or dry_run):
            return Outcome("skipped", f"sync paused: {paused} (`synch resume` to continue)")
        return None

    def _run(self, *, force: bool, dry_run: bool, full: bool) -> Outcome:
        # Checked before the fetch (no need to ask the central while paused), and again under
        # the lock: a rollback that happened while we fetched must stand.
        if (skipped := self._paused(force, dry_run)) is not None:
            return skipped
        owed = self.reload_owed
        mark = self._central_mark()
        now = self._clock()
        if mark != self._seen_mark:
            self._seen_mark, self._seen_at = mark, now
        every = self.settings.syncmanager.fullcheckevery
        if (
            not (force or dry_run or full or owed)
            and mark is not None
            and mark == self._last_mark
            and self._cycles_since_full < every - 1
        ):
            self._cycles_since_full += 1
            return Outcome("skipped", "central unchanged since the last sync")
        confirmed = mark if now - self._seen_at >= 1.0 else None
        fetched = self._fetch()
        problems = check_safe(fetched.config) + policy_problems(fetched.config, self.mode)
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise SyncFailed("refused unsafe central config: " + "; ".join(problems[:5]) + more)
        new_text = render(fetched.config, self._header())
        # The accounts file first; then the dialplan and voicemail files when enabled.
        files = {self.filename: new_text, **self._extras(fetched)}
        count = len(accounts(fetched.config, self.mode))
        if dry_run:
            return self._dry_run(fetched, files, count)
        with self.lock():
            if (skipped := self._paused(force, dry_run)) is not None:
                return skipped
            self._recover()
            self.history.commit_local_edits()
            fetched.warnings.extend(self.history.warnings)  # files it had to leave out
            old_texts = self._read_files(files)
            change, reason = self._judge(old_texts[self.filename], new_text, fetched.config)
            commit = None
            if any(old_texts[name] != text for name, text in files.items()):
                if reason and not force:
                    return Outcome(
                        "guarded", reason, change=change, accounts=count, warnings=fetched.warnings
                    )
                subject = commit_subject(change, self.settings.amiremote.hostname, self.mode)
                extras = dialplan_sync.change_summary(
                    {n: old_texts[n] for n in files if n != self.filename},
                    {n: t for n, t in files.items() if n != self.filename},
                )
                if extras:
                    subject += f", {extras}"
                commit = self._apply(files, subject, self._commit_body(bool(reason)))
        if commit is not None or self.reload_owed:
            self._reload()
        self._good(confirmed)
        return Outcome(
            "applied" if commit is not None else "unchanged",
            change=change,
            commit=commit,
            accounts=count,
            warnings=fetched.warnings,
        )

    def _extras(self, fetched: _Fetched) -> dict[str, str]:
        """The dialplan and voicemail files (none unless `dialplan.enabled`)."""
        try:
            extras = dialplan_sync.build(self.settings, self.central, fetched.config)
        except dialplan_sync.ExtrasFailed as exc:
            raise SyncFailed(str(exc)) from exc
        fetched.warnings.extend(extras.warnings)
        return dict(extras.files)

    def _read_files(self, files: dict[str, str]) -> dict[str, str | None]:
        return {name: read_text(self.directory / name) for name in files}

    def _dry_run(self, fetched: _Fetched, files: dict[str, str], count: int) -> Outcome:
        old_texts = self._read_files(files)
        change, reason = self._judge(old_texts[self.filename], files[self.filename], fetched.config)
        return Outcome(
            "dry-run",
            reason or "",
            change=change,
            diff="".join(
                unified_diff(old_texts[name] or "", text, name) for name, text in files.items()
            ),
            accounts=count,
            warnings=fetched.warnings,
        )

    def _good(self, confirmed_mark: str | None) -> None:
        self._last_mark = confirmed_mark
        self._cycles_since_full = 0

    def _central_mark(self) -> str | None:
        """The central's last reload time: unchanged means nothing to fetch (FACTS: CoreStatus)."""
        status = core_status(self.central)
        date, when = status.get("CoreReloadDate"), status.get("CoreReloadTime")
        return f"{date} {when}" if date and when else None

    # -- fetching -----------------------------------------------------------------------------

    def _fetch(self) -> _Fetched:
        pushed = central_filter(self.selector)
        if self.mode == "pjsip":
            endpoints = self._get("pjsip.endpoint.conf", pushed)
            # Of the (unfiltered) aors and auths, only build those the selection can use.
            needed = referenced_names(endpoints, self.selector)
            aors = self._get("pjsip.aor.conf", None, needed)
            auths = self._get("pjsip.auth.conf", None, needed)
            config, warnings = select_pjsip(endpoints, aors, auths, self.selector)
            config = without_dropped(config, self.mode)
        else:
            config = select_sip(
                self._get(self.settings.syncmanager.remotefilename, pushed), self.selector
            )
            warnings = []
        warnings = list(warnings)
        if not accounts(config, self.mode):
            warnings.append(self._nothing_selected(pushed))
        return _Fetched(config, warnings)

    def _nothing_selected(self, pushed: str | None) -> str:
        """No account matched: an empty central file is an error, an empty match a warning."""
        filename = self.source_files[0]
        whole = self._get(filename, None)
        if not whole.categories:
            raise SyncFailed(
                f"central {filename} has no sections (empty file, or only comments): "
                "refusing to sync from it"
            )
        return (
            f"the filter {self.selector.key} =~ {self.selector.value!r} matches none of the "
            f"{len(whole.categories)} sections of the central's {filename}"
        )

    def _get(self, filename: str, pushed: str | None, names: set[str] | None = None) -> ConfigFile:
        try:
            reply = get_config(self.central, filename, pushed)
        except AmiError as exc:
            raise SyncFailed(f"central {filename}: {exc}") from exc
        try:
            return parse_getconfig(reply.headers, reply.body, names=names)
        except ConfigParseError as exc:
            raise SyncFailed(f"central {filename}: {exc}") from exc

    def _judge(
        self, old_text: str | None, new_text: str, new_config: ConfigFile
    ) -> tuple[Change, str | None]:
        """The accounts that change from the branch's file to `new_config`, and why the guard
        refuses that (None: allowed). Shared by the cycle and the dry run."""
        if old_text == new_text:
            # The common case, nothing changed: the file on disk is exactly the rendering, and
            # parse_conf_text(render(c)) == c, so there is nothing to parse or compare.
            return Change(), None
        try:
            old_config = ConfigFile(()) if old_text is None else parse_conf_text(old_text)
        except ConfigParseError as exc:
            # Its accounts cannot be counted, and zero would let any change through.
            return diff(ConfigFile(()), new_config, self.mode), (
                f"{self.filename} on the branch does not parse ({exc}): the guard cannot "
                "count the accounts it would replace"
            )
        change = diff(old_config, new_config, self.mode)
        maximum = self.settings.syncmanager.maxremovepercent
        return change, guard(len(accounts(old_config, self.mode)), change, maximum)

    # -- writing ------------------------------------------------------------------------------

    def apply_files(self, files: dict[str, str], subject: str, body: str) -> str | None:
        """Write and commit `files` (name → text; the caller holds `lock()`); the commit, or
        None when they already hold exactly that. The reload is still owed after."""
        self._recover()
        self.history.commit_local_edits()
        old_texts = self._read_files(files)
        if all(old_texts[name] == text for name, text in files.items()):
            return None
        return self._apply(files, subject, body)

    def _apply(self, files: dict[str, str], subject: str, body: str) -> str:
        digests = {name: _digest(text) for name, text in files.items()}
        journal = {"files": digests, "subject": subject, "body": body}
        self.history.write_state(PENDING, json.dumps(journal) + "\n")
        for name, text in files.items():
            if read_text(self.directory / name) != text:
                atomic_write(self.directory / name, text)
        return self.history.commit_files(list(files), subject, body)

    def _recover(self) -> None:
        """Finish a cycle that was killed between the write and the commit."""
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
            *(p for name in self.owned_files for p in self.directory.glob(f".{name}.*.tmp")),
            *self.history.git_dir.glob(f".{PENDING}.*.tmp"),
        ]
        for path in leftovers:
            path.unlink(missing_ok=True)
            log.info("removed %s left by an interrupted sync", path)

    def reload_branch(self) -> None:
        self._reload()

    def _reload(self) -> None:
        for module in (RELOAD_MODULE[self.mode], *dialplan_sync.reload_modules(self.settings)):
            try:
                reload_module(self.branch, module)
            except AmiError as exc:
                raise SyncFailed(f"reload failed: {module} on the branch: {exc}") from exc
        self.history.clear_state(PENDING)

    def _header(self) -> str:
        lines = [
            f"Generated by synch from {self.source} (filter {self.selector.key}="
            f"{self.selector.value!r}). Do not edit: the next sync overwrites it."
        ]
        if self.mode == "pjsip":
            lines.append(TRANSPORT_NOTE)
        return "\n".join(lines)

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


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection during a cycle. A 10k-account cycle creates ~500,000
    small tuples and strings (none in cycles, so reference counting frees them); with the
    collector on, a third of the cycle's time went into scanning them again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
