"""The uplink check: does the branch's own uplink carry packets? It tells "our uplink is down"
from "the central is down" when the central stops answering.

A TCP connection is opened to each target of `probemonitor.uplinkcheck` (addresses beyond the
branch's WAN link: the provider's gateway or resolver) at once, and closed as soon as it is
made. A target that accepts the connection, or refuses it (a TCP reset), answered: the uplink
carries packets to it and back. The uplink is up when any target answered within the probe
timeout; down when none did (silence, no route, or an ICMP unreachable).

Why TCP: ICMP echo needs a raw socket (CAP_NET_RAW, which the service does not hold) or
unprivileged ICMP sockets (`net.ipv4.ping_group_range`, off on many systems); a UDP check needs
a server that answers a particular protocol (a DNS query needs a resolver). A TCP connect needs
no privilege, no payload and no cooperation: any host whose kernel answers a SYN, with an
accept or a reset, will do. Only a target that silently drops the port would look down.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Sequence

import gevent

from synch.config import Endpoint
from synch.probe import Check, ProbeResult

_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


def _connect(target: Endpoint, timeout: float) -> tuple[bool, str]:
    """(answered, what happened) for one target."""
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((target.host, target.port))
        return True, f"{target} accepted"
    except ConnectionRefusedError:
        return True, f"{target} refused (it answered)"
    except TimeoutError:
        return False, f"{target}: no answer within {timeout:g} s"
    except OSError as exc:
        kind = "unreachable" if exc.errno in _UNREACHABLE else "failed"
        return False, f"{target}: {kind}: {exc.strerror or exc}"
    finally:
        sock.close()


def uplink_check(targets: Sequence[Endpoint], timeout: float) -> Check:
    """Up (success) as soon as one target answers; down (error) when none did in `timeout`."""
    start = time.monotonic()
    greenlets = [gevent.spawn(_connect, target, timeout) for target in targets]
    reasons: list[str] = []
    try:
        for done in gevent.iwait(greenlets, timeout=timeout + 0.5):
            answered, what = done.value if done.successful() else (False, repr(done.exception))
            if answered:
                return Check(ProbeResult.SUCCESS, time.monotonic() - start, answer=what)
            reasons.append(what)
    finally:
        gevent.killall(greenlets, block=False)
    if len(reasons) < len(greenlets):
        reasons.append(f"no answer within {timeout:g} s")
    return Check(ProbeResult.ERROR, time.monotonic() - start, "uplink check: " + "; ".join(reasons))
