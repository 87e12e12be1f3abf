"""`synch rollback REV`: the synced file as of REV, committed, reloaded, automatic sync paused."""

from __future__ import annotations

from synch.files import atomic_write
from synch.gitlog import HistoryError
from synch.sync.job import SyncFailed, SyncJob


class RollbackError(Exception):
    pass


def rollback(job: SyncJob, rev: str) -> str:
    history = job.history
    if not history.exists:
        raise RollbackError(f"{job.directory} has no history yet")
    try:
        full = history.resolve(rev)
        text = history.file_at(full, job.filename)
    except HistoryError as exc:
        raise RollbackError(str(exc)) from exc
    if text is None:
        raise RollbackError(f"{job.filename} did not exist at {rev}")
    with job.lock():
        # Pause first: a daemon cycle between the write and the pause would undo the rollback.
        history.pause(f"rolled back to {full[:10]}")
        history.commit_local_edits()
        atomic_write(job.path, text)
        commit = (
            history.commit_files(
                [job.filename],
                f"rollback: {job.filename} to {full[:10]}",
                "Automatic sync paused until `synch resume`.",
            )
            if history.repo().is_dirty()
            else history.head() or full
        )
    try:
        job.reload_branch()
    except SyncFailed as exc:
        raise RollbackError(f"file restored and committed, but {exc}") from exc
    return commit
