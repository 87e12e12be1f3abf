"""The status socket's line protocol, byte for byte."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synch.control.protocol import (
    ACTION_ERROR,
    MAX_REQUEST_BYTES,
    TOKEN_ERROR,
    ControlProtocol,
    Request,
    StatusSnapshot,
    is_complete,
    parse_request,
)
from synch.states import Monitor, Service, SyncState

STATUS = b'[{"Timestamp":"20190522181925","Monitor":"Stable","Sync":"Synced","Service":"Normal"}]\n'
FIXED = datetime(2019, 5, 22, 18, 19, 25)


class FakeBackend:
    def __init__(self) -> None:
        self.snapshot = StatusSnapshot(Monitor.STABLE, SyncState.SYNCED, Service.NORMAL)
        self.forced: Service | None = None
        self.syncs = 0
        self.fail = False

    def status(self) -> StatusSnapshot:
        if self.fail:
            raise RuntimeError("state unavailable")
        if self.forced is None:
            return self.snapshot
        return StatusSnapshot(self.snapshot.monitor, self.snapshot.sync, self.forced)

    def details(self) -> dict[str, object]:
        if self.fail:
            raise RuntimeError("details unavailable")
        return {"version": "1.2.3", "DnsTarget": "10.0.0.1", "LastSync": FIXED, "Accounts": 3}

    def force(self, service: Service) -> None:
        self.forced = service

    def auto(self) -> None:
        self.forced = None

    def sync_now(self) -> dict[str, object]:
        if self.fail:
            raise OSError("central unreachable")
        self.syncs += 1
        return {"result": "applied", "commit": "abc123"}


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def proto(backend: FakeBackend) -> ControlProtocol:
    return ControlProtocol("token1", "admin-secret", backend, now=lambda: FIXED)


@pytest.fixture
def no_admin(backend: FakeBackend) -> ControlProtocol:
    return ControlProtocol("token1", None, backend, now=lambda: FIXED)


# --- GetStatus, the original's contract -------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"GetStatus(token1)\n",
        b"GetStatus(token1)\r\n",
        b"GetStatus(token1)",  # nc -N with printf: no newline, half-close
        b"  \tGetStatus(token1)  \r\n",
        b"\r\n\nGetStatus(token1)\n",  # blank lines first
        b"GetStatus( token1 )\n",
        b"GetStatus (token1)\n",
        b"GetStatus(token1) trailing words are ignored\n",
        b"GetStatus(token1)\nGetStatus(wrong)\n",  # only the first line counts
    ],
)
def test_get_status_is_byte_exact(proto: ControlProtocol, raw: bytes) -> None:
    assert proto.reply(raw) == STATUS


def test_get_status_follows_backend_and_clock(backend: FakeBackend) -> None:
    backend.snapshot = StatusSnapshot(Monitor.FAILED, SyncState.UNSYNCED, Service.FAILOVER)
    proto = ControlProtocol("t", None, backend, now=lambda: datetime(2024, 1, 2, 3, 4, 5))
    assert proto.reply(b"GetStatus(t)\n") == (
        b'[{"Timestamp":"20240102030405","Monitor":"Failed","Sync":"Unsynced",'
        b'"Service":"Failover"}]\n'
    )


def test_init_states(backend: FakeBackend, proto: ControlProtocol) -> None:
    backend.snapshot = StatusSnapshot(Monitor.INIT, SyncState.INIT, Service.INIT)
    assert proto.reply(b"GetStatus(token1)\n") == (
        b'[{"Timestamp":"20190522181925","Monitor":"Init","Sync":"Init","Service":"Init"}]\n'
    )


def test_default_clock_is_local_time(backend: FakeBackend) -> None:
    before = datetime.now().strftime("%Y%m%d%H%M%S")
    reply = ControlProtocol("t", None, backend).reply(b"GetStatus(t)\n")
    after = datetime.now().strftime("%Y%m%d%H%M%S")
    stamp = json.loads(reply)[0]["Timestamp"]
    assert before <= stamp <= after


@pytest.mark.parametrize(
    "raw",
    [
        b"GetStatus(wrong)\n",
        b"GetStatus(token)\n",  # a prefix of the token
        b"GetStatus(token12)\n",
        b"GetStatus(TOKEN1)\n",
        b"GetStatus()\n",  # missing token
        b"GetStatus( )\n",
        b"GetStatus\n",
        b"GetStatus(token1\n",  # never closed
        b"GetStatus(tok en1)\n",
        b"",
        b"\n",
        b"\r\n",
        b"hello\n",
        b"\x00\xff\xfe(token1",
        b"Bogus(wrong)\n",  # wrong token wins over unknown action, as in the original
    ],
)
def test_token_error(proto: ControlProtocol, raw: bytes) -> None:
    assert proto.reply(raw) == TOKEN_ERROR


@pytest.mark.parametrize(
    "raw",
    [
        b"Bogus(token1)\n",
        b"getstatus(token1)\n",  # actions are case-sensitive, as in the original
        b"(token1)\n",  # no action at all
        b"GetStatusX(token1)\r\n",
        b"Bogus(admin-secret)\n",
    ],
)
def test_action_error(proto: ControlProtocol, raw: bytes) -> None:
    assert proto.reply(raw) == ACTION_ERROR


def test_empty_configured_token_never_matches(backend: FakeBackend) -> None:
    proto = ControlProtocol("", None, backend, now=lambda: FIXED)
    assert proto.reply(b"GetStatus()\n") == TOKEN_ERROR
    assert proto.reply(b"GetStatus(x)\n") == TOKEN_ERROR


def test_non_ascii_token(backend: FakeBackend) -> None:
    proto = ControlProtocol("clé-ü", None, backend, now=lambda: FIXED)
    assert proto.reply("GetStatus(clé-ü)\n".encode()) == STATUS
    assert proto.reply(b"GetStatus(cl\xe9-\xfc)\n") == TOKEN_ERROR  # latin-1 is another token


def test_counters(proto: ControlProtocol) -> None:
    proto.reply(b"GetStatus(token1)\n")
    proto.reply(b"GetStatus(nope)\n")
    proto.reply(b"garbage")
    proto.reply(b"Bogus(token1)\n")
    proto.reply(b"Failover(token1)\n")  # normal token, admin action
    assert (proto.requests, proto.token_errors, proto.action_errors) == (5, 3, 1)


def test_status_failure_is_action_error(backend: FakeBackend, proto: ControlProtocol) -> None:
    backend.fail = True
    assert proto.reply(b"GetStatus(token1)\n") == ACTION_ERROR
    assert proto.backend_errors == 1


# --- GetDetails ---------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [b"token1", b"admin-secret"])
def test_get_details_is_one_compact_json_line(proto: ControlProtocol, token: bytes) -> None:
    reply = proto.reply(b"GetDetails(" + token + b")\r\n")
    assert reply == (
        b'{"version":"1.2.3","DnsTarget":"10.0.0.1","LastSync":"2019-05-22 18:19:25",'
        b'"Accounts":3}\n'
    )


def test_get_details_failure_is_a_json_line(backend: FakeBackend, proto: ControlProtocol) -> None:
    backend.fail = True
    reply = proto.reply(b"GetDetails(token1)\n")
    assert reply == b'{"ok":false,"error":"RuntimeError: details unavailable"}\n'


def test_get_details_needs_a_token(proto: ControlProtocol) -> None:
    assert proto.reply(b"GetDetails(wrong)\n") == TOKEN_ERROR
    assert proto.reply(b"GetDetails()\n") == TOKEN_ERROR


def test_admintoken_reads_status(proto: ControlProtocol) -> None:
    assert proto.reply(b"GetStatus(admin-secret)\n") == STATUS


# --- admin actions ------------------------------------------------------------------------------


def test_force_failover_then_normal_then_auto(backend: FakeBackend, proto: ControlProtocol) -> None:
    backend.snapshot = StatusSnapshot(Monitor.FAILED, SyncState.SYNCED, Service.FAILOVER)
    assert proto.reply(b"Normal(admin-secret)\n") == (
        b'{"ok":true,"Service":"Normal","Forced":true}\n'
    )
    assert b'"Service":"Normal"' in proto.reply(b"GetStatus(token1)\n")
    assert proto.reply(b"Failover(admin-secret)\n") == (
        b'{"ok":true,"Service":"Failover","Forced":true}\n'
    )
    forced_after_failover = backend.forced
    # Back to the automatic decision: the reply shows the state in force afterwards.
    assert proto.reply(b"Auto(admin-secret)\r\n") == (
        b'{"ok":true,"Service":"Failover","Forced":false}\n'
    )
    assert (forced_after_failover, backend.forced) == (Service.FAILOVER, None)


def test_sync_now(backend: FakeBackend, proto: ControlProtocol) -> None:
    assert proto.reply(b"Sync(admin-secret)\n") == (
        b'{"ok":true,"result":"applied","commit":"abc123"}\n'
    )
    assert backend.syncs == 1


def test_admin_failure_is_a_json_line(backend: FakeBackend, proto: ControlProtocol) -> None:
    backend.fail = True
    assert proto.reply(b"Sync(admin-secret)\n") == (
        b'{"ok":false,"error":"OSError: central unreachable"}\n'
    )


@pytest.mark.parametrize("action", [b"Failover", b"Normal", b"Auto", b"Sync"])
def test_normal_token_cannot_administer(
    backend: FakeBackend, proto: ControlProtocol, action: bytes
) -> None:
    assert proto.reply(action + b"(token1)\n") == TOKEN_ERROR
    assert proto.reply(action + b"(wrong)\n") == TOKEN_ERROR
    assert proto.reply(action + b"()\n") == TOKEN_ERROR
    assert (backend.forced, backend.syncs) == (None, 0)


@pytest.mark.parametrize("action", [b"Failover", b"Normal", b"Auto", b"Sync"])
def test_admin_actions_need_a_configured_admintoken(
    backend: FakeBackend, no_admin: ControlProtocol, action: bytes
) -> None:
    assert no_admin.reply(action + b"(token1)\n") == TOKEN_ERROR
    assert no_admin.reply(action + b"()\n") == TOKEN_ERROR
    assert (backend.forced, backend.syncs) == (None, 0)


def test_empty_admintoken_means_none(backend: FakeBackend) -> None:
    proto = ControlProtocol("token1", "", backend)
    assert proto.reply(b"Failover()\n") == TOKEN_ERROR
    assert backend.forced is None


# --- parsing and framing ------------------------------------------------------------------------


def test_parse_request() -> None:
    assert parse_request(b" GetStatus(abc.def:1/2\\3-4)\r\n") == Request(
        "GetStatus", b"abc.def:1/2\\3-4"
    )
    assert parse_request(b"Sync()\n") == Request("Sync", b"")
    assert parse_request(b"(t)") == Request("", b"t")
    assert parse_request(b"GetStatus") is None
    assert parse_request(b"\xff(t)") is None


def test_parse_reads_no_further_than_the_cap() -> None:
    raw = b" " * (MAX_REQUEST_BYTES - 5) + b"GetStatus(token1)\n"
    assert parse_request(raw) is None


@pytest.mark.parametrize(
    ("buffer", "complete"),
    [
        (b"", False),
        (b"GetSta", False),
        (b"GetStatus(tok", False),
        (b"\r\n", False),  # only blank so far: the request may still come
        (b"GetStatus(token1)", True),
        (b"GetStatus(tok\n", True),
        (b"x" * MAX_REQUEST_BYTES, True),
    ],
)
def test_is_complete(buffer: bytes, complete: bool) -> None:
    assert is_complete(buffer) is complete


# --- fuzz ---------------------------------------------------------------------------------------


def _assert_known_form(reply: bytes) -> None:
    assert reply.endswith(b"\n")
    assert reply.count(b"\n") == 1
    if reply in (TOKEN_ERROR, ACTION_ERROR):
        return
    value = json.loads(reply)
    assert isinstance(value, list | dict)


@settings(max_examples=500)
@given(st.binary(max_size=400))
def test_fuzz_raw_bytes(raw: bytes) -> None:
    proto = ControlProtocol("token1", "admin-secret", FakeBackend(), now=lambda: FIXED)
    _assert_known_form(proto.reply(raw))


_actions = st.sampled_from(
    ["GetStatus", "GetDetails", "Failover", "Normal", "Auto", "Sync", "Bogus", ""]
)
_tokens = st.sampled_from(["token1", "admin-secret", "", "wrong", "token1 "]) | st.text(max_size=8)
_noise = st.text(alphabet=" \t\r\n()x\x00", max_size=4)


@settings(max_examples=500)
@given(_noise, _actions, _tokens, _noise)
def test_fuzz_near_valid_requests(before: str, action: str, token: str, after: str) -> None:
    proto = ControlProtocol("token1", "admin-secret", FakeBackend(), now=lambda: FIXED)
    raw = f"{before}{action}({token}){after}".encode()
    reply = proto.reply(raw)
    _assert_known_form(reply)
    if parse_request(raw) is None or token.strip() not in ("token1", "admin-secret"):
        assert reply == TOKEN_ERROR
