"""Serve-stale (RFC 8767): recent good upstream answers, for when no upstream answers.

Pure: bytes and dnslib records in and out; no sockets, no greenlets, and the clock is injected.

During a WAN outage the forwarders cannot answer, yet the phones and the branch keep asking
for the names they always ask for: NTP servers, the provisioning server, an LDAP directory.
`StaleCache` keeps the last good reply the upstreams gave for each question, and when every
forwarder has failed (silent, REFUSED, SERVFAIL) the forwarder answers from it instead of
SERVFAIL:

- `learn(request, reply)` is called with every reply an upstream gave. A NOERROR reply (with
  records, or NODATA: the name exists without that type) that is not truncated and fits in
  `MAX_ENTRY_BYTES` is kept, keyed by the question (name in lowercase, type, class), replacing
  the previous one. An NXDOMAIN drops every entry of that name: a stale "it exists" must not
  outlive the upstream's word that it does not, and NXDOMAIN itself is never served stale
  (RFC 8767 allows it; a stale "does not exist" never helps a phone). Other rcodes change
  nothing.
- `answer(request, tcp)` gives the kept reply rewritten for this query: its ID, RD and CD, its
  question as it was asked (letter case included), RA set and AA clear, every TTL set to
  `STALE_TTL` (RFC 8767 section 4: 30 s, so clients come back soon and find the upstream
  again when it returns), OPT only if the query had one, then with Extended DNS Error 3
  ("Stale Answer", RFC 8914), and fitted to the client's UDP size. An entry is served until
  `maxage` seconds after its own TTL ran out (TTLs counted at most `MAX_TTL`), then dropped.

Only the forwarder calls `learn`, with what came from an upstream: the zone's own answers
never get here. The cache holds at most `size` entries; when full, the least recently used
one (learned or served) makes room. `size` 0 turns serve-stale off.

Good answers are not served from here while the upstreams answer: synch stays a forwarder
(the upstream resolver caches, and every phone's resolver caches for the TTL), so what the
phones get is what the upstream says now, whenever it can be asked.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from dnslib import EDNS0, QTYPE, RCODE, DNSRecord, EDNSOption

from synch.dns.wire import EDNS_UDP_SIZE, HEADER_LEN, pack_for, query_opt, rcode_of, reply_header

STALE_TTL = 30  # RFC 8767 section 4: the TTL of a stale answer
MAX_TTL = 7 * 86400  # RFC 8767 section 4: longer TTLs count as a week
MAX_ENTRY_BYTES = EDNS_UDP_SIZE  # a larger reply (only TCP brings one) is not kept
EDE_OPTION = 15  # EDNS option code of Extended DNS Errors (RFC 8914)
EDE_STALE_ANSWER = b"\x00\x03"  # INFO-CODE 3: Stale Answer
_TC = 0x02  # the truncation bit in the third header byte

Key = tuple[str, int, int]  # lowercase name, type, class


def key_of(request: DNSRecord) -> Key:
    question = request.q
    return (str(question.qname).lower(), int(question.qtype), int(question.qclass))


@dataclass(slots=True)
class _Entry:
    reply: bytes  # the upstream's reply as it was relayed
    received: float  # clock() when it came


class StaleCache:
    """The last good upstream reply per question; see the module's docstring."""

    def __init__(
        self, size: int, maxage: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = max(0, size)
        self.maxage = max(0.0, maxage)
        self.clock = clock
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self._names: dict[str, set[Key]] = {}  # name → its keys, for NXDOMAIN

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    # -- learning -----------------------------------------------------------------------------

    def learn(self, request: DNSRecord, reply: bytes) -> None:
        """Note what an upstream answered to `request` (see the module's docstring)."""
        if not self.size or len(reply) < HEADER_LEN:
            return
        rcode = rcode_of(reply)
        if rcode == RCODE.NXDOMAIN:
            self.forget(str(request.q.qname).lower())
            return
        if rcode != RCODE.NOERROR or reply[2] & _TC or len(reply) > MAX_ENTRY_BYTES:
            return
        key = key_of(request)
        entries = self._entries
        if key in entries:
            entries.move_to_end(key)
        else:
            while len(entries) >= self.size:
                self._drop(next(iter(entries)))
            self._names.setdefault(key[0], set()).add(key)
        entries[key] = _Entry(bytes(reply), self.clock())

    def forget(self, name: str) -> None:
        """Drop every entry of `name` (lowercase, with its trailing dot)."""
        for key in self._names.pop(name, ()):
            self._entries.pop(key, None)

    def _drop(self, key: Key) -> None:
        self._entries.pop(key, None)
        keys = self._names.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._names[key[0]]

    # -- answering ----------------------------------------------------------------------------

    def answer(self, request: DNSRecord, tcp: bool) -> bytes | None:
        """The stale reply to `request`, or None: nothing usable is kept for its question."""
        if not self.size:
            return None
        key = key_of(request)
        entry = self._entries.get(key)
        if entry is None:
            return None
        try:
            kept = DNSRecord.parse(entry.reply)
        except Exception:  # kept as relayed, never checked: unreadable means unusable
            self._drop(key)
            return None
        if self.clock() > entry.received + _ttl(kept) + self.maxage:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return pack_for(_rewritten(kept, request), request, tcp)


def _ttl(record: DNSRecord) -> int:
    """How long the upstream said its reply holds: its shortest TTL (for NODATA, the SOA's and
    its minimum field, RFC 2308), at most MAX_TTL; 0 without records."""
    ttls = []
    for rr in (*record.rr, *record.auth):
        ttls.append(rr.ttl)
        if rr.rtype == QTYPE.SOA and not record.rr:
            ttls.append(rr.rdata.times[-1])
    return min(min(ttls, default=0), MAX_TTL)


def _rewritten(kept: DNSRecord, request: DNSRecord) -> DNSRecord:
    reply = DNSRecord(
        reply_header(request, RCODE.NOERROR, aa=False, ra=True),  # only NOERROR is kept
        questions=list(request.questions[:1]),
    )
    for section, records in ((reply.rr, kept.rr), (reply.auth, kept.auth), (reply.ar, kept.ar)):
        for rr in records:
            if rr.rtype == QTYPE.OPT:
                continue
            rr.ttl = STALE_TTL
            section.append(rr)
    opts = query_opt(request)
    if opts:
        do = "do" if (opts[0].ttl >> 15) & 1 else ""
        reply.add_ar(
            EDNS0(
                udp_len=EDNS_UDP_SIZE,
                flags=do,
                opts=[EDNSOption(EDE_OPTION, EDE_STALE_ANSWER)],
            )
        )
    return reply
