"""Client allow list and per-client rate limit (synch.dns.acl), their settings, how DnsService
applies them, and the fast path's prepared replies (byte-identical to the full path)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from synch.config import DEFAULT_DNS_ALLOW, ConfigError, DnsSettings, parse_settings
from synch.dns.acl import ClientAcl, RateLimiter, client_address, parse_network
from synch.dns.forward import Forwarder
from synch.dns.service import DnsService
from synch.dns.state import ZoneView
from synch.dns.wire import refused_for
from synch.metrics import Metrics

OUTSIDER = "203.0.113.9"  # documentation range: only ever a string here, never contacted


# -- ClientAcl ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.31.255.1", True),
        ("172.32.0.1", False),
        ("192.168.7.7", True),
        ("::1", True),
        ("fd12::5", True),
        ("fe80::1%eth0", True),  # link-local with a scope, as recvfrom reports it
        ("::ffff:192.168.1.5", True),  # IPv4 client on a dual-stack socket
        ("::ffff:8.8.8.8", False),
        ("8.8.8.8", False),
        ("2001:db8::1", False),
        ("not-an-address", False),
        ("", False),
    ],
)
def test_default_allow_list(host: str, allowed: bool) -> None:
    assert ClientAcl(DEFAULT_DNS_ALLOW).allows(host) is allowed


def test_everyone_needs_both_families() -> None:
    assert ClientAcl(["0.0.0.0/0", "::/0"]).allows("8.8.8.8")
    assert ClientAcl(["0.0.0.0/0", "::/0"]).allows("2001:db8::1")
    only_v4 = ClientAcl(["0.0.0.0/0"])
    assert only_v4.allows("8.8.8.8") and not only_v4.allows("2001:db8::1")


def test_decisions_are_cached_in_a_bounded_table() -> None:
    acl = ClientAcl(["10.0.0.0/8"])
    for n in range(10_000):
        acl.allows(f"10.0.{n // 256}.{n % 256}")
    assert len(acl._decisions) <= 4096
    assert acl.allows("10.9.9.9") and not acl.allows("11.0.0.1")


def test_parse_network_and_client_address() -> None:
    assert str(parse_network("192.168.1.7")) == "192.168.1.7/32"
    assert str(parse_network(" 10.1.2.3/8 ")) == "10.0.0.0/8"
    with pytest.raises(ValueError, match="not an address"):
        parse_network("10.0.0.0/33")
    assert str(client_address("::ffff:10.0.0.5")) == "10.0.0.5"
    assert client_address("junk") is None


# -- RateLimiter -------------------------------------------------------------------------------


def test_token_bucket_burst_then_rate() -> None:
    limiter = RateLimiter(rate=5, burst=10)
    assert sum(limiter.allow("a", 0.0) for _ in range(20)) == 10
    assert not limiter.allow("a", 0.1)  # half a token only
    assert limiter.allow("a", 0.2)  # one token after 0.2 s at 5/s
    assert limiter.allow("b", 0.2)  # another client has its own bucket
    assert sum(limiter.allow("a", 100.0) for _ in range(20)) == 10  # refilled, capped at burst


def test_rate_zero_is_off() -> None:
    limiter = RateLimiter(0)
    assert not limiter.enabled
    assert all(limiter.allow("a", 0.0) for _ in range(10_000))


def test_default_burst_is_at_least_a_few_queries() -> None:
    assert RateLimiter(1).burst == 10
    assert RateLimiter(50).burst == 50


def test_bucket_table_stays_bounded_under_spoofed_sources() -> None:
    limiter = RateLimiter(rate=1, size=100)
    for n in range(5000):
        limiter.allow(f"client-{n}", n * 0.001)
    assert len(limiter) <= 100


def test_negative_rate_is_an_error() -> None:
    with pytest.raises(ValueError, match="negative"):
        RateLimiter(-1)


# -- settings ----------------------------------------------------------------------------------


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


def test_allow_and_ratelimit_defaults() -> None:
    ds = parse_settings(settings_json()).dnsservice
    assert ds.allow == DEFAULT_DNS_ALLOW and ds.ratelimit == 50
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "::1/128"} <= set(ds.allow)


def test_allow_accepts_networks_addresses_and_a_lone_string() -> None:
    ds = parse_settings(settings_json(allow=["192.168.5.0/24", "10.1.1.1", "FD00::/8"])).dnsservice
    assert ds.allow == ("192.168.5.0/24", "10.1.1.1/32", "fd00::/8")
    assert parse_settings(settings_json(allow="0.0.0.0/0")).dnsservice.allow == ("0.0.0.0/0",)
    assert parse_settings(settings_json(ratelimit=0)).dnsservice.ratelimit == 0
    assert parse_settings(settings_json(ratelimit="12.5")).dnsservice.ratelimit == 12.5


def test_allow_with_host_bits_is_accepted_with_a_warning() -> None:
    s = parse_settings(settings_json(allow=["10.1.2.3/8"]))
    assert s.dnsservice.allow == ("10.0.0.0/8",)
    assert any("dnsservice.allow[0]" in w and "host bits" in w for w in s.warnings)


@pytest.mark.parametrize(
    ("value", "key", "message"),
    [
        (["10.0.0.0/33"], "dnsservice.allow[0]", "must be a network"),
        (["bogus"], "dnsservice.allow[0]", "must be a network"),
        ([5], "dnsservice.allow[0]", "double quotes"),
        ([], "dnsservice.allow", "at least one network"),
    ],
)
def test_bad_allow_is_reported_with_its_key(value: object, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(settings_json(allow=value))
    assert any(k == key and message in m for k, m in err.value.problems), err.value.problems


@pytest.mark.parametrize("value", [-1, "fast", True, 2_000_000])
def test_bad_ratelimit_is_reported(value: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(settings_json(ratelimit=value))
    assert any(k == "dnsservice.ratelimit" for k, _ in err.value.problems)


# -- DnsService: who is answered ---------------------------------------------------------------


class CannedForwarder(Forwarder):
    """Answers every forwarded query with NOERROR, no network."""

    def __init__(self) -> None:
        super().__init__([], 1.0)
        self.endpoints = ("canned",)  # type: ignore[assignment]
        self.asked = 0

    def forward(self, packet: bytes, tcp: bool = False) -> bytes | None:
        self.asked += 1
        return bytes(DNSRecord.parse(packet).reply().pack())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class State:
    def __init__(self) -> None:
        self.view = ZoneView("10.0.0.254", 1)


def make_service(
    allow: tuple[str, ...] = DEFAULT_DNS_ALLOW, ratelimit: float = 50
) -> tuple[DnsService, Metrics, CannedForwarder, Clock, State]:
    settings = DnsSettings(domain="example.local", allow=allow, ratelimit=ratelimit)
    metrics, forwarder, clock = Metrics(), CannedForwarder(), Clock()
    state = State()
    service = DnsService(settings, state, metrics, forwarder, clock=clock)
    return service, metrics, forwarder, clock, state


def count(metrics: Metrics, answer: str) -> float:
    value = metrics.registry.get_sample_value("synch_dns_queries_total", {"answer": answer})
    return value or 0.0


def ask(service: DnsService, name: str, client: str, qtype: str = "A") -> DNSRecord:
    reply = service.handle_query(bytes(DNSRecord.question(name, qtype).pack()), False, client)
    assert reply is not None
    return DNSRecord.parse(reply)


def test_client_outside_allow_is_refused_and_counted() -> None:
    service, metrics, forwarder, _, _ = make_service()
    for name in ("sip.example.local", "www.example.org"):
        reply = ask(service, name, OUTSIDER)
        assert reply.header.rcode == RCODE.REFUSED and not reply.rr
        assert str(reply.q.qname) == name + "."
    assert count(metrics, "refused") == 2 and forwarder.asked == 0
    assert ask(service, "sip.example.local", "192.168.1.20").header.rcode == RCODE.NOERROR


def test_refused_for_never_answers_a_response_and_keeps_the_id() -> None:
    query = bytes(DNSRecord.question("x.example.org").pack())
    reply = refused_for(query)
    assert reply is not None and reply[:2] == query[:2]
    assert refused_for(query[:2] + bytes([query[2] | 0x80]) + query[3:]) is None
    assert refused_for(b"\x00" * 5) is None
    garbled = refused_for(query[:14])  # header fine, question cut: no question echoed
    assert garbled is not None and DNSRecord.parse(garbled).header.q == 0


def test_forwarded_queries_are_rate_limited_per_client() -> None:
    service, metrics, forwarder, clock, _ = make_service(ratelimit=5)
    burst = service.upstream.limiter.burst
    rcodes = [ask(service, f"n{n}.example.org", "10.0.0.5").header.rcode for n in range(30)]
    assert rcodes.count(RCODE.NOERROR) == burst and rcodes.count(RCODE.REFUSED) == 30 - burst
    assert forwarder.asked == burst and count(metrics, "refused") == 30 - burst
    # another client is not affected; the first one recovers with time
    assert ask(service, "other.example.org", "10.0.0.6").header.rcode == RCODE.NOERROR
    clock.now += 1.0
    assert ask(service, "later.example.org", "10.0.0.5").header.rcode == RCODE.NOERROR


def test_local_answers_are_never_rate_limited() -> None:
    service, metrics, _, _, _ = make_service(ratelimit=1)
    for n in range(2000):
        name = "sip.example.local" if n % 2 else f"nothing{n}.example.local"
        assert ask(service, name, "10.0.0.5").header.rcode in (RCODE.NOERROR, RCODE.NXDOMAIN)
    assert count(metrics, "refused") == 0


# -- DnsService: prepared replies --------------------------------------------------------------


def query(name: str, qid: int, rd: bool, cd: bool, edns: bool, qtype: str = "A") -> bytes:
    record = DNSRecord.question(name, qtype)
    record.header.id, record.header.rd, record.header.cd = qid, int(rd), int(cd)
    if edns:
        record.add_ar(EDNS0(udp_len=4096, flags="do"))
    return bytes(record.pack())


def full_path(name: str, qid: int, rd: bool, cd: bool, edns: bool, qtype: str = "A") -> bytes:
    """The reply of a fresh service (no template learned yet)."""
    fresh, *_ = make_service()
    decision = fresh.answer(query(name, qid, rd, cd, edns, qtype), "127.0.0.1", tcp=False)
    assert decision.reply is not None
    return decision.reply


@pytest.mark.parametrize(
    ("name", "qtype"),
    [
        ("sip.example.local", "A"),
        ("SIP.Example.LOCAL", "A"),
        ("sip.example.local", "AAAA"),
        ("nothing.example.local", "A"),
        ("_sip._udp.example.local", "SRV"),
        ("example.local", "SOA"),
    ],
)
@pytest.mark.parametrize("edns", [False, True])
def test_prepared_reply_equals_the_full_path(name: str, qtype: str, edns: bool) -> None:
    service, *_ = make_service()
    assert service.fast_answer(query(name, 1, True, False, edns, qtype), "127.0.0.1") is None
    service.handle_query(query(name, 1, True, False, edns, qtype), False)  # learns
    for qid, rd, cd in ((7, True, False), (65535, False, True), (0, False, False), (9, True, True)):
        fast = service.fast_answer(query(name, qid, rd, cd, edns, qtype), "127.0.0.1")
        assert fast is not None, "template not used"
        assert fast == full_path(name, qid, rd, cd, edns, qtype)


def test_prepared_replies_are_dropped_when_the_view_changes() -> None:
    service, _, _, _, state = make_service()
    data = query("sip.example.local", 3, True, False, False)
    service.handle_query(data, False)
    before = service.fast_answer(data, "127.0.0.1")
    assert before is not None and "10.0.0.254" in str(DNSRecord.parse(before).rr[0].rdata)
    state.view = ZoneView("10.0.0.1", 2)
    assert service.fast_answer(data, "127.0.0.1") is None
    after = DNSRecord.parse(service.handle_query(data, False) or b"")
    assert str(after.rr[0].rdata) == "10.0.0.1"


def test_fast_path_respects_the_allow_list_and_odd_queries() -> None:
    service, *_ = make_service()
    data = query("sip.example.local", 3, True, False, False)
    service.handle_query(data, False)
    assert service.fast_answer(data, OUTSIDER) is None  # then answer() refuses it
    response = data[:2] + bytes([data[2] | 0x80]) + data[3:]
    assert service.fast_answer(response, "127.0.0.1") is None
    notify = data[:2] + bytes([data[2] | 0x20]) + data[3:]  # opcode NOTIFY
    assert service.fast_answer(notify, "127.0.0.1") is None
    badvers = query("sip.example.local", 3, True, False, True)
    badvers = badvers[:-5] + b"\x01" + badvers[-4:]  # EDNS version 1
    assert service.fast_answer(badvers, "127.0.0.1") is None
    reply = DNSRecord.parse(service.handle_query(badvers, False) or b"")
    assert any(rr.rtype == QTYPE.OPT for rr in reply.ar)  # BADVERS from the full path


def test_fast_path_counts_answers() -> None:
    service, metrics, *_ = make_service()
    data = query("sip.example.local", 3, True, False, False)
    for _ in range(5):
        service.handle_query(data, False)
    assert count(metrics, "local") == 5
