"""Serve synch.metrics.Metrics(), populated as a branch that has run a while, on 127.0.0.1.

A stand-in for `synch run` until the daemon serves its own /metrics:

    python -m tests.observability.fake_target     # prints the port, serves until killed
"""

from __future__ import annotations

import sys
import time

from prometheus_client import start_http_server

from synch.metrics import Metrics
from synch.states import Monitor, Service, SyncState


def populate(metrics: Metrics, now: float | None = None) -> None:
    """Some of everything, so that every panel has a value to show."""
    metrics.watch_states(lambda: (Monitor.STABLE, SyncState.SYNCED, Service.NORMAL))
    metrics.probes.labels(result="success").inc(120)
    metrics.probes.labels(result="error").inc(3)
    for seconds in (0.012, 0.020, 0.031, 4.0):
        metrics.probe_duration.observe(seconds)
    metrics.failovers.inc()
    metrics.fallbacks.inc()
    metrics.sync_runs.labels(result="applied").inc(2)
    metrics.sync_runs.labels(result="unchanged").inc(10)
    metrics.sync_duration.observe(0.4)
    metrics.last_sync_success.set(time.time() if now is None else now)
    metrics.synced_accounts.set(42)
    metrics.dns_queries.labels(answer="local").inc(500)
    metrics.dns_queries.labels(answer="forwarded").inc(80)
    metrics.dns_queries.labels(answer="servfail").inc(2)
    metrics.dns_forward_duration.observe(0.015)


def main() -> int:
    metrics = Metrics()
    populate(metrics)
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    print(server.server_port, flush=True)
    # Keep the counters moving so rates are not flat zero.
    while True:
        time.sleep(0.5)
        metrics.probes.labels(result="success").inc()
        metrics.probe_duration.observe(0.015)
        metrics.dns_queries.labels(answer="local").inc(3)
        metrics.dns_forward_duration.observe(0.01)
        metrics.sync_duration.observe(0.3)
        metrics.sync_runs.labels(result="unchanged").inc()


if __name__ == "__main__":
    sys.exit(main())
