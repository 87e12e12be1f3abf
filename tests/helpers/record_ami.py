"""Record the AMI transcripts in tests/fixtures/ami/ from a real Asterisk 22 (the lab).

Run by hand, as root (the lab is a chroot), when what is recorded or the lab's Asterisk
changes, then review `git diff tests/fixtures/ami`:

    sudo .venv/bin/python -m tests.helpers.record_ami             # rewrite the fixtures
    sudo .venv/bin/python -m tests.helpers.record_ami --out DIR   # or write them elsewhere

It starts one lab instance with the configs below and, for each scenario, opens a plain
socket, reads the greeting and sends each action as synch's client does (the same headers in
the same order, `Events: off`, ActionIDs synch-1, synch-2, ...), keeping every byte the
server sends. tests/integration/test_ami_real.py checks that the lab still answers so.
"""

from __future__ import annotations

import argparse
import datetime
import select
import socket
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.asterisk import AsteriskInstance, new_instance
from lab.samples import chan_sip_peers
from tests.unit.ami_transcripts import FIXTURES, Exchange, Transcript, dumps

# The central's test.conf: templates, inheritance, duplicate keys, `=` in values, `\;`, `=>`.
TEST_CONF = r"""[general]
allow=ulaw
allow=alaw
setvar=A=B
note=semi\;colon ; a comment
x => y

[tpl](!)
context=from-internal
accountcode=HeadOffice

[1001](tpl)
type=friend
secret=s1001
callerid=Alice <1001>

[1002](tpl)
type=friend
accountcode=DevOps

[1003]
type=friend
accountcode=HeadOffice
"""

# The original README's central user: `write =` empty, so Ping works and GetConfig does not.
PING_ONLY_USER = "[pingonly]\nsecret = pingonly-secret\nread = system\nwrite =\n"
LARGE_PEERS = 100  # about 110 KB of GetConfig: past the session's batching threshold (64 KB)


def large_conf(count: int = LARGE_PEERS) -> str:
    return chan_sip_peers(count)


CONFIGS = {"test.conf": TEST_CONF, "sip_large.conf": large_conf()}

Action = Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    actions: Sequence[Action]  # after the Login
    user: str = "lab"  # "lab": the lab's synch user; "pingonly"; "wrong": a bad secret


def getconfig(filename: str, *extra: tuple[str, str]) -> Action:
    return [("Action", "GetConfig"), ("Filename", filename), *extra]


SCENARIOS = (
    Scenario("login-ping", "Login and Ping.", [[("Action", "Ping")]]),
    Scenario(
        "getconfig",
        "GetConfig of test.conf (see tests/helpers/record_ami.py): all of it, filtered on the "
        "central, with templates, a filter that matches nothing, a missing category, a "
        "missing file.",
        [
            getconfig("test.conf"),
            getconfig("test.conf", ("Filter", "accountcode=^HeadOffice$")),
            getconfig("test.conf", ("Filter", "TEMPLATES=include")),
            getconfig("test.conf", ("Filter", "TEMPLATES=include,accountcode=^HeadOffice$")),
            getconfig("test.conf", ("Filter", "accountcode=^Nobody$")),
            getconfig("test.conf", ("Category", "nope")),
            getconfig("no-such-file.conf"),
        ],
    ),
    Scenario(
        "getconfig-large",
        f"GetConfig of {LARGE_PEERS} FreePBX-style chan_sip peers (sip_large.conf).",
        [getconfig("sip_large.conf")],
    ),
    Scenario("corestatus", "CoreStatus.", [[("Action", "CoreStatus")]]),
    Scenario(
        "reload",
        "Reload of a loaded module, and of one that does not exist in Asterisk 22.",
        [
            [("Action", "Reload"), ("Module", "res_pjsip.so")],
            [("Action", "Reload"), ("Module", "chan_sip.so")],
        ],
    ),
    Scenario(
        "permission-denied",
        "A user with `write =` empty (the original README's): Ping works, GetConfig and "
        "Reload are refused.",
        [
            [("Action", "Ping")],
            getconfig("test.conf"),
            [("Action", "Reload"), ("Module", "res_pjsip.so")],
        ],
        user="pingonly",
    ),
    Scenario(
        "auth-failed",
        "Login with a wrong secret: Asterisk waits 1 s, refuses and closes.",
        [],
        user="wrong",
    ),
    Scenario(
        "command",
        "Command (one Output header per line of output), a UserEvent with a header sent "
        "twice, and an action Asterisk does not know.",
        [
            [("Action", "Command"), ("Command", "module show like res_pjsip.so")],
            [
                ("Action", "UserEvent"),
                ("UserEvent", "SynchTest"),
                ("Variable", "a=1"),
                ("Variable", "b=2"),
            ],
            [("Action", "NoSuchAction")],
        ],
    ),
)


class Recorder:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()
        self.closed = False

    def _recv(self, wait: float) -> bool:
        """Read what arrives within `wait` s; False if nothing did."""
        readable, _, _ = select.select([self.sock], [], [], wait)
        if not readable:
            return False
        chunk = self.sock.recv(65536)
        if not chunk:
            self.closed = True
            return False
        self.buffer += chunk
        return True

    def take(self) -> bytes:
        data, self.buffer = bytes(self.buffer), bytearray()
        return data

    def greeting(self) -> bytes:
        deadline = time.monotonic() + 10
        while b"\n" not in self.buffer and not self.closed and time.monotonic() < deadline:
            self._recv(0.5)
        assert b"\n" in self.buffer, f"no greeting: {bytes(self.buffer)!r}"
        self.settle()
        return self.take()

    def answer(self, action_id: str) -> bytes:
        """Everything up to the end of the answer echoing `action_id`, and what follows it
        within a moment (nothing, or the close)."""
        marker = f"ActionID: {action_id}\r\n".encode()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.closed:
            start = self.buffer.find(marker)
            if start >= 0 and self.buffer.find(b"\r\n\r\n", start + len(marker) - 2) >= 0:
                break
            self._recv(0.5)
        else:
            raise AssertionError(f"no answer to {action_id}: {bytes(self.buffer[-300:])!r}")
        self.settle()
        return self.take()

    def settle(self, quiet: float = 0.5) -> None:
        """Wait until the server has been quiet for `quiet` s (or closed)."""
        while not self.closed and self._recv(quiet):
            pass


def record(inst: AsteriskInstance, scenario: Scenario, notes: str) -> Transcript:
    secret = {"lab": inst.ami_secret, "pingonly": "pingonly-secret"}.get(scenario.user, "nope")
    username = "pingonly" if scenario.user == "pingonly" else inst.ami_user
    login: Action = [
        ("Action", "Login"), ("Username", username), ("Secret", secret), ("Events", "off"),
    ]  # fmt: skip
    exchanges = []
    with socket.create_connection((inst.ami_host, inst.ami_port), timeout=30) as sock:
        recorder = Recorder(sock)
        greeting = recorder.greeting()
        for number, action in enumerate([login, *scenario.actions], start=1):
            action_id = f"synch-{number}"
            request = (*action, ("ActionID", action_id))
            sock.sendall("".join(f"{k}: {v}\r\n" for k, v in request).encode() + b"\r\n")
            answer = recorder.answer(action_id)
            exchanges.append(Exchange(tuple(request), answer, recorder.closed))
            if recorder.closed:
                break
    about = textwrap.fill(f"AMI transcript {scenario.name}: {scenario.about}", 92)
    about += "\n" + notes
    return Transcript(scenario.name, about, greeting, tuple(exchanges))


def record_all(inst: AsteriskInstance) -> list[Transcript]:
    version = inst.cli("core show version").strip().split(" built by ")[0]
    today = datetime.date.today().isoformat()
    notes = (
        f"Captured {today} from {version}\n"
        "(the lab, lab/) by `python -m tests.helpers.record_ami`: see that file.\n"
        "What the server sent, byte for byte; `>>>` lines: what the client sent (Secret\n"
        "masked); `=== closed`: the server closed. Format: tests/unit/ami_transcripts.py."
    )
    return [record(inst, scenario, notes) for scenario in SCENARIOS]


def start_central() -> AsteriskInstance:
    inst = new_instance("ami-record", configs=dict(CONFIGS), manager_users=PING_ONLY_USER)
    try:
        inst.start()
    except BaseException:
        inst.remove()
        raise
    return inst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIXTURES)
    opts = parser.parse_args()
    inst = start_central()
    try:
        transcripts = record_all(inst)
    finally:
        inst.remove()
    opts.out.mkdir(parents=True, exist_ok=True)
    for transcript in transcripts:
        path = opts.out / f"{transcript.name}.ami"
        path.write_bytes(dumps(transcript))
        print(f"{path}: {len(transcript.exchanges)} actions", file=sys.stderr)


if __name__ == "__main__":
    main()
