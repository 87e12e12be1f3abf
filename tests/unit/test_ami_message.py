"""AMI replies (synch/ami/message.py): parse_reply, and what real Asterisk 22 answers mean.

Pure: the recorded transcripts (tests/fixtures/ami) go through the framer and parse_reply
here, with no socket and no session.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import synch
from synch.ami import AmiReply, parse_reply
from synch.ami.framing import _Framer, _Reply
from tests.unit.ami_transcripts import load


def replies(name: str) -> dict[str, AmiReply]:
    """Each answer of transcript `name` as the session gets it, by the request's ActionID."""
    transcript = load(name)
    framer = _Framer()
    messages = framer.feed(transcript.server_bytes()) + framer.feed_eof()
    assert framer.title == "Asterisk Call Manager" and framer.version == "11.0.0"
    out = [m.reply if isinstance(m, _Reply) else parse_reply(m) for m in messages[1:]]
    assert len(out) == len(transcript.exchanges)
    return {e.action_id: reply for e, reply in zip(transcript.exchanges, out, strict=True)}


def categories(reply: AmiReply) -> list[str]:
    return [v for k, v in reply.headers if k.startswith("Category-")]


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


def test_getconfig_keeps_order_duplicates_and_whole_values() -> None:
    """GetConfig of tests/helpers/record_ami.py's test.conf, as Asterisk 22 answers."""
    got = replies("getconfig")
    whole = got["synch-2"]
    assert whole.ok and whole.headers[:2] == (("Response", "Success"), ("ActionID", "synch-2"))
    assert whole.headers[2:8] == (
        ("Category-000000", "general"),
        ("Line-000000-000000", "allow=ulaw"),
        ("Line-000000-000001", "allow=alaw"),
        ("Line-000000-000002", "setvar=A=B"),
        ("Line-000000-000003", "note=semi;colon"),
        ("Line-000000-000004", "x=y"),
    )
    assert categories(whole) == ["general", "1001", "1002", "1003"], "templates left out"
    # inherited template variables come first, then the section's own (duplicates kept)
    assert [v for k, v in whole.headers if k.startswith("Line-000002-")] == [
        "context=from-internal",
        "accountcode=HeadOffice",
        "type=friend",
        "accountcode=DevOps",
    ]
    assert ("Line-000001-000004", "callerid=Alice <1001>") in whole.headers
    assert whole.body == ""

    assert categories(got["synch-3"]) == ["1001", "1002", "1003"], "filtered on the central"
    templates = got["synch-4"]
    assert "tpl" in categories(templates)
    assert templates.get("IsTemplate-000001") == "1"
    assert categories(got["synch-5"]) == ["tpl", "1001", "1002", "1003"]

    # Nothing matched the filter: a bare Success, as for an empty file (sync must guard).
    nothing = got["synch-6"]
    assert [k for k, _ in nothing.headers] == ["Response", "ActionID"]
    assert nothing.ok and nothing.body == ""
    # Only a missing Category gets the bare line.
    assert got["synch-7"].body == "No categories found"
    missing = got["synch-8"]
    assert (missing.ok, missing.response, missing.message) == (
        False, "Error", "Config file not found",
    )  # fmt: skip


def test_a_large_getconfig() -> None:
    reply = replies("getconfig-large")["synch-2"]
    assert reply.ok
    assert len(categories(reply)) == 100
    assert reply.get_all("Line-000000-000027") == ["disallow=all"]
    assert reply.headers[-1] == ("Line-000099-000029", "allow=alaw")


def test_corestatus_login_reload_ping() -> None:
    status = replies("corestatus")["synch-2"]
    for key in ("CoreReloadDate", "CoreReloadTime", "CoreCurrentCalls", "CoreStartupTime"):
        assert status.get(key), key
    login = replies("login-ping")["synch-1"]
    assert (login.ok, login.message) == (True, "Authentication accepted")
    assert replies("login-ping")["synch-2"].get("Ping") == "Pong"
    reload = replies("reload")
    assert (reload["synch-2"].ok, reload["synch-2"].message) == (True, "Module Reloaded")
    assert (reload["synch-3"].ok, reload["synch-3"].message) == (False, "No such module")


def test_refusals() -> None:
    failed = replies("auth-failed")["synch-1"]
    assert (failed.ok, failed.message) == (False, "Authentication failed")
    denied = replies("permission-denied")
    assert denied["synch-2"].ok, "Ping needs no permission"
    for action_id in ("synch-3", "synch-4"):  # GetConfig, Reload
        assert (denied[action_id].ok, denied[action_id].message) == (False, "Permission denied")


def test_command_output_is_one_header_per_line() -> None:
    """Asterisk 14+ sends `Output:` once per line; pyst2 keeps only the last, we keep all."""
    got = replies("command")
    output = got["synch-2"].get_all("Output")
    assert len(output) == 3
    assert output[1].startswith("res_pjsip.so ")
    assert output[2] == "1 modules loaded"
    assert got["synch-3"].message == "Event Sent"
    assert got["synch-4"].message.startswith("Invalid/unknown command")


@pytest.mark.parametrize("module", ["message", "actions", "framing"])
def test_the_pure_modules_import_no_io(module: str) -> None:
    """message, actions and framing use no socket, no gevent, no pyst2 (nor does any synch
    module they import), so callers and tests can use them with doubles."""
    root = Path(synch.__file__).parent
    forbidden = {"gevent", "socket", "ssl", "select", "threading", "asterisk", "subprocess"}
    seen: set[str] = set()
    todo = [f"synch.ami.{module}"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = root.joinpath(*name.split(".")[1:]).with_suffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            for imported in names:
                assert imported.split(".")[0] not in forbidden, (name, imported)
                if imported.startswith("synch.") and imported != "synch.ami":
                    todo.append(imported)
