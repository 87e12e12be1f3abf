"""`synch rollback REV`: the synced file as of REV, committed, reloaded, automatic sync paused."""

from __future__ import annotations

from synch.gitlog import HistoryError
from synch.sync.job import SyncFailed, SyncJob


class RollbackError(Exception):
    pass


def rollback(job: SyncJob, rev: str) -> str:
    """Restore the synced file as of `rev`; returns the commit that holds it now."""
    history = job.history
    if not history.exists:
        raise RollbackError(f"{job.directory} has no history yet")
    try:
        try:
            full = history.resolve(rev)
            text = history.file_at(full, job.filename)
            if text is None:
                raise RollbackError(f"{job.filename} did not exist at {rev}")
            files = {job.filename: text}
            for name in job.owned_files[1:]:  # the dialplan files, where REV had them
                extra = history.file_at(full, name)
                if extra is not None:
                    files[name] = extra
            with job.lock():
                # Pause first: a daemon cycle between the write and the pause would undo it.
                history.pause(f"rolled back to {full[:10]}")
                commit = (
                    job.apply_files(
                        files,
                        f"rollback: {', '.join(files)} to {full[:10]}",
                        "Automatic sync paused until `synch resume`.",
                    )
                    or history.head()
                    or full
                )
        except (HistoryError, SyncFailed) as exc:
            raise RollbackError(str(exc)) from exc
        except OSError as exc:
            raise RollbackError(
                f"cannot write {exc.filename or job.directory}: {exc.strerror or exc}"
            ) from exc
        try:
            job.reload_branch()
        except SyncFailed as exc:
            raise RollbackError(f"file restored and committed, but {exc}") from exc
        except OSError as exc:
            raise RollbackError(f"file restored and committed, but {exc}") from exc
        return commit
    finally:
        history.close()
