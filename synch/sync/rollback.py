"""`synch rollback REV`: the synced file as of REV, committed, reloaded, automatic sync paused."""

from __future__ import annotations

from synch.gitlog import HistoryError
from synch.sync.job import SyncFailed, SyncJob


class RollbackError(Exception):
    pass


def rollback(job: SyncJob, rev: str) -> str:
    """Restore the synced files as of `rev`; returns the commit that holds them now."""
    if not job.history.exists:
        raise RollbackError(f"{job.directory} has no history yet")
    try:
        try:
            full, files = job.files_at(rev)
            commit = job.restore(full, files, f"rolled back to {full[:10]}")
        except (HistoryError, SyncFailed) as exc:
            raise RollbackError(str(exc)) from exc
        except OSError as exc:
            raise RollbackError(
                f"cannot write {exc.filename or job.directory}: {exc.strerror or exc}"
            ) from exc
        try:
            job.reload()
        except (SyncFailed, OSError) as exc:
            raise RollbackError(f"file restored and committed, but {exc}") from exc
        return commit
    finally:
        job.history.close()
