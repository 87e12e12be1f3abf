"""The SIP OPTIONS probe as bytes: the request synch sends and what it reads of the answer.

Pure: no sockets. The caller (synch.sip.client) supplies the addresses and a random token and
hands back whatever bytes arrived. A SIP request is a few lines of text and synch needs four
things of the answer (its status, and the Via branch, Call-ID and CSeq that tie it to the
request), so this is written here rather than brought in as a dependency.

What an answer means is decided here too (`response_result`): any SIP response is the central's
SIP service answering (a 401 or 404 from Asterisk included: the phones' requests are processed),
except 503 Service Unavailable, which a server sends when it cannot serve now (Asterisk while it
shuts down gracefully): the central answered, with an error, like an AMI `Response: Error`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from synch.probe import ProbeResult

TRANSPORTS = ("udp", "tcp", "tls")
# A UDP datagram is at most this long; a TCP or TLS answer's head is read up to it, no further.
MAX_MESSAGE_BYTES = 65535
# RFC 3261 17.1.2.2: a request over UDP is sent again after T1, then after 2*T1, 4*T1, ...
T1_SECONDS = 0.5
SERVICE_UNAVAILABLE = 503

# RFC 3261 25.1 `user`: unreserved and user-unreserved characters (no escapes, no '@' or ':').
_SIP_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/]{1,64}\Z")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?\Z")
_BRANCH = re.compile(r";\s*branch\s*=\s*([^;,\s]+)", re.IGNORECASE)
# RFC 3261 7.3.3: compact header names.
_COMPACT = {"v": "via", "i": "call-id", "l": "content-length", "f": "from", "t": "to"}


class SipResponseError(ValueError):
    """Bytes that are not a SIP response (or not a whole head of one)."""


def is_sip_user(text: str) -> bool:
    """Whether `text` can be the user part of the probe's From URI as it is."""
    return bool(_SIP_USER.match(text))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True)
class OptionsRequest:
    data: bytes
    branch: str
    call_id: str


def options_request(
    transport: str,
    host: str,
    port: int,
    local_host: str,
    local_port: int,
    *,
    user: str,
    token: str,
    user_agent: str,
) -> OptionsRequest:
    """An OPTIONS request to the server at host:port over `transport`, from local_host:
    local_port. `token` (random letters and digits) makes the branch, tag and Call-ID unique;
    `user` is the From user (an account the central knows: it then answers without logging
    a request from an unknown endpoint)."""
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown SIP transport {transport!r}")
    if not token.isalnum():
        raise ValueError("the token must be letters and digits")
    if not is_sip_user(user):
        raise ValueError(f"not a SIP user name: {user!r}")
    params = "" if transport == "udp" else f";transport={transport}"
    target = f"{_host(host)}:{port}"
    local = f"{_host(local_host)}:{local_port}"
    branch = f"z9hG4bK{token}"
    call_id = f"{token}@{_host(local_host)}"
    lines = [
        f"OPTIONS sip:{target}{params} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {local};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{_host(local_host)}>;tag={token[:16]}",
        f"To: <sip:{target}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        "Accept: application/sdp",
        f"User-Agent: {user_agent}",
        "Content-Length: 0",
        "",
        "",
    ]
    return OptionsRequest("\r\n".join(lines).encode("ascii"), branch, call_id)


@dataclass(frozen=True)
class SipResponse:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]  # (lowercase full name, value), in order

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive, compact forms read too)."""
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    @property
    def summary(self) -> str:
        return f"{self.status} {self.reason}".strip()

    def answers(self, request: OptionsRequest) -> bool:
        """Whether this is the answer to `request`: its top Via branch, Call-ID and CSeq."""
        via = self.header("via") or ""
        branch = _BRANCH.search(via.split(",", 1)[0])
        cseq = " ".join((self.header("cseq") or "").split()).upper()
        return (
            branch is not None
            and branch.group(1) == request.branch
            and (self.header("call-id") or "").strip() == request.call_id
            and cseq == "1 OPTIONS"
        )


def head_end(buffer: bytes) -> int | None:
    """Where the head of a message in a stream ends (after its blank line), or None if the
    blank line has not arrived yet."""
    end = buffer.find(b"\r\n\r\n")
    return None if end < 0 else end + 4


def parse_response(data: bytes) -> SipResponse:
    """The status and headers of a SIP response (its body, if any, is not read)."""
    end = head_end(data)
    head = data[:end] if end is not None else data
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipResponseError("not UTF-8 text") from None
    lines = text.replace("\r\n", "\n").split("\n")
    status = _STATUS_LINE.match(lines[0].strip())
    if status is None:
        raise SipResponseError(f"not a SIP response: {lines[0][:60]!r}")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line.strip():
            break
        if line[0] in " \t" and headers:  # a folded line continues the previous header
            key, value = headers[-1]
            headers[-1] = (key, f"{value} {line.strip()}")
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            raise SipResponseError(f"malformed header line {line[:60]!r}")
        key = key.strip().lower()
        headers.append((_COMPACT.get(key, key), value.strip()))
    return SipResponse(int(status.group(1)), (status.group(2) or "").strip(), tuple(headers))


def response_result(response: SipResponse) -> ProbeResult:
    """What an answer counts as in the probe arithmetic (see the module's docstring)."""
    if response.status == SERVICE_UNAVAILABLE:
        return ProbeResult.FAILURE
    return ProbeResult.SUCCESS


def retransmit_times(timeout: float) -> list[float]:
    """Seconds after the first send at which a UDP request is sent again within `timeout`."""
    times, wait, at = [], T1_SECONDS, T1_SECONDS
    while at < timeout:
        times.append(at)
        wait *= 2
        at += wait
    return times
