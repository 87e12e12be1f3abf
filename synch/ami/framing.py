"""pyst2 0.5.1's message framing, chunk by chunk, with a fast path for plain replies.

Pure (no socket, no gevent, no pyst2): the session feeds it what it reads and queues what
comes out. tests/unit/test_ami_framer.py checks it against pyst2's own reader loop.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from synch.ami.message import AmiReply


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

    def __init__(self) -> None:
        self.title: str | None = None  # from the greeting, as pyst2 keeps it
        self.version: str | None = None
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
        ) and bool(self.title)

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
        if not self.title and "/" in line and ":" not in line:
            self.title = line.split("/")[0].strip()
            self.version = line.split("/")[1].strip()
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
