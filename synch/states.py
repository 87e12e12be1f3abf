"""State names (contract) and the service state machine that turns monitor verdicts into
Normal/Failover, with the admin override on top, and the fallback held while the branch has
calls up. Pure logic: no sockets, no greenlets; the caller says what time it is and how many
calls the branch has."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True)
class BranchCalls:
    """What the branch Asterisk has up: its channels, and the calls they make (the channels of
    one call share its linked id: two phones talking are 2 channels, 1 call)."""

    calls: int
    channels: int


class Release(StrEnum):
    """Why a held fallback ended."""

    NO_CALLS = "no calls"  # the branch's calls ended: fall back
    MAXIMUM = "maximum"  # held for fallbackholdmax: fall back with the calls still up
    UNKNOWN = "unknown"  # the branch did not say: fall back rather than hold blind
    FAILED = "failed"  # the central failed again: stay in Failover
    ADMIN = "admin"  # an admin forced Normal


def fallback_release(
    now: float, since: float, maximum: float, calls: BranchCalls | None
) -> Release | None:
    """Whether a fallback held since `since` (clock seconds, like `now`) for at most `maximum`
    seconds may go now, given the branch's `calls` (None: they could not be counted); None:
    keep holding."""
    if calls is None:
        return Release.UNKNOWN
    if calls.calls <= 0:
        return Release.NO_CALLS
    if now - since >= maximum:
        return Release.MAXIMUM
    return None


@dataclass(frozen=True)
class Hold:
    """A fallback waiting for the branch's calls: since when (clock seconds), at most how long,
    and the calls at the last count."""

    since: float
    maximum: float
    calls: BranchCalls

    @property
    def until(self) -> float:
        return self.since + self.maximum


# Listener signature: (old, new) for any service change (automatic or forced).
ServiceListener = Callable[[Service, Service], None]
# Hold listener: (hold, None) when a fallback starts to wait, (hold, why) when it ends.
HoldListener = Callable[[Hold, Release | None], None]


@dataclass
class ServiceControl:
    """Decides the Service state.

    The automatic decision follows the monitor: entering Failed starts Failover, entering Stable
    starts Normal, Unstable changes nothing. An admin may force a state until `auto()`.

    Falling back (Failover to Normal) waits while the branch has calls up, at most `holdmax`
    seconds (0: never waits): phones that re-register or re-resolve mid-call would go to the
    central and could disturb the call. The caller counts the calls when the central becomes
    Stable (`holds_fallback` says when) and then each round (`review`). The central failing
    again ends the wait in Failover (no flap); an admin forcing Normal is obeyed at once.
    """

    automatic: Service = Service.INIT
    forced: Service | None = None
    listeners: list[ServiceListener] = field(default_factory=list)
    holdmax: float = 0.0
    held: Hold | None = None
    hold_listeners: list[HoldListener] = field(default_factory=list)

    @property
    def current(self) -> Service:
        return self.forced if self.forced is not None else self.automatic

    def holds_fallback(self) -> bool:
        """Would the central becoming Stable now wait for the branch's calls (so that they
        must be counted first)? Not when holding is off, nothing falls back, a wait is
        already on, or an admin forced Normal."""
        return (
            self.holdmax > 0
            and self.held is None
            and self.automatic is Service.FAILOVER
            and self.forced is not Service.NORMAL
        )

    def on_monitor_change(
        self, old: Monitor, new: Monitor, *, now: float = 0.0, calls: BranchCalls | None = None
    ) -> None:
        """`calls`: the branch's calls when the monitor enters Stable and `holds_fallback()`
        (None: not counted, no wait); `now`: the clock `review` is given."""
        if new == old:
            return
        if new is Monitor.FAILED:
            self._end_hold(Release.FAILED)
            self._set(automatic=Service.FAILOVER)
        elif new is Monitor.STABLE:
            if self.held is not None:
                return  # Stable again after Unstable: the wait goes on, from when it began
            if self.holds_fallback() and fallback_release(now, now, self.holdmax, calls) is None:
                assert calls is not None
                self.held = Hold(now, self.holdmax, calls)
                for listener in list(self.hold_listeners):
                    listener(self.held, None)
            else:
                self._set(automatic=Service.NORMAL)

    def review(self, now: float, calls: BranchCalls | None) -> Release | None:
        """A new count of the branch's calls while a fallback waits: falls back when they
        ended, could not be counted, or the wait reached `holdmax`; None: still waiting (or
        no wait on)."""
        hold = self.held
        if hold is None:
            return None
        release = fallback_release(now, hold.since, hold.maximum, calls)
        if release is None:
            assert calls is not None
            self.held = replace(hold, calls=calls)
            return None
        self._end_hold(release)
        self._set(automatic=Service.NORMAL)
        return release

    def force(self, state: Service) -> None:
        if state is Service.INIT:
            raise ValueError("cannot force the Init state")
        if state is Service.NORMAL and self.held is not None:
            # The admin sends the phones home now: the wait is over, and stays over after Auto.
            self._end_hold(Release.ADMIN)
            self._set(forced=state, automatic=Service.NORMAL)
            return
        self._set(forced=state)

    def auto(self) -> None:
        self._set(forced=None)

    def _end_hold(self, why: Release) -> None:
        hold, self.held = self.held, None
        if hold is not None:
            for listener in list(self.hold_listeners):
                listener(hold, why)

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
