"""AmiClient (synch/ami/client.py): deadlines, one session at a time, reconnects.

The client runs as in the daemon, monkey-patched, in a subprocess: each test runs a function
of ami_client_scenarios.py there (`run_scenario`). The server side runs in threads here: a
FakeAmi replaying what a real Asterisk 22 sent (tests/fixtures/ami), or misbehaving on
purpose. Argument checks run in-process.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import gevent.monkey
import pytest

from synch.ami.client import AmiClient
from tests.unit import ami_client_scenarios as scenarios
from tests.unit.ami_transcripts import (
    answer_for_someone_else,
    binary_junk,
    close_mid_reply,
    endless_command_output,
    garbage_answer,
    load,
    logged_in_then,
    merged,
    pong_then_unsolicited_answers,
    replayer,
    unsolicited_answers,
    unsolicited_events,
)
from tests.unit.fake_ami import (
    AsteriskBehaviour,
    FakeAction,
    FakeAmi,
    FakeConnection,
    Handler,
    run_scenario,
    serve_asterisk,
)

TIMEOUT_SLACK = 5.0  # generous upper bound: catches "blocks forever", not slowness


def first_then_normal(misbehave: Handler) -> Handler:
    """Handler: connection 0 misbehaves, later connections replay login-ping."""
    normal = replayer(load("login-ping"))

    def handler(conn: FakeConnection) -> None:
        (misbehave if conn.index == 0 else normal)(conn)

    return handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unmatched(fake: FakeAmi) -> list[BaseException]:
    """Requests the replay had no recorded answer for (a test that asks the wrong thing)."""
    return [e for e in fake.errors if "has no answer" in str(e)]


# -- in-process: argument checks, before any I/O --------------------------------------------


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


# -- a real Asterisk, replayed ---------------------------------------------------------------


def test_normal_session_one_connection_values_whole() -> None:
    central = merged("login-ping", "getconfig", "corestatus", "reload", "command")
    with FakeAmi(replayer(central)) as fake:
        out = run_scenario(scenarios.normal_session, fake.port)
        assert fake.connections == 1
        assert unmatched(fake) == []
        login = fake.actions_named("Login")[0]
        assert login.get("Events") == "off"
        assert login.get("Username") == "synch"
        ids = [a.action_id for a in fake.actions]
        assert len(set(ids)) == len(ids) and all(ids), "every action carries its own ActionID"
        variables = [v for k, v in fake.actions_named("UserEvent")[0].headers if k == "Variable"]
        assert variables == ["a=1", "b=2"]
        assert fake.actions_named("GetConfig")[1].get("Filter") == (
            "TEMPLATES=include,accountcode=^HeadOffice$"
        )

    assert out["ping"]["ok"] and out["connected"] is True
    headers = [tuple(h) for h in out["config"]["value"]["headers"]]
    assert headers[2:8] == [
        ("Category-000000", "general"),
        ("Line-000000-000000", "allow=ulaw"),
        ("Line-000000-000001", "allow=alaw"),
        ("Line-000000-000002", "setvar=A=B"),
        ("Line-000000-000003", "note=semi;colon"),
        ("Line-000000-000004", "x=y"),
    ]
    assert ("Line-000001-000004", "callerid=Alice <1001>") in headers
    filtered = [tuple(h) for h in out["filtered"]["value"]["headers"]]
    assert ("Category-000000", "tpl") in filtered
    assert out["empty"]["value"]["body"] == "No categories found"
    assert out["missing"]["type"] == "AmiResponseError"
    assert out["missing"]["message"] == "Config file not found"
    assert out["status"]["value"]["CoreReloadTime"]
    assert "Response" not in out["status"]["value"]
    assert out["reload"] == {"ok": True, "value": None, "seconds": out["reload"]["seconds"]}
    assert out["nomodule"]["type"] == "AmiResponseError"
    assert "No such module" in out["nomodule"]["error"]
    assert "chan_sip does not exist" in out["nomodule"]["error"]
    assert out["list"]["ok"], out["list"]
    assert out["unknown"]["type"] == "AmiResponseError"
    assert out["probe"][0] == "success" and out["probe"][2] == ""
    assert out["after_close"] is False


def test_permission_denied_names_the_missing_write_permission() -> None:
    with FakeAmi(replayer(load("permission-denied"))) as fake:
        out = run_scenario(scenarios.denied_get_config, fake.port, {"user": "pingonly"})
        assert fake.connections == 1, "an error answer keeps the session"
        assert unmatched(fake) == []
    assert out["get"]["type"] == "AmiResponseError"
    assert "write = config" in out["get"]["error"]
    assert "'pingonly'" in out["get"]["error"]
    assert out["ping"]["ok"]


def test_auth_failed_is_a_response_error_and_a_probe_failure() -> None:
    with FakeAmi(replayer(load("auth-failed"))) as fake:
        out = run_scenario(scenarios.ping_then_probe, fake.port, {"password": "wrong"})
        assert fake.connections == 2, "a refused login is not kept as a session"
    assert out["ping"]["type"] == "AmiResponseError"
    assert out["ping"]["message"] == "Authentication failed"
    assert out["connected"] is False
    assert out["probe"][0] == "failure"
    assert "Authentication failed" in out["probe"][2]


def test_large_get_config_arrives_whole() -> None:
    recorded = load("getconfig-large").exchange("GetConfig").answer
    count = recorded.count(b"\r\n") - 1  # its lines, all headers, but the blank one
    with FakeAmi(replayer(merged("getconfig-large", "login-ping"))) as fake:
        args = {"timeout": 20, "file": "sip_large.conf"}
        out = run_scenario(scenarios.get_then_ping, fake.port, args)
    assert out["get"]["value"]["count"] == count
    assert out["get"]["value"]["last"] == ["Line-000099-000029", "allow=alaw"]


def test_probe_once_maps_outcomes() -> None:
    with (
        FakeAmi(replayer(load("login-ping"))) as fake,
        FakeAmi(replayer(load("auth-failed"))) as refusing,
    ):
        args = {"refusing": refusing.port, "closed": free_port()}
        out = run_scenario(scenarios.probes, fake.port, args)
    assert [out[k][0] for k in ("success", "failure", "error")] == ["success", "failure", "error"]
    assert all(out[k][1] >= 0 for k in out)
    assert out["success"][2] == ""
    assert "Authentication failed" in out["failure"][2]
    assert "cannot connect" in out["error"][2]


# -- transport faults ----------------------------------------------------------------------


def test_connection_refused_is_a_transport_error() -> None:
    out = run_scenario(scenarios.ping_then_probe, free_port())
    assert out["ping"]["type"] == "AmiTransportError"
    assert "cannot connect" in out["ping"]["error"]
    assert out["probe"][0] == "error"


def _greeting_then_silence(conn: FakeConnection) -> None:
    conn.send(load("login-ping").greeting)
    conn.hang()


def _login_never_answered(conn: FakeConnection) -> None:
    conn.send(load("login-ping").greeting)
    conn.read_action()
    conn.hang()


def _hang(conn: FakeConnection, action: FakeAction) -> None:
    conn.hang()


@pytest.mark.parametrize(
    ("handler", "where"),
    [
        (_greeting_then_silence, "connecting"),
        (lambda c: c.hang(), "connecting"),
        (_login_never_answered, "connecting"),
        (logged_in_then(_hang), "answer to Ping"),
    ],
    ids=["silent after greeting", "no greeting at all", "login never answered",
         "ping never answered"],
)  # fmt: skip
def test_silent_peer_times_out_within_budget(handler: Handler, where: str) -> None:
    with FakeAmi(handler) as fake:
        out = run_scenario(scenarios.ping_once, fake.port, {"timeout": 0.5})
    ping = out["ping"]
    assert ping["type"] == "AmiTransportError"
    assert "no answer within 0.5 s" in ping["error"] and where in ping["error"]
    assert 0.45 <= ping["seconds"] < 0.5 + TIMEOUT_SLACK
    assert out["connected"] is False


def _http_greeting(conn: FakeConnection) -> None:
    conn.send("HTTP/1.1 400 Bad Request\r\n\r\n")
    conn.hang()


def _close_before_greeting(conn: FakeConnection) -> None:
    conn.close()


@pytest.mark.parametrize(
    ("handler", "expect"),
    [
        (logged_in_then(garbage_answer), "garbage answer"),
        (logged_in_then(answer_for_someone_else), "ActionID"),
        (logged_in_then(binary_junk), "ActionID"),
        (logged_in_then(close_mid_reply), "connection lost"),
        (_http_greeting, "not an Asterisk manager greeting"),
        (_close_before_greeting, "connection closed"),
        (logged_in_then(endless_command_output), "reply larger than 1 MB (maxreplymb)"),
        (logged_in_then(unsolicited_answers), "ActionID"),
        (logged_in_then(unsolicited_events), "more than 1000 events nobody asked for"),
    ],
    ids=[
        "garbage", "wrong-actionid", "binary", "close-mid-reply", "http", "close-at-connect",
        "over-the-cap", "unsolicited-answers", "unsolicited-events",
    ],
)  # fmt: skip
def test_bad_session_is_dropped_and_the_next_call_reconnects(handler: Handler, expect: str) -> None:
    with FakeAmi(first_then_normal(handler)) as fake:
        out = run_scenario(scenarios.ping_three_times, fake.port)
        assert fake.connections == 2
    assert out["first"]["type"] == "AmiTransportError"
    assert expect in out["first"]["error"]
    assert out["first"]["error"].startswith(f"central AMI 127.0.0.1:{fake.port}: ")
    assert out["first"]["seconds"] < 4, "a fault is reported at once, not at the timeout"
    assert out["second"]["ok"] and out["third"]["ok"]


def test_answers_nobody_asked_for_end_an_idle_session() -> None:
    """Between requests nothing may arrive; a flood of answers there ends the session at once
    instead of piling up in memory until the next request."""
    with FakeAmi(first_then_normal(logged_in_then(pong_then_unsolicited_answers))) as fake:
        out = run_scenario(scenarios.ping_until_dropped, fake.port)
        assert fake.connections == 2
    assert out["first"]["ok"] and out["dropped"] and out["second"]["ok"]


def test_timed_out_session_is_never_reused() -> None:
    """pyst2 pairs replies by order: the late Pong must not become the next caller's answer."""
    central = merged("login-ping", "corestatus")

    def slow_ping(conn: FakeConnection, action: FakeAction) -> bool:
        if conn.index == 0 and action.name == "Ping":
            time.sleep(1.0)
        return False  # then answer as recorded

    with FakeAmi(replayer(central, slow_ping)) as fake:
        out = run_scenario(scenarios.late_answer_never_reused, fake.port)
        assert fake.connections == 2
        assert [a.connection for a in fake.actions_named("CoreStatus")] == [1]
    assert out["first"]["type"] == "AmiTransportError"
    assert out["second"]["ok"]
    assert "CoreReloadTime" in [h[0] for h in out["second"]["value"]["headers"]]
    third = out["third"]
    assert third["ok"] and ["Ping", "Pong"] in third["value"]["headers"]


def test_close_on_a_hung_peer_returns_at_once_and_wakes_the_caller() -> None:
    def hang_on_corestatus(conn: FakeConnection, action: FakeAction) -> bool:
        if action.name != "CoreStatus":
            return False
        conn.hang()
        return True

    with FakeAmi(replayer(merged("login-ping", "corestatus"), hang_on_corestatus)) as fake:
        out = run_scenario(scenarios.close_while_waiting, fake.port)
        assert fake.connections == 2
        assert len(fake.actions_named("CoreStatus")) == 1
    assert out["close_seconds"] < 2.0, "close() waits for nothing"
    assert out["pending"]["type"] == "AmiTransportError"
    assert out["pending"]["seconds"] < TIMEOUT_SLACK, "woken by close, not by its 30 s timeout"
    assert out["again"]["ok"]
    assert out["threads_left"] == 1, "pyst2's reader greenlets ended with their sessions"


def test_callers_are_serialised_one_request_in_flight() -> None:
    overlaps: list[str] = []

    def watch(conn: FakeConnection, action: FakeAction) -> bool:
        if action.name == "Ping" and conn.peer_sent_more(0.2):
            overlaps.append(action.action_id)
        return False  # then answer as recorded, echoing this action's ActionID

    with FakeAmi(replayer(load("login-ping"), watch)) as fake:
        out = run_scenario(scenarios.concurrent_pings, fake.port)
        assert fake.connections == 1
        sent_ids = [a.action_id for a in fake.actions_named("Ping")]
    assert overlaps == []
    results = out["results"]
    assert all(r["ok"] for r in results)
    echoed = [dict(map(tuple, r["value"]["headers"]))["ActionID"] for r in results]
    assert len(set(echoed)) == 4, "each caller got the answer to its own request"
    assert sorted(echoed) == sorted(sent_ids)


def test_pyst2_status_marker_in_a_value_is_bounded() -> None:
    """pyst2's framing treats any line containing 'status will follow' as the start of a
    Status listing and swallows messages until 'StatusComplete'. Bounded by the timeout,
    and the session is replaced."""
    exchange = load("getconfig").exchange("GetConfig", Filename="test.conf")

    def odd_value(conn: FakeConnection, action: FakeAction) -> bool:
        if action.name != "GetConfig":
            return False
        answer = exchange.answer_for(action.action_id)
        conn.send(answer.replace(b"note=semi;colon", b"note=status will follow"))
        return True

    with FakeAmi(replayer(merged("getconfig", "login-ping"), odd_value)) as fake:
        args = {"timeout": 0.5, "file": "test.conf"}
        out = run_scenario(scenarios.get_then_ping, fake.port, args)
        assert fake.connections == 2
    assert out["get"]["type"] == "AmiTransportError"
    assert out["ping"]["ok"]


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
    with FakeAmi(replayer(load("login-ping")), tls=tls_server(cert, key)) as fake:
        trusted = run_scenario(scenarios.ping_once, fake.port, {"tls": True, "cafile": str(cert)})
        untrusted = run_scenario(scenarios.ping_once, fake.port, {"tls": True})
        plain = run_scenario(scenarios.ping_once, fake.port, {"timeout": 1})
    assert trusted["ping"]["ok"], trusted
    assert untrusted["ping"]["type"] == "AmiTransportError"
    assert "TLS failed" in untrusted["ping"]["error"]
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted["ping"]["error"]
    assert plain["ping"]["type"] == "AmiTransportError", "plain AMI to a TLS port fails"


def test_tls_checks_the_hostname(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "DNS:central.invalid")
    with FakeAmi(replayer(load("login-ping")), tls=tls_server(cert, key)) as fake:
        out = run_scenario(scenarios.ping_once, fake.port, {"tls": True, "cafile": str(cert)})
    assert out["ping"]["type"] == "AmiTransportError"
    assert "mismatch" in out["ping"]["error"]


def test_idle_session_is_closed_and_the_next_call_logs_in_again() -> None:
    behaviour = AsteriskBehaviour(delay={"ping": 0.5})
    with FakeAmi(lambda conn: serve_asterisk(conn, behaviour)) as fake:
        out = run_scenario(scenarios.idle_close, fake.port)
        assert out["first"]["ok"] and all(out[f"kept {n}"] for n in range(3))
        assert out["closed"] and 0.1 <= out["idle"] < TIMEOUT_SLACK
        assert out["slow"]["ok"], out["slow"]  # not closed under the call
        assert out["after slow"] is True
        assert out["again"]["ok"]
        # first session, the one for the slow Ping, the one after it closed again
        assert fake.connections == 3
        assert len(fake.actions_named("Login")) == 3


def test_idle_close_must_be_positive() -> None:
    with pytest.raises(ValueError, match="idle_close"):
        AmiClient("127.0.0.1", 5038, "synch", "x", timeout=1, idle_close=0)
