"""State names (contract) and the service state machine that turns monitor verdicts into
Normal/Failover, with the admin override on top. Pure logic: no sockets, no greenlets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum


class Monitor(StrEnum):
    INIT = "Init"
    UNSTABLE = "Unstable"
    FAILED = "Failed"
    STABLE = "Stable"


class SyncState(StrEnum):
    INIT = "Init"
    UNSYNCED = "Unsynced"
    SYNCED = "Synced"


class Service(StrEnum):
    INIT = "Init"
    NORMAL = "Normal"
    FAILOVER = "Failover"


# Listener signature: (old, new) for any service change (automatic or forced).
ServiceListener = Callable[[Service, Service], None]


@dataclass
class ServiceControl:
    """Decides the Service state.

    The automatic decision follows the monitor: entering Failed starts Failover, entering Stable
    starts Normal, Unstable changes nothing. An admin may force a state until `auto()`.
    """

    automatic: Service = Service.INIT
    forced: Service | None = None
    listeners: list[ServiceListener] = field(default_factory=list)

    @property
    def current(self) -> Service:
        return self.forced if self.forced is not None else self.automatic

    def on_monitor_change(self, old: Monitor, new: Monitor) -> None:
        if new == old:
            return
        if new is Monitor.FAILED:
            self._set(automatic=Service.FAILOVER)
        elif new is Monitor.STABLE:
            self._set(automatic=Service.NORMAL)

    def force(self, state: Service) -> None:
        if state is Service.INIT:
            raise ValueError("cannot force the Init state")
        self._set(forced=state)

    def auto(self) -> None:
        self._set(forced=None)

    def _set(self, **changes: Service | None) -> None:
        before = self.current
        if "automatic" in changes:
            value = changes["automatic"]
            assert value is not None
            self.automatic = value
        if "forced" in changes:
            self.forced = changes["forced"]
        after = self.current
        if after != before:
            for listener in list(self.listeners):
                listener(before, after)
