"""The failover overlay service: learns the synced phones' contacts from the central while it
is healthy, and while this branch serves the phones (Failover) writes them, with short
registrations, onto the synced AORs (synch.sync.mirror); on fallback it empties that file.
Each change is followed by a reload of res_pjsip on the branch.

The contacts learned last are kept in `.git/synch-contacts.json`, so a synch restarted during
an outage still has them. Only in PJSIP mode: Asterisk 22 has no chan_sip.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import gevent.event

from synch.ami.actions import pjsip_contacts, reload_module
from synch.ami.message import AmiError, AmiLike
from synch.config import Settings
from synch.gitstate import read_state, write_state
from synch.metrics import Metrics
from synch.states import Service
from synch.sync.conftext import parse_conf_text
from synch.sync.mirror import (
    INCLUDE_LINE,
    OVERLAY_FILE,
    learn,
    overlay_for,
    parse_networks,
    synced_aors,
)
from synch.sync.model import ConfigParseError
from synch.sync.outcome import SyncFailed
from synch.sync.store import BranchStore
from synch.timestamps import local_stamp

log = logging.getLogger("synch")

STATE_NAME = "synch-contacts.json"  # inside .git, next to the sync journal


class FailoverOverlay:
    def __init__(
        self,
        settings: Settings,
        central: AmiLike,
        branch: AmiLike,
        store: BranchStore,
        metrics: Metrics,
        service: Callable[[], Service],
        central_usable: Callable[[], bool],
    ):
        fo, sm = settings.failover, settings.syncmanager
        self.enabled = sm.mode == "pjsip" and (fo.mirrorcontacts or fo.expiration > 0)
        self.mirror = fo.mirrorcontacts
        self.expiration = fo.expiration
        self.interval = fo.contactsinterval
        self.networks = parse_networks(fo.contactnetworks)
        self.central, self.branch, self.store = central, branch, store
        self.synced = store.directory / sm.localfilename
        self.metrics = metrics
        self._service = service  # the current service state
        self._central_usable = central_usable  # the central answers and its AMI too
        self._wakeup = gevent.event.Event()
        self.contacts: dict[str, tuple[str, ...]] = {}
        self.learned_at: str | None = None
        self.skipped: list[str] = []
        self.active: bool | None = None  # None: not known yet (the file is set at start)
        self._next_learn = 0.0
        self._warned_include = False
        self._reload_owed = False
        self._last_error = ""
        self._load()

    def wake(self, *_: object) -> None:
        """Look again now (the service state changed)."""
        self._wakeup.set()

    def run(self, stop: gevent.event.Event) -> None:
        if not self.enabled:
            return
        while not stop.is_set():
            self.step()
            self._wakeup.wait(timeout=min(self.interval, 5.0))
            self._wakeup.clear()

    def step(self) -> None:
        """One look: learn when due and the central is usable, then make the file match the
        service state."""
        failover = self._service() is Service.FAILOVER
        now = time.monotonic()
        if self.mirror and not failover and now >= self._next_learn and self._central_usable():
            self._next_learn = now + self.interval
            self._learn()
        if failover != self.active:
            self._apply(failover)

    # -- learning ---------------------------------------------------------------------------

    def _learn(self) -> None:
        try:
            aors = synced_aors(parse_conf_text(self.synced.read_text(encoding="utf-8")))
        except (OSError, ValueError, ConfigParseError) as exc:
            log.debug("contacts: no synced file to learn for (%s)", exc)
            return
        try:
            events = pjsip_contacts(self.central)
        except AmiError as exc:
            self.metrics.contact_learns.labels(result="failure").inc()
            # Said once per kind of failure, not every interval (a missing permission stays).
            level = logging.WARNING if str(exc) != self._last_error else logging.DEBUG
            self._last_error = str(exc)
            log.log(level, "contacts: the central's contacts could not be read: %s", exc)
            return
        self._last_error = ""
        learned = learn(events, aors, self.networks, time.time())
        self.metrics.contact_learns.labels(result="success").inc()
        if learned.skipped and learned.skipped != self.skipped:
            log.info(
                "contacts: %d of the central's contacts not kept, e.g. %s",
                len(learned.skipped), learned.skipped[0],
            )  # fmt: skip
        changed = learned.contacts != self.contacts
        self.contacts, self.skipped = learned.contacts, learned.skipped
        self.learned_at = local_stamp()
        self.metrics.mirrored_contacts.set(learned.count)
        if changed:
            log.info(
                "contacts: %d of %d synced phones have a known contact",
                len(learned.contacts),
                len(aors),
            )
            self._save()

    def _save(self) -> None:
        state = {"Learned": self.learned_at, "Contacts": self.contacts}
        try:
            write_state(self.store.directory / ".git", STATE_NAME, json.dumps(state) + "\n")
        except Exception as exc:  # no history yet, a full disk: the contacts stay in memory
            log.debug("contacts: not saved: %r", exc)

    def _load(self) -> None:
        try:
            raw = read_state(self.store.directory / ".git", STATE_NAME)
            state = json.loads(raw) if raw else {}
            contacts = state.get("Contacts", {})
            # What we wrote ourselves, but it sits in a directory others can write: check again.
            self.contacts = {
                str(aor): tuple(str(uri) for uri in uris)
                for aor, uris in contacts.items()
                if isinstance(uris, list)
            }
            events = (
                {"ObjectName": aor, "Uri": uri} for aor, uris in self.contacts.items()
                for uri in uris
            )  # fmt: skip
            self.contacts = learn(events, set(self.contacts), self.networks, 0).contacts
            self.learned_at = (
                state.get("Learned") if isinstance(state.get("Learned"), str) else None
            )
        except Exception as exc:  # a damaged state file costs the contacts, nothing else
            log.warning("contacts: %s unreadable, starting without: %r", STATE_NAME, exc)
            self.contacts = {}
        self.metrics.mirrored_contacts.set(sum(len(u) for u in self.contacts.values()))

    # -- the overlay ------------------------------------------------------------------------

    def _apply(self, on: bool) -> None:
        try:
            changed, aors = self._write(on)
            # A reload that failed is owed even when the file is already as wanted.
            self._reload_owed |= changed
            if self._reload_owed:
                reload_module(self.branch, "res_pjsip.so")
                self._reload_owed = False
        except (AmiError, OSError, SyncFailed) as exc:
            log.error("failover file %s: %s; trying again", OVERLAY_FILE, exc)
            self.active = None
            return
        self.active = on
        self.metrics.failover_overlay.set(1 if on else 0)
        if changed and on:
            phones = sum(1 for aor in aors if aor in self.contacts)
            log.warning(
                "failover: the branch calls %d of %d synced phones at their known contacts; "
                "registrations at the branch last %d-%d s",
                phones, len(aors), self.expiration, self.expiration * 3 // 2,
            )  # fmt: skip
        elif changed:
            log.info("fallback: the synced AORs are as the central has them again")

    def _write(self, on: bool) -> tuple[bool, set[str]]:
        """Under the sync lock: the file for the synced file as it is now. (changed, AORs)."""
        with self.store.lock():
            text = self.synced.read_text(encoding="utf-8") if self.synced.exists() else ""
            try:
                aors = synced_aors(parse_conf_text(text)) if on else set()
            except ConfigParseError as exc:
                log.error("failover: %s does not parse (%s): no overlay", self.synced, exc)
                aors = set()
            if on and aors and INCLUDE_LINE not in text and not self._warned_include:
                self._warned_include = True
                log.warning("failover: %s does not include %s yet (the next sync adds it)",
                            self.synced.name, OVERLAY_FILE)  # fmt: skip
            wanted = overlay_for(aors, self.contacts if self.mirror else {}, self.expiration)
            if not aors:
                wanted = ""
            if self.store.read_overlay(OVERLAY_FILE) == wanted:
                return False, aors
            if not wanted and not (self.store.directory / OVERLAY_FILE).exists():
                return False, aors
            self.store.write_overlay(OVERLAY_FILE, wanted)
            return True, aors

    def details(self) -> dict[str, object]:
        if not self.enabled:
            return {}
        return {
            "ContactMirror": {
                "Phones": len(self.contacts),
                "Contacts": sum(len(uris) for uris in self.contacts.values()),
                "Learned": self.learned_at,
                "Skipped": len(self.skipped),
                "Active": bool(self.active),
                "Expiration": self.expiration,
            }
        }
