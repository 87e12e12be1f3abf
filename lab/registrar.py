"""A scripted SIP registrar: answers each REGISTER as a test tells it, to see how real phones react.

`ScriptedRegistrar(netns, address, answer)` listens on UDP `address:5060` inside a namespace
(where a real registrar would be, e.g. the central's address after its Asterisk is stopped)
and answers the n-th REGISTER it receives (0-based, counted per source address; a
retransmission gets the answer its original got, an un-REGISTER always 200 and neither is
counted) with `answer(n, request)`: `Accept(expires)` (200 granting `expires` seconds),
`Reject(code, retry_after)` (403, 500, 503...), or `Silence()` (no answer, as a dead server).
No authentication is asked for. OPTIONS gets 200; any other request 501. Every REGISTER is
recorded (`Received`), with what it was answered.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.netns import ns_socket

REASONS = {200: "OK", 403: "Forbidden", 404: "Not Found", 480: "Temporarily Unavailable",
           500: "Server Internal Error", 501: "Not Implemented",
           503: "Service Unavailable"}  # fmt: skip
_EXPIRES = re.compile(r";\s*expires=\d+")


@dataclass(frozen=True)
class Accept:
    expires: int


@dataclass(frozen=True)
class Reject:
    code: int
    retry_after: int | None = None


@dataclass(frozen=True)
class Silence:
    pass


Answer = Accept | Reject | Silence


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic()
    source: str  # "address:port"
    call_id: str
    cseq: str
    expires: int | None
    answer: Answer


def _headers(text: str) -> list[tuple[str, str]]:
    head = text.split("\r\n\r\n", 1)[0]
    out = []
    for line in head.split("\r\n")[1:]:
        name, colon, value = line.partition(":")
        if colon:
            out.append((name.strip(), value.strip()))
    return out


def _expires(headers: list[tuple[str, str]]) -> int | None:
    for name, value in headers:
        if name.lower() == "expires" and value.isdigit():
            return int(value)
    for name, value in headers:
        if name.lower() in ("contact", "m"):
            found = re.search(r";\s*expires=(\d+)", value)
            if found:
                return int(found[1])
    return None


def response(request: str, code: int, extra: list[str] | None = None) -> bytes:
    """A response to `request` (its Via, From, To with a tag, Call-ID and CSeq)."""
    headers = _headers(request)
    lines = [f"SIP/2.0 {code} {REASONS.get(code, 'Error')}"]
    for name, value in headers:
        low = name.lower()
        if low in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            lines.append(f"{name}: {value}")
        elif low in ("to", "t"):
            lines.append(f"{name}: {value}" + ("" if ";tag=" in value else ";tag=scripted"))
    lines += [*(extra or []), "Server: synch-lab scripted registrar", "Content-Length: 0"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class ScriptedRegistrar:
    def __init__(
        self,
        netns: str,
        address: str,
        answer: Callable[[int, str], Answer],
        port: int = 5060,
    ) -> None:
        self.answer = answer
        self._sock = ns_socket(netns, socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((address, port))
        self._sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._counts: dict[str, int] = {}
        self._answers: dict[tuple[str, str], Answer] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registrar", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.monotonic()
            text = data.decode(errors="replace")
            method = text.split(" ", 1)[0]
            if method == "REGISTER":
                self._register(now, text, peer)
            elif method == "OPTIONS":
                self._sock.sendto(response(text, 200), peer)
            elif method not in ("ACK", "SIP/2.0"):
                self._sock.sendto(response(text, 501), peer)

    def _register(self, now: float, text: str, peer: tuple[str, int]) -> None:
        source = f"{peer[0]}:{peer[1]}"
        headers = _headers(text)
        call_id = next((v for k, v in headers if k.lower() in ("call-id", "i")), "")
        cseq = next((v for k, v in headers if k.lower() == "cseq"), "")
        expires = _expires(headers)
        n = -1
        with self._lock:
            previous = self._answers.get((call_id, cseq))
            if previous is None and expires != 0:
                n = self._counts.get(peer[0], 0)
                self._counts[peer[0]] = n + 1
        if previous is not None:
            answer = previous  # a retransmission gets the same answer
        elif expires == 0:
            answer = Accept(0)
        else:
            answer = self.answer(n, text)
        with self._lock:
            self._answers[(call_id, cseq)] = answer
        if isinstance(answer, Accept):
            contacts = [v for k, v in headers if k.lower() in ("contact", "m")]
            extra = [f"Contact: {_EXPIRES.sub('', c)};expires={answer.expires}" for c in contacts]
            self._sock.sendto(response(text, 200, [*extra, f"Expires: {answer.expires}"]), peer)
        elif isinstance(answer, Reject):
            extra = [] if answer.retry_after is None else [f"Retry-After: {answer.retry_after}"]
            self._sock.sendto(response(text, answer.code, extra), peer)
        with self._lock:
            self._received.append(Received(now, source, call_id, cseq, expires, answer))

    def received(self, host: str | None = None, since: float = 0.0) -> list[Received]:
        with self._lock:
            found = list(self._received)
        return [
            r for r in found if (host is None or r.source.split(":")[0] == host) and r.at >= since
        ]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with contextlib.suppress(OSError):
            self._sock.close()
