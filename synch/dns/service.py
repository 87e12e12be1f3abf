"""The DNS service: a query's bytes and its client in, what to send back out.

No sockets of its own and no greenlets (synch.dns.server carries the bytes); only `forward`
blocks, in the forwarder's exchange. For each query, in order:

1. the allow list (`dnsservice.allow`): a client outside it gets REFUSED, whatever it asks,
   before any parsing, so that synch is no open resolver. It is about who asks, not what, so it
   stands in front of everything (for TCP the transport applies it at accept);
2. the fast path (synch.dns.fastpath): a prepared reply for a question already answered;
3. parsing and `wire.screen` (a response, another opcode, a question count other than one, an
   unknown EDNS version);
4. the resolvers, in order: the zone (synch.dns.zone), then the forwarder
   (synch.dns.forward, with the per-client rate limit, and the stale answers of
   synch.dns.stale when no upstream answers); a query nobody claims is REFUSED.

Every query is answered from `state.view` read once for it (synch.dns.state). Answers are
counted in synch_dns_queries_total; the transport calls `flush_counts()` after each batch, so
a flood costs one metric update per batch rather than one per query.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from dnslib import RCODE, DNSRecord

from synch.config import DnsSettings
from synch.dns.acl import ClientAcl, RateLimiter
from synch.dns.fastpath import FastPath
from synch.dns.forward import Forwarder, ForwardResolver
from synch.dns.resolver import FROM_ZONE, Answer, Decision, Query, Resolver
from synch.dns.stale import StaleCache
from synch.dns.state import ZoneView
from synch.dns.wire import error_bytes, formerr_for, refused_for, screen
from synch.dns.zone import ZoneResolver

if TYPE_CHECKING:  # metrics.py sits above the packages it counts for (it names Answer)
    from synch.metrics import Metrics

log = logging.getLogger("synch.dns")


class ViewSource(Protocol):
    """Where the current view is read: a `synch.dns.state.DnsState`."""

    @property
    def view(self) -> ZoneView: ...


class DnsService:
    def __init__(
        self,
        settings: DnsSettings,
        state: ViewSource,
        metrics: Metrics,
        forwarder: Forwarder | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.acl = ClientAcl(settings.allow)
        forwarder = forwarder or Forwarder(settings.forwarders, settings.forwardtimeout)
        self.ra = bool(forwarder.endpoints)  # recursion available: there is somewhere to forward
        self.zone = ZoneResolver(settings, ra=self.ra)
        self.stale = StaleCache(settings.stalecachesize, settings.stalemaxage, clock)
        self.upstream = ForwardResolver(
            forwarder, RateLimiter(settings.ratelimit), clock, stale=self.stale
        )
        self.resolvers: tuple[Resolver, ...] = (
            (self.zone, self.upstream) if self.ra else (self.zone,)
        )
        self.fastpath = FastPath()
        self._counts: dict[Answer, int] = {}  # see flush_counts()

    # -- the whole answer for one client ------------------------------------------------------

    def handle_query(self, data: bytes, tcp: bool, client: str = "127.0.0.1") -> bytes | None:
        """The reply to send (None: send nothing). Blocks while forwarding."""
        data = bytes(data)
        try:
            reply = self.fast_answer(data, client)
            if reply is not None:
                return reply
            decision = self.answer(data, client, tcp)
            if decision.forward is not None:
                return self.forward(data, decision.forward, tcp)
            return decision.reply
        finally:
            self.flush_counts()

    def fast_answer(self, data: bytes, client: str) -> bytes | None:
        """A prepared reply, for an allowed client; None: take `answer`. Never blocks.

        `data` must be `bytes` (not bytearray): slices of it are dictionary keys."""
        if not self.acl.allows(client):
            return None
        try:
            view = self.state.view
        except Exception:  # the full path reports it
            return None
        return self.fastpath.answer(data, view)

    def answer(self, data: bytes, client: str, tcp: bool) -> Decision:
        """Everything but the forward itself: never blocks, never raises."""
        if not self.acl.allows(client):
            self._counts[Answer.REFUSED] = self._counts.get(Answer.REFUSED, 0) + 1
            return Decision(Answer.REFUSED, refused_for(data))
        try:
            decision = self._decide(data, client, tcp)
        except Exception:  # a bug must cost one query, not the server
            log.exception("DNS query failed (%d bytes)", len(data))
            decision = Decision(Answer.FORMERR, formerr_for(data))
        if decision.forward is None:
            self._counts[decision.answer] = self._counts.get(decision.answer, 0) + 1
        return decision

    def _decide(self, data: bytes, client: str, tcp: bool) -> Decision:
        try:
            request = DNSRecord.parse(data)
        except Exception as exc:  # dnslib raises more than DNSError on garbage
            log.debug("malformed DNS query (%d bytes): %s", len(data), exc)
            return Decision(Answer.FORMERR, formerr_for(data))
        screened = screen(request, self.ra)
        if screened is not None:
            return screened
        query = Query(client, tcp, self.state.view)
        for resolver in self.resolvers:
            decision = resolver.resolve(request, query)
            if decision is not None:
                break
        else:
            return Decision(Answer.REFUSED, error_bytes(request, RCODE.REFUSED, self.ra))
        if decision.answer in FROM_ZONE and decision.reply is not None:
            self.fastpath.learn(data, decision.reply, decision.answer, query.view)
            log.debug("DNS %s %s: %s", request.q.qname, request.q.qtype, decision.answer)
        return decision

    # -- forwarding ---------------------------------------------------------------------------

    def forward(self, data: bytes, request: DNSRecord, tcp: bool) -> bytes:
        """The upstream's reply, or SERVFAIL once every forwarder had its chance. Blocks."""
        start = time.monotonic()
        reply, answer = self.upstream.forward(data, request, tcp)
        self.metrics.dns_forward_duration.observe(time.monotonic() - start)
        self.metrics.dns_queries.labels(answer=answer).inc()  # outside any batch: now
        return reply

    def busy(self, request: DNSRecord) -> bytes:
        """SERVFAIL without trying, when no forward can be started."""
        self.metrics.dns_queries.labels(answer=Answer.SERVFAIL).inc()
        return self.upstream.busy(request)

    # -- counting -----------------------------------------------------------------------------

    def flush_counts(self) -> None:
        """Add the answers counted since the last flush to synch_dns_queries_total."""
        for counts in (self._counts, self.fastpath.counts):
            if counts:
                drained = list(counts.items())
                counts.clear()
                for answer, count in drained:
                    self.metrics.dns_queries.labels(answer=answer).inc(count)
