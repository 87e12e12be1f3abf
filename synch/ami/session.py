"""One AMI connection: pyst2 0.5.1's `Manager`, with its socket, reader and close replaced.

pyst2 keeps what it does well: the session's queues, its reader and dispatcher "threads",
matching an answer to whoever waits for one. What it lacks is added here:
- its own socket (connect timeout, TLS with certificate and host name checks, keepalive);
- replies read in chunks (pyst2 reads one byte per recv) and framed by `_Framer`
  (synch/ami/framing.py), which keeps pyst2's framing rules but parses a plain reply in bulk;
- a peer cannot make the session hog the process: the reader yields after every chunk, a
  reply larger than `max_reply` bytes or a flood of messages nobody asked for (we log in with
  `Events: off` and send one request at a time) ends the session, and `failure` says why;
- `close()` shuts the socket down itself and wakes every waiter (pyst2's `close()` logs off
  and can block forever);
- `request()` checks that the answer echoes the request's ActionID and is a response AMI
  knows: pyst2 matches answers by order, so a late or foreign answer would go to the wrong
  caller. Any such doubt is an AmiTransportError, and the session is not to be used again.

Like pyst2, the session is written against the standard library only (threading, queue,
socket, time.sleep); `gevent.monkey.patch_all()`, which the client requires, turns its
threads into greenlets and `time.sleep` into `gevent.sleep`, so that the client's deadlines
can interrupt any wait. Unpatched, the same code runs on OS threads: the unit tests drive a
session that way, over a socketpair.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import socket
import ssl
import threading
import time
from typing import Any

from asterisk import manager as pyst2

from synch.ami.framing import _Framer, _Reply
from synch.ami.message import KNOWN_RESPONSES, AmiReply, AmiTransportError, parse_reply

_READ_BUFFER = 256 * 1024
# A reply already this large and still arriving is read in batches, _BATCH_DELAY apart.
_BATCH_AFTER = 64 * 1024
_BATCH_DELAY = 0.002
_YIELD = 0.0001  # the shortest sleep that still lets the event loop poll (see _receive_data)
_RUN_LIMIT = 0.005  # the longest the reader runs without yielding (gevent's switch interval)
# The largest reply accepted unless the caller says otherwise: a 10k-extension GetConfig is
# about 8 MB on the wire (FACTS.md).
DEFAULT_MAX_REPLY_BYTES = 32 * 1024 * 1024
# Messages nobody asked for (events, answers with no request waiting) tolerated per session:
# we log in with `Events: off` and send one request at a time, so Asterisk sends none.
_MAX_UNSOLICITED = 1000


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
        # The ActionID whose list events are awaited (see `_list_items`), and where they go.
        self._listing: str | None = None
        self._list_items: queue.Queue[AmiReply | None] = queue.Queue()

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
        return self.start(sock)

    def start(self, sock: socket.socket) -> Any:
        """Run the session on a connected socket (blocking, no timeout): start the reader
        and dispatcher and return pyst2's greeting message, or None if the peer closed."""
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
        framer = _Framer()
        queue = self._message_queue
        yielded = time.monotonic()
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
            if messages:  # the greeting sets them, in the line that makes it a message
                self.title, self.version = framer.title, framer.version
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
                time.sleep(_BATCH_DELAY)
                yielded = time.monotonic()
            elif time.monotonic() - yielded >= _RUN_LIMIT:
                # A peer that never pauses leaves a chunk waiting at every recv, which then
                # returns without yielding. sleep(0) is not enough: it may run us again before
                # the loop polls for I/O (for ~50 chunks: 1 s without DNS, measured); a timer
                # waits for the next loop iteration, after every ready socket had its turn.
                # Once per _RUN_LIMIT, not per chunk: each costs a loop iteration.
                time.sleep(_YIELD)  # gevent.sleep: see the module's docstring
                yielded = time.monotonic()

    def request(self, fields: dict[str, Any], action_id: str) -> AmiReply:
        """Send one action (a fresh pyst2 dict, `fields["Action"]` its name) under
        `action_id` and return its answer, of any Response AMI knows.

        AmiTransportError (its text names the action) when the answer does not echo
        `action_id`, is not an AMI response, or does not come because the session ended; the
        session must then be dropped. The caller bounds the wait."""
        action = fields["Action"]
        self._listing = action_id  # a list action's events may follow its answer at once
        try:
            try:
                message = self.send_action({**fields, "ActionID": action_id})
            except (pyst2.ManagerException, OSError) as exc:
                why = self.failure or f"connection lost: {_exc_text(exc)}"
                raise AmiTransportError(f"{action}: {why}") from None
            reply = message.reply if isinstance(message, _Reply) else parse_reply(message.response)
            reply = self._checked(action, action_id, reply)
            if (reply.get("EventList") or "").lower() == "start":
                reply = dataclasses.replace(reply, events=self._read_list(action))
            return reply
        finally:
            self._listing = None
            self._list_items = queue.Queue()  # nothing of this request reaches the next one

    def _checked(self, action: str, action_id: str, reply: AmiReply) -> AmiReply:
        if reply.get("ActionID") != action_id:
            raise AmiTransportError(
                f"answer to {action} does not carry its ActionID (garbage or out of order): "
                f"{reply.headers[:3]!r}"
            )
        if reply.response.lower() not in KNOWN_RESPONSES:
            raise AmiTransportError(f"garbage answer to {action}: Response {reply.response!r}")
        return reply

    def _read_list(self, action: str) -> tuple[AmiReply, ...]:
        """The events of the list `action` started, up to its `EventList: Complete`; as large
        as a reply may be (`max_reply`). The caller bounds the wait."""
        items: list[AmiReply] = []
        size = 0
        while True:
            event = self._list_items.get()
            if event is None:
                why = self.failure or "connection lost"
                raise AmiTransportError(f"{action}: {why} while reading its list")
            if (event.get("EventList") or "").lower() == "complete":
                return tuple(items)
            items.append(event)
            size += sum(len(k) + len(v) + 4 for k, v in event.headers)
            if size > self.max_reply:
                self._give_up(
                    f"list larger than {_megabytes(self.max_reply)} ({self.cap_setting}): refused"
                )
                raise AmiTransportError(f"{action}: {self.failure}")

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
                    self._list_items.put(None)  # a list being read ends here too
                    break
                if not isinstance(data, _Reply):
                    message = pyst2.ManagerMsg(data)
                    if not message.has_header("Response"):
                        self._event(parse_reply(message.response))
                        continue
                    data = message
                if len(self._reswaiting) <= self._response_queue.qsize():
                    self._unasked("answers")
                self._response_queue.put(data)
        finally:
            reader.join()

    def _event(self, event: AmiReply) -> None:
        """An event: an item of the list being read, or one nobody asked for (we log in with
        `Events: off`: Asterisk sends only the events of list actions)."""
        if self._listing is not None and event.get("ActionID") == self._listing:
            self._list_items.put(event)
        else:
            self._unasked("events")

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
        self._list_items.put(None)


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"


def _exc_text(exc: BaseException) -> str:
    """pyst2 exceptions carry their data only in args (e.g. (errno, strerror))."""
    parts = [str(a) for a in exc.args if a not in (None, "", 0)]
    return ": ".join(parts) or type(exc).__name__
