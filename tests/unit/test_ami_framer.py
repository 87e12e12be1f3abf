"""synch's chunked AMI framer must frame exactly as pyst2 0.5.1's own reader loop does.

pyst2's `Manager._receive_data` is run on the same bytes (through an in-memory socket) as the
reference; the framer is fed the bytes cut at random places. Every message must come out the
same, and a message the framer parsed itself must parse to what `parse_reply` makes of pyst2's
lines. The bytes are made of pieces chosen to hit pyst2's rules, and the recorded transcripts
of a real Asterisk 22 (tests/fixtures/ami)."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from asterisk import manager as pyst2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synch.ami import parse_reply
from synch.ami.framing import _Framer, _Reply
from tests.unit.ami_transcripts import FIXTURES, dumps, load


class _Queue:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def put(self, item: Any) -> None:
        self.items.append(item)


class _Socket(io.BytesIO):
    def close(self) -> None:  # pyst2 closes it at EOF; keep it readable for the test
        pass


def pyst2_messages(data: bytes) -> tuple[str | None, list[Any]]:
    manager = pyst2.Manager.__new__(pyst2.Manager)
    manager.title = None
    manager._sock = _Socket(data)
    manager._running = threading.Event()
    manager._running.set()
    manager._connected = threading.Event()
    manager._connected.set()
    manager._message_queue = _Queue()
    manager._receive_data()
    manager._running.clear()  # its __del__ would join reader threads this test never made
    return manager.title, list(manager._message_queue.items)


def framer_messages(data: bytes, cuts: list[int]) -> tuple[str | None, list[Any]]:
    framer = _Framer()
    out: list[Any] = []
    pos = 0
    for cut in sorted(cuts):
        out += framer.feed(data[pos:cut])
        pos = cut
    out += framer.feed(data[pos:])
    out += framer.feed_eof()
    out.append(None)  # pyst2 queues None at EOF
    return framer.title, out


GREETING = b"Asterisk Call Manager/11.0.0\r\n"
PIECES = [
    b"Response: Success\r\nActionID: a\r\nK: v\r\n\r\n",
    b"Response: Success\r\nK: \xc3\xa9\r\n\r\n",
    GREETING,
    b"Response: Success\r\n",
    b"ActionID: a\r\n",
    b"\r\n",
    b"Category-000000: 1001\r\n",
    b"Line-000000-000000: type=endpoint\r\n",
    b"Event: FullyBooted\r\n",
    b"Response: Follows\r\n",
    b"--END COMMAND--\r\n",
    b"Privilege: Command\r\n",
    b"foo\r\n",
    b"bar\n",
    b"\n",
    b"x: status will follow\r\n",
    b"Event: StatusComplete\r\n",
    b"ChanVariable: a=b\r\n",
    b"Message: a\xe2\x82\r\n",
    b"\xff\xfeKey: v\r\n",
    b"Key:  two spaces\r\n",
    b"Key:\r\n",
    b"K: v\r\r\n",
    b"K: a\rb\r\n",
    b"Bad Key: v\r\n",
    b"Response: Error\r\n",
    b"Output: x --END COMMAND--\r\n",
    b"weird/line\r\n",
    b" Event : x\r\n",
    b"Response:Follows \r\n",
    b"Event:x\r\n",
    b"Response: Follows now\r\n",
    b"a\x00b: c\r\n",
    b"Key: \xc3\xa9t\xc3\xa9\r\n",
]
PLAIN = [
    b"Response: Success\r\n",
    b"ActionID: a\r\n",
    b"Line-000000-000000: type=endpoint\r\n",
    b"K: \xc3\xa9\r\n",
    b"\r\n",
]
pieces = st.one_of(
    st.sampled_from(PLAIN),
    st.sampled_from(PLAIN),
    st.sampled_from(PLAIN),
    st.sampled_from(PIECES),
    st.binary(max_size=4),
)


def assert_same(data: bytes, cuts: list[int]) -> int:
    """Compare; returns how many messages took the framer's own parsing."""
    title_ref, reference = pyst2_messages(data)
    title, mine = framer_messages(data, cuts)
    assert title == title_ref
    assert len(mine) == len(reference), (data, reference, mine)
    fast = 0
    for ref, got in zip(reference, mine, strict=True):
        if ref is None or got is None:
            assert ref is None and got is None, (data, ref, got)
        elif isinstance(got, _Reply):
            fast += 1
            assert "Event" not in pyst2.ManagerMsg(ref).headers, (data, ref)
            assert parse_reply(ref) == got.reply, (data, ref, got.reply)
        else:
            assert ref == got, (data, ref, got)
    return fast


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(pieces, max_size=60), st.lists(st.integers(0, 1500), max_size=30))
def test_framer_frames_like_pyst2(parts: list[bytes], cuts: list[int]) -> None:
    data = GREETING + b"".join(parts)
    assert_same(data, [c for c in cuts if c <= len(data)])


def test_a_big_getconfig_reply_takes_the_fast_path() -> None:
    body = (
        GREETING
        + b"Response: Success\r\nActionID: x\r\n"
        + b"".join(b"Line-000000-%06d: a=b\r\n" % i for i in range(1000))
        + b"\r\n"
    )
    assert assert_same(body, [5, 100, 1000, 5000]) == 1


# -- recorded transcripts (tests/fixtures/ami): what a real Asterisk 22 sent ---------------

TRANSCRIPTS = sorted(path.stem for path in FIXTURES.glob("*.ami"))


def test_transcripts_load_as_recorded() -> None:
    """The fixture files load and dump back unchanged (no line end was converted)."""
    for name in TRANSCRIPTS:
        transcript = load(name)
        assert dumps(transcript) == (FIXTURES / f"{name}.ami").read_bytes(), name
        assert transcript.greeting == GREETING
        for exchange in transcript.exchanges:
            assert exchange.answer.endswith(b"\r\n\r\n"), (name, exchange.request)


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_recorded_transcripts_frame_like_pyst2(name: str) -> None:
    data = load(name).server_bytes()
    plain = data.count(b"\r\n\r\n") - data.count(b"No categories found\r\n")
    for step in (len(data), 1000, 7):  # whole, in chunks, in tiny pieces
        assert assert_same(data, list(range(step, len(data), step))) == plain, step


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_recorded_transcripts_cut_anywhere_frame_like_pyst2(data: st.DataObject) -> None:
    stream = load(data.draw(st.sampled_from(TRANSCRIPTS))).server_bytes()
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    assert_same(stream, cuts)
