"""A hostile central in a process of its own: it speaks AMI well enough to log synch in, then
misbehaves (floods, oversized replies). Its own process, so that a flood runs at full speed
while the test measures the daemon, without sharing the test's interpreter lock."""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import socket
from collections.abc import Callable, Iterator

from tests.unit.fake_ami import (
    AsteriskBehaviour,
    FakeAction,
    FakeAmi,
    FakeConnection,
    serve_asterisk,
)

Misbehaviour = Callable[[FakeConnection, FakeAction], None]


def endless_reply(conn: FakeConnection, action: FakeAction) -> None:
    """A reply that never ends: `Line-…` headers, megabyte after megabyte, until the client
    goes away."""
    conn.send(f"Response: Success\r\nActionID: {action.action_id}\r\n")
    lines = itertools.count()
    while True:
        block = "".join(f"Line-000000-{next(lines) % 1000000:06d}: x=y\r\n" for _ in range(40000))
        conn.send(block)


def endless_messages(conn: FakeConnection, action: FakeAction) -> None:
    """Complete but unsolicited messages without end (answers nobody asked for, events)."""
    block = "".join(
        f"Response: Success\r\nActionID: other-{i}\r\nMessage: x\r\n\r\n"
        f"Event: Flood\r\nCount: {i}\r\n\r\n"
        for i in range(20000)
    )
    while True:
        conn.send(block)


def large_reply(size: int) -> Misbehaviour:
    """A complete, well-formed reply of about `size` bytes."""

    def reply(conn: FakeConnection, action: FakeAction) -> None:
        line_count = size // 26 + 1
        conn.respond(
            action,
            "Success",
            [("Category-000000", "big")]
            + [(f"Line-000000-{n % 1000000:06d}", "x=y") for n in range(line_count)],
        )

    return reply


def _serve(actions: dict[str, Misbehaviour], pipe: multiprocessing.connection.Connection) -> None:
    behaviour = AsteriskBehaviour(extra=actions)
    with FakeAmi(lambda conn: serve_asterisk(conn, behaviour)) as server:
        pipe.send(server.port)
        pipe.recv()  # until the test says stop


@contextlib.contextmanager
def hostile_central(actions: dict[str, Misbehaviour]) -> Iterator[int]:
    """A central on a loopback port (yielded) answering `actions` (lowercase names) its way and
    everything else like Asterisk; user `synch`, secret `secret`."""
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe()
    child = context.Process(target=_serve, args=(actions, theirs), daemon=True)
    child.start()
    try:
        if not ours.poll(10):
            raise AssertionError(f"hostile central did not start (exit code {child.exitcode})")
        port = int(ours.recv())
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # it accepts: the daemon will find it there
        yield port
    finally:
        with contextlib.suppress(OSError):
            ours.send("stop")
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join()
