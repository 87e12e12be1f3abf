"""One sync cycle: fetch → select → check → render → compare → guard → write → commit → reload.

Every failure leaves the branch's file and its git history as they were, and comes back as an
outcome with a reason (the daemon turns it into Unsynced, a metric and a log line). The central's
side is synch.sync.fetch, the branch's (lock, crash-safe writes, history) synch.sync.store; this
module decides.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from synch.ami.actions import reload_module
from synch.ami.message import AmiError, AmiLike
from synch.config import Settings
from synch.gitlog import ConfigHistory, HistoryError
from synch.sync.conftext import parse_conf_text
from synch.sync.fetch import CentralSource, Fetched
from synch.sync.filter import Selector
from synch.sync.mirror import INCLUDE_LINE, OVERLAY_FILE, prune, synced_aors
from synch.sync.model import ConfigFile, ConfigParseError
from synch.sync.outcome import CentralFailed, Outcome, SyncFailed, SyncResult
from synch.sync.plan import Change, accounts, commit_subject, diff, guard, unified_diff
from synch.sync.policy import TRANSPORT_NOTE, policy_problems
from synch.sync.render import check_safe, render
from synch.sync.stages import Stage, StageFailed
from synch.sync.store import BranchStore

log = logging.getLogger("synch.sync")

RELOAD_MODULE = {"sip": "chan_sip.so", "pjsip": "res_pjsip.so"}

__all__ = ["AmiLike", "SyncFailed", "SyncJob"]




class SyncJob:
    def __init__(
        self,
        settings: Settings,
        central: AmiLike,
        branch: AmiLike,
        *,
        stages: Sequence[Stage] = (),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.settings = settings
        self.central = central
        self.branch = branch
        self.stages = tuple(stages)
        sm = settings.syncmanager
        self.mode = sm.mode
        self.selector = Selector(sm.filterkey, sm.filtervalue)
        self.source = CentralSource(central, sm.mode, self.selector, sm.remotefilename)
        self.filename = sm.localfilename
        owned = (self.filename, *(name for stage in self.stages for name in stage.files))
        self.store = BranchStore(Path(sm.localconfigspath), owned)
        self._clock = clock
        self._sleep = sleep
        # The central's reload time (CoreStatus) at the last good full fetch. It has a one-second
        # resolution, so a reload in the same second as our look would be invisible: a mark only
        # counts as confirmed when a full fetch started at least a second after we first saw it.
        self._last_mark: str | None = None
        self._seen_mark: str | None = None
        self._seen_at = 0.0
        self._cycles_since_full = 0

    @property
    def directory(self) -> Path:
        return self.store.directory

    @property
    def history(self) -> ConfigHistory:
        return self.store.history

    @property
    def path(self) -> Path:
        return self.directory / self.filename

    @property
    def owned_files(self) -> tuple[str, ...]:
        """Every file synch writes in localconfigspath: the accounts file first."""
        return self.store.owned

    @property
    def _where(self) -> str:
        return f"{self.settings.amiremote.hostname}:{','.join(self.source.files)}"

    # -- the cycle ----------------------------------------------------------------------------

    def run(
        self,
        *,
        force: bool = False,
        dry_run: bool = False,
        full: bool = False,
        settle: bool = False,
    ) -> Outcome:
        """One cycle. `force`: accept what the remove guard refuses (and sync while paused);
        `dry_run`: compute the diff, write nothing; `full`: fetch even if the central looks
        unchanged; `settle` (the daemon's cycles): when the central's reload mark is new, wait
        until a second after it was first seen before fetching, so that this fetch confirms it
        and the next cycle is the cheap one (else every branch fetches in full twice after each
        reload or restart of the central: a second herd one interval after the first). Never
        raises: every failure is an outcome with a reason."""
        try:
            with _gc_paused():
                outcome = self._run(force=force, dry_run=dry_run, full=full, settle=settle)
        except CentralFailed as exc:
            outcome = Outcome(SyncResult.FAILED, str(exc), central_failed=True)
        except SyncFailed as exc:
            outcome = Outcome(SyncResult.FAILED, str(exc))
        except AmiError as exc:  # only the central's: the branch's reload is a SyncFailed
            outcome = Outcome(SyncResult.FAILED, f"central AMI: {exc}", central_failed=True)
        except HistoryError as exc:
            outcome = Outcome(SyncResult.FAILED, f"git history: {exc}")
        except OSError as exc:
            where = exc.filename or self.directory
            outcome = Outcome(SyncResult.FAILED, f"cannot write {where}: {exc.strerror or exc}")
        except Exception as exc:  # a bug must cost one cycle, never the daemon (DNS failover)
            log.exception("sync cycle crashed")
            outcome = Outcome(SyncResult.FAILED, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            self.history.close()
        if outcome.result.trouble:
            self._last_mark = None  # look again in full next time
        return outcome

    def _paused(self, force: bool, dry_run: bool) -> Outcome | None:
        paused = self.history.paused
        if paused and not (force or dry_run):
            why = f"sync paused: {paused} (`synch resume` to continue)"
            return Outcome(SyncResult.SKIPPED, why)
        return None

    def _run(self, *, force: bool, dry_run: bool, full: bool, settle: bool) -> Outcome:
        # Checked before the fetch (no need to ask the central while paused), and again under
        # the lock: a rollback that happened while we fetched must stand.
        if (skipped := self._paused(force, dry_run)) is not None:
            return skipped
        owed = self.store.reload_owed
        mark = self.source.mark()
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
            return Outcome(SyncResult.SKIPPED, "central unchanged since the last sync")
        if settle and mark is not None and now - self._seen_at < 1.0:
            self._sleep(self._seen_at + 1.0 - now)
            now = self._clock()
        confirmed = mark if now - self._seen_at >= 1.0 else None
        fetched = self.source.fetch()
        problems = check_safe(fetched.config) + policy_problems(fetched.config, self.mode)
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise SyncFailed("refused unsafe central config: " + "; ".join(problems[:5]) + more)
        new_text = render(fetched.config, self._header()) + self._footer()
        # The accounts file first; then the dialplan and voicemail files when enabled.
        files = {self.filename: new_text, **self._extras(fetched)}
        count = len(accounts(fetched.config, self.mode))
        if dry_run:
            return self._dry_run(fetched, files, count)
        with self.store.lock():
            if (skipped := self._paused(force, dry_run)) is not None:
                return skipped
            fetched.warnings.extend(self.store.prepare())  # files git had to leave out
            old_texts = self.store.read(files)
            change, reason = self._judge(old_texts[self.filename], new_text, fetched.config)
            commit = None
            if any(old_texts[name] != text for name, text in files.items()):
                if reason and not force:
                    return Outcome(
                        SyncResult.GUARDED,
                        reason,
                        change=change,
                        accounts=count,
                        warnings=fetched.warnings,
                    )
                subject = commit_subject(change, self.settings.amiremote.hostname, self.mode)
                subject += "".join(
                    f", {words}"
                    for stage in self.stages
                    if (words := stage.summary(old_texts, files))
                )
                commit = self.store.write(files, subject, self._commit_body(bool(reason)))
                self._prune_overlay(fetched.config)
        if commit is not None or self.store.reload_owed:
            self.reload()
        self._good(confirmed)
        return Outcome(
            SyncResult.APPLIED if commit is not None else SyncResult.UNCHANGED,
            change=change,
            commit=commit,
            accounts=count,
            warnings=fetched.warnings,
        )

    def _extras(self, fetched: Fetched) -> dict[str, str]:
        """The stages' files (e.g. the dialplan and voicemail files when enabled)."""
        files: dict[str, str] = {}
        for stage in self.stages:
            try:
                extras = stage.build(self.central, fetched.config)
            except StageFailed as exc:
                raise SyncFailed(str(exc)) from exc
            fetched.warnings.extend(extras.warnings)
            files.update(extras.files)
        return files

    def _dry_run(self, fetched: Fetched, files: dict[str, str], count: int) -> Outcome:
        old_texts = self.store.read(files)
        change, reason = self._judge(old_texts[self.filename], files[self.filename], fetched.config)
        return Outcome(
            SyncResult.DRY_RUN,
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

    def files_at(self, rev: str) -> tuple[str, dict[str, str]]:
        """(the full commit id of `rev`, the files synch owns as they were there), the
        accounts file first. Raises HistoryError for an unknown revision, SyncFailed when
        the accounts file did not exist then."""
        full, texts = self.store.files_at(rev)
        if texts[self.filename] is None:
            raise SyncFailed(f"{self.filename} did not exist at {rev}")
        return full, {name: text for name, text in texts.items() if text is not None}

    def restore(self, rev: str, files: dict[str, str], why: str) -> str:
        """Write and commit `files` (from files_at(rev)), pausing automatic sync first, under
        the lock: a daemon cycle can neither slip in between nor write over it afterwards.
        Returns the commit that holds them now. The branch reload is still owed (`reload()`)."""
        with self.store.lock():
            self.history.pause(why)
            self.store.prepare()
            old_texts = self.store.read(files)
            if all(old_texts[name] == text for name, text in files.items()):
                return self.history.head() or rev
            commit = self.store.write(
                files,
                f"rollback: {', '.join(files)} to {rev[:10]}",
                "Automatic sync paused until `synch resume`.",
            )
            try:
                self._prune_overlay(parse_conf_text(files[self.filename]))
            except ConfigParseError:
                self.store.write_overlay(OVERLAY_FILE, "")  # nothing it names can be trusted
            return commit

    def reload(self) -> None:
        """Reload the branch's modules for the synced files; SyncFailed if one refuses."""
        stage_modules = (module for stage in self.stages for module in stage.reload_modules)
        for module in (RELOAD_MODULE[self.mode], *stage_modules):
            try:
                reload_module(self.branch, module)
            except AmiError as exc:
                raise SyncFailed(f"reload failed: {module} on the branch: {exc}") from exc
        self.store.reloaded()

    def _header(self) -> str:
        lines = [
            f"Generated by synch from {self._where} (filter {self.selector.key}="
            f"{self.selector.value!r}). Do not edit: the next sync overwrites it."
        ]
        if self.mode == "pjsip":
            lines.append(TRANSPORT_NOTE)
        return "\n".join(lines)

    def _footer(self) -> str:
        """PJSIP: the failover file last, so that its `(+type=aor)` sections find the AORs."""
        if self.mode != "pjsip":
            return ""
        return (
            "\n; While this branch serves the phones, synch adds their last known contacts and\n"
            f"; short registrations to the AORs above (empty otherwise).\n{INCLUDE_LINE}\n"
        )

    def _prune_overlay(self, synced: ConfigFile) -> None:
        """Under the lock, after the accounts file changed: the failover file must name no
        AOR that is gone, or Asterisk would refuse the whole accounts file at the reload."""
        if self.mode != "pjsip":
            return
        current = self.store.read_overlay(OVERLAY_FILE)
        pruned = prune(current, synced_aors(synced)) if current else None
        if pruned is not None:
            self.store.write_overlay(OVERLAY_FILE, pruned)

    def _commit_body(self, forced: bool) -> str:
        lines = [
            f"Source: {self._where}",
            f"Filter: {self.selector.key} =~ {self.selector.value}",
            f"Mode: {self.mode}",
        ]
        if forced:
            lines.append("Forced past the remove guard by the operator.")
        return "\n".join(lines)


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
