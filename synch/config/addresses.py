"""Addresses and names as the settings accept them: IP literals, host names, DNS names,
`ADDRESS:PORT` endpoints. Pure functions: they say what is wrong, the section reports it."""

from __future__ import annotations

import ipaddress
import re

from synch.config.settings import Endpoint

_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")


def _ip_literal(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _hostname_problem(name: str) -> str | None:
    """Why `name` is not a valid host name (RFC 1123), or None if it is one."""
    if not name or len(name.rstrip(".")) > 253:
        return "empty" if not name else "longer than 253 characters"
    labels = name.rstrip(".").split(".")
    for label in labels:
        if not _HOST_LABEL.match(label):
            return f"{label!r} is not a valid name part (letters, digits, '-'; 1 to 63)"
    if labels[-1].isdigit():
        return "looks like an IP address but is not one"
    return None


def _dns_name_problem(name: str) -> str | None:
    """Why `name` is not a valid DNS name for a zone or record, or None if it is one."""
    bare = name.rstrip(".") if name != "." else ""
    if not bare:
        return "empty"
    if len(bare) > 253:
        return "longer than 253 characters"
    for label in bare.split("."):
        if not _DNS_LABEL.match(label):
            return f"{label!r} is not a valid DNS label (letters, digits, '-', '_'; 1 to 63)"
    return None


def parse_endpoint(text: str, default_port: int) -> Endpoint | None:
    """`ADDRESS`, `ADDRESS:PORT`, `IPV6` or `[IPV6]:PORT` → Endpoint, or None if malformed."""
    text = text.strip()
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d{1,5}))?", text)
    if m:
        host, port_text = m.group(1), m.group(2)
        address = _ip_literal(host)
        if address is None or address.version != 6:
            return None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text.isdigit() or len(port_text) > 5:
            return None
        address = _ip_literal(host)
        if address is None or address.version != 4:
            return None
    else:
        address, port_text = _ip_literal(text), None
        if address is None:
            return None
    port = int(port_text) if port_text else default_port
    if not 1 <= port <= 65535:
        return None
    return Endpoint(str(address), port)


def _maybe_loops(endpoint: Endpoint, listen: Endpoint) -> bool:
    """A wildcard listener also owns 127.0.0.1/::1, unless another resolver bound that address
    itself (SO_REUSEADDR): likely a loop, not certainly (127.0.0.53 is systemd-resolved's)."""
    return (
        endpoint.port == listen.port
        and listen.host in ("0.0.0.0", "::")
        and endpoint.host in ("127.0.0.1", "::1")
        and (":" in endpoint.host) == (":" in listen.host)
    )
