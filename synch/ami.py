"""AMI client: pyst2 0.5.1 behind a small interface that keeps the contract pyst2 does not.

pyst2 gives us the reader greenlets and the message framing. What it lacks is added here:
- every call is bounded by one deadline (`gevent.Timeout`); connect has a socket timeout too;
- a session that timed out, broke or answered garbage is thrown away, never reused: pyst2
  matches replies by order, so after one lost reply every later caller would get the wrong
  one. Each request carries its own ActionID and a reply that does not echo it is garbage;
- replies are read through a buffer (pyst2 reads one byte per recv);
- `close()` shuts the socket down itself (pyst2's `close()`/`logoff()` can block forever);
- login with `Events: off` (pyst2's event parser crashes on ChanVariable under Python 3);
- a fresh dict for every `send_action` (its default argument is a shared mutable dict);
- replies are rebuilt from the raw lines: order, duplicate keys and whole values kept.
Everything becomes `AmiTransportError` (no usable answer) or `AmiResponseError` (the peer
answered `Response: Error`).

Needs `gevent.monkey.patch_all()` before anything is imported: pyst2's threads must be
greenlets for the deadlines to interrupt them.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.lock
import gevent.monkey
from asterisk import manager as pyst2

from synch.probe import ProbeResult

_READ_BUFFER = 256 * 1024
_OK_RESPONSES = frozenset({"success", "follows", "goodbye"})
_KNOWN_RESPONSES = _OK_RESPONSES | {"error"}
# A header is `Key: Value`; Asterisk keys are tokens (Line-000000-000001, ActionID, ...).
_HEADER = re.compile(r"([A-Za-z0-9_.()/-]+):(.*)", re.DOTALL)
# What the central's manager.conf user needs for an action (FACTS: write= permissions).
_PERMISSION_HINTS = {
    "getconfig": "`write = config` (or system)",
    "getconfigjson": "`write = config` (or system)",
    "updateconfig": "`write = config`",
    "createconfig": "`write = config`",
    "reload": "`write = config` (or system)",
    "command": "`write = command`",
}


class AmiError(Exception):
    """Any AMI problem."""


class AmiTransportError(AmiError):
    """No usable answer: connect refused or timed out, connection closed, garbage, timeout."""


class AmiResponseError(AmiError):
    """The peer answered `Response: Error`; `message` holds its Message header."""

    def __init__(self, text: str, *, action: str, message: str, reply: AmiReply | None = None):
        super().__init__(text)
        self.action = action
        self.message = message
        self.reply = reply


@dataclass(frozen=True)
class AmiReply:
    """One AMI response: every header line in order (duplicates kept, values whole)."""

    headers: tuple[tuple[str, str], ...]
    body: str = ""  # lines that are not `Key: Value`, e.g. "No categories found"

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of `key` (case-insensitive)."""
        wanted = key.lower()
        for name, value in self.headers:
            if name.lower() == wanted:
                return value
        return default

    def get_all(self, key: str) -> list[str]:
        """Every value of `key` (case-insensitive), in order."""
        wanted = key.lower()
        return [value for name, value in self.headers if name.lower() == wanted]

    @property
    def response(self) -> str:
        return self.get("Response") or ""

    @property
    def message(self) -> str:
        return self.get("Message") or ""

    @property
    def ok(self) -> bool:
        return self.response.lower() in _OK_RESPONSES


def parse_reply(lines: Sequence[str]) -> AmiReply:
    """Build an AmiReply from raw lines (pyst2's `ManagerMsg.response`)."""
    headers: list[tuple[str, str]] = []
    body: list[str] = []
    for raw in lines:
        line = raw[:-2] if raw.endswith("\r\n") else raw.rstrip("\n")
        match = _HEADER.fullmatch(line)
        if match is None:
            if line:
                body.append(line)
            continue
        value = match.group(2)
        # Asterisk writes exactly one space after the colon; the rest belongs to the value.
        headers.append((match.group(1), value[1:] if value.startswith(" ") else value))
    return AmiReply(headers=tuple(headers), body="\n".join(body))


class _BufferedStream:
    """What pyst2 keeps in `Manager._sock`, reading lines through a buffer.

    pyst2 iterates it for lines, writes whole actions, and closes it when the reader ends.
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._reader = sock.makefile("rb", buffering=_READ_BUFFER)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._reader)

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        # Only the reader greenlet calls this (pyst2, at EOF); closing a BufferedReader from
        # another greenlet while it reads raises "reentrant call".
        self._reader.close()


class _Session(pyst2.Manager):  # type: ignore[misc]
    """One pyst2 connection: own socket (timeout, TLS, buffered reads), bounded close."""

    def __init__(self) -> None:
        super().__init__()
        self._raw: socket.socket | None = None

    def connect(
        self,
        host: str,
        port: int = 5038,
        *,
        timeout: float,
        tls: bool = False,
        cafile: str | None = None,
    ) -> Any:
        """Connect and return pyst2's greeting message (bounded by the caller's deadline)."""
        sock = socket.create_connection((host, port), timeout=max(timeout, 0.001))
        try:
            if tls:
                context = ssl.create_default_context(cafile=cafile)
                sock = context.wrap_socket(sock, server_hostname=host)
            # The reader waits for as long as the session lives; each caller bounds its wait.
            sock.settimeout(None)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except BaseException:
            sock.close()
            raise
        self._raw = sock
        self._sock = _BufferedStream(sock)
        self._connected.set()
        self._running.set()
        # Registered as a waiter before the reader starts, so that EOF before the greeting
        # wakes us (pyst2 does not; registering after the start races with a quick EOF).
        self._reswaiting.insert(0, 1)
        self.message_thread.start()
        self.event_dispatch_thread.start()
        return self._response_queue.get()

    def close(self) -> None:
        """Never blocks: shut the socket down so pyst2's reader sees EOF and its greenlets end."""
        self._connected.clear()
        self._running.clear()
        raw, self._raw = self._raw, None
        if raw is not None:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
            raw.close()
        # Wake anything still waiting on pyst2's queues; extra Nones are harmless.
        self._message_queue.put(None)
        self._event_queue.put(None)
        self._response_queue.put(None)


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
        raise ValueError(f"AMI {where} must not contain a line break: {value!r}")
    return value


def _fields(action: str, headers: Mapping[str, str | Sequence[str]] | None) -> dict[str, Any]:
    """A fresh pyst2 action dict; a sequence value sends the header once per item."""
    fields: dict[str, Any] = {"Action": _check_value("action", action)}
    for key, value in (headers or {}).items():
        if not _HEADER.fullmatch(f"{key}:") or key.lower() in ("action", "actionid"):
            raise ValueError(f"invalid AMI header name {key!r}")
        if isinstance(value, str):
            fields[key] = _check_value(f"header {key}", value)
        else:
            fields[key] = [_check_value(f"header {key}", str(item)) for item in value]
    return fields


def _exc_text(exc: BaseException) -> str:
    """pyst2 exceptions carry their data only in args (e.g. (errno, strerror))."""
    parts = [str(a) for a in exc.args if a not in (None, "", 0)]
    return ": ".join(parts) or type(exc).__name__


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
    ):
        if timeout <= 0:
            raise ValueError(f"AMI timeout must be positive, not {timeout}")
        self.host = host
        self.port = int(port)
        self.username = _check_value("username", username)
        self._password = _check_value("password", password)
        self.timeout = float(timeout)
        self.tls = tls
        self.cafile = cafile
        self.name = name
        self._lock = gevent.lock.BoundedSemaphore(1)
        self._session: _Session | None = None
        self._ids = itertools.count(1)

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
        if not reply.ok:
            raise self._response_error(action, reply)
        return reply

    def ping(self, timeout: float | None = None) -> None:
        """The probe: connect and log in if needed, then Ping, all within one timeout."""
        self.action("Ping", timeout=timeout)

    def close(self) -> None:
        """Drop the session without waiting for anything (no Logoff)."""
        session, self._session = self._session, None
        self._drop(session)

    # -- internals; the caller holds the lock and the deadline --------------------------

    def _open(self, deadline: float) -> _Session:
        session = _Session()
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
        action = fields["Action"]
        action_id = f"synch-{next(self._ids)}"
        try:
            message = session.send_action({**fields, "ActionID": action_id})
            reply = parse_reply(message.response)
            if reply.get("ActionID") != action_id:
                raise AmiTransportError(
                    f"{self.name} AMI {self._where}: answer to {action} does not carry its "
                    f"ActionID (garbage or out of order): {reply.headers[:3]!r}"
                )
            if reply.response.lower() not in _KNOWN_RESPONSES:
                raise AmiTransportError(
                    f"{self.name} AMI {self._where}: garbage answer to {action}: "
                    f"Response {reply.response!r}"
                )
            return reply
        except AmiTransportError:
            self._drop(session)
            raise
        except (pyst2.ManagerException, OSError) as exc:
            self._drop(session)
            raise AmiTransportError(
                f"{self.name} AMI {self._where}: connection lost during {action}: {_exc_text(exc)}"
            ) from None
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
        message = reply.message or reply.body or "(no message)"
        text = f"{self.name} AMI {self._where}: {action} refused: {message}"
        if message.lower() == "permission denied":
            need = _PERMISSION_HINTS.get(action.lower(), "the right read=/write= permission")
            text += (
                f" (the {self.name}'s manager.conf user '{self.username}' needs {need} "
                f"for {action}; Ping works without it)"
            )
        elif message.lower() == "authentication failed":
            text += f" (check the username '{self.username}' and the secret in manager.conf)"
        return AmiResponseError(text, action=action, message=message, reply=reply)


def probe_once(client: AmiClient) -> tuple[ProbeResult, float, str]:
    """One probe: (result, seconds taken, error text or "")."""
    start = time.monotonic()
    try:
        client.ping()
    except AmiResponseError as exc:
        return ProbeResult.FAILURE, time.monotonic() - start, str(exc)
    except AmiError as exc:
        return ProbeResult.ERROR, time.monotonic() - start, str(exc)
    except Exception as exc:  # a bug must not stop the probe loop; it counts as an error
        return ProbeResult.ERROR, time.monotonic() - start, f"{type(exc).__name__}: {exc}"
    return ProbeResult.SUCCESS, time.monotonic() - start, ""


# -- helpers ----------------------------------------------------------------------------


def get_config(
    client: AmiClient,
    filename: str,
    filter: str | None = None,  # the AMI header's name
    templates: bool = False,
    timeout: float | None = None,
) -> AmiReply:
    """GetConfig of `filename`; `filter` is Asterisk's `key_regex=value_regex[,...]`."""
    headers = {"Filename": filename}
    filters = (["TEMPLATES=include"] if templates else []) + ([filter] if filter else [])
    if filters:
        headers["Filter"] = ",".join(filters)
    return client.action("GetConfig", headers, timeout=timeout)


def core_status(client: AmiClient, timeout: float | None = None) -> dict[str, str]:
    """CoreStatus headers (CoreReloadDate, CoreReloadTime, CoreCurrentCalls, ...)."""
    reply = client.action("CoreStatus", timeout=timeout)
    status: dict[str, str] = {}
    for key, value in reply.headers:
        if key.lower() not in ("response", "actionid"):
            status.setdefault(key, value)
    return status


def reload_module(client: AmiClient, module: str, timeout: float | None = None) -> None:
    """Reload one module (e.g. res_pjsip.so); AmiResponseError if it is not loaded."""
    try:
        client.action("Reload", {"Module": module}, timeout=timeout)
    except AmiResponseError as exc:
        if exc.message.lower() == "no such module":
            note = " (chan_sip does not exist in Asterisk 21+)" if "chan_sip" in module else ""
            raise AmiResponseError(
                f"{exc} (module {module} is not loaded on the {client.name}){note}",
                action=exc.action,
                message=exc.message,
                reply=exc.reply,
            ) from None
        raise
