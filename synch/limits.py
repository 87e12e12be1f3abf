"""How many connections each listener may hold, sized from the file-descriptor limit.

Every connection a listener holds costs a descriptor (a TCP DNS connection two: it may forward
on a socket of its own), and so does every forwarded UDP query. Their sum must stay below the
process's limit with room for what has no pool: the listening sockets, three AMI sessions, git
and its pipes, log files, the notify socket. Running out fails no single client but whatever
opens a descriptor next: a probe, a sync, a forward.

At start the soft limit is raised to the hard limit (systemd's default soft limit is 1024, its
hard limit far higher), then each pool gets its usual size, or a proportional share when the
limit cannot hold them all.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass, fields

from synch.control.server import DEFAULT_MAX_CLIENTS
from synch.dns.server import FORWARD_POOL_SIZE, TCP_CONNECTIONS
from synch.metrics_http import MAX_CONNECTIONS as METRICS_CONNECTIONS

log = logging.getLogger("synch")

RESERVED_FDS = 64  # listeners, AMI sessions, git and its pipes, logs, notify socket, epoll
HEADROOM_DIVISOR = 8  # and an eighth of the limit on top, for what nobody counted


@dataclass(frozen=True)
class ConnectionBudget:
    """Pool sizes: status socket clients, metrics clients, TCP DNS clients, UDP forwards."""

    status: int
    metrics: int
    dns_tcp: int
    dns_forward: int

    @property
    def descriptors(self) -> int:
        """Descriptors the pools may hold at once when every one is full."""
        return self.status + self.metrics + 2 * self.dns_tcp + self.dns_forward


FULL_SIZE = ConnectionBudget(
    status=DEFAULT_MAX_CLIENTS,
    metrics=METRICS_CONNECTIONS,
    dns_tcp=TCP_CONNECTIONS,
    dns_forward=FORWARD_POOL_SIZE,
)
# Below these a pool stops doing its job; a limit too low for them gets a warning.
SMALLEST = ConnectionBudget(status=16, metrics=4, dns_tcp=8, dns_forward=16)


def available_for_pools(fd_limit: int) -> int:
    return max(0, fd_limit - RESERVED_FDS - fd_limit // HEADROOM_DIVISOR)


def plan(fd_limit: int) -> ConnectionBudget:
    """The pool sizes for a process allowed `fd_limit` descriptors."""
    available = available_for_pools(fd_limit)
    if available >= FULL_SIZE.descriptors:
        return FULL_SIZE
    share = available / FULL_SIZE.descriptors
    sizes = {
        f.name: max(getattr(SMALLEST, f.name), int(getattr(FULL_SIZE, f.name) * share))
        for f in fields(ConnectionBudget)
    }
    return ConnectionBudget(**sizes)


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and (soft == resource.RLIM_INFINITY or soft < hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as exc:  # e.g. a sandbox that forbids it
            log.debug("cannot raise the file descriptor limit to %d: %s", hard, exc)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_budget() -> ConnectionBudget:
    """Raise the descriptor limit and size the pools from it (says so when it is tight)."""
    fd_limit = raise_fd_limit()
    budget = plan(fd_limit)
    if budget == FULL_SIZE:
        log.debug("file descriptor limit %d: every connection pool at full size", fd_limit)
        return budget
    level = logging.ERROR if budget.descriptors > available_for_pools(fd_limit) else logging.WARNING
    log.log(
        level,
        "file descriptor limit %d (raise LimitNOFILE): connection pools reduced to "
        "%d status, %d metrics, %d TCP DNS clients and %d DNS forwards",
        fd_limit,
        budget.status,
        budget.metrics,
        budget.dns_tcp,
        budget.dns_forward,
    )
    return budget
