"""The AMI session (synch/ami/session.py) replaying recorded transcripts, in the test process.

The session is written against the standard library, as pyst2 is; unpatched, as here, its
reader and dispatcher are OS threads and its yields real sleeps. So the real `_Session` runs
over a socketpair whose other end replays what a real Asterisk 22 sent (tests/fixtures/ami)
or misbehaves on purpose. What needs gevent (the client's deadlines, one greenlet starving
another) is tested with the client, in a patched subprocess (test_ami_client.py).
"""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from synch.ami import AmiReply, AmiTransportError, parse_reply
from synch.ami.session import _Session
from tests.unit.ami_transcripts import (
    FIXTURES,
    Exchange,
    Misbehaviour,
    OnAction,
    answer_for_someone_else,
    binary_junk,
    close_mid_reply,
    endless_command_output,
    garbage_answer,
    load,
    logged_in_then,
    pong_then_unsolicited_answers,
    replay,
    unsolicited_answers,
    unsolicited_events,
)
from tests.unit.fake_ami import FakeAction, FakeConnection, FakePeer, Handler

WAIT = 10.0  # upper bound for anything that should happen at once: catches "never"

TRANSCRIPTS = sorted(path.stem for path in FIXTURES.glob("*.ami"))


def fields_of(request: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """The pyst2 action dict that sends `request` (a repeated header as a list)."""
    fields: dict[str, Any] = {}
    for key, value in request:
        if key == "ActionID":
            continue
        if key in fields:
            old = fields[key]
            fields[key] = [*(old if isinstance(old, list) else [old]), value]
        else:
            fields[key] = value
    return fields


def recorded_reply(exchange: Exchange) -> AmiReply:
    """What parse_reply makes of the recorded answer (read as pyst2 splits lines)."""
    lines = exchange.answer.decode().splitlines(keepends=True)
    return parse_reply([line for line in lines if line != "\r\n"])


def ended(session: _Session) -> bool:
    """The session's reader and dispatcher are gone (message_loop joins the reader)."""
    for thread in (session.message_thread, session.event_dispatch_thread):
        if thread.ident is not None:
            thread.join(WAIT)
    return not session.message_thread.is_alive() and not session.event_dispatch_thread.is_alive()


def wait_for(predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.01)


@contextmanager
def session_with(handler: Handler, **options: Any) -> Iterator[tuple[_Session, FakePeer, Any]]:
    """A session started on a socketpair served by `handler`: (session, peer, greeting)."""
    with FakePeer(handler) as peer:
        session = _Session(**options)
        try:
            greeting = run(session.start, peer.client)
            yield session, peer, greeting
        finally:
            session.close()
            assert ended(session), "close() ends the session's threads"


_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="ask")


def run(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args), but a failure instead of a hung test if it never returns."""
    return _POOL.submit(fn, *args).result(timeout=WAIT)


def request(session: _Session, action: str, action_id: str = "t-1", **headers: str) -> AmiReply:
    reply: AmiReply = run(session.request, {"Action": action, **headers}, action_id)
    return reply


def replaying(name: str, on_action: OnAction | None = None) -> Handler:
    """Replay transcript `name` (see ami_transcripts.replay)."""
    transcript = load(name)
    return lambda conn: replay(conn, transcript, on_action=on_action)


def login(session: _Session) -> None:
    reply = request(session, "Login", "t-0", Username="synch", Secret="x", Events="off")
    assert reply.ok, reply


# -- recorded transcripts ---------------------------------------------------------------------


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_a_recorded_conversation_replays_through_the_session(name: str) -> None:
    """The session sends each recorded request as synch's client sent it (same headers, same
    order, a repeated header once per value) and gets the recorded answer, parsed as
    parse_reply parses the raw lines; the greeting sets title and version."""
    transcript = load(name)
    assert transcript.exchanges, name
    with session_with(replaying(name)) as (session, peer, greeting):
        assert greeting is not None
        assert (session.title, session.version) == ("Asterisk Call Manager", "11.0.0")
        for exchange in transcript.exchanges:
            reply = run(session.request, fields_of(exchange.request), exchange.action_id)
            assert reply == recorded_reply(exchange), exchange.request
            if exchange.closed:
                wait_for(lambda: not session.connected(), "the server's close is seen")
        sent = [tuple(action.headers) for action in peer.actions]
        assert sent == [exchange.request for exchange in transcript.exchanges]
        assert peer.errors == []


def test_a_refused_login_is_an_answer_then_the_server_closes() -> None:
    with session_with(replaying("auth-failed")) as (session, _, _):
        reply = request(session, "Login", Username="synch", Secret="wrong", Events="off")
        assert (reply.response, reply.message) == ("Error", "Authentication failed")
        wait_for(lambda: not session.connected(), "EOF after the refusal")
        with pytest.raises(AmiTransportError, match="Ping: connection lost"):
            request(session, "Ping", "t-2")


def test_a_large_recorded_reply_trickling_in_arrives_whole() -> None:
    """Asterisk writes a GetConfig reply one line per write: the session batches the reads
    (past 64 KB) and frames the reply in bulk; it arrives the same."""
    transcript = load("getconfig-large")
    exchange = transcript.exchange("GetConfig")
    assert len(exchange.answer) > 64 * 1024

    def line_by_line(conn: FakeConnection, action: FakeAction) -> bool:
        if action.name != "GetConfig":
            return False
        for line in exchange.answer_for(action.action_id).splitlines(keepends=True):
            conn.send(line)
        return True

    with session_with(replaying("getconfig-large", line_by_line)) as (session, _, _):
        login(session)
        reply = request(session, "GetConfig", "synch-2", Filename="sip_large.conf")
    assert reply == recorded_reply(exchange)
    assert reply.get_all("Category-000099") == ["10099"]


@pytest.mark.parametrize("slack", [-1, 0])
def test_the_reply_cap_counts_the_reply_under_way(slack: int) -> None:
    """A reply is refused once the part received exceeds the cap, not after it has all come."""
    exchange = load("getconfig-large").exchange("GetConfig")
    partial = exchange.answer[:-100]  # all but its end: the reply is still under way

    def send_most(conn: FakeConnection, action: FakeAction) -> bool:
        if action.name != "GetConfig":
            return False
        conn.send(exchange.answer_for(action.action_id)[: len(partial)])
        conn.hang()
        return True

    cap = len(partial) + slack
    with session_with(replaying("getconfig-large", send_most), max_reply=cap) as (session, _, _):
        login(session)
        if slack < 0:
            with pytest.raises(AmiTransportError, match=r"GetConfig: reply larger than .* MB"):
                request(session, "GetConfig", "synch-2", Filename="sip_large.conf")
            assert not session.connected()
        else:
            future = _POOL.submit(
                session.request, {"Action": "GetConfig", "Filename": "sip_large.conf"}, "synch-2"
            )
            with pytest.raises(concurrent.futures.TimeoutError):
                future.result(timeout=0.5)  # waiting for the rest, still within the cap
            assert session.connected() and session.failure == ""
            session.close()
            with pytest.raises(AmiTransportError):
                future.result(timeout=WAIT)


# -- what a real Asterisk does not send --------------------------------------------------------


@pytest.mark.parametrize(
    ("misbehave", "expect"),
    [
        (answer_for_someone_else, "answer to Ping does not carry its ActionID"),
        (garbage_answer, "garbage answer to Ping: Response 'Banana'"),
        (binary_junk, "answer to Ping does not carry its ActionID"),
        (close_mid_reply, "Ping: connection lost"),
        (endless_command_output, "Ping: reply larger than 1 MB (maxreplymb): refused"),
        (unsolicited_answers, "answer to Ping does not carry its ActionID"),
        (unsolicited_events, "Ping: peer sent more than 1000 events nobody asked for"),
    ],
    ids=[
        "wrong-actionid", "garbage", "binary", "close-mid-reply", "over-the-cap",
        "unsolicited-answers", "unsolicited-events",
    ],
)  # fmt: skip
def test_a_bad_answer_is_a_transport_error(misbehave: Misbehaviour, expect: str) -> None:
    with session_with(logged_in_then(misbehave), max_reply=1024 * 1024) as (session, _, _):
        login(session)
        with pytest.raises(AmiTransportError) as raised:
            request(session, "Ping", "synch-2")
        assert expect in str(raised.value)
        if "than 1" in expect:  # the session ended itself and says why
            assert session.failure and session.failure in str(raised.value)
            assert not session.connected()


def test_the_session_sends_what_it_is_given_and_no_more() -> None:
    with session_with(replaying("command")) as (session, peer, _):
        login(session)
        run(
            session.request,
            {"Action": "UserEvent", "UserEvent": "SynchTest", "Variable": ["a=1", "b=2"]},
            "t-9",
        )
    sent = peer.actions_named("UserEvent")[0].headers
    assert sent == [
        ("Action", "UserEvent"), ("UserEvent", "SynchTest"), ("Variable", "a=1"),
        ("Variable", "b=2"), ("ActionID", "t-9"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("greeting", "title"),
    [(b"HTTP/1.1 400 Bad Request\r\n\r\n", "HTTP"), (None, None)],
    ids=["http", "close-at-connect"],
)
def test_what_comes_instead_of_a_greeting(greeting: bytes | None, title: str | None) -> None:
    def handler(conn: FakeConnection) -> None:
        if greeting is None:
            conn.close()
        else:
            conn.send(greeting)
            conn.hang()

    with session_with(handler) as (session, _, message):
        assert session.title == title
        if greeting is None:
            assert message is None
            wait_for(lambda: not session.connected(), "EOF seen")
        else:
            assert message is not None


def test_answers_nobody_asked_for_end_an_idle_session() -> None:
    """Between requests nothing may arrive; a flood of answers there ends the session at once
    instead of piling up in memory until the next request."""
    with session_with(logged_in_then(pong_then_unsolicited_answers)) as (session, _, _):
        login(session)
        assert request(session, "Ping", "synch-2").ok
        wait_for(lambda: not session.connected(), "the session ends itself")
        assert session.failure == "peer sent more than 1000 answers nobody asked for"


def test_close_wakes_a_waiting_request_and_ends_the_threads() -> None:
    def hang_on_ping(conn: FakeConnection, action: FakeAction) -> bool:
        if action.name != "Ping":
            return False
        conn.hang()
        return True

    with session_with(replaying("login-ping", hang_on_ping)) as (session, peer, _):
        login(session)
        future = _POOL.submit(session.request, {"Action": "Ping"}, "synch-2")
        wait_for(lambda: peer.actions_named("Ping"), "the Ping is sent")
        started = time.monotonic()
        session.close()
        assert time.monotonic() - started < WAIT, "close() waits for nothing"
        with pytest.raises(AmiTransportError, match="Ping: connection lost"):
            future.result(timeout=WAIT)
        assert ended(session)


def test_pyst2_status_marker_in_a_value_swallows_the_answer() -> None:
    """pyst2's framing treats any line containing 'status will follow' as the start of a
    Status listing and swallows messages until 'StatusComplete': the answer never comes
    (the client's deadline bounds it, and the session is thrown away)."""
    exchange = load("getconfig").exchange("GetConfig", Filename="test.conf")

    def odd_value(conn: FakeConnection, action: FakeAction) -> bool:
        if action.name != "GetConfig":
            return False
        answer = exchange.answer_for(action.action_id)
        conn.send(answer.replace(b"note=semi;colon", b"note=status will follow"))
        return True

    with session_with(replaying("getconfig", odd_value)) as (session, _, _):
        login(session)
        future = _POOL.submit(
            session.request, {"Action": "GetConfig", "Filename": "test.conf"}, "synch-2"
        )
        with pytest.raises(concurrent.futures.TimeoutError):
            future.result(timeout=0.5)
        session.close()
        with pytest.raises(AmiTransportError):
            future.result(timeout=WAIT)


def test_a_large_reply_arrives_whole() -> None:
    categories = 3000

    def big(conn: FakeConnection, action: FakeAction) -> bool:
        if action.name != "GetConfig":
            return False
        lines = [f"Response: Success\r\nActionID: {action.action_id}\r\n"]
        for c in range(categories):
            lines.append(f"Category-{c:06d}: {c}\r\n")
            lines += [
                f"Line-{c:06d}-{n:06d}: {line}\r\n"
                for n, line in enumerate([f"secret=s{c}", "allow=ulaw", "allow=alaw"])
            ]
        conn.send("".join(lines) + "\r\n")
        return True

    with session_with(replaying("getconfig", big)) as (session, _, _):
        login(session)
        reply = request(session, "GetConfig", "synch-2", Filename="test.conf")
    assert len(reply.headers) == 2 + categories * 4
    assert reply.headers[-1] == ("Line-002999-000002", "allow=alaw")


# -- list actions (PJSIPShowContacts and the like) --------------------------------------------


def contact_list(action_id: str, uris: list[str], *, complete: bool = True) -> str:
    """What Asterisk 22 answers to PJSIPShowContacts (captured from the lab, trimmed)."""
    out = (
        f"Response: Success\r\nActionID: {action_id}\r\nEventList: start\r\n"
        "Message: A listing of Contacts follows, presented as ContactList events\r\n\r\n"
    )
    for uri in uris:
        aor = uri.split(":")[1].split("@")[0]
        out += (
            f"Event: ContactList\r\nActionID: {action_id}\r\nObjectType: contact\r\n"
            f"ObjectName: {aor};@0d52bdfd\r\nViaAddr: 127.0.0.1\r\nEndpoint: {aor}\r\n"
            f"Uri: {uri}\r\nUserAgent: synch-lab-sipp\r\nExpirationTime: 1796002110\r\n"
            "Status: NonQualified\r\n\r\n"
        )
    if complete:
        out += (
            f"Event: ContactListComplete\r\nActionID: {action_id}\r\nEventList: Complete\r\n"
            f"ListItems: {len(uris)}\r\n\r\n"
        )
    return out


def answering_list(send: Callable[[FakeConnection, FakeAction], None]) -> Handler:
    def on_action(conn: FakeConnection, action: FakeAction) -> bool:
        if action.name != "PJSIPShowContacts":
            return False
        send(conn, action)
        return True

    return replaying("login-ping", on_action)


def test_a_list_action_returns_its_events_with_the_answer() -> None:
    uris = ["sip:1001@127.0.0.1:5061", "sip:1002@127.0.0.1:5062"]

    def send(conn: FakeConnection, action: FakeAction) -> None:
        text = contact_list(action.action_id, uris)
        head, _, rest = text.partition("Event: ContactList")
        # An event nobody asked for in between is not an item (and counts as unsolicited).
        conn.send(head + "Event: FullyBooted\r\nStatus: x\r\n\r\nEvent: ContactList" + rest)

    with session_with(answering_list(send)) as (session, _, _):
        login(session)
        reply = request(session, "PJSIPShowContacts", "synch-2")
        assert reply.ok and reply.get("EventList") == "start"
        assert [event.get("Uri") for event in reply.events] == uris
        assert all(event.get("Event") == "ContactList" for event in reply.events)
        # The session goes on: the next request gets its own answer.
        assert request(session, "Ping", "synch-3").get("Ping") == "Pong"


def test_a_list_over_the_cap_or_cut_short_is_an_error() -> None:
    many = [f"sip:{1000 + n}@127.0.0.1:{6000 + n}" for n in range(200)]

    def send_many(conn: FakeConnection, action: FakeAction) -> None:
        conn.send(contact_list(action.action_id, many))

    with session_with(answering_list(send_many), max_reply=4096) as (session, _, _):
        login(session)
        with pytest.raises(AmiTransportError, match=r"PJSIPShowContacts: list larger than"):
            request(session, "PJSIPShowContacts", "synch-2")
        assert not session.connected()

    def send_and_close(conn: FakeConnection, action: FakeAction) -> None:
        conn.send(contact_list(action.action_id, many[:3], complete=False))
        conn.close()

    with session_with(answering_list(send_and_close)) as (session, _, _):
        login(session)
        with pytest.raises(AmiTransportError, match="while reading its list"):
            request(session, "PJSIPShowContacts", "synch-2")
