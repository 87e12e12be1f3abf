"""The failover budget of this site (synch.budget), kept current: computed at start and again
after each sync that changed the synced file, exported as metrics, logged when it changes,
and offered to GetDetails (`FailoverBudget`).

The inputs are all on the branch, so the budget is known offline: the settings, and the
central's AOR limits as the synced file holds them (`site_budget` reads it, for the daemon and
for `synch check-config`).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from synch.budget import Budget, Timers, compute
from synch.config import Settings
from synch.registration import registration_limit

if TYPE_CHECKING:
    from synch.metrics import Metrics
    from synch.sync.outcome import Outcome

log = logging.getLogger("synch")


def synced_file(settings: Settings) -> Path:
    sm = settings.syncmanager
    return Path(sm.localconfigspath) / sm.localfilename


# A synced file larger than this is not read (10,000 FreePBX accounts make about 6 MB).
MAX_SYNCED_BYTES = 64 * 1024 * 1024


def read_synced(path: Path) -> tuple[str | None, str]:
    """The synced file's text, or None and why not. Only a regular file of a sane size is read:
    `check-config` may run as root in a directory the service user owns."""
    try:
        # O_NONBLOCK: a FIFO planted there must not hang the reader (no effect on a file).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                return None, f"{path} is not a regular file"
            if st.st_size > MAX_SYNCED_BYTES:
                return None, f"{path} is larger than {MAX_SYNCED_BYTES // 2**20} MB"
            data = f.read(MAX_SYNCED_BYTES + 1)
    except FileNotFoundError:
        return None, f"no synced file yet ({path})"
    except OSError as exc:
        return None, f"could not open {path}: {exc.strerror or exc}"
    return data.decode("utf-8", errors="replace"), ""


def site_budget(settings: Settings, *, contacts_mirrored: bool | None = None) -> Budget:
    """The budget from the settings and the synced file as it is on disk now (missing, or not
    to be read: Asterisk's defaults, and the reason in the registration term). Contacts are
    mirrored (synch.sync.mirror) in PJSIP mode with `failover.mirrorcontacts`."""
    if contacts_mirrored is None:
        contacts_mirrored = mirrors_contacts(settings)
    text, note = read_synced(synced_file(settings))
    limit = registration_limit(text, settings.syncmanager.mode, note)
    return compute(Timers.of(settings), limit, contacts_mirrored=contacts_mirrored)


def mirrors_contacts(settings: Settings) -> bool:
    return settings.syncmanager.mode == "pjsip" and settings.failover.mirrorcontacts


class BudgetService:
    """Holds the current budget; `refresh` recomputes it when the synced file changed."""

    def __init__(
        self, settings: Settings, metrics: Metrics, contacts_mirrored: bool | None = None
    ):
        self.settings = settings
        self.metrics = metrics
        self.contacts_mirrored = (
            mirrors_contacts(settings) if contacts_mirrored is None else contacts_mirrored
        )
        self.path = synced_file(settings)
        self.budget: Budget | None = None
        # The synced file's (inode, mtime, size) when last read: a sync replaces it by a rename.
        self._stamp: tuple[int, int, int] | None = None

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def refresh(self, why: str) -> Budget:
        """Compute the budget again if the synced file changed since the last time (or on the
        first call); export it; log it when it is new or different."""
        stamp = self._file_stamp()
        if self.budget is not None and stamp == self._stamp:
            return self.budget
        old, self._stamp = self.budget, stamp
        budget = self.budget = site_budget(self.settings, contacts_mirrored=self.contacts_mirrored)
        self.metrics.show_budget(budget)
        if old is None or old.as_dict() != budget.as_dict():
            self._log(budget, why)
        return budget

    def after_sync(self, outcome: Outcome) -> None:
        """A sync cycle ended: the synced file may have changed."""
        self.refresh("after a sync")

    def _log(self, budget: Budget, why: str) -> None:
        if budget.over_target:
            log.warning(
                "failover budget (%s): %s, more than probemonitor.failoverbudgettarget: %s",
                why, budget.summary(), budget.advice,
            )  # fmt: skip
        else:
            log.info("failover budget (%s): %s", why, budget.summary())

    def details(self) -> dict[str, object]:
        budget = self.budget if self.budget is not None else self.refresh("at start")
        return {"FailoverBudget": budget.as_dict()}
