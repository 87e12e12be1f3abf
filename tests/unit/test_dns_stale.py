"""Serve-stale (synch.dns.stale, RFC 8767): the cache on its own with an injected clock, then
through the forwarder and DnsService with upstreams that fail on cue; the settings keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, RR, SOA, A, DNSRecord

from synch.config import ConfigError, DnsSettings, Endpoint, parse_settings
from synch.dns.forward import Forwarder
from synch.dns.service import DnsService
from synch.dns.stale import EDE_OPTION, MAX_ENTRY_BYTES, MAX_TTL, STALE_TTL, StaleCache
from synch.dns.state import DnsState
from synch.metrics import Metrics
from synch.states import Service


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def query(name: str = "ntp.example.org", qtype: str = "A", qid: int = 1234, **kw: Any) -> DNSRecord:
    request = DNSRecord.question(name, qtype)
    request.header.id = qid
    for flag, value in kw.items():
        setattr(request.header, flag, value)
    return request


def upstream_reply(
    request: DNSRecord,
    address: str = "192.0.2.10",
    ttl: int = 300,
    rcode: int = RCODE.NOERROR,
) -> bytes:
    """What an upstream would say: records for NOERROR, an SOA for NODATA/NXDOMAIN."""
    reply = request.reply(ra=1, aa=0)
    reply.header.rcode = rcode
    if rcode == RCODE.NOERROR and address:
        reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=ttl))
    elif rcode in (RCODE.NOERROR, RCODE.NXDOMAIN):
        soa = SOA("ns.example.org", "hostmaster.example.org", (1, 300, 300, 300, ttl))
        reply.add_auth(RR("example.org", QTYPE.SOA, rdata=soa, ttl=ttl))
    packed: bytes = reply.pack()
    return packed


def parsed(reply: bytes | None) -> DNSRecord:
    assert reply is not None
    return DNSRecord.parse(reply)


# -- the cache --


def test_a_learned_answer_is_served_with_the_query_id_flags_question_and_short_ttl() -> None:
    clock = Clock()
    cache = StaleCache(16, 3600, clock)
    cache.learn(query(qid=1), upstream_reply(query(qid=1), ttl=300))
    clock.now += 3000  # long past its TTL (300 s), within the stale limit (3600 s more)
    later = query("NTP.Example.ORG", qid=4321, rd=0, cd=1)
    reply = parsed(cache.answer(later, tcp=False))
    assert (reply.header.id, reply.header.rd, reply.header.cd) == (4321, 0, 1)
    assert (reply.header.qr, reply.header.aa, reply.header.ra) == (1, 0, 1)
    assert reply.header.rcode == RCODE.NOERROR
    assert str(reply.q.qname) == "NTP.Example.ORG."  # as the client asked
    assert [(str(rr.rdata), rr.ttl) for rr in reply.rr] == [("192.0.2.10", STALE_TTL)]
    assert not reply.ar  # no OPT for a query without one


def test_edns_query_gets_opt_with_extended_error_stale_answer() -> None:
    cache = StaleCache(16, 3600, Clock())
    cache.learn(query(), upstream_reply(query()))
    request = query()
    request.add_ar(EDNS0(udp_len=1232))
    reply = parsed(cache.answer(request, tcp=False))
    [opt] = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    assert [(o.code, o.data) for o in opt.rdata] == [(EDE_OPTION, b"\x00\x03")]


def test_keyed_by_name_type_and_class() -> None:
    cache = StaleCache(16, 3600, Clock())
    cache.learn(query(), upstream_reply(query()))
    assert cache.answer(query(qtype="AAAA"), tcp=False) is None
    assert cache.answer(query("other.example.org"), tcp=False) is None
    chaos = query()
    chaos.q.qclass = 3
    assert cache.answer(chaos, tcp=False) is None
    assert cache.answer(query("ntp.EXAMPLE.org"), tcp=False) is not None


def test_a_name_never_learned_has_no_stale_answer() -> None:
    assert StaleCache(16, 3600, Clock()).answer(query(), tcp=False) is None


def test_nodata_is_kept_and_served_with_its_soa() -> None:
    cache = StaleCache(16, 3600, Clock())
    request = query(qtype="AAAA")
    cache.learn(request, upstream_reply(request, address=""))
    reply = parsed(cache.answer(query(qtype="AAAA"), tcp=False))
    assert reply.header.rcode == RCODE.NOERROR and not reply.rr
    assert [(rr.rtype, rr.ttl) for rr in reply.auth] == [(QTYPE.SOA, STALE_TTL)]


def test_nxdomain_is_never_kept_and_forgets_every_type_of_the_name() -> None:
    cache = StaleCache(16, 3600, Clock())
    a, aaaa = query(), query(qtype="AAAA")
    cache.learn(a, upstream_reply(a))
    cache.learn(aaaa, upstream_reply(aaaa, address=""))
    cache.learn(query("other.example.org"), upstream_reply(query("other.example.org")))
    cache.learn(query("NTP.example.org"), upstream_reply(a, rcode=RCODE.NXDOMAIN))
    assert cache.answer(a, tcp=False) is None
    assert cache.answer(aaaa, tcp=False) is None
    assert len(cache) == 1  # the other name stays
    nx = query("gone.example.org")
    cache.learn(nx, upstream_reply(nx, rcode=RCODE.NXDOMAIN))
    assert cache.answer(nx, tcp=False) is None


@pytest.mark.parametrize("rcode", [RCODE.SERVFAIL, RCODE.REFUSED, RCODE.FORMERR, RCODE.NOTIMP])
def test_failures_are_not_kept_and_do_not_erase_a_good_answer(rcode: int) -> None:
    cache = StaleCache(16, 3600, Clock())
    cache.learn(query(), upstream_reply(query()))
    cache.learn(query(), upstream_reply(query(), rcode=rcode))
    assert str(parsed(cache.answer(query(), tcp=False)).rr[0].rdata) == "192.0.2.10"
    fresh = StaleCache(16, 3600, Clock())
    fresh.learn(query(), upstream_reply(query(), rcode=rcode))
    assert len(fresh) == 0


def test_truncated_and_oversized_replies_are_not_kept() -> None:
    cache = StaleCache(16, 3600, Clock())
    truncated = DNSRecord.parse(upstream_reply(query()))
    truncated.header.tc = 1
    cache.learn(query(), truncated.pack())
    big = DNSRecord.parse(upstream_reply(query()))
    for n in range(200):
        big.add_answer(RR(big.q.qname, QTYPE.A, rdata=A(f"192.0.2.{n}"), ttl=60))
    assert len(big.pack()) > MAX_ENTRY_BYTES
    cache.learn(query(), big.pack())
    assert len(cache) == 0


def test_a_newer_answer_replaces_the_older_one() -> None:
    cache = StaleCache(16, 3600, Clock())
    cache.learn(query(), upstream_reply(query(), "192.0.2.1"))
    cache.learn(query(), upstream_reply(query(), "192.0.2.2"))
    assert len(cache) == 1
    assert str(parsed(cache.answer(query(), tcp=False)).rr[0].rdata) == "192.0.2.2"


def test_bounded_least_recently_used_goes_first() -> None:
    cache = StaleCache(3, 3600, Clock())
    names = [f"n{i}.example.org" for i in range(3)]
    for name in names:
        cache.learn(query(name), upstream_reply(query(name)))
    assert cache.answer(query(names[0]), tcp=False) is not None  # n0 used: n1 is the oldest
    cache.learn(query("n3.example.org"), upstream_reply(query("n3.example.org")))
    assert len(cache) == 3
    assert cache.answer(query(names[1]), tcp=False) is None
    kept = [n for n in (*names, "n3.example.org") if cache.answer(query(n), tcp=False)]
    assert kept == [names[0], names[2], "n3.example.org"]
    for i in range(100):  # the name index shrinks with the entries
        cache.learn(query(f"m{i}.example.org"), upstream_reply(query(f"m{i}.example.org")))
    assert len(cache) == 3 and len(cache._names) == 3


def test_served_until_maxage_past_the_ttl_then_dropped() -> None:
    clock = Clock()
    cache = StaleCache(16, maxage=3600, clock=clock)
    cache.learn(query(), upstream_reply(query(), ttl=300))
    clock.now += 300 + 3600  # exactly at the limit: still served
    assert cache.answer(query(), tcp=False) is not None
    clock.now += 1
    assert cache.answer(query(), tcp=False) is None
    assert len(cache) == 0


def test_nodata_staleness_counts_from_the_soa_minimum() -> None:
    clock = Clock()
    cache = StaleCache(16, maxage=100, clock=clock)
    request = query(qtype="AAAA")
    reply = DNSRecord.parse(upstream_reply(request, address=""))
    reply.auth[0].rdata.times = (1, 300, 300, 300, 60)  # minimum 60 < the SOA's TTL 300
    cache.learn(request, reply.pack())
    clock.now += 160
    assert cache.answer(request, tcp=False) is not None
    clock.now += 1
    assert cache.answer(request, tcp=False) is None


def test_huge_ttls_count_as_a_week() -> None:
    clock = Clock()
    cache = StaleCache(16, maxage=0, clock=clock)
    cache.learn(query(), upstream_reply(query(), ttl=2**31 - 1))
    clock.now += MAX_TTL
    assert cache.answer(query(), tcp=False) is not None
    clock.now += 1
    assert cache.answer(query(), tcp=False) is None


def test_size_zero_turns_it_off() -> None:
    cache = StaleCache(0, 3600, Clock())
    cache.learn(query(), upstream_reply(query()))
    assert len(cache) == 0 and cache.answer(query(), tcp=False) is None


def test_an_unreadable_kept_reply_is_dropped_not_served() -> None:
    cache = StaleCache(16, 3600, Clock())
    cache.learn(query(), upstream_reply(query())[:20])  # header fine, body cut short
    assert len(cache) == 1
    assert cache.answer(query(), tcp=False) is None
    assert len(cache) == 0


def test_udp_answer_fits_the_client() -> None:
    cache = StaleCache(16, 3600, Clock())
    big = DNSRecord.parse(upstream_reply(query()))
    for n in range(40):  # about 640 bytes: more than a client without EDNS takes
        big.add_answer(RR(big.q.qname, QTYPE.A, rdata=A(f"192.0.2.{n}"), ttl=60))
    cache.learn(query(), big.pack())
    plain = cache.answer(query(), tcp=False)
    assert plain is not None and len(plain) <= 512 and parsed(plain).header.tc == 1
    assert len(parsed(cache.answer(query(), tcp=True)).rr) == 41


# -- through the forwarder and the service --


class ScriptedForwarder(Forwarder):
    """Answers from `reply` (a function of the query's bytes), or fails: None."""

    def __init__(self) -> None:
        super().__init__([Endpoint("127.0.0.1", 9)], 0.1)
        self.reply: Callable[[bytes], bytes | None] = lambda _packet: None

    def forward(self, packet: bytes, tcp: bool = False) -> bytes | None:
        return self.reply(packet)


SETTINGS = DnsSettings(domain="example.local", record="sip", targetnormal="10.0.0.1")


def service(
    settings: DnsSettings = SETTINGS,
) -> tuple[DnsService, ScriptedForwarder, Metrics, Clock]:
    metrics, upstream, clock = Metrics(), ScriptedForwarder(), Clock()
    state = DnsState(settings, Service.NORMAL)
    return DnsService(settings, state, metrics, upstream, clock), upstream, metrics, clock


def count(metrics: Metrics, answer: str) -> float:
    value = metrics.registry.get_sample_value("synch_dns_queries_total", {"answer": answer})
    return value or 0.0


def answering(address: str, rcode: int = RCODE.NOERROR) -> Callable[[bytes], bytes]:
    return lambda packet: upstream_reply(DNSRecord.parse(packet), address, rcode=rcode)


def test_stale_label_is_pre_initialised() -> None:
    assert Metrics().registry.get_sample_value(
        "synch_dns_queries_total", {"answer": "stale"}
    ) == 0.0


def test_service_serves_stale_when_the_upstreams_fail_and_counts_it() -> None:
    svc, upstream, metrics, _ = service()
    upstream.reply = answering("192.0.2.10")
    assert parsed(svc.handle_query(query(qid=1).pack(), tcp=False)).rr[0].ttl == 300
    for failure in (
        lambda _packet: None,  # silent
        answering("", RCODE.SERVFAIL),
        answering("", RCODE.REFUSED),
    ):
        upstream.reply = failure
        reply = parsed(svc.handle_query(query(qid=2).pack(), tcp=False))
        assert reply.header.id == 2 and reply.header.rcode == RCODE.NOERROR
        assert [(str(rr.rdata), rr.ttl) for rr in reply.rr] == [("192.0.2.10", STALE_TTL)]
    assert (count(metrics, "forwarded"), count(metrics, "stale")) == (1, 3)
    assert count(metrics, "servfail") == 0
    upstream.reply = answering("192.0.2.11")  # the upstream is back: its answer, as it is
    assert [(str(rr.rdata), rr.ttl) for rr in parsed(
        svc.handle_query(query(qid=3).pack(), tcp=False)
    ).rr] == [("192.0.2.11", 300)]


def test_service_without_a_stale_answer_behaves_as_before() -> None:
    svc, upstream, metrics, _ = service()
    reply = parsed(svc.handle_query(query(qid=7).pack(), tcp=False))  # never resolved
    assert (reply.header.id, reply.header.rcode) == (7, RCODE.SERVFAIL)
    upstream.reply = answering("", RCODE.REFUSED)  # an upstream's refusal is relayed
    assert parsed(svc.handle_query(query().pack(), tcp=False)).header.rcode == RCODE.REFUSED
    upstream.reply = answering("", RCODE.NXDOMAIN)
    assert parsed(svc.handle_query(query().pack(), tcp=False)).header.rcode == RCODE.NXDOMAIN
    upstream.reply = lambda _packet: None  # an NXDOMAIN name: SERVFAIL, never stale
    assert parsed(svc.handle_query(query().pack(), tcp=False)).header.rcode == RCODE.SERVFAIL
    assert [count(metrics, k) for k in ("servfail", "forwarded", "stale")] == [2, 2, 0]


def test_service_never_learns_the_zone() -> None:
    svc, upstream, _, _ = service()
    upstream.reply = answering("192.0.2.66")  # would be learned, were the zone forwarded
    for name in ("sip.example.local", "nothing.example.local"):
        assert svc.handle_query(query(name).pack(), tcp=False) is not None
    assert len(svc.stale) == 0


def test_stale_limit_from_the_settings() -> None:
    from dataclasses import replace

    svc, upstream, metrics, clock = service(replace(SETTINGS, stalemaxage=60))
    upstream.reply = answering("192.0.2.10")
    svc.handle_query(query().pack(), tcp=False)
    upstream.reply = lambda _packet: None
    clock.now += 300 + 61
    assert parsed(svc.handle_query(query().pack(), tcp=False)).header.rcode == RCODE.SERVFAIL
    assert count(metrics, "stale") == 0


def test_service_with_serve_stale_off() -> None:
    from dataclasses import replace

    svc, upstream, _, _ = service(replace(SETTINGS, stalecachesize=0))
    upstream.reply = answering("192.0.2.10")
    svc.handle_query(query().pack(), tcp=False)
    upstream.reply = lambda _packet: None
    assert parsed(svc.handle_query(query().pack(), tcp=False)).header.rcode == RCODE.SERVFAIL


# -- settings --


def settings_json(**dns: Any) -> str:
    return json.dumps(
        {
            "amiremote": {"hostname": "10.0.0.254", "password": "x"},
            "amilocal": {"password": "y"},
            "servicecontrol": {"token": "t"},
            "dnsservice": {
                "targetnormal": "10.0.0.254",
                "targetfailover": "10.0.0.1",
                "forwarders": ["127.0.0.1:5353"],
                **dns,
            },
        }
    )


def test_stale_settings_defaults_and_values() -> None:
    ds = parse_settings(settings_json()).dnsservice
    assert (ds.stalecachesize, ds.stalemaxage) == (4096, 3 * 86400)
    ds = parse_settings(settings_json(StaleCacheSize=0, stalemaxage="7200")).dnsservice
    assert (ds.stalecachesize, ds.stalemaxage) == (0, 7200)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("stalecachesize", -1),
        ("stalecachesize", 1.5),
        ("stalecachesize", "many"),
        ("stalecachesize", 10_000_000),
        ("stalemaxage", -5),
        ("stalemaxage", "forever"),
        ("stalemaxage", 365 * 86400),
    ],
)
def test_bad_stale_settings_name_their_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(settings_json(**{key: value}))
    assert [k for k, _ in err.value.problems] == [f"dnsservice.{key}"]
