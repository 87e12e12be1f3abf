"""Prepared replies: the zone's answers replayed without parsing.

Pure: bytes in, bytes out; no sockets, no greenlets, no dnslib.

The first time a name of the zone is asked in the canonical form that stub resolvers use (one
question, no compression, nothing or one plain EDNS 0 OPT after it), its reply is kept as a
template keyed by the question's bytes (letter case included). A later query with the same
bytes gets a copy of the template with its own ID and RD/CD bits: several times faster than
dnslib, and byte for byte what the full path would send.

The templates belong to the `ZoneView` their replies were made from: given another view (a
state change), they are all dropped, by the same rule as the zone's records (see
synch.dns.state).
"""

from __future__ import annotations

from synch.dns.resolver import FROM_ZONE, Answer
from synch.dns.state import ZoneView
from synch.dns.wire import HEADER_LEN, MAX_UDP_NO_EDNS, PLAIN_COUNTS, opt_ok, question_end

MAX_TEMPLATES = 512  # prepared replies kept; past that the table starts afresh

Template = tuple[bytes, Answer]  # the reply with ID 0 and RD/CD clear, and how it answers


class FastPath:
    """Templates for one view; `answer` replays them, `learn` adds one. `counts` holds the
    answers given since the owner last drained it (one metric update per batch)."""

    def __init__(self, size: int = MAX_TEMPLATES) -> None:
        self.size = size
        self.view: ZoneView | None = None
        self.counts: dict[Answer, int] = {}
        # question bytes -> [template for a query without OPT, template for one with OPT]
        self._templates: dict[bytes, list[Template | None]] = {}
        self._question_lengths: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self._templates)

    def _reset(self, view: ZoneView) -> None:
        self._templates.clear()
        self._question_lengths = ()
        self.view = view

    def answer(self, data: bytes, view: ZoneView) -> bytes | None:
        """The prepared reply to `data` under `view`; None: take the full path.

        `data` must be `bytes` (not bytearray): slices of it are dictionary keys."""
        if view is not self.view:
            self._reset(view)
            return None
        # QR and opcode clear, one question, no answer/authority records.
        if len(data) <= HEADER_LEN + 4 or data[2] & 0xF8 or data[4:10] != PLAIN_COUNTS:
            return None
        arcount = data[10:12]
        found: Template | None = None
        if arcount == b"\x00\x00":
            entry = self._templates.get(data[HEADER_LEN:])
            found = entry[0] if entry is not None else None
        elif arcount == b"\x00\x01":
            for length in self._question_lengths:
                end = HEADER_LEN + length
                entry = self._templates.get(data[HEADER_LEN:end])
                if entry is not None and opt_ok(data[end:]):
                    found = entry[1]
                    break
        if found is None:
            return None
        template, kind = found
        counts = self.counts
        counts[kind] = counts.get(kind, 0) + 1
        # The query's ID, RD (byte 2, bit 0) and CD (byte 3, bit 4) into the prepared reply.
        flags = bytes((template[2] | (data[2] & 0x01), template[3] | (data[3] & 0x10)))
        return data[:2] + flags + template[4:]

    def learn(self, data: bytes, reply: bytes, answer: Answer, view: ZoneView) -> None:
        """Keep `reply` (made from `view`) as the template for queries with the question bytes
        of `data`, if the query has the canonical form `answer` recognises and the reply fits
        any UDP client."""
        if answer not in FROM_ZONE or len(reply) > MAX_UDP_NO_EDNS:
            return
        if view is not self.view:
            self._reset(view)
        if data[2] & 0xF8 or data[4:10] != PLAIN_COUNTS or data[10] != 0:
            return
        end = question_end(data)
        if end is None or reply[HEADER_LEN:end] != data[HEADER_LEN:end]:
            return
        rest = data[end:]
        if data[11] == 0 and not rest:
            slot = 0
        elif data[11] == 1 and opt_ok(rest):
            slot = 1
        else:
            return
        question = bytes(data[HEADER_LEN:end])
        entry = self._templates.get(question)
        if entry is None:
            if len(self._templates) >= self.size:
                self._templates.clear()
                self._question_lengths = ()
            entry = self._templates[question] = [None, None]
            if len(question) not in self._question_lengths:
                self._question_lengths += (len(question),)
        template = b"\x00\x00" + bytes((reply[2] & 0xFE, reply[3] & 0xEF)) + reply[4:]
        entry[slot] = (template, answer)
