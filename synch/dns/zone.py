"""The failover zone: answers for `domain` from the settings and the current target.

Pure logic (dnslib only): no sockets, no greenlets. `ZoneResolver` is the first resolver of the
chain: `resolve(request, query)` claims the names of the zone and passes on the others (None).
Its records are built for one `ZoneView` (target, serial) and rebuilt when the view it is given
is another one.

The zone holds:
- `domain`: SOA (`ns.<domain>` / `hostmaster.<domain>`, configured timers, serial from the view)
  and NS `ns.<domain>`;
- `ns.<domain>`: the address of `listenaddress` when it is a specific address (A or AAAA); when
  synch listens on a wildcard there is no way to know which address clients use, so the name
  exists with no address records (NODATA). Resolvers only need it for a delegation, where the
  parent's glue supplies the address;
- `record.domain`: A (or AAAA for an IPv6 target) = the current target, TTL `recordttl`;
- `_sip._udp.<domain>`, `_sip._tcp.<domain>`: SRV `0 0 5060 record.domain` (the current
  target), and with `srvbackup` also `10 0 5060` the other side's own name, for phones that fail
  over themselves (RFC 3263: the next target when the first does not answer); the addresses in
  the additional section so a phone needs no second lookup;
- `<record>-central.<domain>` and `<record>-branch.<domain>` (`sip-central`, `sip-branch`): A
  (or AAAA) = `targetnormal` and `targetfailover` whatever the state: the SRV's names for each
  side.
Ancestors of those names inside the zone (`_udp.<domain>`, ...) are empty non-terminals and
answer NODATA, not NXDOMAIN: an NXDOMAIN there would tell RFC 8020 resolvers that the SRV names
below do not exist either. Any other name in the zone is NXDOMAIN.

Negative answers carry the SOA with TTL min(SOA TTL, minttl) (RFC 2308).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from dnslib import AAAA, CLASS, NS, QTYPE, RCODE, RR, SOA, SRV, A, DNSLabel, DNSRecord
from dnslib import EDNS0 as Edns0

from synch.config import DnsSettings
from synch.dns.resolver import Answer, Decision, Query
from synch.dns.state import ZoneView
from synch.dns.wire import EDNS_UDP_SIZE, error_reply, pack_for, query_opt, reply_header

log = logging.getLogger("synch.dns")

Name = tuple[bytes, ...]  # lowercase labels, no root label

SIP_PORT = 5060
SRV_BACKUP_PRIORITY = 10  # after the current target's 0
CLASS_ANY = 255


def to_name(name: str | DNSLabel) -> Name:
    """Name of "Sip.Example.local." (text or DNSLabel): (b"sip", b"example", b"local")."""
    label = name if isinstance(name, DNSLabel) else DNSLabel(name)
    return tuple(part.lower() for part in label.label)


@dataclass
class _Zone:
    """Every rrset of the zone for one view; rebuilt when the view changes."""

    apex: Name
    soa: RR
    negative_soa: RR
    rrsets: dict[Name, dict[int, list[RR]]] = field(default_factory=dict)
    additional: dict[Name, list[RR]] = field(default_factory=dict)
    nonterminals: set[Name] = field(default_factory=set)

    def add(self, rr: RR) -> None:
        name = to_name(rr.rname)
        self.rrsets.setdefault(name, {}).setdefault(rr.rtype, []).append(rr)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _address_rr(owner: str, address: str, ttl: int) -> RR | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip.version == 4:
        return RR(owner, QTYPE.A, ttl=ttl, rdata=A(str(ip)))
    return RR(owner, QTYPE.AAAA, ttl=ttl, rdata=AAAA(str(ip)))


def build_zone(settings: DnsSettings, view: ZoneView) -> _Zone:
    domain = ".".join(label.decode() for label in to_name(settings.domain))
    record = settings.record.strip(".")
    fqdn = domain if record in ("", "@") else f"{record}.{domain}".lower()
    ns_name = f"ns.{domain}"
    soa_times = (
        view.serial % 2**32,
        settings.refreshinterval,
        settings.retryinterval,
        settings.expireinterval,
        settings.minttl,
    )
    soa_rdata = SOA(ns_name, f"hostmaster.{domain}", soa_times)
    zone = _Zone(
        apex=to_name(domain),
        soa=RR(domain, QTYPE.SOA, ttl=settings.ttl, rdata=soa_rdata),
        negative_soa=RR(domain, QTYPE.SOA, ttl=min(settings.ttl, settings.minttl), rdata=soa_rdata),
    )
    zone.add(zone.soa)
    zone.add(RR(domain, QTYPE.NS, ttl=settings.ttl, rdata=NS(ns_name)))

    target_rr = _address_rr(fqdn, view.target, settings.recordttl)
    if target_rr is not None:
        zone.add(target_rr)
    if to_name(ns_name) != to_name(fqdn):
        ns_rr = _address_rr(ns_name, settings.listenaddress, settings.ttl)
        if ns_rr is not None and not ipaddress.ip_address(settings.listenaddress).is_unspecified:
            zone.add(ns_rr)
        else:
            zone.rrsets.setdefault(to_name(ns_name), {})
    ns_glue = zone.rrsets.get(to_name(ns_name), {})
    zone.additional[zone.apex] = [rr for rrs in ns_glue.values() for rr in rrs]

    label = record if record not in ("", "@") else "sip"
    side_names = {}
    for side, address in (("central", settings.targetnormal), ("branch", settings.targetfailover)):
        side_names[address] = side_name = f"{label}-{side}.{domain}".lower()
        side_rr = _address_rr(side_name, address, settings.recordttl)
        if side_rr is not None:
            zone.add(side_rr)
    normal, failover = settings.targetnormal, settings.targetfailover
    other = failover if view.target == normal else normal
    backup = settings.srvbackup and other != view.target
    other_rr = _address_rr(side_names[other], other, settings.recordttl) if backup else None
    for proto in ("_udp", "_tcp"):
        srv_name = f"_sip.{proto}.{domain}"
        zone.add(RR(srv_name, QTYPE.SRV, ttl=settings.recordttl, rdata=SRV(0, 0, SIP_PORT, fqdn)))
        if backup:
            srv = SRV(SRV_BACKUP_PRIORITY, 0, SIP_PORT, side_names[other])
            zone.add(RR(srv_name, QTYPE.SRV, ttl=settings.recordttl, rdata=srv))
        zone.additional[to_name(srv_name)] = [rr for rr in (target_rr, other_rr) if rr is not None]

    depth = len(zone.apex)
    for name in list(zone.rrsets):
        for cut in range(depth + 1, len(name)):
            ancestor = name[len(name) - cut :]
            if ancestor not in zone.rrsets:
                zone.nonterminals.add(ancestor)
    return zone


class ZoneResolver:
    """Answers the zone, for the view it is given; the records are rebuilt when it changes."""

    def __init__(self, settings: DnsSettings, ra: bool = True):
        self.settings = settings
        self.apex = to_name(settings.domain)
        if not self.apex:
            raise ValueError("dnsservice.domain is empty: the zone would swallow every name")
        self.ra = ra  # whether the server offers recursion (it forwards): echoed as RA
        self._zone: _Zone | None = None
        self._zone_view: ZoneView | None = None

    def zone(self, view: ZoneView) -> _Zone:
        """The records for `view` (views are never mutated: a new one means a change)."""
        if view is not self._zone_view or self._zone is None:
            if not _is_address(view.target):
                log.warning("DNS target %r is not an IP address: no A/AAAA served", view.target)
            self._zone = build_zone(self.settings, view)
            self._zone_view = view
        return self._zone

    def in_zone(self, name: Name) -> bool:
        return len(name) >= len(self.apex) and name[len(name) - len(self.apex) :] == self.apex

    def resolve(self, request: DNSRecord, query: Query) -> Decision | None:
        """The resolver chain's step: the packed reply for a name of the zone, else None."""
        found = self.reply(request, query.view)
        if found is None:
            return None
        reply, answer = found
        return Decision(answer, pack_for(reply, request, query.tcp))

    def reply(self, request: DNSRecord, view: ZoneView) -> tuple[DNSRecord, Answer] | None:
        """The reply for a screened request (`wire.screen`) if its name is in the zone."""
        question = request.q
        name = to_name(question.qname)
        if not self.in_zone(name):
            return None
        if question.qclass not in (CLASS.IN, CLASS_ANY):
            return error_reply(request, RCODE.REFUSED, self.ra), Answer.REFUSED
        edns = bool(query_opt(request))
        zone = self.zone(view)
        rrsets = zone.rrsets.get(name)
        if rrsets is None and name not in zone.nonterminals:
            return self._negative(request, zone, RCODE.NXDOMAIN, edns), Answer.NXDOMAIN
        rrsets = rrsets or {}
        if question.qtype == QTYPE.ANY:
            answers = [rr for rrs in rrsets.values() for rr in rrs]
        else:
            answers = list(rrsets.get(question.qtype, []))
        if not answers:
            return self._negative(request, zone, RCODE.NOERROR, edns), Answer.NODATA
        reply = DNSRecord(reply_header(request, RCODE.NOERROR, aa=True, ra=self.ra), [question])
        owner = question.qname  # the name as asked: keeps the client's letter case
        reply.rr = [_with_owner(rr, owner) for rr in answers]
        if any(rr.rtype in (QTYPE.NS, QTYPE.SRV) for rr in answers):
            reply.ar = list(zone.additional.get(name, []))
        if edns:
            reply.add_ar(Edns0(udp_len=EDNS_UDP_SIZE))
        return reply, Answer.LOCAL

    def _negative(self, request: DNSRecord, zone: _Zone, rcode: int, edns: bool) -> DNSRecord:
        reply = DNSRecord(reply_header(request, rcode, aa=True, ra=self.ra), [request.q])
        reply.auth = [zone.negative_soa]
        if edns:
            reply.add_ar(Edns0(udp_len=EDNS_UDP_SIZE))
        return reply


def _with_owner(rr: RR, owner: object) -> RR:
    return RR(owner, rr.rtype, rr.rclass, rr.ttl, rr.rdata)
