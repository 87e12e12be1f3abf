"""Who may ask the DNS service, and how often it forwards for each client.

Pure logic: no sockets, no clock of its own (callers pass `now`).

- `ClientAcl`: the networks of `dnsservice.allow`. A client outside them gets REFUSED, so the
  service is not an open resolver that strangers can use for amplification.
- `RateLimiter`: a token bucket per client address for *forwarded* queries
  (`dnsservice.ratelimit` per second, bursts of up to `burst`). Answers from the zone are never
  limited: phones must always resolve the SIP name, and answering from the zone costs little.

Both keep bounded tables: a flood from spoofed random addresses cannot grow memory.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

CACHE_SIZE = 4096  # remembered decisions / buckets; past that the table starts afresh
MIN_BURST = 10.0


def parse_network(text: str) -> Network:
    """`10.0.0.0/8`, `192.168.1.7` (a /32), `fd00::/8`; ValueError naming what is wrong."""
    value = text.strip()
    if not value:
        raise ValueError("empty")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an address or ADDRESS/PREFIX network: {exc}") from None


def client_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of a peer as sockets report it (`fe80::1%eth0`, `::ffff:10.0.0.5`)."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket reports IPv4 clients this way
    return address


class ClientAcl:
    """`allows(host)`: is this client inside one of the allowed networks? Cached per host."""

    def __init__(self, networks: Iterable[str | Network]):
        self.networks = tuple(
            net if not isinstance(net, str) else parse_network(net) for net in networks
        )
        self._everyone = any(net.prefixlen == 0 for net in self.networks) and {
            net.version for net in self.networks if net.prefixlen == 0
        } == {4, 6}
        self._decisions: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        decision = self._decisions.get(host)
        if decision is None:
            decision = self._everyone or self._decide(host)
            if len(self._decisions) >= CACHE_SIZE:
                self._decisions.clear()
            self._decisions[host] = decision
        return decision

    def _decide(self, host: str) -> bool:
        address = client_address(host)
        if address is None:
            return False
        return any(address.version == net.version and address in net for net in self.networks)


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets of `rate` per second and `burst` tokens, one per client; rate 0 = off."""

    def __init__(self, rate: float, burst: float | None = None, size: int = CACHE_SIZE):
        if rate < 0:
            raise ValueError(f"rate must not be negative, got {rate}")
        self.rate = float(rate)
        # A phone booting asks a handful of names at once: allow a second's worth at least.
        self.burst = float(burst) if burst is not None else max(self.rate, MIN_BURST)
        self.size = size
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def allow(self, client: str, now: float) -> bool:
        """Take one token for `client` at time `now` (seconds); False when none is left."""
        if not self.enabled:
            return True
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.size:
                self._forget_full(now)
            bucket = self._buckets[client] = _Bucket(self.burst, now)
        elapsed = now - bucket.stamp
        if elapsed > 0:
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (forgetting them changes nothing); if every
        client is still busy (a flood from many addresses), start afresh."""
        full = [
            client
            for client, bucket in self._buckets.items()
            if bucket.tokens + (now - bucket.stamp) * self.rate >= self.burst
        ]
        for client in full:
            del self._buckets[client]
        if len(self._buckets) >= self.size:
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)
