"""What test_sip_probe.py makes the SIP probe and the uplink check do, one function per scenario,
each in a fresh interpreter patched by gevent first, as the daemon is (fake_ami.run_scenario)."""

from __future__ import annotations

import time
from typing import Any

from synch.config import Endpoint
from synch.probe import Check
from synch.sip.client import options_probe
from synch.uplink import uplink_check

Out = dict[str, Any]


def described(check: Check) -> Out:
    return {**check.as_dict(), "seconds": check.seconds}


def probe(host: str, port: int, args: Any) -> Out:
    """One options_probe with args: transport, timeout, user."""
    start = time.monotonic()
    check = options_probe(
        args.get("transport", "udp"), host, port,
        timeout=args.get("timeout", 1.0), user=args.get("user", "synch"),
    )  # fmt: skip
    return {**described(check), "wall": time.monotonic() - start}


def uplink(host: str, port: int, args: Any) -> Out:
    targets = [Endpoint(host, p) for p in args["ports"]]
    start = time.monotonic()
    check = uplink_check(targets, args.get("timeout", 1.0))
    return {**described(check), "wall": time.monotonic() - start}
