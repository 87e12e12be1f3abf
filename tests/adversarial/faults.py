"""`python -m tests.adversarial.faults FAULT ARGS...`: the real `synch ARGS...` with one fault
injected, for failures its surroundings cannot cause on demand (a bug in a greenlet, a
listener that dies while the process lives on).

Importing it changes nothing: only running it patches (gevent first, as `synch` itself does).
"""

import sys
from collections.abc import Callable

import gevent

INJECTED = "injected fault"


def crash_a_greenlet() -> None:
    """The branch check loop raises at once: an internal error, as a bug would cause."""
    from synch import daemon

    def crash(self: object, stop: object) -> None:
        raise RuntimeError(INJECTED)

    daemon.BranchCheck.run = crash  # type: ignore[method-assign]


def dns_stops_answering() -> None:
    """Two seconds after start, the DNS UDP loop ends while everything else runs on."""
    from synch.dns import server

    serve_udp = server.DnsServers.serve_udp

    def serve_briefly(self: server.DnsServers) -> None:
        gevent.spawn_later(2.0, gevent.getcurrent().kill, block=False)
        serve_udp(self)

    server.DnsServers.serve_udp = serve_briefly  # type: ignore[method-assign]


FAULTS: dict[str, Callable[[], None]] = {
    "crash": crash_a_greenlet,
    "dns-stops": dns_stops_answering,
}

if __name__ == "__main__":
    from gevent import monkey

    monkey.patch_all()
    FAULTS[sys.argv[1]]()
    from synch.cli import main

    sys.exit(main(sys.argv[2:]))
