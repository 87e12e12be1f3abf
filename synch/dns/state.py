"""What the DNS answers besides the settings: the current target and SOA serial.

Pure: no sockets, no greenlets. `DnsState` is the one source of truth for it:

    state = DnsState(settings.dnsservice, service_control.current)   # at start
    service_control.listeners.append(lambda old, new: state.follow(new))
    DnsService(settings.dnsservice, state, metrics)                   # reads state.view

- `state.view` is the current `ZoneView` (target, serial). It is replaced, never mutated, on
  every change, so whoever keeps something derived from it (the zone's records, the fast
  path's prepared replies) holds on to the view it was made from and rebuilds when
  `state.view is not` that one: one rule for every cache. The DNS service reads it once per
  query and answers that query from it.
- `state.follow(service)` is called by whoever switches the service state, on every change:
  `targetfailover` in Failover, `targetnormal` in Normal or Init, and a serial that grows.
  Following the state it already follows changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from synch.config import DnsSettings
from synch.states import Service


@dataclass(frozen=True, slots=True)
class ZoneView:
    """What the zone's answers depend on besides the settings."""

    target: str
    serial: int


def next_serial(previous: int, now: float | None = None) -> int:
    """A serial for a state change: grows on every call, and across restarts (time based)."""
    now_s = int(time.time() if now is None else now)
    return max(previous + 1, now_s) % 2**32


class DnsState:
    """The current `view`, moved by `follow(service)`. See the module's docstring."""

    def __init__(
        self,
        settings: DnsSettings,
        service: Service,
        serial: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`service`: the state at start. `serial`: the first serial (default: from the
        clock, so that it grows across restarts too)."""
        self._normal = settings.targetnormal
        self._failover = settings.targetfailover
        self.fqdn = settings.fqdn
        self._clock = clock
        self.service = service
        first = next_serial(0, clock()) if serial is None else serial % 2**32
        self.view = ZoneView(self.target_for(service), first)

    def target_for(self, service: Service) -> str:
        return self._failover if service == Service.FAILOVER else self._normal

    def details(self) -> dict[str, object]:
        """Its part of GetDetails."""
        return {"DnsName": self.fqdn, "DnsTarget": self.view.target, "SoaSerial": self.view.serial}

    def follow(self, service: Service) -> ZoneView:
        """Answer for `service` from now on (a new view, its serial grown); the view in force."""
        if service != self.service:
            self.service = service
            serial = next_serial(self.view.serial, self._clock())
            self.view = ZoneView(self.target_for(service), serial)
        return self.view
