"""The AMI client: one session at a time to one peer, every call bounded by one deadline.

What it adds to a session (synch/ami/session.py):
- every call is bounded by one deadline (`gevent.Timeout`), connect, login and waiting for an
  earlier caller included; connect has a socket timeout too;
- a session that timed out, broke or answered garbage is thrown away, never reused: pyst2
  matches replies by order, so after one lost reply every later caller would get the wrong
  one. Each request carries its own ActionID (`synch-N`, never reused by this client);
- callers are serialised: one request in flight per session;
- login with `Events: off` (pyst2's event parser crashes on ChanVariable under Python 3);
- with `idle_close`, a session unused for that long is closed (the next call logs in again):
  Asterisk wakes every open manager session for every event it emits, so each session held
  open costs the central CPU in proportion to everyone's traffic; a fleet of branches holding
  an idle session each costs it quadratically;
- a fresh dict for every action (pyst2's `send_action` default is a shared mutable dict), and
  no line break in anything sent (a value must not inject headers or actions).
Everything becomes `AmiTransportError` (no usable answer) or `AmiResponseError` (the peer
answered `Response: Error`), named after the peer ("central AMI host:port: ...").

Needs `gevent.monkey.patch_all()` before anything is imported: pyst2's threads must be
greenlets for the deadlines to interrupt them.
"""

from __future__ import annotations

import itertools
import ssl
import time
from collections.abc import Mapping, Sequence
from typing import Any

import gevent
import gevent.lock
import gevent.monkey

from synch.ami.actions import refusal
from synch.ami.message import HEADER, AmiReply, AmiResponseError, AmiTransportError
from synch.ami.session import DEFAULT_MAX_REPLY_BYTES, _Session
from synch.config import AmiSettings


def _require_gevent() -> None:
    if not (
        gevent.monkey.is_module_patched("socket") and gevent.monkey.is_module_patched("threading")
    ):
        raise RuntimeError(
            "synch.ami needs gevent.monkey.patch_all() before other imports: "
            "without it pyst2's reader threads cannot be interrupted and calls are unbounded"
        )


def _check_value(where: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        # Not the value: it may be the password, and this message reaches the journal.
        raise ValueError(f"AMI {where} must not contain a line break")
    return value


def _fields(action: str, headers: Mapping[str, str | Sequence[str]] | None) -> dict[str, Any]:
    """A fresh pyst2 action dict; a sequence value sends the header once per item."""
    fields: dict[str, Any] = {"Action": _check_value("action", action)}
    for key, value in (headers or {}).items():
        if not HEADER.fullmatch(f"{key}:") or key.lower() in ("action", "actionid"):
            raise ValueError(f"invalid AMI header name {key!r}")
        if isinstance(value, str):
            fields[key] = _check_value(f"header {key}", value)
        else:
            fields[key] = [_check_value(f"header {key}", str(item)) for item in value]
    return fields


class AmiClient:
    """One AMI session at a time to one peer, reconnecting on demand.

    Callers are serialised (one request in flight per session). Every call is bounded by
    `timeout` seconds, connect and login included, and waiting for an earlier caller too.
    """

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        *,
        timeout: float,
        tls: bool = False,
        cafile: str | None = None,
        name: str = "central",
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        cap_setting: str = "maxreplymb",
        idle_close: float | None = None,
    ):
        if timeout <= 0:
            raise ValueError(f"AMI timeout must be positive, not {timeout}")
        if max_reply_bytes <= 0:
            raise ValueError(f"AMI reply cap must be positive, not {max_reply_bytes}")
        self.host = host
        self.port = int(port)
        self.username = _check_value("username", username)
        self._password = _check_value("password", password)
        self.timeout = float(timeout)
        self.tls = tls
        self.cafile = cafile
        self.name = name
        self.max_reply_bytes = max_reply_bytes
        self.cap_setting = cap_setting
        if idle_close is not None and idle_close <= 0:
            raise ValueError(f"idle_close must be positive, not {idle_close}")
        self.idle_close = idle_close
        self._lock = gevent.lock.BoundedSemaphore(1)
        self._session: _Session | None = None
        self._ids = itertools.count(1)
        self._last_used = 0.0  # monotonic time the last call ended
        self._reaper: gevent.Greenlet[Any, None] | None = None

    def __repr__(self) -> str:
        return f"AmiClient({self.name} {self._where})"

    @property
    def _where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}{' (TLS)' if self.tls else ''}"

    @property
    def connected(self) -> bool:
        session = self._session
        return session is not None and bool(session.connected())

    def action(
        self,
        action: str,
        headers: Mapping[str, str | Sequence[str]] | None = None,
        timeout: float | None = None,
    ) -> AmiReply:
        """Send one action (connecting and logging in first if needed) and return its reply.

        Raises AmiResponseError for `Response: Error`, AmiTransportError for anything else.
        """
        fields = _fields(action, headers)
        _require_gevent()
        budget = self.timeout if timeout is None else timeout
        if budget <= 0:
            raise ValueError(f"AMI timeout must be positive, not {budget}")
        phase = "waiting for the previous request"
        deadline = time.monotonic() + budget
        timer = gevent.Timeout(budget)
        timer.start()
        try:
            with self._lock:
                session = self._session
                if session is None or not session.connected():
                    self._drop(session)
                    phase = "connecting"
                    session = self._open(deadline)
                phase = f"waiting for the answer to {action}"
                reply = self._request(session, fields)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            raise AmiTransportError(
                f"{self.name} AMI {self._where}: no answer within {budget:g} s ({phase})"
            ) from None
        finally:
            timer.close()
            self._used()
        if not reply.ok:
            raise self._response_error(action, reply)
        return reply

    def ping(self, timeout: float | None = None) -> None:
        """The probe: connect and log in if needed, then Ping, all within one timeout."""
        self.action("Ping", timeout=timeout)

    def close(self) -> None:
        """Drop the session without waiting for anything (no Logoff)."""
        reaper, self._reaper = self._reaper, None
        if reaper is not None and reaper is not gevent.getcurrent():
            reaper.kill(block=False)
        session, self._session = self._session, None
        self._drop(session)

    # -- closing an idle session --------------------------------------------------------

    def _used(self) -> None:
        """A call ended: with `idle_close`, close the session once that long has passed
        without another."""
        self._last_used = time.monotonic()
        if self.idle_close is not None and (self._reaper is None or self._reaper.dead):
            self._reaper = gevent.spawn_later(self.idle_close, self._reap)

    def _reap(self) -> None:
        assert self.idle_close is not None
        self._reaper = None
        idle = time.monotonic() - self._last_used
        if idle < self.idle_close:  # used since: look again when idle long enough
            self._reaper = gevent.spawn_later(self.idle_close - idle, self._reap)
        elif self._lock.acquire(blocking=False):
            try:
                session, self._session = self._session, None
                self._drop(session)
            finally:
                self._lock.release()
        # else a call is in progress: its end (`_used`) arms the reaper again

    # -- internals; the caller holds the lock and the deadline --------------------------

    def _open(self, deadline: float) -> _Session:
        session = _Session(self.max_reply_bytes, self.cap_setting)
        try:
            try:
                greeting = session.connect(
                    self.host,
                    self.port,
                    timeout=deadline - time.monotonic(),
                    tls=self.tls,
                    cafile=self.cafile,
                )
            except ssl.SSLError as exc:  # before OSError: SSLError is one
                raise AmiTransportError(
                    f"{self.name} AMI {self._where}: TLS failed: {exc}"
                ) from None
            except OSError as exc:
                raise AmiTransportError(
                    f"{self.name} AMI {self._where}: cannot connect: {exc}"
                ) from None
            title = session.title or ""
            if greeting is None or "call manager" not in title.lower():
                seen = "connection closed" if greeting is None else f"{greeting.response!r}"
                raise AmiTransportError(
                    f"{self.name} AMI {self._where}: not an Asterisk manager greeting ({seen})"
                )
            login = {"Username": self.username, "Secret": self._password, "Events": "off"}
            reply = self._request(session, _fields("Login", login))
            if not reply.ok:
                raise self._response_error("Login", reply)
        except BaseException:
            session.close()
            raise
        self._session = session
        return session

    def _request(self, session: _Session, fields: dict[str, Any]) -> AmiReply:
        """One request/answer on `session`; any doubt about the session drops it."""
        try:
            return session.request(fields, f"synch-{next(self._ids)}")
        except AmiTransportError as exc:
            self._drop(session)
            raise AmiTransportError(f"{self.name} AMI {self._where}: {exc}") from None
        except BaseException:  # timeout, kill, bug: the reply may still come, for someone else
            self._drop(session)
            raise

    def _drop(self, session: _Session | None) -> None:
        if session is None:
            return
        if self._session is session:
            self._session = None
        session.close()

    def _response_error(self, action: str, reply: AmiReply) -> AmiResponseError:
        return refusal(action, reply, name=self.name, where=self._where, username=self.username)


_SECTIONS = {"central": "amiremote", "branch": "amilocal"}


def client_for(
    ami: AmiSettings, *, name: str, timeout: float | None = None, idle_close: float | None = None
) -> AmiClient:
    """A client for an `amiremote` ("central") or `amilocal` ("branch") section (its own
    timeout unless given)."""
    return AmiClient(
        ami.hostname,
        ami.port,
        ami.username,
        ami.password,
        timeout=ami.timeout if timeout is None else timeout,
        tls=ami.tls,
        cafile=ami.cafile,
        name=name,
        max_reply_bytes=ami.maxreplymb * 1024 * 1024,
        cap_setting=f"{_SECTIONS.get(name, 'ami')}.maxreplymb",
        idle_close=idle_close,
    )
