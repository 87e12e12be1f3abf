"""What one sync cycle ended with: the vocabulary the daemon, the CLI and the metrics share."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from synch.sync.plan import Change


class SyncFailed(Exception):
    """A cycle could not complete; the message is the operator-facing reason."""


class CentralFailed(SyncFailed):
    """The central did not answer a request usefully: too slow, an error reply, a refused or
    closed connection (the next cycle backs off, see synch.sync.schedule)."""


class SyncResult(StrEnum):
    APPLIED = "applied"  # written, committed, reloaded
    UNCHANGED = "unchanged"  # the branch already holds exactly this
    SKIPPED = "skipped"  # not run: paused, or the central is unchanged since the last look
    GUARDED = "guarded"  # refused by the remove guard; `synch sync --force` accepts it once
    FAILED = "failed"  # the central, git, the disk or the branch failed; nothing half written
    DRY_RUN = "dry-run"  # computed and shown, nothing written

    @property
    def synced(self) -> bool:
        """The branch holds what the central has (the Sync state becomes Synced)."""
        return self in (SyncResult.APPLIED, SyncResult.UNCHANGED)

    @property
    def trouble(self) -> bool:
        """The branch does not hold what the central has (the Sync state becomes Unsynced)."""
        return self in (SyncResult.GUARDED, SyncResult.FAILED)


# What a daemon's cycle can end with (a dry run is the operator's, never counted).
CYCLE_RESULTS = tuple(r for r in SyncResult if r is not SyncResult.DRY_RUN)


@dataclass
class Outcome:
    result: SyncResult
    reason: str = ""
    change: Change | None = None
    commit: str | None = None
    diff: str = ""
    accounts: int | None = None
    warnings: list[str] = field(default_factory=list)
    central_failed: bool = False  # FAILED because the central did not answer usefully
