"""synch.ami against the scriptable fake AMI server.

The client runs monkey-patched in a subprocess (`run_patched`), as in the daemon; the fake
server runs in threads here. Pure parts (reply parsing, argument checks) are tested in-process.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

import gevent.monkey
import pytest

from synch.ami import AmiClient, parse_reply
from tests.unit.fake_ami import (
    AsteriskBehaviour,
    FakeAction,
    FakeAmi,
    FakeConnection,
    run_patched,
    serve_asterisk,
)

TIMEOUT_SLACK = 5.0  # generous upper bound: catches "blocks forever", not slowness


def first_then_normal(misbehave):  # type: ignore[no-untyped-def]
    """Handler: connection 0 misbehaves, later connections act like Asterisk."""

    def handler(conn: FakeConnection) -> None:
        if conn.index == 0:
            misbehave(conn)
        else:
            serve_asterisk(conn)

    return handler


def login_then(conn: FakeConnection) -> FakeAction | None:
    """Greet, accept the login, return the next action."""
    conn.banner()
    login = conn.read_action()
    assert login is not None and login.name == "Login"
    conn.respond(login, "Success", [("Message", "Authentication accepted")])
    return conn.read_action()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- pure parts ---------------------------------------------------------------------------


def test_parse_reply_keeps_values_whole_order_and_duplicates() -> None:
    reply = parse_reply(
        [
            "Response: Success\r\n",
            "ActionID: a-1\r\n",
            "Line-000000-000000: setvar=A=B\r\n",
            "Line-000000-000001: note=has: colon:and=more\r\n",
            "Output: first\r\n",
            "Output: second\r\n",
            "Line-000000-000002:  leading space kept\r\n",
            "No categories found\r\n",
        ]
    )
    assert reply.ok
    assert reply.get("line-000000-000000") == "setvar=A=B"
    assert reply.get("Line-000000-000001") == "note=has: colon:and=more"
    assert reply.get_all("OUTPUT") == ["first", "second"]
    assert reply.get("Line-000000-000002") == " leading space kept"
    assert [k for k, _ in reply.headers][:3] == ["Response", "ActionID", "Line-000000-000000"]
    assert reply.body == "No categories found"
    assert reply.get("missing", "dflt") == "dflt"


@pytest.mark.parametrize(
    ("response", "ok"),
    [("Success", True), ("Follows", True), ("Goodbye", True), ("Error", False), ("", False)],
)
def test_reply_ok(response: str, ok: bool) -> None:
    assert parse_reply([f"Response: {response}\r\n"]).ok is ok


def test_refuses_to_run_unpatched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gevent.monkey, "is_module_patched", lambda name: False)
    client = AmiClient("127.0.0.1", free_port(), "synch", "secret", timeout=1)
    with pytest.raises(RuntimeError, match="patch_all"):
        client.ping()


@pytest.mark.parametrize(
    "headers",
    [
        {"Filename": "x.conf\r\nAction: Logoff"},
        {"Variable": ["a=1", "b=2\nAction: Logoff"]},
        {"Bad Key": "x"},
        {"ActionID": "mine"},
    ],
)
def test_rejects_header_injection(headers: dict[str, object]) -> None:
    client = AmiClient("127.0.0.1", free_port(), "synch", "secret", timeout=1)
    with pytest.raises(ValueError):
        client.action("GetConfig", headers)  # type: ignore[arg-type]


def test_rejects_line_break_in_secret() -> None:
    with pytest.raises(ValueError, match="password"):
        AmiClient("127.0.0.1", 5038, "synch", "se\r\ncret", timeout=1)


# -- a well-behaved peer -------------------------------------------------------------------


def test_normal_session_one_connection_values_whole() -> None:
    configs = {
        "sip_additional.conf": [
            ("1001", ["type=friend", "allow=ulaw", "allow=alaw", "setvar=A=B", "note=x: y"]),
            ("1002", ["type=friend"]),
        ],
        "empty.conf": [],
    }
    behaviour = AsteriskBehaviour(configs=configs)
    with FakeAmi(lambda c: serve_asterisk(c, behaviour)) as fake:
        out = run_patched(
            """
            c = client()
            out["ping"] = attempt(c.ping)
            out["connected"] = c.connected
            out["config"] = attempt(lambda: get_config(c, "sip_additional.conf"))
            out["filtered"] = attempt(lambda: get_config(c, "sip_additional.conf",
                                                         "accountcode=^HQ$", templates=True))
            out["empty"] = attempt(lambda: get_config(c, "empty.conf"))
            out["missing"] = attempt(lambda: get_config(c, "missing.conf"))
            out["status"] = attempt(lambda: core_status(c))
            out["reload"] = attempt(lambda: reload_module(c, "res_pjsip.so"))
            out["nomodule"] = attempt(lambda: reload_module(c, "chan_sip.so"))
            out["list"] = attempt(lambda: c.action("UserEvent", {"Variable": ["a=1", "b=2"]}))
            out["probe"] = probe_once(c)
            c.close()
            out["after_close"] = c.connected
            """,
            fake.port,
        )
        assert fake.connections == 1
        login = fake.actions_named("Login")[0]
        assert login.get("Events") == "off"
        assert login.get("Username") == "synch"
        ids = [a.action_id for a in fake.actions]
        assert len(set(ids)) == len(ids) and all(ids), "every action carries its own ActionID"
        variables = [v for k, v in fake.actions_named("UserEvent")[0].headers if k == "Variable"]
        assert variables == ["a=1", "b=2"]
        assert fake.actions_named("GetConfig")[1].get("Filter") == (
            "TEMPLATES=include,accountcode=^HQ$"
        )

    assert out["ping"]["ok"] and out["connected"] is True
    headers = [tuple(h) for h in out["config"]["value"]["headers"]]
    assert headers[2:] == [
        ("Category-000000", "1001"),
        ("Line-000000-000000", "type=friend"),
        ("Line-000000-000001", "allow=ulaw"),
        ("Line-000000-000002", "allow=alaw"),
        ("Line-000000-000003", "setvar=A=B"),
        ("Line-000000-000004", "note=x: y"),
        ("Category-000001", "1002"),
        ("Line-000001-000000", "type=friend"),
    ]
    assert out["empty"]["value"]["body"] == "No categories found"
    assert out["missing"]["type"] == "AmiResponseError"
    assert out["missing"]["message"] == "Config file not found"
    assert out["status"]["value"]["CoreReloadTime"] == "10:00:01"
    assert "Response" not in out["status"]["value"]
    assert out["reload"] == {"ok": True, "value": None, "seconds": out["reload"]["seconds"]}
    assert out["nomodule"]["type"] == "AmiResponseError"
    assert "No such module" in out["nomodule"]["error"]
    assert "chan_sip does not exist" in out["nomodule"]["error"]
    assert out["list"]["type"] == "AmiResponseError"  # the fake does not know UserEvent
    assert out["probe"][0] == "success" and out["probe"][2] == ""
    assert out["after_close"] is False


def test_permission_denied_names_the_missing_write_permission() -> None:
    behaviour = AsteriskBehaviour(denied=frozenset({"getconfig"}), configs={"a.conf": []})
    with FakeAmi(lambda c: serve_asterisk(c, behaviour)) as fake:
        out = run_patched(
            """
            c = client()
            out["get"] = attempt(lambda: get_config(c, "a.conf"))
            out["ping"] = attempt(c.ping)
            """,
            fake.port,
        )
        assert fake.connections == 1, "an error answer keeps the session"
    assert out["get"]["type"] == "AmiResponseError"
    assert "write = config" in out["get"]["error"]
    assert "'synch'" in out["get"]["error"]
    assert out["ping"]["ok"]


def test_auth_failed_is_a_response_error_and_a_probe_failure() -> None:
    with FakeAmi() as fake:
        out = run_patched(
            """
            c = client(password="wrong")
            out["ping"] = attempt(c.ping)
            out["connected"] = c.connected
            out["probe"] = probe_once(c)
            """,
            fake.port,
        )
        assert fake.connections == 2, "a refused login is not kept as a session"
    assert out["ping"]["type"] == "AmiResponseError"
    assert out["ping"]["message"] == "Authentication failed"
    assert out["connected"] is False
    assert out["probe"][0] == "failure"
    assert "Authentication failed" in out["probe"][2]


# -- transport faults ----------------------------------------------------------------------


def test_connection_refused_is_a_transport_error() -> None:
    out = run_patched(
        """
        c = client()
        out["ping"] = attempt(c.ping)
        out["probe"] = probe_once(c)
        """,
        free_port(),
    )
    assert out["ping"]["type"] == "AmiTransportError"
    assert "cannot connect" in out["ping"]["error"]
    assert out["probe"][0] == "error"


@pytest.mark.parametrize(
    ("name", "handler", "where"),
    [
        ("silent after banner", lambda c: (c.banner(), c.hang()), "connecting"),
        ("no banner at all", lambda c: c.hang(), "connecting"),
        ("login never answered", lambda c: (c.banner(), c.read_action(), c.hang()), "connecting"),
        ("ping never answered", lambda c: (login_then(c), c.hang()), "answer to Ping"),
    ],
)
def test_silent_peer_times_out_within_budget(name: str, handler, where: str) -> None:  # type: ignore[no-untyped-def]
    with FakeAmi(handler) as fake:
        out = run_patched(
            """
            c = client(timeout=0.5)
            out["ping"] = attempt(c.ping)
            out["connected"] = c.connected
            """,
            fake.port,
        )
    ping = out["ping"]
    assert ping["type"] == "AmiTransportError", name
    assert "no answer within 0.5 s" in ping["error"] and where in ping["error"]
    assert 0.45 <= ping["seconds"] < 0.5 + TIMEOUT_SLACK
    assert out["connected"] is False


def _garbage_answer(conn: FakeConnection) -> None:
    ping = login_then(conn)
    assert ping is not None
    conn.respond(ping, "Banana", [("Ping", "Pong")])


def _answer_for_someone_else(conn: FakeConnection) -> None:
    ping = login_then(conn)
    assert ping is not None
    conn.send("Response: Success\r\nActionID: someone-else-7\r\nPing: Pong\r\n\r\n")


def _binary_junk(conn: FakeConnection) -> None:
    login_then(conn)
    conn.send(b"\x00\xff\xfe\x16\x03 junk\r\n\r\n")


def _close_mid_reply(conn: FakeConnection) -> None:
    ping = login_then(conn)
    assert ping is not None
    conn.send(f"Response: Success\r\nActionID: {ping.action_id}\r\nPing: Po")
    conn.close()


def _http_greeting(conn: FakeConnection) -> None:
    conn.send("HTTP/1.1 400 Bad Request\r\n\r\n")
    conn.hang()


def _close_before_banner(conn: FakeConnection) -> None:
    conn.close()


def _endless_command_output(conn: FakeConnection) -> None:
    # `Response: Follows` waits for `--END COMMAND--` (pyst2's framing): it never comes.
    ping = login_then(conn)
    assert ping is not None
    conn.send(f"Response: Follows\r\nActionID: {ping.action_id}\r\n")
    conn.send("output line\n" * 200_000)
    conn.hang()


def _unsolicited_answers(conn: FakeConnection) -> None:
    ping = login_then(conn)
    assert ping is not None
    conn.send("".join(f"Response: Success\r\nActionID: x-{i}\r\n\r\n" for i in range(1200)))
    conn.hang()


def _unsolicited_events(conn: FakeConnection) -> None:
    ping = login_then(conn)
    assert ping is not None
    conn.send("".join(f"Event: Flood\r\nCount: {i}\r\n\r\n" for i in range(1200)))
    conn.hang()


@pytest.mark.parametrize(
    ("handler", "expect"),
    [
        (_garbage_answer, "garbage answer"),
        (_answer_for_someone_else, "ActionID"),
        (_binary_junk, "ActionID"),
        (_close_mid_reply, "connection lost"),
        (_http_greeting, "not an Asterisk manager greeting"),
        (_close_before_banner, "connection closed"),
        (_endless_command_output, "reply larger than 1 MB (maxreplymb)"),
        (_unsolicited_answers, "ActionID"),
        (_unsolicited_events, "more than 1000 events nobody asked for"),
    ],
    ids=[
        "garbage", "wrong-actionid", "binary", "close-mid-reply", "http", "close-at-connect",
        "over-the-cap", "unsolicited-answers", "unsolicited-events",
    ],
)
def test_bad_session_is_dropped_and_the_next_call_reconnects(handler, expect: str) -> None:  # type: ignore[no-untyped-def]
    with FakeAmi(first_then_normal(handler)) as fake:
        out = run_patched(
            """
            c = client(timeout=5, max_reply_bytes=1024 * 1024)
            out["first"] = attempt(c.ping)
            out["second"] = attempt(c.ping)
            out["third"] = attempt(c.ping)
            """,
            fake.port,
        )
        assert fake.connections == 2
    assert out["first"]["type"] == "AmiTransportError"
    assert expect in out["first"]["error"]
    assert out["first"]["seconds"] < 4, "a fault is reported at once, not at the timeout"
    assert out["second"]["ok"] and out["third"]["ok"]


def test_answers_nobody_asked_for_end_an_idle_session() -> None:
    """Between requests nothing may arrive; a flood of answers there ends the session at once
    instead of piling up in memory until the next request."""

    def handler(conn: FakeConnection) -> None:
        if conn.index > 0:
            serve_asterisk(conn)
            return
        ping = login_then(conn)
        assert ping is not None
        conn.respond(ping, "Success", [("Ping", "Pong")])
        conn.send("".join(f"Response: Success\r\nActionID: x-{i}\r\n\r\n" for i in range(1200)))
        conn.hang()

    with FakeAmi(handler) as fake:
        out = run_patched(
            """
            c = client(timeout=5)
            out["first"] = attempt(c.ping)
            deadline = time.monotonic() + 5
            while c.connected and time.monotonic() < deadline:
                gevent.sleep(0.01)
            out["dropped"] = not c.connected
            out["second"] = attempt(c.ping)
            """,
            fake.port,
        )
        assert fake.connections == 2
    assert out["first"]["ok"] and out["dropped"] and out["second"]["ok"]


def test_timed_out_session_is_never_reused() -> None:
    """pyst2 pairs replies by order: the late Pong must not become the next caller's answer."""
    slow = AsteriskBehaviour(delay={"ping": 1.0})
    late_replies: list[str] = []

    def handler(conn: FakeConnection) -> None:
        if conn.index == 0:
            serve_asterisk(conn, slow)
            late_replies.append("sent")
        else:
            serve_asterisk(conn)

    with FakeAmi(handler) as fake:
        out = run_patched(
            """
            c = client(timeout=0.3)
            out["first"] = attempt(c.ping)
            out["second"] = attempt(lambda: c.action("CoreStatus"))
            gevent.sleep(1.2)  # let the late Pong arrive, were the old session still read
            out["third"] = attempt(lambda: c.action("Ping"))
            out["third_headers"] = out["third"]["value"]["headers"] if out["third"]["ok"] else None
            """,
            fake.port,
        )
        assert fake.connections == 2
        assert [a.connection for a in fake.actions_named("CoreStatus")] == [1]
    assert out["first"]["type"] == "AmiTransportError"
    assert out["second"]["ok"]
    assert ["CoreReloadTime", "10:00:01"] in out["second"]["value"]["headers"]
    assert out["third"]["ok"] and ["Ping", "Pong"] in out["third_headers"]


def test_close_on_a_hung_peer_returns_at_once_and_wakes_the_caller() -> None:
    behaviour = AsteriskBehaviour(hang_on=frozenset({"CoreStatus"}))
    with FakeAmi(lambda c: serve_asterisk(c, behaviour)) as fake:
        out = run_patched(
            """
            c = client(timeout=30)
            c.ping()
            pending = gevent.spawn(attempt, lambda: c.action("CoreStatus"))
            while not pending.dead and not c._lock.locked():
                gevent.sleep(0)
            gevent.sleep(0.05)  # let it send and block on the reply
            start = time.monotonic()
            c.close()
            out["close_seconds"] = time.monotonic() - start
            out["pending"] = pending.get(timeout=10)
            out["again"] = attempt(c.ping)
            c.close()
            deadline = time.monotonic() + 5
            while threading.active_count() > 1 and time.monotonic() < deadline:
                gevent.sleep(0.02)
            out["threads_left"] = threading.active_count()
            """,
            fake.port,
        )
        assert fake.connections == 2
        assert len(fake.actions_named("CoreStatus")) == 1
    assert out["close_seconds"] < 2.0, "close() waits for nothing"
    assert out["pending"]["type"] == "AmiTransportError"
    assert out["pending"]["seconds"] < TIMEOUT_SLACK, "woken by close, not by its 30 s timeout"
    assert out["again"]["ok"]
    assert out["threads_left"] == 1, "pyst2's reader greenlets ended with their sessions"


def test_callers_are_serialised_one_request_in_flight() -> None:
    overlaps: list[str] = []

    def slow_ping(conn: FakeConnection, action: FakeAction) -> None:
        if conn.peer_sent_more(0.2):
            overlaps.append(action.action_id)
        conn.respond(action, "Success", [("Ping", "Pong"), ("Seen", action.action_id)])

    behaviour = AsteriskBehaviour(extra={"ping": slow_ping})
    with FakeAmi(lambda c: serve_asterisk(c, behaviour)) as fake:
        out = run_patched(
            """
            c = client(timeout=5)
            jobs = [gevent.spawn(attempt, lambda: c.action("Ping")) for _ in range(4)]
            gevent.joinall(jobs, timeout=30)
            out["results"] = [j.value for j in jobs]
            """,
            fake.port,
        )
        assert fake.connections == 1
        sent_ids = [a.action_id for a in fake.actions_named("Ping")]
    assert overlaps == []
    results = out["results"]
    assert all(r["ok"] for r in results)
    seen = [dict(map(tuple, r["value"]["headers"]))["Seen"] for r in results]
    echoed = [dict(map(tuple, r["value"]["headers"]))["ActionID"] for r in results]
    assert seen == echoed, "each caller got the answer to its own request"
    assert sorted(seen) == sorted(sent_ids)


def test_pyst2_status_marker_in_a_value_is_bounded() -> None:
    """pyst2's framing treats any line containing 'status will follow' as the start of a
    Status listing and swallows messages until 'StatusComplete'. Bounded by the timeout,
    and the session is replaced."""
    configs = {"odd.conf": [("x", ["note=status will follow"])]}
    behaviour = AsteriskBehaviour(configs=configs)
    with FakeAmi(lambda c: serve_asterisk(c, behaviour)) as fake:
        out = run_patched(
            """
            c = client(timeout=0.5)
            out["get"] = attempt(lambda: get_config(c, "odd.conf"))
            out["ping"] = attempt(c.ping)
            """,
            fake.port,
        )
        assert fake.connections == 2
    assert out["get"]["type"] == "AmiTransportError"
    assert out["ping"]["ok"]


def test_large_get_config_arrives_whole() -> None:
    categories = [(f"{n}", [f"secret=s{n}", "allow=ulaw", "allow=alaw"]) for n in range(3000)]
    behaviour = AsteriskBehaviour(configs={"big.conf": categories})
    with FakeAmi(lambda c: serve_asterisk(c, behaviour)) as fake:
        out = run_patched(
            """
            c = client(timeout=20)
            reply = get_config(c, "big.conf")
            out["count"] = len(reply.headers)
            out["last"] = reply.headers[-1]
            """,
            fake.port,
        )
    assert out["count"] == 2 + 3000 * 4
    assert out["last"] == ["Line-002999-000002", "allow=alaw"]


def test_probe_once_maps_outcomes() -> None:
    behaviour = AsteriskBehaviour(users={"synch": "secret"})
    with FakeAmi(lambda c: serve_asterisk(c, behaviour)) as fake:
        out = run_patched(
            """
            out["success"] = probe_once(client())
            out["failure"] = probe_once(client(password="nope"))
            out["error"] = probe_once(AmiClient(HOST, ARGS["closed"], "synch", "x", timeout=1))
            """,
            fake.port,
            {"closed": free_port()},
        )
    assert [out[k][0] for k in ("success", "failure", "error")] == ["success", "failure", "error"]
    assert all(out[k][1] >= 0 for k in out)
    assert out["success"][2] == ""
    assert "Authentication failed" in out["failure"][2]
    assert "cannot connect" in out["error"][2]


# -- TLS -----------------------------------------------------------------------------------


def make_cert(directory: Path, names: str) -> tuple[Path, Path]:
    """A self-signed certificate for `names` (subjectAltName syntax), via the openssl CLI."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=synch-test", "-addext", f"subjectAltName={names}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def tls_server(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_tls_verifies_the_certificate(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "IP:127.0.0.1,DNS:localhost")
    with FakeAmi(tls=tls_server(cert, key)) as fake:
        out = run_patched(
            """
            out["trusted"] = attempt(client(tls=True, cafile=ARGS["cafile"]).ping)
            out["untrusted"] = attempt(client(tls=True).ping)
            """,
            fake.port,
            {"cafile": str(cert)},
        )
        out_plain = run_patched('out["plain"] = attempt(client(timeout=1).ping)', fake.port)
    assert out["trusted"]["ok"], out["trusted"]
    assert out["untrusted"]["type"] == "AmiTransportError"
    assert "TLS failed" in out["untrusted"]["error"]
    assert "CERTIFICATE_VERIFY_FAILED" in out["untrusted"]["error"]
    assert out_plain["plain"]["type"] == "AmiTransportError", "plain AMI to a TLS port fails"


def test_tls_checks_the_hostname(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "DNS:central.invalid")
    with FakeAmi(tls=tls_server(cert, key)) as fake:
        out = run_patched(
            'out["ping"] = attempt(client(tls=True, cafile=ARGS["cafile"]).ping)',
            fake.port,
            {"cafile": str(cert)},
        )
    assert out["ping"]["type"] == "AmiTransportError"
    assert "mismatch" in out["ping"]["error"]
