"""What the phones say on the wire: DNS queries and SIP messages seen on one interface.

`Capture` opens a packet socket (AF_PACKET, made inside the namespace by lab.netns.ns_socket)
on one interface and records, with the time each was seen:

- every DNS query sent out (`DnsQuery`: source address, name, type), so a test reads which
  phone asked for what and when: whether it uses NAPTR/SRV, whether it asks again when it
  refreshes its registration or after a failure;
- every SIP message over UDP in either direction (`SipPacket`: source, destination, the
  request method or response code, Call-ID, CSeq, the Expires it asked for or was granted),
  so that when and where a phone sent each REGISTER or INVITE comes from the wire, whatever
  the phone's own log format.

No tcpdump, no process: one reader thread. Phones in one namespace share its resolver but
not their addresses: a query is put down to a phone by its source address (lab.softphones
makes each phone's DNS queries leave from its own address).
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass

from dnslib import QTYPE, DNSRecord

from lab.netns import ns_socket

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SIP_PORT = 5060


@dataclass(frozen=True)
class DnsQuery:
    at: float  # time.monotonic()
    source: str
    name: str  # without the trailing dot, lower case
    qtype: str  # "A", "SRV", "NAPTR", ...


@dataclass(frozen=True)
class SipPacket:
    at: float  # time.monotonic()
    source: str  # "address:port"
    destination: str
    method: str  # "REGISTER", "INVITE", ... or "" for a response
    status: int  # the response code, 0 for a request
    call_id: str
    cseq: str  # "2 REGISTER"
    expires: int | None  # Expires header, else the first Contact's expires parameter
    from_user: str = ""  # the user part of the From URI (a caller's extension)

    @property
    def dst_host(self) -> str:
        return self.destination.rsplit(":", 1)[0]

    @property
    def src_host(self) -> str:
        return self.source.rsplit(":", 1)[0]


_HEADER = re.compile(rb"^([A-Za-z-]+)[ \t]*:[ \t]*(.*?)\r?$", re.MULTILINE)
_COMPACT = {b"i": b"call-id", b"m": b"contact", b"f": b"from"}
_USER = re.compile(rb"sips?:([^@;>\s]+)@")


def _udp(frame: bytes) -> tuple[str, int, str, int, bytes] | None:
    """(source, sport, destination, dport, payload) of an IPv4 UDP Ethernet frame."""
    if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP or len(ip) < ihl + 8:
        return None
    sport, dport = struct.unpack("!HH", ip[ihl : ihl + 4])
    return socket.inet_ntoa(ip[12:16]), sport, socket.inet_ntoa(ip[16:20]), dport, ip[ihl + 8 :]


def parse_dns_query(payload: bytes) -> tuple[str, str] | None:
    """(name, type) of a DNS query; None for anything else."""
    try:
        record = DNSRecord.parse(payload)
    except Exception:  # not DNS after all
        return None
    if record.header.qr or not record.questions:
        return None
    q = record.questions[0]
    return str(q.qname).rstrip(".").lower(), QTYPE.get(q.qtype)


def parse_sip(payload: bytes) -> tuple[str, int, str, str, int | None, str] | None:
    """(method, status, Call-ID, CSeq, expires, From user) of a SIP message; None for
    anything else."""
    first, _, rest = payload.partition(b"\n")
    words = first.strip().split()
    if len(words) < 3:
        return None
    if words[0] == b"SIP/2.0" and words[1].isdigit():
        method, status = "", int(words[1])
    elif words[2] == b"SIP/2.0":
        method, status = words[0].decode(errors="replace"), 0
    else:
        return None
    head = rest.split(b"\r\n\r\n", 1)[0]
    headers: dict[bytes, bytes] = {}
    for name, value in _HEADER.findall(head):
        key = name.lower()
        headers.setdefault(_COMPACT.get(key, key), value)
    expires: int | None = None
    if headers.get(b"expires", b"").strip().isdigit():
        expires = int(headers[b"expires"])
    else:
        found = re.search(rb";\s*expires=(\d+)", headers.get(b"contact", b""))
        expires = int(found[1]) if found else None
    user = _USER.search(headers.get(b"from", b""))
    return (
        method,
        status,
        headers.get(b"call-id", b"").decode(errors="replace").strip(),
        headers.get(b"cseq", b"").decode(errors="replace").strip(),
        expires,
        user[1].decode(errors="replace") if user else "",
    )


class Capture:
    """Records DNS queries sent out of `ifname` in namespace `netns`, and SIP over UDP port
    5060 both ways, until `close()`."""

    def __init__(self, netns: str, ifname: str) -> None:
        self._sock = ns_socket(netns, socket.AF_PACKET, socket.SOCK_RAW)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        self._sock.bind((ifname, ETH_P_ALL))
        self._sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._dns: list[DnsQuery] = []
        self._sip: list[SipPacket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, address = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            udp = _udp(frame)
            if udp is None:
                continue
            src, sport, dst, dport, payload = udp
            if dport == 53 and address[2] == PACKET_OUTGOING:
                query = parse_dns_query(payload)
                if query is not None:
                    with self._lock:
                        self._dns.append(DnsQuery(now, src, *query))
            elif SIP_PORT in (sport, dport):
                sip = parse_sip(payload)
                if sip is not None:
                    with self._lock:
                        self._sip.append(SipPacket(now, f"{src}:{sport}", f"{dst}:{dport}", *sip))

    def dns(
        self, source: str | None = None, since: float = 0.0, until: float | None = None
    ) -> list[DnsQuery]:
        """The DNS queries recorded (from `source` only, if given) in [since, until)."""
        with self._lock:
            found = list(self._dns)
        return [
            q
            for q in found
            if (source is None or q.source == source)
            and q.at >= since
            and (until is None or q.at < until)
        ]

    def sip(
        self,
        host: str | None = None,
        *,
        method: str | None = None,
        sent: bool | None = None,
        since: float = 0.0,
        until: float | None = None,
    ) -> list[SipPacket]:
        """The SIP messages recorded to or from `host` (an address; with `sent`, only those
        it sent, or only those it received), of `method` (a request; responses to it match
        by CSeq), in [since, until)."""
        with self._lock:
            found = list(self._sip)
        out = []
        for p in found:
            if host is not None:
                mine = {True: p.src_host == host, False: p.dst_host == host}
                if not (mine[sent] if sent is not None else (mine[True] or mine[False])):
                    continue
            if method is not None and not p.cseq.endswith(f" {method}"):
                continue
            if p.at >= since and (until is None or p.at < until):
                out.append(p)
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def dns_summary(queries: list[DnsQuery]) -> str:
    """'NAPTR sip.example.local x2, SRV _sip._udp.sip.example.local x2, A ...' in order of
    first appearance."""
    counts: dict[tuple[str, str], int] = {}
    for q in queries:
        counts[(q.qtype, q.name)] = counts.get((q.qtype, q.name), 0) + 1
    return ", ".join(
        f"{qtype} {name}" + (f" x{n}" if n > 1 else "") for (qtype, name), n in counts.items()
    ) or "none"
