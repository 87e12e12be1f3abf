"""AMI client: pyst2 0.5.1 behind a small interface that keeps the contract pyst2 does not.

pyst2 gives us the reader greenlets and the message framing. What it lacks is added here:
- every call is bounded by one deadline (`gevent.Timeout`); connect has a socket timeout too;
- a session that timed out, broke or answered garbage is thrown away, never reused: pyst2
  matches replies by order, so after one lost reply every later caller would get the wrong
  one. Each request carries its own ActionID and a reply that does not echo it is garbage;
- replies are read in chunks (pyst2 reads one byte per recv) and framed by `_Framer`, which
  keeps pyst2's framing rules but finds and parses a plain reply (every line `Key: value`,
  e.g. GetConfig, 200,000 lines for 10k accounts) in bulk, while it is still arriving;
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
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.lock
import gevent.monkey
from asterisk import manager as pyst2

from synch.config import AmiSettings
from synch.probe import ProbeResult

_READ_BUFFER = 256 * 1024
# A reply already this large and still arriving is read in batches, _BATCH_DELAY apart.
_BATCH_AFTER = 64 * 1024
_BATCH_DELAY = 0.002
_YIELD = 0.0001  # the shortest sleep that still lets the event loop poll (see _receive_data)
# The largest reply accepted unless the caller says otherwise: a 10k-extension GetConfig is
# about 8 MB on the wire (FACTS.md).
DEFAULT_MAX_REPLY_BYTES = 32 * 1024 * 1024
# Messages nobody asked for (events, answers with no request waiting) tolerated per session:
# we log in with `Events: off` and send one request at a time, so Asterisk sends none.
_MAX_UNSOLICITED = 1000
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


class _Stream:
    """What pyst2 keeps in `Manager._sock`: our reader takes whole chunks, pyst2 writes actions.

    pyst2 read one byte per recv; chunks go into one reused buffer (no allocation per recv).
    """

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._buffer = bytearray(_READ_BUFFER)
        self._view = memoryview(self._buffer)

    def read_chunk(self) -> bytes:
        """What the peer sent since the last call (waits for something); b"" at EOF."""
        count = self._sock.recv_into(self._buffer)
        return bytes(self._view[:count])

    def write(self, data: bytes) -> None:
        self._sock.sendall(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass  # pyst2 calls this at EOF; _Session.close() closes the socket itself


class _Reply:
    """A message the reader already parsed: every line a header, not an event."""

    def __init__(self, reply: AmiReply):
        self.reply = reply


# A GetConfig or CoreStatus reply: `Key: value` lines, CR LF, nothing unusual (see _Framer).
_PLAIN_LINE = re.compile(r"^([A-Za-z0-9_.()/-]+): ?([^\r\n]*)\r\n", re.MULTILINE)
# Lines on which pyst2's framing changes state or its parser treats specially.
_SPECIAL_LINE = re.compile(r"^(?:Response[^:\n]*:[^\n]*Follows|Event:)", re.MULTILINE)
_EOL = "\r\n"


class _Framer:
    """pyst2 0.5.1's message framing (`Manager._receive_data`), chunk by chunk.

    The rules, and the state they keep across messages, are pyst2's, quirks included (a line
    containing 'status will follow' swallows messages until 'StatusComplete', `Response:
    Follows` waits for '--END COMMAND--', ...): `_line` applies them line by line. pyst2 spends
    several Python operations per line, and ManagerMsg parses every line again; a 10k-account
    GetConfig has ~200,000 lines. So a message whose every line is a plain `Key: value` CR LF
    header, where none of those rules can apply, is found with one search for its end and
    parsed with one regex pass: the same lines, split and parsed as pyst2 and parse_reply
    would. Anything else goes through `_line`.
    """

    def __init__(self, session: _Session):
        self._session = session
        self._buffer = bytearray()
        self._scan = 0  # where the search for the current message's end resumes
        self._checked = 0  # its lines up to here are parsed, into _parsed
        self._parsed: list[list[tuple[str, str]]] = []
        self._values: dict[str, str] = {}
        self._lines: list[str] = []  # the message being assembled by _line
        self._line_bytes = 0  # their size
        self._multiline = self._status = self._wait_for_marker = False

    def feed(self, chunk: bytes) -> list[Any]:
        """The messages `chunk` completes, in order: lists of lines (pyst2's form) or _Reply."""
        self._buffer += chunk
        done: list[Any] = []
        pos = 0
        while True:
            if self._plain:
                after, message = self._plain_message(pos)
                if after < 0:
                    pos = -after - 1
                    break  # the message is incomplete: wait for more
                pos = after
                if message is not None:
                    done.append(message)
                    continue
            end = self._buffer.find(b"\n", pos)
            if end < 0:
                break
            line = self._buffer[pos : end + 1].decode("utf8", "ignore")
            pos = end + 1
            message = self._line(line)
            if message is not None:
                done.append(message)
        del self._buffer[:pos]
        self._scan = max(self._scan - pos, 0)
        self._checked = max(self._checked - pos, 0)
        return done

    def feed_eof(self) -> list[Any]:
        """At EOF pyst2 reads what is left line by line, the unfinished last line too (a
        greeting may end there)."""
        *lines, partial = self._buffer.split(b"\n")  # lines as BufferedReader yields them
        raws = [line + b"\n" for line in lines] + ([partial] if partial else [])
        done = []
        for raw in raws:
            message = self._line(raw.decode("utf8", "ignore"))
            if message is not None:
                done.append(message)
        self._buffer.clear()
        return done

    @property
    def pending(self) -> int:
        """Bytes received and not yet part of a finished message."""
        return len(self._buffer)

    @property
    def unfinished(self) -> int:
        """Bytes of the message under way: what a reply that never ends makes grow."""
        return len(self._buffer) + self._line_bytes

    @property
    def _plain(self) -> bool:
        """No message under way and no pyst2 state set: the fast path may try."""
        return not (
            self._lines or self._multiline or self._status or self._wait_for_marker
        ) and bool(self._session.title)

    def _plain_message(self, pos: int) -> tuple[int, Any]:
        """(position after it, message) for a plain message at `pos`; (pos, None) when the
        message there is not plain (for _line); (-pos - 1, None) when it is incomplete.

        The lines of an incomplete message are parsed as they arrive, while the peer is still
        writing the rest."""
        buffer = self._buffer
        while buffer.startswith(b"\r\n", pos):  # pyst2 skips empty lines between messages
            pos += 2
        end = buffer.find(b"\n\r\n", max(pos, self._scan))
        start = max(pos, self._checked)
        if end < 0:
            last = buffer.rfind(b"\n")
            if last >= start and not self._parse_lines(start, last + 1):
                return self._not_plain(pos)
            self._checked = max(last + 1, start)
            self._scan = max(pos, len(buffer) - 2)
            return -pos - 1, None
        if not self._parse_lines(start, end + 1):
            return self._not_plain(pos)
        headers = tuple(itertools.chain.from_iterable(self._parsed))
        self._not_plain(pos)  # reset for the next message
        return end + 3, _Reply(AmiReply(headers=headers))

    def _parse_lines(self, start: int, end: int) -> bool:
        """Parse whole lines buffer[start:end] of a plain message; False if they are not plain."""
        try:
            # pyst2 decodes each line dropping invalid bytes, which can turn a line into the
            # blank line that ends a message: only valid UTF-8 is sure to be framed the same.
            text = self._buffer[start:end].decode("utf8")
        except UnicodeDecodeError:
            return False
        lines = text.count("\n")
        if (
            text.count("\r") != lines
            or text.count("\r\n") != lines
            or "status will follow" in text
            or "ChanVariable" in text
            or _SPECIAL_LINE.search(text)
        ):
            return False
        headers = _PLAIN_LINE.findall(text)
        if len(headers) != lines:
            return False
        # A large reply repeats most values (`type=aor` 10,000 times): keep one copy of each.
        same = self._values.setdefault
        self._parsed.append([(key, same(value, value)) for key, value in headers])
        return True

    def _not_plain(self, pos: int) -> tuple[int, None]:
        self._scan = self._checked = 0
        self._parsed = []
        self._values = {}
        return pos, None

    def _line(self, line: str) -> Any:
        """pyst2's loop body for one line; the finished message (list of lines) or None."""
        session = self._session
        if not session.title and "/" in line and ":" not in line:
            session.title = line.split("/")[0].strip()
            session.version = line.split("/")[1].strip()
            self._lines += ["Response: Generated Header\r\n", line]
            return self._finish()
        if line == _EOL and not self._wait_for_marker:
            self._multiline = False
            return self._finish() if self._lines else None
        if "status will follow" in line:
            self._status = self._wait_for_marker = True
        self._lines.append(line)
        self._line_bytes += len(line)
        if not line.endswith("\r\n") or ":" not in line:
            self._multiline = True
        if (
            not (self._multiline or self._status)
            and line.startswith("Response")
            and line.split(":", 1)[1].strip() == "Follows"
        ):
            self._wait_for_marker = True
        if self._multiline and (
            line.startswith("--END COMMAND--") or line.strip().endswith("--END COMMAND--")
        ):
            self._wait_for_marker = self._multiline = False
        if self._status and "StatusComplete" in line:
            self._wait_for_marker = self._status = False
        return None

    def _finish(self) -> list[str]:
        lines, self._lines = self._lines, []
        self._line_bytes = 0
        return lines


class _Session(pyst2.Manager):  # type: ignore[misc]
    """One pyst2 connection: own socket (timeout, TLS), chunked reads, bounded close.

    A peer cannot make it hog the process: the reader yields after every chunk (a peer that
    writes without pause would otherwise starve every other greenlet, deadlines included),
    a reply larger than `max_reply` bytes or a flood of messages nobody asked for ends the
    session, and `failure` says why.
    """

    def __init__(
        self, max_reply: int = DEFAULT_MAX_REPLY_BYTES, cap_setting: str = "maxreplymb"
    ) -> None:
        super().__init__()
        self._raw: socket.socket | None = None
        self.max_reply = max_reply
        self.cap_setting = cap_setting  # named in the error, so the operator knows what to raise
        self.failure = ""  # why the session ended itself (oversized reply, flood)
        self._unsolicited = 0

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
        self._sock = _Stream(sock)
        self._connected.set()
        self._running.set()
        # Registered as a waiter before the reader starts, so that EOF before the greeting
        # wakes us (pyst2 does not; registering after the start races with a quick EOF).
        self._reswaiting.insert(0, 1)
        self.message_thread.start()
        self.event_dispatch_thread.start()
        return self._response_queue.get()

    def _receive_data(self) -> None:
        """pyst2's reader loop, fed chunk by chunk (see _Framer); the same messages, and the
        same None once the connection ends. The connection can only end while waiting for a
        chunk (a greenlet switch), so checking after each chunk is checking after each line."""
        framer = _Framer(self)
        queue = self._message_queue
        while self._running.is_set() and self._connected.is_set():
            try:
                chunk = self._sock.read_chunk()
            except OSError:
                self._connected.clear()
                queue.put(None)
                return
            if not self._connected.is_set():
                queue.put(None)
                return
            messages = framer.feed(chunk) if chunk else framer.feed_eof()
            for message in messages:
                queue.put(message)
            if not chunk:
                self._connected.clear()
                queue.put(None)
                return
            if framer.unfinished > self.max_reply:
                self._give_up(
                    f"reply larger than {_megabytes(self.max_reply)} ({self.cap_setting}): refused"
                )
                return
            if framer.pending >= _BATCH_AFTER and len(chunk) < _BATCH_AFTER:
                # Deep in a large reply that trickles in (Asterisk writes each line on its
                # own): let it pile up rather than wake up for every few hundred bytes.
                gevent.sleep(_BATCH_DELAY)
            else:
                # A peer that never pauses leaves a chunk waiting at every recv, which then
                # returns without yielding. sleep(0) is not enough: it may run us again before
                # the loop polls for I/O (for ~50 chunks: 1 s without DNS, measured); a timer
                # waits for the next loop iteration, after every ready socket had its turn.
                gevent.sleep(_YIELD)

    def _give_up(self, why: str) -> None:
        """End the session from inside (the reader or the dispatcher): `failure` says why."""
        if not self.failure:
            self.failure = why
        self.close()

    def message_loop(self) -> None:
        """pyst2's dispatcher, except that replies the reader parsed skip ManagerMsg."""
        reader = threading.Thread(target=self._receive_data, daemon=True)
        reader.start()
        try:
            while self._running.is_set():
                data = self._message_queue.get()
                if not data:
                    self._event_queue.put(None)
                    for _ in self._reswaiting:
                        self._response_queue.put(None)
                    break
                if not isinstance(data, _Reply):
                    message = pyst2.ManagerMsg(data)
                    if not message.has_header("Response"):
                        self._unasked("events")  # we log in with Events: off and use none
                        continue
                    data = message
                if len(self._reswaiting) <= self._response_queue.qsize():
                    self._unasked("answers")
                self._response_queue.put(data)
        finally:
            reader.join()

    def _unasked(self, what: str) -> None:
        self._unsolicited += 1
        if self._unsolicited > _MAX_UNSOLICITED:
            self._give_up(f"peer sent more than {_MAX_UNSOLICITED} {what} nobody asked for")

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
        # Not the value: it may be the password, and this message reaches the journal.
        raise ValueError(f"AMI {where} must not contain a line break")
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


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"


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
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        cap_setting: str = "maxreplymb",
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
        action = fields["Action"]
        action_id = f"synch-{next(self._ids)}"
        try:
            message = session.send_action({**fields, "ActionID": action_id})
            reply = message.reply if isinstance(message, _Reply) else parse_reply(message.response)
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
            why = session.failure or f"connection lost: {_exc_text(exc)}"
            raise AmiTransportError(f"{self.name} AMI {self._where}: {action}: {why}") from None
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


_SECTIONS = {"central": "amiremote", "branch": "amilocal"}


def client_for(ami: AmiSettings, *, name: str, timeout: float | None = None) -> AmiClient:
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
    )


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
