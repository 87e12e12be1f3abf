"""The zone resolver against every DNS contract case, with dnslib-built queries; the checks
every query passes first (`wire.screen`); the state the zone follows (`DnsState`)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from dnslib import CLASS, EDNS0, OPCODE, QTYPE, RCODE, DNSQuestion, DNSRecord

from synch.config import DnsSettings
from synch.dns.resolver import Answer, Query
from synch.dns.state import DnsState, ZoneView, next_serial
from synch.dns.wire import fit_udp, screen
from synch.dns.zone import ZoneResolver
from synch.states import Service

LOCAL, NODATA, NXDOMAIN = Answer.LOCAL, Answer.NODATA, Answer.NXDOMAIN
FORMERR, REFUSED = Answer.FORMERR, Answer.REFUSED
FORWARD = "forward"  # not the zone's: the next resolver's

NORMAL = "10.0.0.254"
FAILOVER = "192.168.1.10"

SETTINGS = DnsSettings(
    listenaddress="0.0.0.0",
    domain="Example.Local",
    record="sip",
    recordttl=30,
    targetnormal=NORMAL,
    targetfailover=FAILOVER,
    refreshinterval=111,
    retryinterval=222,
    expireinterval=3333,
    minttl=44,
    ttl=555,
)


class State:
    """A view source: any target, and a serial that grows on each change."""

    def __init__(self, target: str = NORMAL, serial: int = 2024010100):
        self.view = ZoneView(target, serial)

    def switch(self, target: str) -> None:
        self.view = ZoneView(target, self.view.serial + 1)


class Zone:
    """The zone resolver as the service drives it: screened first, then answered from the view
    of the moment; (None, "forward") for what it leaves to the next resolver."""

    def __init__(self, settings: DnsSettings, state: State | DnsState):
        self.resolver = ZoneResolver(settings)
        self.state = state

    def resolve(self, request: DNSRecord) -> tuple[DNSRecord | None, str]:
        screened = screen(request, ra=True)
        if screened is not None:
            reply = screened.reply
            return (DNSRecord.parse(reply) if reply is not None else None), screened.answer
        found = self.resolver.reply(request, self.state.view)
        return found if found is not None else (None, FORWARD)


def resolver(
    settings: DnsSettings = SETTINGS, state: State | None = None, **changes: object
) -> Zone:
    return Zone(replace(settings, **changes) if changes else settings, state or State())


def ask(r: Zone, name: str, qtype: str = "A", **header: int) -> tuple[DNSRecord | None, str]:
    query = DNSRecord.question(name, qtype)
    for key, value in header.items():
        setattr(query.header, key, value)
    reply, kind = r.resolve(DNSRecord.parse(query.pack()))
    # Every reply must survive a wire round trip.
    return (DNSRecord.parse(reply.pack()) if reply is not None else None), kind


def soa_of(reply: DNSRecord) -> tuple[int, ...]:
    (soa,) = [rr for rr in reply.auth + reply.rr if rr.rtype == QTYPE.SOA]
    return tuple(soa.rdata.times)


def test_a_record_in_normal_points_at_the_central() -> None:
    reply, kind = ask(resolver(state=State(NORMAL)), "sip.example.local")
    assert kind == LOCAL
    assert reply is not None
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.header.aa == 1 and reply.header.qr == 1
    assert [(rr.rtype, str(rr.rdata), rr.ttl) for rr in reply.rr] == [(QTYPE.A, NORMAL, 30)]


def test_a_record_follows_the_view_and_serial_grows() -> None:
    state = State(NORMAL)
    r = resolver(state=state)
    before, _ = ask(r, "example.local", "SOA")
    state.switch(FAILOVER)
    reply, kind = ask(r, "sip.example.local")
    after, _ = ask(r, "example.local", "SOA")
    assert kind == LOCAL and reply is not None
    assert [str(rr.rdata) for rr in reply.rr] == [FAILOVER]
    assert before is not None and after is not None
    assert soa_of(after)[0] == soa_of(before)[0] + 1


@pytest.mark.parametrize("name", ["SIP.EXAMPLE.LOCAL", "Sip.Example.Local.", "sIp.eXample.lOcal"])
def test_names_match_case_insensitively_and_keep_the_askers_case(name: str) -> None:
    reply, kind = ask(resolver(), name)
    assert kind == LOCAL and reply is not None
    assert str(reply.rr[0].rdata) == NORMAL
    assert str(reply.q.qname).rstrip(".") == name.rstrip(".")
    assert str(reply.rr[0].rname).rstrip(".") == name.rstrip(".")


@pytest.mark.parametrize("qtype", ["AAAA", "TXT", "MX", "CNAME", "HTTPS", "SRV"])
def test_other_types_of_the_record_are_nodata_with_soa(qtype: str) -> None:
    reply, kind = ask(resolver(), "sip.example.local", qtype)
    assert kind == NODATA and reply is not None
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa == 1
    assert reply.rr == []
    assert [rr.rtype for rr in reply.auth] == [QTYPE.SOA]
    assert reply.auth[0].ttl == 44  # min(SOA ttl, minttl): RFC 2308 negative caching


def test_soa_carries_the_configured_timers() -> None:
    reply, kind = ask(resolver(state=State(serial=77)), "example.local", "SOA")
    assert kind == LOCAL and reply is not None
    (soa,) = reply.rr
    assert soa.ttl == 555
    assert soa_of(reply) == (77, 111, 222, 3333, 44)
    assert str(soa.rdata.mname) == "ns.example.local."
    assert str(soa.rdata.rname) == "hostmaster.example.local."


def test_ns_points_inside_the_zone_and_that_name_exists() -> None:
    r = resolver()
    reply, kind = ask(r, "example.local", "NS")
    assert kind == LOCAL and reply is not None
    assert [str(rr.rdata) for rr in reply.rr] == ["ns.example.local."]
    # Listening on a wildcard: the NS name exists (not NXDOMAIN) but has no address.
    ns_a, ns_kind = ask(r, "ns.example.local", "A")
    assert ns_kind == NODATA and ns_a is not None and ns_a.header.rcode == RCODE.NOERROR


def test_ns_address_is_the_listen_address_when_specific() -> None:
    from dataclasses import replace

    r = resolver(replace(SETTINGS, listenaddress="192.0.2.53"))
    reply, _ = ask(r, "example.local", "NS")
    assert reply is not None
    assert [(str(rr.rname), str(rr.rdata)) for rr in reply.ar] == [
        ("ns.example.local.", "192.0.2.53")
    ]
    ns_a, kind = ask(r, "ns.example.local", "A")
    assert kind == LOCAL and ns_a is not None and str(ns_a.rr[0].rdata) == "192.0.2.53"


@pytest.mark.parametrize("name", ["_sip._udp.example.local", "_SIP._TCP.Example.Local"])
def test_srv_records(name: str) -> None:
    reply, kind = ask(resolver(state=State(FAILOVER), srvbackup=False), name, "SRV")
    assert kind == LOCAL and reply is not None
    (srv,) = reply.rr
    rdata = srv.rdata
    assert (rdata.priority, rdata.weight, rdata.port) == (0, 0, 5060)
    assert str(rdata.target) == "sip.example.local."
    # The target's address rides along, so a phone needs no second query.
    assert [(str(rr.rname), str(rr.rdata)) for rr in reply.ar] == [("sip.example.local.", FAILOVER)]


@pytest.mark.parametrize(
    ("state", "first", "backup", "backup_name"),
    [
        (NORMAL, NORMAL, FAILOVER, "sip-branch.example.local."),
        (FAILOVER, FAILOVER, NORMAL, "sip-central.example.local."),
    ],
)
def test_srv_lists_the_other_side_after_the_current_target(
    state: str, first: str, backup: str, backup_name: str
) -> None:
    r = resolver(state=State(state))
    reply, kind = ask(r, "_sip._udp.example.local", "SRV")
    assert kind == LOCAL and reply is not None
    assert [(rr.rdata.priority, str(rr.rdata.target)) for rr in reply.rr] == [
        (0, "sip.example.local."),  # the current target, whatever the state: it follows it
        (10, backup_name),
    ]
    assert [(str(rr.rname), str(rr.rdata)) for rr in reply.ar] == [
        ("sip.example.local.", first),
        (backup_name, backup),
    ]
    # Each side's name resolves in the zone, whatever the state.
    for name, address in (("sip-central.example.local", NORMAL),
                          ("sip-branch.example.local", FAILOVER)):  # fmt: skip
        side, kind = ask(r, name, "A")
        assert kind == LOCAL and side is not None and str(side.rr[0].rdata) == address


@pytest.mark.parametrize("name", ["www.example.local", "sip2.example.local", "a.sip.example.local"])
def test_other_names_in_the_zone_are_nxdomain(name: str) -> None:
    reply, kind = ask(resolver(), name)
    assert kind == NXDOMAIN and reply is not None
    assert reply.header.rcode == RCODE.NXDOMAIN and reply.header.aa == 1
    assert reply.rr == [] and [rr.rtype for rr in reply.auth] == [QTYPE.SOA]


def test_empty_non_terminal_above_the_srv_names_is_nodata() -> None:
    reply, kind = ask(resolver(), "_udp.example.local", "A")
    assert kind == NODATA and reply is not None and reply.header.rcode == RCODE.NOERROR


@pytest.mark.parametrize(
    "name", ["example.org", "local", "xexample.local", "sip.example.local.org"]
)
def test_names_outside_the_zone_are_forwarded(name: str) -> None:
    reply, kind = ask(resolver(), name)
    assert (reply, kind) == (None, FORWARD)


def test_any_returns_every_record_of_the_name() -> None:
    reply, kind = ask(resolver(), "example.local", "ANY")
    assert kind == LOCAL and reply is not None
    assert sorted(rr.rtype for rr in reply.rr) == sorted([QTYPE.SOA, QTYPE.NS])


def test_ipv6_target_is_served_as_aaaa() -> None:
    r = resolver(state=State("2001:db8::5"))
    reply, kind = ask(r, "sip.example.local", "AAAA")
    assert kind == LOCAL and reply is not None and str(reply.rr[0].rdata) == "2001:db8::5"
    assert ask(r, "sip.example.local", "A")[1] == NODATA


def test_id_rd_and_cd_are_echoed_other_flags_are_not() -> None:
    query = DNSRecord.question("sip.example.local")
    query.header.id = 4242
    query.header.rd = 0
    query.header.cd = 1
    query.header.tc = 1  # nonsense in a query: must not leak into the reply
    reply, _ = resolver().resolve(query)
    assert reply is not None
    assert (reply.header.id, reply.header.rd, reply.header.cd, reply.header.tc) == (4242, 0, 1, 0)
    assert reply.header.ra == 1  # the server forwards: recursion available


def test_a_response_is_never_answered() -> None:
    assert ask(resolver(), "sip.example.local", qr=1) == (None, FORMERR)  # counted, not answered


def test_other_opcodes_are_notimp() -> None:
    reply, kind = ask(resolver(), "sip.example.local", opcode=OPCODE.NOTIFY)
    assert kind == REFUSED and reply is not None and reply.header.rcode == RCODE.NOTIMP


@pytest.mark.parametrize("count", [0, 2])
def test_question_count_other_than_one_is_formerr(count: int) -> None:
    query = DNSRecord()
    query.questions = [DNSQuestion("sip.example.local")] * count
    reply, kind = resolver().resolve(DNSRecord.parse(query.pack()))
    assert kind == FORMERR and reply is not None and reply.header.rcode == RCODE.FORMERR


def test_other_classes_in_the_zone_are_refused() -> None:
    query = DNSRecord(q=DNSQuestion("sip.example.local", QTYPE.A, CLASS.CH))
    reply, kind = resolver().resolve(query)
    assert kind == REFUSED and reply is not None and reply.header.rcode == RCODE.REFUSED


def test_edns_query_gets_opt_in_local_answers() -> None:
    for name, expected in (("sip.example.local", LOCAL), ("nope.example.local", NXDOMAIN)):
        query = DNSRecord.question(name)
        query.add_ar(EDNS0(udp_len=4096))
        reply, kind = resolver().resolve(DNSRecord.parse(query.pack()))
        assert kind == expected and reply is not None
        opts = [rr for rr in DNSRecord.parse(reply.pack()).ar if rr.rtype == QTYPE.OPT]
        assert len(opts) == 1 and opts[0].rclass == 1232


def test_no_opt_without_edns() -> None:
    reply, _ = ask(resolver(), "sip.example.local")
    assert reply is not None and reply.ar == []


def test_unknown_edns_version_is_badvers() -> None:
    query = DNSRecord.question("sip.example.local")
    query.add_ar(EDNS0(udp_len=4096, version=1))
    reply, kind = resolver().resolve(DNSRecord.parse(query.pack()))
    assert kind == FORMERR and reply is not None
    packed = DNSRecord.parse(reply.pack())
    (opt,) = packed.ar
    assert (opt.ttl >> 24) << 4 | packed.header.rcode == 16  # BADVERS


def test_zone_is_rebuilt_only_when_the_view_changes() -> None:
    r = ZoneResolver(SETTINGS)
    view = ZoneView(NORMAL, 1)
    first = r.zone(view)
    assert r.zone(view) is first
    assert r.zone(ZoneView(FAILOVER, 2)) is not first


def test_resolve_packs_for_the_transport_and_passes_on_other_names() -> None:
    r = ZoneResolver(SETTINGS)
    view = ZoneView(NORMAL, 1)
    request = DNSRecord.parse(DNSRecord.question("sip.example.local").pack())
    decision = r.resolve(request, Query("127.0.0.1", tcp=False, view=view))
    assert decision is not None and decision.answer == LOCAL and decision.forward is None
    assert decision.reply is not None and str(DNSRecord.parse(decision.reply).rr[0].rdata) == NORMAL
    outside = DNSRecord.parse(DNSRecord.question("example.org").pack())
    assert r.resolve(outside, Query("127.0.0.1", tcp=True, view=view)) is None


def test_fit_udp_truncates_what_does_not_fit() -> None:
    query = DNSRecord.question("_sip._udp.example.local", "SRV")
    reply, _ = resolver().resolve(DNSRecord.parse(query.pack()))
    assert reply is not None
    reply.rr = reply.rr * 40  # far beyond 512 bytes
    packed = DNSRecord.parse(fit_udp(reply, query))
    assert packed.header.tc == 1 and packed.rr == []


def test_next_serial_grows_even_when_the_clock_does_not() -> None:
    assert next_serial(0, now=1000) == 1000
    assert next_serial(1000, now=1000) == 1001
    assert next_serial(5000, now=1000) == 5001
    assert next_serial(2**32 - 1, now=0) == 0  # serial arithmetic wraps (RFC 1982)


def test_an_empty_domain_is_rejected() -> None:
    from dataclasses import replace

    with pytest.raises(ValueError, match="domain"):
        ZoneResolver(replace(SETTINGS, domain="."))


# -- the state the zone follows ------------------------------------------------------------


def test_state_starts_on_the_target_of_the_service_state() -> None:
    for service, target in (
        (Service.INIT, NORMAL),
        (Service.NORMAL, NORMAL),
        (Service.FAILOVER, FAILOVER),
    ):
        assert DnsState(SETTINGS, service, serial=5).view == ZoneView(target, 5)
    from_clock = DnsState(SETTINGS, Service.INIT, clock=lambda: 1_700_000_000)
    assert from_clock.view.serial == 1_700_000_000  # grows across restarts too


def test_state_follows_every_change_with_a_new_view_and_a_grown_serial() -> None:
    state = DnsState(SETTINGS, Service.INIT, serial=10, clock=lambda: 0)
    first = state.view
    assert state.follow(Service.NORMAL) == ZoneView(NORMAL, 11)  # same target, new serial
    assert state.follow(Service.FAILOVER) is state.view == ZoneView(FAILOVER, 12)
    assert state.follow(Service.NORMAL) == ZoneView(NORMAL, 13)
    assert first == ZoneView(NORMAL, 10)  # views are replaced, never changed


def test_state_following_the_same_service_changes_nothing() -> None:
    state = DnsState(SETTINGS, Service.FAILOVER, serial=10, clock=lambda: 0)
    view = state.view
    assert state.follow(Service.FAILOVER) is view


def test_zone_answers_follow_the_state() -> None:
    state = DnsState(SETTINGS, Service.NORMAL, serial=1, clock=lambda: 0)
    r = Zone(SETTINGS, state)
    before, _ = ask(r, "sip.example.local")
    assert before is not None and [str(rr.rdata) for rr in before.rr] == [NORMAL]
    state.follow(Service.FAILOVER)
    reply, _ = ask(r, "sip.example.local")
    assert reply is not None and [str(rr.rdata) for rr in reply.rr] == [FAILOVER]
    soa, _ = ask(r, "example.local", "SOA")
    assert soa is not None and soa_of(soa)[0] == 2
