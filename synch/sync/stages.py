"""Steps the sync job runs after it has chosen the accounts, through one small interface.

A stage makes extra files from the synced accounts (and whatever it fetches from the central):
the job writes them with the accounts file, in the same commit, and reloads the stage's branch
modules after its own. The survivable-calling dialplan (synch.dialplan.sync) is one; the job
knows none by name, so the sync package does not depend on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from synch.ami.message import AmiLike
from synch.sync.model import ConfigFile


class StageFailed(Exception):
    """A stage's files cannot be made (unsafe or unreadable central data); the message is the
    operator-facing reason, and the whole sync is refused. AMI errors are not wrapped: the job
    reports those as a central problem."""


@dataclass(frozen=True)
class Extras:
    files: dict[str, str]  # filename in localconfigspath → its text
    warnings: list[str] = field(default_factory=list)


class Stage(Protocol):
    @property
    def files(self) -> tuple[str, ...]:
        """Every file the stage may write in localconfigspath (the ones synch owns)."""
        ...

    @property
    def reload_modules(self) -> tuple[str, ...]:
        """Branch modules to reload after its files changed (empty when it is off)."""
        ...

    def build(self, central: AmiLike, synced: ConfigFile) -> Extras:
        """The files for `synced` (none when the stage is off); raises StageFailed."""
        ...

    def summary(self, old: Mapping[str, str | None], new: Mapping[str, str]) -> str:
        """A few words for the commit subject on what changed in its files ("" if nothing)."""
        ...
