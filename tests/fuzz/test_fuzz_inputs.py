"""Fuzzing the other inputs synch takes from outside: status socket lines through the real
transport, AMI replies (cut, reordered, giant, binary) into `synch.ami.parse_reply`, GetConfig
replies and .conf text into `synch.sync.getconfig` and `synch.sync.conftext`.

Invariants: only the documented error type escapes a parser, a status socket reply is always
one of the documented forms, the server keeps serving, and a valid request still gets its reply.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synch.ami import AmiReply, parse_reply
from synch.control.protocol import ControlProtocol
from synch.control.server import ControlServer
from synch.sync.conftext import parse_conf_text
from synch.sync.getconfig import parse_getconfig, split_reply
from synch.sync.model import ConfigFile, ConfigParseError
from tests.fuzz.budget import fuzz
from tests.fuzz.exchange import exchange
from tests.integration.control_server_app import MemoryBackend

TOKEN, ADMIN = "tok-fuzz", "adm-fuzz"

# -- status socket through the real transport ---------------------------------------------


@pytest.fixture(scope="module")
def control() -> Iterator[ControlServer]:
    server = ControlServer(
        ControlProtocol(TOKEN, ADMIN, MemoryBackend()), "127.0.0.1", 0, idle_timeout=1.0
    )
    server.start()
    yield server
    server.stop()


def valid_reply(reply: bytes) -> bool:
    if reply in (b"", b"Token error. Bye bye!\n", b"Action error. Bye bye!\n"):
        return True
    if not reply.endswith(b"\n") or reply.count(b"\n") != 1:
        return False
    json.loads(reply)  # GetStatus / GetDetails / admin replies: one JSON line
    return True


ACTIONS = ["GetStatus", "GetDetails", "Failover", "Normal", "Auto", "Sync", "getstatus", "X"]
LINES = st.one_of(
    st.binary(max_size=600),
    st.builds(
        lambda a, t, pre, post: f"{pre}{a}({t}){post}".encode(errors="surrogatepass"),
        st.sampled_from(ACTIONS),
        st.sampled_from([TOKEN, ADMIN, "", "x", TOKEN + "x", TOKEN[:-1]]),
        st.text(max_size=5),
        st.sampled_from(["", "\n", "\r\n", "\x00", ")\n", " trailing"]),
    ),
)


@fuzz(120)
@given(line=LINES)
def test_status_socket_lines(control: ControlServer, line: bytes) -> None:
    reply = exchange(control.port, line)
    assert valid_reply(reply), reply
    good = exchange(control.port, f"GetStatus({TOKEN})\n".encode())
    assert good.startswith(b'[{"Timestamp":"'), good


# -- AMI replies ----------------------------------------------------------------------------

AMI_LINE = st.one_of(
    st.sampled_from(
        [
            "Response: Success\r\n",
            "Response: Error\r\n",
            "Message: Pong\r\n",
            "ActionID: 1\r\n",
            "Output: x\r\n",
            "\r\n",
            "Ping: Pong\r\n",
        ]
    ),
    st.text(max_size=80).map(lambda t: t + "\r\n"),
    st.binary(max_size=80).map(lambda b: b.decode("latin-1")),
    st.integers(1, 200_000).map(lambda n: "Key: " + "v" * n + "\r\n"),  # giant line
)


@fuzz(200)
@given(lines=st.lists(AMI_LINE, max_size=30), cut=st.integers(0, 2000), shuffle=st.randoms())
def test_ami_reply_parsing(lines: list[str], cut: int, shuffle: object) -> None:
    import random

    assert isinstance(shuffle, random.Random)
    for variant in (lines, lines[: cut % (len(lines) + 1)], shuffle.sample(lines, len(lines))):
        reply = parse_reply(variant)
        assert isinstance(reply, AmiReply)
        for key, value in reply.headers:
            assert "\n" not in key and isinstance(value, str)
        _ = (reply.ok, reply.response, reply.message, reply.get_all("Output"))


# -- GetConfig replies and .conf text -------------------------------------------------------

GETCONFIG_KEYS = st.one_of(
    st.builds(lambda n: f"Category-{n:06d}", st.integers(0, 5)),
    st.builds(lambda c, n: f"Line-{c:06d}-{n:06d}", st.integers(0, 5), st.integers(0, 5)),
    st.builds(lambda n: f"Templates-{n:06d}", st.integers(0, 5)),
    st.builds(lambda n: f"IsTemplate-{n:06d}", st.integers(0, 5)),
    st.sampled_from(["Response", "Message", "ActionID", "Line-x", "Category-", "Line-000000"]),
    st.text(max_size=12),
)
GETCONFIG_VALUES = st.one_of(
    st.sampled_from(["1001", "secret=abc", "setvar=A=B", "Success", "Error", "1", "", "a,b"]),
    st.text(max_size=40),
)


@fuzz(300)
@given(
    headers=st.lists(st.tuples(GETCONFIG_KEYS, GETCONFIG_VALUES), max_size=25),
    body=st.sampled_from(["", "No categories found", "junk"]),
)
def test_getconfig_reply_parsing(headers: list[tuple[str, str]], body: str) -> None:
    try:
        config = parse_getconfig(headers, body)
    except ConfigParseError as exc:
        assert str(exc)
        return
    assert isinstance(config, ConfigFile)
    for category in config:
        assert isinstance(category.name, str)
        for key, value in category.lines:
            assert isinstance(key, str) and isinstance(value, str)


@fuzz(200)
@given(text=st.text(max_size=400))
def test_recorded_reply_splitting(text: str) -> None:
    headers, body = split_reply(text)
    with contextlib.suppress(ConfigParseError):
        parse_getconfig(headers, body)


CONF_PIECES = st.sampled_from(
    ["[1001]\n", "[t](!)\n", "[a](t,+)\n", "secret=x\n", "allow => ulaw\n", ";c\n", ";--\n",
     "--;\n", "\\;\n", "#include x.conf\n", "#exec cmd\n", "=\n", "[\n", "]\n", "a=b;c\n"]
)  # fmt: skip


@fuzz(300)
@given(
    pieces=st.lists(st.one_of(CONF_PIECES, st.text(max_size=30)), max_size=40),
    giant=st.integers(0, 9000),
)
def test_conf_text_parsing(pieces: list[str], giant: int) -> None:
    text = "".join(pieces) + ("k=" + "v" * giant + "\n" if giant else "")
    try:
        config = parse_conf_text(text)
    except ConfigParseError as exc:
        assert str(exc)
        return
    assert isinstance(config, ConfigFile)
