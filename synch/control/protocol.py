"""The status socket's line protocol: `Action(token)` in, one reply line out.

Byte-exact with the original daemon for what monitoring scripts already use:

    GetStatus(token)  -> [{"Timestamp":"yyyyMMddHHmmss","Monitor":..,"Sync":..,"Service":..}]\\n
    wrong/no token    -> Token error. Bye bye!\\n
    unknown action    -> Action error. Bye bye!\\n   (only once the token is right)

New actions answer one compact JSON object line: `GetDetails` (either token), and the admin
actions `Failover`, `Normal`, `Auto`, `Sync` (admintoken only; none configured: Token error).

Pure: no sockets, no greenlets. The server hands in the bytes it read and sends back the reply.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from synch.states import Monitor, Service, SyncState
from synch.timestamps import local_stamp

MAX_REQUEST_BYTES = 256  # the original read one 256-byte buffer

TOKEN_ERROR = b"Token error. Bye bye!\n"
ACTION_ERROR = b"Action error. Bye bye!\n"

READ_ACTIONS = frozenset({"GetStatus", "GetDetails"})
ADMIN_ACTIONS = frozenset({"Failover", "Normal", "Auto", "Sync"})

# The action's letters (possibly none, as the original allowed), optional blanks, then
# "(token)". Anything after the ")" is ignored: the original answered as soon as
# one buffer held a parenthesised token, whatever followed it.
_REQUEST = re.compile(rb"([A-Za-z]*)[ \t]*\([ \t]*([^()\s]*)[ \t]*\)")


@dataclass(frozen=True)
class Request:
    action: str  # ASCII letters, case kept (actions are case-sensitive, as in the original)
    token: bytes  # raw bytes, compared in constant time; empty means "no token"


@dataclass(frozen=True)
class StatusSnapshot:
    monitor: Monitor
    sync: SyncState
    service: Service


class Backend(Protocol):
    """What the daemon offers the socket. Calls run in a client's handler: keep them quick."""

    def status(self) -> StatusSnapshot: ...

    def details(self) -> dict[str, object]: ...

    def force(self, service: Service) -> None: ...

    def auto(self) -> None: ...

    def sync_now(self) -> dict[str, object]: ...


def is_complete(buffer: bytes) -> bool:
    """True once `buffer` holds all a request will get: a newline, a closing ")", or the cap.

    The ")" rule answers `printf 'GetStatus(t)' | nc host port` (no newline, no half-close)
    at once, as the original did, instead of after the idle timeout.
    """
    if len(buffer) >= MAX_REQUEST_BYTES:
        return True
    text = buffer.lstrip()  # blank lines before the request are skipped, as parse_request does
    return b"\n" in text or b")" in text


def parse_request(raw: bytes) -> Request | None:
    """The first non-blank line of `raw` as a Request, or None if it is no `Action(token)`."""
    line = raw[:MAX_REQUEST_BYTES].lstrip().split(b"\n", 1)[0]
    match = _REQUEST.match(line)
    if match is None:
        return None
    return Request(action=match.group(1).decode("ascii"), token=match.group(2))


def json_line(value: object) -> bytes:
    """Compact JSON (no spaces, ASCII only) plus the newline; odd values become strings."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True, default=str)
    return text.encode("ascii") + b"\n"


def _token_matches(presented: bytes, expected: bytes | None) -> bool:
    # An empty or unset token never matches: "GetStatus()" is a missing token, not a login.
    if not expected or not presented:
        return False
    return hmac.compare_digest(presented, expected)


class ControlProtocol:
    """Turns one request's bytes into the reply's bytes, and counts what it refused."""

    def __init__(
        self,
        token: str,
        admintoken: str | None,
        backend: Backend,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self._token = token.encode("utf-8")
        self._admintoken = admintoken.encode("utf-8") if admintoken else None
        self._backend = backend
        self._now = now
        # Counters for metrics and logs; read them, never reset them.
        self.requests = 0
        self.token_errors = 0
        self.action_errors = 0
        self.backend_errors = 0

    def reply(self, raw: bytes) -> bytes:
        self.requests += 1
        request = parse_request(raw)
        if request is None:
            return self._refuse_token()
        is_admin = _token_matches(request.token, self._admintoken)
        is_reader = is_admin or _token_matches(request.token, self._token)
        if not is_reader:
            return self._refuse_token()
        if request.action in ADMIN_ACTIONS:
            return self._admin(request.action) if is_admin else self._refuse_token()
        if request.action == "GetStatus":
            return self._get_status()
        if request.action == "GetDetails":
            return self._guarded(lambda: json_line(self._backend.details()))
        self.action_errors += 1
        return ACTION_ERROR

    def _refuse_token(self) -> bytes:
        self.token_errors += 1
        return TOKEN_ERROR

    def _get_status(self) -> bytes:
        try:
            snapshot = self._backend.status()
        except Exception:
            # Scripts written for the original already handle this line.
            self.backend_errors += 1
            return ACTION_ERROR
        return status_line(snapshot, self._now())

    def _admin(self, action: str) -> bytes:
        if action == "Sync":
            return self._guarded(lambda: json_line({"ok": True, **self._backend.sync_now()}))
        if action == "Auto":
            return self._guarded(lambda: self._service_change(self._backend.auto, forced=False))
        target = Service.FAILOVER if action == "Failover" else Service.NORMAL
        return self._guarded(
            lambda: self._service_change(lambda: self._backend.force(target), forced=True)
        )

    def _service_change(self, change: Callable[[], None], forced: bool) -> bytes:
        change()
        service = self._backend.status().service
        return json_line({"ok": True, "Service": service.value, "Forced": forced})

    def _guarded(self, answer: Callable[[], bytes]) -> bytes:
        """A failing backend call becomes an `{"ok":false,...}` line, never a dropped client."""
        try:
            return answer()
        except Exception as exc:
            self.backend_errors += 1
            return json_line({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def status_line(snapshot: StatusSnapshot, moment: datetime) -> bytes:
    """The original's GetStatus reply, byte for byte (a one-element array, keys in this order)."""
    return json_line(
        [
            {
                "Timestamp": local_stamp(moment),
                "Monitor": snapshot.monitor.value,
                "Sync": snapshot.sync.value,
                "Service": snapshot.service.value,
            }
        ]
    )
