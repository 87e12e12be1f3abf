"""Runs DnsService + DnsServers alone, for tests/integration/test_dns_server.py.

    python -m tests.integration.dns_server_app SETTINGS_JSON TARGET_FILE

SETTINGS_JSON: DnsSettings fields (forwarders as [[host, port], ...]). TARGET_FILE holds the
current target address, re-read at each query: `targetfailover` means Failover, anything else
Normal, followed by a `DnsState` as the daemon's state switch does. Prints `PORT <udp> <tcp>`
once serving; on SIGTERM stops and prints `COUNTERS {json}` (synch_dns_queries_total by
answer), exit 0 (tests/helpers/serverapp.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gevent

from synch.config import DnsSettings, Endpoint
from synch.dns.server import DnsServers
from synch.dns.service import DnsService
from synch.dns.state import DnsState, ZoneView
from synch.metrics import DNS_ANSWERS, Metrics
from synch.states import Service
from tests.helpers.serverapp import serve


class FileState:
    """A DnsState that follows the service state the file names (by its target)."""

    def __init__(self, settings: DnsSettings, path: Path):
        self.path = path
        self.failover_target = settings.targetfailover
        self.state = DnsState(settings, self._service() or Service.NORMAL)

    def _service(self) -> Service | None:
        target = self.path.read_text().strip()
        if not target:
            return None
        return Service.FAILOVER if target == self.failover_target else Service.NORMAL

    @property
    def view(self) -> ZoneView:
        service = self._service()
        return self.state.follow(service) if service is not None else self.state.view


def main(settings_path: str, target_path: str) -> int:
    raw = json.loads(Path(settings_path).read_text())
    raw["forwarders"] = tuple(Endpoint(host, port) for host, port in raw.get("forwarders", []))
    settings = DnsSettings(**raw)
    metrics = Metrics()
    servers = DnsServers(
        DnsService(settings, FileState(settings, Path(target_path)), metrics),
        settings.listenaddress,
        settings.port,
    )
    servers.start()
    gevent.spawn(servers.serve_udp)
    return serve(
        (servers.udp_port, servers.tcp_port),
        servers.stop,
        lambda: {
            answer: metrics.registry.get_sample_value("synch_dns_queries_total", {"answer": answer})
            for answer in DNS_ANSWERS
        },
    )


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
