"""Recorded AMI transcripts (tests/fixtures/ami/*.ami): what a real Asterisk 22 sent, and
a server that replays it.

A transcript file starts with `#` lines saying how it was captured. Then come the server's
bytes exactly as they arrived (CR LF line ends), with two kinds of LF-ended marker lines in
between, which the server never sends (its lines are `Key: value`):

    >>> Action: Ping | ActionID: synch-2      the action the client sent (Secret masked);
                                              the bytes up to the next marker answer it
    === closed                                the server closed the connection here

The bytes before the first `>>>` are the greeting. Recorded by tests/helpers/record_ami.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.unit.fake_ami import FakeAction, FakeConnection, Handler

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
REQUEST = b">>> "
CLOSED = b"=== closed\n"
MASKED = "***"

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Exchange:
    request: Headers  # what the client sent, in order, Secret masked
    answer: bytes  # what the server sent next, verbatim
    closed: bool = False  # the server closed the connection after the answer

    @property
    def action(self) -> str:
        return _get(self.request, "Action")

    @property
    def action_id(self) -> str:
        return _get(self.request, "ActionID")

    def matches(self, request: Headers) -> bool:
        """Same action with the same headers, ActionID and Secret aside (in any order)."""
        return _key(self.request) == _key(request)

    def answer_for(self, action_id: str) -> bytes:
        """The answer with its ActionID echo replaced by `action_id` (verbatim if equal)."""
        if not self.action_id or action_id == self.action_id:
            return self.answer
        old = f"ActionID: {self.action_id}\r\n".encode()
        assert self.answer.count(old) == 1, (self.request, self.answer[:200])
        return self.answer.replace(old, f"ActionID: {action_id}\r\n".encode())


@dataclass(frozen=True)
class Transcript:
    name: str
    notes: str  # the header: how it was captured
    greeting: bytes
    exchanges: tuple[Exchange, ...]

    def server_bytes(self) -> bytes:
        """Everything the server sent, in order (as one stream: for the framer)."""
        return self.greeting + b"".join(e.answer for e in self.exchanges)

    def exchange(self, action: str, **headers: str) -> Exchange:
        """The first exchange for `action` whose request has these headers."""
        for exchange in self.exchanges:
            if exchange.action.lower() == action.lower() and all(
                _get(exchange.request, k) == v for k, v in headers.items()
            ):
                return exchange
        raise KeyError(f"{self.name}: no {action} {headers}")

    def find(self, request: Headers) -> Exchange:
        for exchange in self.exchanges:
            if exchange.matches(request):
                return exchange
        # ValueError: FakeAmi records it in `errors` (the client sees the connection close).
        raise ValueError(f"transcript {self.name} has no answer to {list(request)}")


def _get(headers: Headers, key: str) -> str:
    return next((v for k, v in headers if k.lower() == key.lower()), "")


def _key(headers: Headers) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers if k.lower() not in ("actionid", "secret"))


def format_request(headers: Headers) -> bytes:
    shown = [(k, MASKED if k.lower() == "secret" else v) for k, v in headers]
    return REQUEST + " | ".join(f"{k}: {v}" for k, v in shown).encode() + b"\n"


def parse_request(line: bytes) -> Headers:
    fields = line[len(REQUEST) :].decode().rstrip("\n").split(" | ")
    return tuple((k, v) for k, _, v in (f.partition(": ") for f in fields))


def dumps(transcript: Transcript) -> bytes:
    notes = "".join(f"# {line}".rstrip() + "\n" for line in transcript.notes.splitlines())
    out = [notes.encode(), transcript.greeting]
    for exchange in transcript.exchanges:
        assert exchange.answer.endswith(b"\n") or not exchange.answer, exchange
        out += [format_request(exchange.request), exchange.answer]
        if exchange.closed:
            out.append(CLOSED)
    return b"".join(out)


def loads(name: str, data: bytes) -> Transcript:
    lines = data.splitlines(keepends=True)
    notes: list[str] = []
    while lines and lines[0].startswith(b"#"):
        notes.append(lines.pop(0).decode()[1:].strip())
    greeting = bytearray()
    exchanges: list[Exchange] = []
    request: Headers | None = None
    answer = bytearray()
    closed = False

    def flush() -> None:
        if request is not None:
            exchanges.append(Exchange(request, bytes(answer), closed))

    for line in lines:
        if line.startswith(REQUEST):
            flush()
            request, answer, closed = parse_request(line), bytearray(), False
        elif line == CLOSED:
            closed = True
        elif request is None:
            greeting += line
        else:
            assert not closed, f"{name}: bytes after the server closed"
            answer += line
    flush()
    return Transcript(name, "\n".join(notes), bytes(greeting), tuple(exchanges))


def load(name: str) -> Transcript:
    """tests/fixtures/ami/<name>.ami"""
    return loads(name, (FIXTURES / f"{name}.ami").read_bytes())


# Called with each action before it is answered; True: it took care of it (no answer).
OnAction = Callable[[FakeConnection, FakeAction], bool]


def replay(
    conn: FakeConnection,
    transcript: Transcript,
    *,
    greet: bool = True,
    on_action: OnAction | None = None,
) -> None:
    """Serve `conn` as the recorded server did: the greeting, then for each action the client
    sends, the recorded answer to the same request (with the client's ActionID), until the
    client leaves or the transcript says the server closed."""
    if greet:
        conn.send(transcript.greeting)
    while (action := conn.read_action()) is not None:
        if on_action is not None and on_action(conn, action):
            continue  # handled, whether or not the transcript has it
        exchange = transcript.find(tuple(action.headers))
        conn.send(exchange.answer_for(action.action_id))
        if exchange.closed:
            conn.close()
            return


def replayer(transcript: Transcript, on_action: OnAction | None = None) -> Handler:
    """A FakeAmi handler that replays `transcript` on every connection."""
    return lambda conn: replay(conn, transcript, on_action=on_action)


def merged(*names: str) -> Transcript:
    """One transcript answering what any of `names` recorded (the first recording of a
    request wins: they share the Login)."""
    parts = [load(name) for name in names]
    return Transcript(
        "+".join(names),
        "\n".join(p.notes for p in parts),
        parts[0].greeting,
        tuple(e for p in parts for e in p.exchanges),
    )


# -- what a real Asterisk does not send: a recorded login, then a bad answer to the Ping ------

Misbehaviour = Callable[[FakeConnection, FakeAction], None]


def logged_in_then(misbehave: Misbehaviour) -> Handler:
    """Replay login-ping, but answer the Ping with `misbehave` instead."""

    def on_action(conn: FakeConnection, action: FakeAction) -> bool:
        if action.name != "Ping":
            return False
        misbehave(conn, action)
        return True

    transcript = load("login-ping")
    return lambda conn: replay(conn, transcript, on_action=on_action)


def _pong(action_id: str) -> bytes:
    return load("login-ping").exchange("Ping").answer_for(action_id)


def answer_for_someone_else(conn: FakeConnection, action: FakeAction) -> None:
    conn.send(_pong("someone-else-7"))


def garbage_answer(conn: FakeConnection, action: FakeAction) -> None:
    conn.send(_pong(action.action_id).replace(b"Response: Success", b"Response: Banana"))


def binary_junk(conn: FakeConnection, action: FakeAction) -> None:
    conn.send(b"\x00\xff\xfe\x16\x03 junk\r\n\r\n")


def close_mid_reply(conn: FakeConnection, action: FakeAction) -> None:
    answer = _pong(action.action_id)
    conn.send(answer[: len(answer) // 2])
    conn.close()


def endless_command_output(conn: FakeConnection, action: FakeAction) -> None:
    # `Response: Follows` waits for `--END COMMAND--` (pyst2's framing): it never comes.
    conn.send(f"Response: Follows\r\nActionID: {action.action_id}\r\n")
    conn.send("output line\n" * 200_000)
    conn.hang()


def unsolicited_answers(conn: FakeConnection, action: FakeAction) -> None:
    conn.send("".join(f"Response: Success\r\nActionID: x-{i}\r\n\r\n" for i in range(1200)))
    conn.hang()


def unsolicited_events(conn: FakeConnection, action: FakeAction) -> None:
    conn.send("".join(f"Event: Flood\r\nCount: {i}\r\n\r\n" for i in range(1200)))
    conn.hang()


def pong_then_unsolicited_answers(conn: FakeConnection, action: FakeAction) -> None:
    """A good answer, then a flood of answers while nothing is asked."""
    conn.send(_pong(action.action_id))
    unsolicited_answers(conn, action)
