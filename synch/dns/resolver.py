"""The vocabulary of the resolver chain: how a query was answered, and what to do with it.

Pure: no sockets, no greenlets, not even dnslib at run time (synch.metrics imports `Answer`).

A resolver (the zone, then the forwarder: `DnsService.resolvers`, tried in order, like
dnslib's resolvers behind its `DNSHandler`) looks at a parsed request and either claims it with
a `Decision` or returns None to pass it on to the next one. A query that no resolver claims is
REFUSED.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dnslib import DNSRecord

    from synch.dns.state import ZoneView


class Answer(StrEnum):
    """How a query was answered: the label values of synch_dns_queries_total{answer}."""

    LOCAL = "local"  # from the zone, with records
    NODATA = "nodata"  # from the zone: the name exists, not with this type
    NXDOMAIN = "nxdomain"  # from the zone: no such name
    FORWARDED = "forwarded"  # an upstream's reply, relayed
    SERVFAIL = "servfail"  # no upstream answered in time, or no forward could start
    STALE = "stale"  # no upstream answered usefully: a recent good answer (synch.dns.stale)
    REFUSED = "refused"  # outside `allow`, over the rate limit, not ours, or not a QUERY
    FORMERR = "formerr"  # malformed (answered FORMERR/BADVERS, or dropped)


# Answers the fast path may replay from a prepared reply: they depend only on the question
# and the zone view.
FROM_ZONE = frozenset((Answer.LOCAL, Answer.NODATA, Answer.NXDOMAIN))


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with one query: send `reply` (None: send nothing), or, when `forward` is
    set, forward that request (blocking) and send what comes back. A decision to forward is
    counted once the forward ends (forwarded, stale or servfail); any other when it is made."""

    answer: Answer
    reply: bytes | None = None
    forward: DNSRecord | None = None


@dataclass(frozen=True, slots=True)
class Query:
    """What a resolver may know of a query besides its content (dnslib passes its handler)."""

    client: str  # the client's address, as the socket reports it
    tcp: bool  # over TCP (no size limit) or UDP (`wire.fit_udp`)
    view: ZoneView  # the view this query is answered from (read once per query)


class Resolver(Protocol):
    def resolve(self, request: DNSRecord, query: Query) -> Decision | None:
        """A decision for `request`, or None: not mine, ask the next resolver. Never blocks."""
        ...
