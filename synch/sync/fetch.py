"""The central's side of a sync: has it changed (CoreStatus, a tiny reply), and its accounts
for this branch (GetConfig of its file(s), filtered on the central where that is safe, then
selected here, the way synch.sync.filter describes)."""

from __future__ import annotations

from dataclasses import dataclass

from synch.ami.actions import core_status, get_config
from synch.ami.message import AmiError, AmiLike
from synch.sync.filter import (
    Selector,
    central_filter,
    referenced_names,
    select_pjsip,
    select_sip,
)
from synch.sync.getconfig import parse_getconfig
from synch.sync.model import ConfigFile, ConfigParseError
from synch.sync.outcome import CentralFailed, SyncFailed
from synch.sync.plan import accounts
from synch.sync.policy import without_dropped

PJSIP_FILES = ("pjsip.endpoint.conf", "pjsip.aor.conf", "pjsip.auth.conf")


@dataclass
class Fetched:
    config: ConfigFile  # the accounts this branch gets, as the central has them
    warnings: list[str]


class CentralSource:
    def __init__(self, central: AmiLike, mode: str, selector: Selector, remotefilename: str):
        self.central = central
        self.mode = mode
        self.selector = selector
        self.files = PJSIP_FILES if mode == "pjsip" else (remotefilename,)

    def mark(self) -> str | None:
        """The central's last reload time: unchanged means nothing to fetch (FACTS: CoreStatus)."""
        status = core_status(self.central)
        date, when = status.get("CoreReloadDate"), status.get("CoreReloadTime")
        return f"{date} {when}" if date and when else None

    def fetch(self) -> Fetched:
        pushed = central_filter(self.selector)
        warnings: list[str] = []
        if self.mode == "pjsip":
            endpoints = self._get("pjsip.endpoint.conf", pushed)
            # Of the (unfiltered) aors and auths, only build those the selection can use.
            needed = referenced_names(endpoints, self.selector)
            aors = self._get("pjsip.aor.conf", None, needed)
            auths = self._get("pjsip.auth.conf", None, needed)
            config, warnings = select_pjsip(endpoints, aors, auths, self.selector)
            config = without_dropped(config, self.mode)
        else:
            config = select_sip(self._get(self.files[0], pushed), self.selector)
        warnings = list(warnings)
        if not accounts(config, self.mode):
            warnings.append(self._nothing_selected())
        return Fetched(config, warnings)

    def _nothing_selected(self) -> str:
        """No account matched: an empty central file is an error, an empty match a warning."""
        filename = self.files[0]
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
            raise CentralFailed(f"central {filename}: {exc}") from exc
        try:
            return parse_getconfig(reply.headers, reply.body, names=names)
        except ConfigParseError as exc:
            raise SyncFailed(f"central {filename}: {exc}") from exc
