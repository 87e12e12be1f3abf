"""Runs the status socket alone, over an in-memory backend, for transport tests.

    python -m tests.integration.control_server_app --token T [--admintoken A]
        [--idle-timeout S] [--fixed-time yyyyMMddHHmmss]

Binds 127.0.0.1 on a free port, prints `PORT <n>` on stdout once listening, serves until
SIGTERM/SIGINT, then prints the server's counters as `COUNTERS {json}`
(tests/helpers/serverapp.py).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from synch.control.protocol import ControlProtocol, StatusSnapshot
from synch.control.server import ControlServer
from synch.states import Monitor, Service, SyncState
from tests.helpers.serverapp import serve


class MemoryBackend:
    def __init__(self) -> None:
        self.snapshot = StatusSnapshot(Monitor.STABLE, SyncState.SYNCED, Service.NORMAL)
        self.forced: Service | None = None
        self.syncs = 0

    def status(self) -> StatusSnapshot:
        service = self.forced or self.snapshot.service
        return StatusSnapshot(self.snapshot.monitor, self.snapshot.sync, service)

    def details(self) -> dict[str, object]:
        return {"Version": "test", "Syncs": self.syncs, "Forced": self.forced is not None}

    def force(self, service: Service) -> None:
        self.forced = service

    def auto(self) -> None:
        self.forced = None

    def sync_now(self) -> dict[str, object]:
        self.syncs += 1
        return {"Sync": "Synced", "Runs": self.syncs}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--token", required=True)
    parser.add_argument("--admintoken")
    parser.add_argument("--idle-timeout", type=float, default=5.0)
    parser.add_argument("--fixed-time")
    args = parser.parse_args(argv)

    if args.fixed_time:
        moment = datetime.strptime(args.fixed_time, "%Y%m%d%H%M%S")
        protocol = ControlProtocol(args.token, args.admintoken, MemoryBackend(), lambda: moment)
    else:
        protocol = ControlProtocol(args.token, args.admintoken, MemoryBackend())
    server = ControlServer(protocol, "127.0.0.1", 0, idle_timeout=args.idle_timeout)
    server.start()
    return serve(
        [server.port],
        server.stop,
        lambda: {
            "connections": server.connections,
            "idle_drops": server.idle_drops,
            "handler_errors": server.handler_errors,
            "requests": protocol.requests,
            "token_errors": protocol.token_errors,
            "action_errors": protocol.action_errors,
        },
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
