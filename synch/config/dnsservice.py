"""The `dnsservice` section: listen address, zone and record, targets, timers, who may query
(`allow`), the upstream resolvers (`forwarder`/`forwarders`) and serve-stale (`stalecachesize`,
`stalemaxage`)."""

from __future__ import annotations

import ipaddress

from synch.config.addresses import _dns_name_problem, _maybe_loops, parse_endpoint
from synch.config.reader import MAX_COUNT, _describe, _Section
from synch.config.settings import DnsSettings, Endpoint
from synch.jsonc import Node

STATES = ("Normal", "Failover")
MAX_DNS_TIME = 2**31 - 1  # RFC 2181: TTLs and SOA timers are 31-bit
MAX_STALE_ENTRIES = 65536  # at most 1232 bytes each (synch.dns.stale): about 80 MB at worst
MAX_STALE_AGE = 30 * 86400.0  # beyond a month a stale answer misleads more than it helps


def _dnsservice(sec: _Section) -> DnsSettings:
    d = DnsSettings()
    before = len(sec.ctx.problems)
    listen = sec.ip("listenaddress", d.listenaddress)
    port = sec.port("port", d.port)
    # A refused listen address or port stands in as its default: no loop check against it.
    own = Endpoint(listen, port) if len(sec.ctx.problems) == before else None
    return DnsSettings(
        listenaddress=listen,
        port=port,
        domain=_dns_name(sec, "domain", d.domain),
        record=_dns_name(sec, "record", d.record),
        recordttl=sec.integer("recordttl", d.recordttl, 0, MAX_DNS_TIME),
        srvbackup=sec.boolean("srvbackup", d.srvbackup),
        targetnormal=sec.ip(
            "targetnormal",
            "",
            version=4,
            required=True,
            why="the central PBX's address, served as an A record",
        ),
        targetfailover=sec.ip(
            "targetfailover",
            "",
            version=4,
            required=True,
            why="the branch Asterisk's address, served as an A record",
        ),
        forwarders=_forwarders(sec, own),
        forwardtimeout=sec.seconds("forwardtimeout", d.forwardtimeout),
        refreshinterval=sec.integer("refreshinterval", d.refreshinterval, 1, MAX_DNS_TIME),
        retryinterval=sec.integer("retryinterval", d.retryinterval, 1, MAX_DNS_TIME),
        expireinterval=sec.integer("expireinterval", d.expireinterval, 1, MAX_DNS_TIME),
        minttl=sec.integer("minttl", d.minttl, 0, MAX_DNS_TIME),
        ttl=sec.integer("ttl", d.ttl, 0, MAX_DNS_TIME),
        defaultstate=sec.choice("defaultstate", d.defaultstate, STATES),
        allow=_allow(sec, d.allow),
        ratelimit=sec.real("ratelimit", d.ratelimit, low=0.0, high=MAX_COUNT, low_inclusive=True),
        stalecachesize=sec.integer("stalecachesize", d.stalecachesize, 0, MAX_STALE_ENTRIES),
        stalemaxage=sec.real(
            "stalemaxage", d.stalemaxage, low=0.0, high=MAX_STALE_AGE, low_inclusive=True
        ),
    )


def _strict_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        return False
    return True


def _allow(sec: _Section, default: tuple[str, ...]) -> tuple[str, ...]:
    """`allow`: who may query (see `networks`)."""
    return networks(
        sec, "allow", default, '["0.0.0.0/0", "::/0"] answers everyone (an open resolver)'
    )


def networks(sec: _Section, key: str, default: tuple[str, ...], empty_hint: str) -> tuple[str, ...]:
    """A list of networks (`10.0.0.0/8`) or addresses (a /32 or /128); a lone string is a list
    of one. Host bits set (`10.1.2.3/8`) are cleared: the intent is clear, and a warning says so.
    """
    node = sec.get(key)
    if node is None:
        return default
    elements = node.elements if node.kind == "array" else [node]
    found: list[str] = []
    for n, element in enumerate(elements):
        name = f"{key}[{n}]" if node.kind == "array" else key
        if element.kind != "string":
            sec.problem(
                name,
                'must be a network ("10.0.0.0/8") or an address in double '
                f"quotes, got {_describe(element)}",
                element,
            )
            continue
        text = str(element.scalar).strip()
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            sec.problem(
                name,
                'must be a network like "192.168.0.0/16" or "fd00::/8", or an '
                f"address, got {_describe(element)}",
                element,
            )
            continue
        if not _strict_network(text):
            sec.warn(name, f"{text} has host bits set: taken as {network}", element)
        if str(network) not in found:
            found.append(str(network))
    if not elements:
        sec.problem(key, f"must list at least one network; {empty_hint}", node)
    return tuple(found) if found else default


def _dns_name(sec: _Section, key: str, default: str) -> str:
    got = sec.given(key, nonempty=True)
    if got is None:
        return default
    value, node = got
    reason = _dns_name_problem(value.strip())
    if reason:
        sec.problem(key, f"must be a DNS name: {reason}", node)
        return default
    return value.strip().rstrip(".").lower()


def _forwarders(sec: _Section, listen: Endpoint | None) -> tuple[Endpoint, ...]:
    """`forwarder` (the original's single key) first, then `forwarders`; duplicates dropped."""
    entries: list[tuple[str, Node]] = []
    single = sec.get("forwarder")
    if single is not None:
        entries.append(("forwarder", single))
    many = sec.get("forwarders")
    if many is not None:
        if many.kind == "array":
            entries += [(f"forwarders[{n}]", node) for n, node in enumerate(many.elements)]
        else:  # a lone "ADDRESS" where a list was expected means a list of one
            entries.append(("forwarders", many))
    result: list[Endpoint] = []
    for key, node in entries:
        endpoint = _forwarder(sec, key, node)
        if endpoint is None or endpoint in result:
            continue
        if listen is not None and endpoint == listen:
            sec.problem(key, f"{endpoint} is this DNS service itself: queries would loop", node)
            continue
        if listen is not None and _maybe_loops(endpoint, listen):
            sec.warn(
                key,
                f"{endpoint} is probably this DNS service itself (it listens on "
                f"{listen}): queries would loop",
                node,
            )
        result.append(endpoint)
    if not entries:
        sec.problem(
            "forwarders",
            "at least one upstream DNS resolver is required (forwarder "
            'or forwarders: ["ADDRESS", "ADDRESS:PORT"])',
        )
    return tuple(result)


def _forwarder(sec: _Section, key: str, node: Node) -> Endpoint | None:
    if node.kind != "string":
        sec.problem(
            key,
            f'must be "ADDRESS" or "ADDRESS:PORT" in double quotes, got {_describe(node)}',
            node,
        )
        return None
    text = sec.text_of(key, node)
    if text is None:
        return None
    endpoint = parse_endpoint(text, default_port=53)
    if endpoint is None:
        sec.problem(
            key,
            "must be an IP address, ADDRESS:PORT or [IPv6]:PORT with a port from "
            f"1 to 65535, got {_describe(node)}",
            node,
        )
    return endpoint
