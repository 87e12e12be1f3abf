"""The status socket's backend: GetStatus and GetDetails assembled from what each service
offers (its `details()`), and the admin actions handed to the service that owns them."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from synch import __version__
from synch.control.protocol import StatusSnapshot
from synch.services.probing import ProbeService
from synch.services.syncing import SyncService
from synch.states import Service
from synch.timestamps import local_stamp

Provider = Callable[[], dict[str, object]]


class StatusBoard:
    def __init__(self, probes: ProbeService, sync: SyncService, providers: Sequence[Provider]):
        self.probes = probes
        self.sync = sync
        self.providers = tuple(providers)
        self.started_at = time.time()

    def status(self) -> StatusSnapshot:
        return StatusSnapshot(self.probes.monitor.state, self.sync.state, self.probes.service)

    def line(self) -> str:
        """The state in a few words (systemd's STATUS=)."""
        snapshot = self.status()
        return (
            f"Monitor {snapshot.monitor.value}, Sync {snapshot.sync.value}, "
            f"Service {snapshot.service.value}"
        )

    def details(self) -> dict[str, object]:
        details: dict[str, object] = {
            "Version": __version__,
            "Timestamp": local_stamp(),
            "Uptime": round(time.time() - self.started_at),
        }
        for provider in self.providers:
            details.update(provider())
        return details

    def force(self, service: Service) -> None:
        self.probes.force(service)

    def auto(self) -> None:
        self.probes.auto()

    def sync_now(self) -> dict[str, object]:
        return self.sync.sync_now()
