"""The AMI helpers (synch/ami/actions.py) over an `AmiLike` double that answers from the
recorded transcripts (tests/fixtures/ami): pure, in the test process."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from synch.ami import (
    AmiError,
    AmiLike,
    AmiReply,
    AmiResponseError,
    AmiTransportError,
    core_status,
    get_config,
    parse_reply,
    pjsip_contacts,
    probe_once,
    reload_module,
)
from synch.ami.actions import refusal
from synch.probe import ProbeResult
from tests.unit.ami_transcripts import Transcript, load, merged


class Replayed:
    """What AmiClient does with an answer, minus the wire: the recorded answer to the same
    request, an AmiResponseError for `Response: Error` (made by `refusal`, as the client
    does)."""

    def __init__(self, transcript: Transcript, *, username: str = "synch", name: str = "central"):
        self.transcript = transcript
        self.username = username
        self.name = name
        self.calls: list[tuple[tuple[tuple[str, str], ...], float | None]] = []

    def action(
        self,
        action: str,
        headers: Mapping[str, str | Sequence[str]] | None = None,
        timeout: float | None = None,
    ) -> AmiReply:
        request = [("Action", action)]
        for key, value in (headers or {}).items():
            request += [(key, value)] if isinstance(value, str) else [(key, v) for v in value]
        self.calls.append((tuple(request), timeout))
        exchange = self.transcript.find(tuple(request))
        lines = exchange.answer.decode().splitlines(keepends=True)
        reply = parse_reply([line for line in lines if line != "\r\n"])
        if not reply.ok:
            raise refusal(
                action, reply, name=self.name, where="127.0.0.1:5038", username=self.username
            )
        return reply

    def close(self) -> None:
        pass


class Failing:
    name = "central"

    def __init__(self, exc: Exception):
        self.exc = exc

    def action(self, action: str, headers: object = None, timeout: object = None) -> AmiReply:
        raise self.exc

    def close(self) -> None:
        pass


def test_the_double_is_an_amilike() -> None:
    client: AmiLike = Replayed(load("login-ping"))
    assert client.action("Ping").get("Ping") == "Pong"


def test_get_config_sends_filename_and_one_filter_header() -> None:
    client = Replayed(load("getconfig"))
    whole = get_config(client, "test.conf", timeout=3)
    filtered = get_config(client, "test.conf", "accountcode=^HeadOffice$")
    both = get_config(client, "test.conf", "accountcode=^HeadOffice$", templates=True)
    templates = get_config(client, "test.conf", templates=True)
    assert [request for request, _ in client.calls] == [
        (("Action", "GetConfig"), ("Filename", "test.conf")),
        (("Action", "GetConfig"), ("Filename", "test.conf"),
         ("Filter", "accountcode=^HeadOffice$")),
        (("Action", "GetConfig"), ("Filename", "test.conf"),
         ("Filter", "TEMPLATES=include,accountcode=^HeadOffice$")),
        (("Action", "GetConfig"), ("Filename", "test.conf"), ("Filter", "TEMPLATES=include")),
    ]  # fmt: skip
    assert client.calls[0][1] == 3, "the timeout is passed on"
    assert whole.get("Category-000000") == "general"
    assert filtered.get("Category-000000") == "1001"
    assert both.get("Category-000000") == "tpl"
    assert templates.get("IsTemplate-000001") == "1"
    with pytest.raises(AmiResponseError) as missing:
        get_config(client, "no-such-file.conf")
    assert missing.value.message == "Config file not found"
    assert missing.value.action == "GetConfig"


def test_core_status_is_the_headers_without_response_and_actionid() -> None:
    status = core_status(Replayed(load("corestatus")))
    assert "Response" not in status and "ActionID" not in status
    for key in ("CoreReloadDate", "CoreReloadTime", "CoreCurrentCalls", "CoreStartupTime"):
        assert status[key], key


def test_reload_module() -> None:
    client = Replayed(load("reload"))
    assert reload_module(client, "res_pjsip.so") is None
    with pytest.raises(AmiResponseError) as raised:
        reload_module(client, "chan_sip.so")
    error = str(raised.value)
    assert raised.value.message == "No such module"
    assert "No such module" in error
    assert "module chan_sip.so is not loaded on the central" in error
    assert "chan_sip does not exist" in error


def test_a_refusal_names_the_missing_write_permission() -> None:
    client = Replayed(load("permission-denied"), username="pingonly")
    assert client.action("Ping").ok
    with pytest.raises(AmiResponseError) as get:
        get_config(client, "test.conf")
    assert get.value.message == "Permission denied"
    assert "central AMI 127.0.0.1:5038: GetConfig refused: Permission denied" in str(get.value)
    assert "'pingonly' needs `write = config` (or system)" in str(get.value)
    assert "Ping works without it" in str(get.value)
    with pytest.raises(AmiResponseError, match=r"needs `write = config` \(or system\) for Reload"):
        reload_module(client, "res_pjsip.so")


def test_a_refused_login_says_what_to_check() -> None:
    with pytest.raises(AmiResponseError) as raised:
        Replayed(load("auth-failed")).action(
            "Login", {"Username": "synch", "Secret": "x", "Events": "off"}
        )
    assert raised.value.message == "Authentication failed"
    assert "check the username 'synch' and the secret" in str(raised.value)


def test_an_unknown_action_is_refused_without_a_hint() -> None:
    with pytest.raises(AmiResponseError) as raised:
        Replayed(load("command")).action("NoSuchAction")
    assert "needs" not in str(raised.value) and "check" not in str(raised.value)


@pytest.mark.parametrize(
    ("client", "result", "error"),
    [
        (Replayed(merged("login-ping")), ProbeResult.SUCCESS, ""),
        (Replayed(load("permission-denied")), ProbeResult.SUCCESS, ""),
        (
            Failing(AmiResponseError("Authentication failed", action="Login", message="x")),
            ProbeResult.FAILURE,
            "Authentication failed",
        ),
        (Failing(AmiTransportError("cannot connect")), ProbeResult.ERROR, "cannot connect"),
        (Failing(AmiError("odd")), ProbeResult.ERROR, "odd"),
        (Failing(KeyError("bug")), ProbeResult.ERROR, "KeyError: 'bug'"),
    ],
    ids=["success", "ping-needs-no-permission", "failure", "error", "other", "bug"],
)
def test_probe_once_maps_outcomes(client: AmiLike, result: ProbeResult, error: str) -> None:
    got, seconds, text = probe_once(client)
    assert got == result
    assert seconds >= 0
    assert (text == "") if not error else (error in text)


class Answers:
    """An AmiLike double that answers one action with a fixed reply or refusal."""

    name = "central"

    def __init__(self, reply: AmiReply | None = None, refused: str = ""):
        self.reply, self.refused = reply, refused

    def action(
        self, action: str, headers: Mapping[str, str | Sequence[str]] | None = None,
        timeout: float | None = None,
    ) -> AmiReply:  # fmt: skip
        if self.refused:
            raise AmiResponseError(f"{action} refused: {self.refused}", action=action,
                                   message=self.refused)  # fmt: skip
        assert self.reply is not None
        return self.reply


def test_pjsip_contacts_of_a_central_without_any_is_an_empty_list() -> None:
    # Asterisk 22 answers an empty PJSIPShowContacts with an error (seen on the lab central).
    assert pjsip_contacts(Answers(refused="No Contacts found")) == ()
    contact = AmiReply((("Event", "ContactList"), ("ObjectName", "1001;@ab")))
    assert pjsip_contacts(Answers(AmiReply((("Response", "Success"),), events=(contact,)))) == (
        contact,
    )
    with pytest.raises(AmiResponseError):
        pjsip_contacts(Answers(refused="Permission denied"))
