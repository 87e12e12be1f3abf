"""Runs DnsService + DnsServers alone, for tests/integration/test_dns_server.py.

    python -m tests.integration.dns_server_app SETTINGS_JSON TARGET_FILE

SETTINGS_JSON: DnsSettings fields (forwarders as [[host, port], ...]). TARGET_FILE holds the
current target address, re-read at each query; the serial grows each time it changes (the
daemon's state switch, reduced to a file). Prints `PORT <udp> <tcp>` once serving; on SIGTERM
stops and prints `COUNTERS {json}` (synch_dns_queries_total by answer), exit 0
(tests/helpers/serverapp.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from synch.config import DnsSettings, Endpoint
from synch.dns.server import DnsServers, DnsService
from synch.dns.zone import ZoneView
from synch.metrics import DNS_ANSWERS, Metrics
from tests.helpers.serverapp import serve


class FileView:
    def __init__(self, path: Path):
        self.path = path
        self.current = ZoneView(path.read_text().strip(), 1)

    def __call__(self) -> ZoneView:
        target = self.path.read_text().strip()
        if target and target != self.current.target:
            self.current = ZoneView(target, self.current.serial + 1)
        return self.current


def main(settings_path: str, target_path: str) -> int:
    raw = json.loads(Path(settings_path).read_text())
    raw["forwarders"] = tuple(Endpoint(host, port) for host, port in raw.get("forwarders", []))
    settings = DnsSettings(**raw)
    metrics = Metrics()
    servers = DnsServers(
        DnsService(settings, FileView(Path(target_path)), metrics),
        settings.listenaddress,
        settings.port,
    )
    servers.start()
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
