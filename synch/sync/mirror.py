"""Contact mirroring and failover timers: what the branch adds to the synced AORs while it
serves the phones.

A real phone registers once an hour or so and keeps sending to the address it registered
with, so after a WAN cut the branch Asterisk knows no contact for it until its next REGISTER.
While the central is healthy synch learns the synced phones' contacts from it (AMI
`PJSIPShowContacts`); while in Failover it writes them as static `contact=` lines onto the
synced AORs, with short registration limits, in a file of its own that the synced file
includes last (`#tryinclude`). Asterisk's `[name](+type=aor)` appends to the AOR of that name
(not the endpoint of the same name); a later `maximum_expiration=` overrides the central's.
On fallback the file is emptied and the AORs are as synced again.

Everything here is data from the central and is checked like all of it: only `sip:` URIs
with a plain user part, an IP address in the configured networks, a port, and a few plain
parameters; one bad contact is skipped with a reason, never written. An `(+)` naming an AOR
that is not in the synced file makes Asterisk refuse the whole file, so an overlay only ever
names AORs of the synced file it was made for (`overlay_for`, `prune`).

Pure: no sockets, no files.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from synch.sync.model import ConfigFile

OVERLAY_FILE = "pjsip_synch_failover.conf"  # next to the synced file; kept out of git
INCLUDE_LINE = f"#tryinclude {OVERLAY_FILE}"
MAX_CONTACTS_PER_AOR = 4  # a desk phone and a softphone or two; more is not a phone
MAX_URI = 256
# RFC 3261 user characters minus those Asterisk's config parser or dial strings treat
# specially (`;` comment, `,` list, `&` dial legs, `(`/`)`, `$`, `\`).
_USER = re.compile(r"^[A-Za-z0-9._~+*#!-]{1,64}$")
_PARAM = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,31}(=[A-Za-z0-9._~-]{1,64})?$")
_TRANSPORTS = ("udp", "tcp", "tls", "ws", "wss")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SECTION = re.compile(r"^\[([^\]]+)\]\(\+type=aor\)$")


class Fields(Protocol):
    """An AMI event's headers (synch.ami's AmiReply) or a plain dict."""

    def get(self, key: str, /) -> str | None: ...


@dataclass(frozen=True)
class Learned:
    """The contacts worth keeping, per AOR (sorted, deterministic), and why others were not."""

    contacts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(uris) for uris in self.contacts.values())


def synced_aors(config: ConfigFile) -> set[str]:
    """The AORs of the synced file: its `type=aor` sections (the only names an `(+type=aor)`
    may use)."""
    return {cat.name for cat in config.categories if cat.type == "aor" and not cat.is_template}


def parse_networks(texts: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(text, strict=False) for text in texts)


def check_uri(uri: str, networks: tuple[Network, ...]) -> str | None:
    """Why `uri` cannot be a static contact on the branch (None: it can)."""
    if len(uri) > MAX_URI or not uri.isprintable() or any(c.isspace() for c in uri):
        return "not a plain URI"
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme.lower() not in ("sip", "sips"):
        return "not a sip: URI"
    address, *params = rest.split(";")
    user, at, hostport = address.rpartition("@")
    if at and not _USER.match(user):
        return "user part with characters the branch will not write"
    host, port = _split_hostport(hostport)
    if host is None:
        return "no IP address and port"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "host is not an IP address"
    if port is not None and not 0 < port < 65536:
        return "port out of range"
    if not any(ip in net for net in networks):
        return f"{ip} is not in the networks the branch reaches (failover.contactnetworks)"
    for param in params:
        if not _PARAM.match(param):
            return "a URI parameter the branch will not write"
        name, _, value = param.partition("=")
        if name.lower() == "transport" and value.lower() not in _TRANSPORTS:
            return "unknown transport"
    if len(params) > 6:
        return "too many URI parameters"
    return None


def _split_hostport(text: str) -> tuple[str | None, int | None]:
    if text.startswith("["):
        host, sep, tail = text[1:].partition("]")
        if not sep:
            return None, None
        port_text = tail[1:] if tail.startswith(":") else tail
    else:
        host, _, port_text = text.partition(":")
    if port_text and not port_text.isdigit():
        return None, None
    return (host or None), (int(port_text) if port_text else None)


def learn(
    events: Iterable[Fields],
    aors: set[str],
    networks: tuple[Network, ...],
    now: float,
) -> Learned:
    """The central's contacts (PJSIPShowContacts' ContactList events) of the synced AORs
    that the branch can reach, checked; the rest skipped with a reason (not for AORs that
    are not synced: those are none of the branch's business)."""
    found: dict[str, set[str]] = {}
    skipped: list[str] = []
    for event in events:
        aor = (event.get("ObjectName") or "").split(";@", 1)[0]
        if aor not in aors:
            continue
        uri = event.get("Uri") or ""
        why = check_uri(uri, networks)
        if why is None and (event.get("Path") or "").strip():
            why = "registered through a proxy (Path): the branch cannot reach it directly"
        if why is None and _expired(event.get("ExpirationTime"), now):
            why = "expired"
        if why is not None:
            skipped.append(f"{aor}: contact {_printable(uri)}: {why}")
            continue
        found.setdefault(aor, set()).add(uri)
    contacts = {}
    for aor in sorted(found):
        uris = sorted(found[aor])
        if len(uris) > MAX_CONTACTS_PER_AOR:
            skipped.append(f"{aor}: {len(uris)} contacts, kept {MAX_CONTACTS_PER_AOR}")
            uris = uris[:MAX_CONTACTS_PER_AOR]
        contacts[aor] = tuple(uris)
    return Learned(contacts, skipped)


def _expired(stamp: str | None, now: float) -> bool:
    try:
        return 0 < int(stamp or "0") < now
    except ValueError:
        return False


def _printable(text: str) -> str:
    return repr(text[:80]) if not text.isprintable() else text[:80]


def spread_expiration(aor: str, base: int) -> int:
    """`base` to 1.5 × `base` seconds, the same for an AOR every time: phones that registered
    together refresh apart (hundreds of phones must not all come back in one second), and a
    rewrite of the overlay does not move anyone's timer."""
    if base <= 0:
        return 0
    digest = int.from_bytes(hashlib.sha256(aor.encode()).digest()[:4], "big")
    return base + digest % (base // 2 + 1)


def overlay_for(aors: set[str], contacts: Mapping[str, Iterable[str]], expiration: int) -> str:
    """The failover file for a synced file with `aors`: each AOR with known contacts gets
    them, and every AOR the short registration limits (`expiration` 0: the central's)."""
    lines = [
        "; Written by synch while this branch serves the phones (Failover): the phones' last",
        "; contacts known at the central, and short registrations. Emptied on fallback.",
    ]
    for aor in sorted(aors):
        uris = sorted(contacts.get(aor, ()))
        seconds = spread_expiration(aor, expiration)
        if not uris and not seconds:
            continue
        lines += ["", f"[{aor}](+type=aor)"]
        lines += [f"contact={_escape(uri)}" for uri in uris]
        if seconds:
            lines += [f"maximum_expiration={seconds}", f"default_expiration={seconds}"]
    return "\n".join(lines) + "\n"


def _escape(uri: str) -> str:
    """`;` starts a comment in Asterisk's .conf files: URI parameters need `\\;`."""
    return uri.replace(";", "\\;")


def overlay_aors(text: str) -> set[str]:
    """The AORs an overlay text appends to."""
    return {m.group(1) for line in text.splitlines() if (m := _SECTION.match(line.strip()))}


def prune(text: str, aors: set[str]) -> str | None:
    """`text` without the sections of AORs not in `aors` (None: nothing to drop)."""
    if overlay_aors(text) <= aors:
        return None
    out: list[str] = []
    keep = True
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            match = _SECTION.match(stripped)
            keep = bool(match and match.group(1) in aors)
        if keep:
            out.append(line)
    return "\n".join(out) + "\n"
