"""A scriptable loopback AMI server for edge cases a real Asterisk will not produce on demand.

Runs in plain threads inside the test process (pytest is not monkey-patched); the client under
test runs elsewhere (a subprocess that patches first: `run_scenario`, `run_patched`). Each
accepted connection is handed to a handler `handler(conn)`: tests/unit/ami_transcripts.py
replays what a real Asterisk 22 sent, `serve_asterisk` imitates it for the actions synch
uses, and tests compose their own misbehaving handlers from the `FakeConnection` helpers.
`FakePeer` serves one socketpair instead, for a session driven in the test process.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BANNER = b"Asterisk Call Manager/11.0.0\r\n"

# filename → [(category, [line, ...]), ...]; a line is "key=value" as GetConfig sends it.
Configs = Mapping[str, Sequence[tuple[str, Sequence[str]]]]


@dataclass
class FakeAction:
    headers: list[tuple[str, str]]
    connection: int

    def get(self, key: str, default: str = "") -> str:
        for name, value in self.headers:
            if name.lower() == key.lower():
                return value
        return default

    @property
    def name(self) -> str:
        return self.get("Action")

    @property
    def action_id(self) -> str:
        return self.get("ActionID")


class FakeConnection:
    def __init__(self, server: FakeAmi | FakePeer, sock: socket.socket, index: int):
        self.server = server
        self.sock = sock
        self.index = index  # 0 for the first connection the server accepted
        self._rfile = sock.makefile("rb")

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def banner(self) -> None:
        self.send(BANNER)

    def read_action(self) -> FakeAction | None:
        """The next action, or None when the client closed the connection."""
        headers: list[tuple[str, str]] = []
        while True:
            line = self._rfile.readline()
            if not line:
                return None
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if not text:
                if headers:
                    break
                continue
            key, _, value = text.partition(":")
            headers.append((key.strip(), value.strip()))
        action = FakeAction(headers, self.index)
        with self.server.lock:
            self.server.actions.append(action)
        return action

    def respond(
        self,
        action: FakeAction,
        response: str = "Success",
        headers: Iterable[tuple[str, str]] = (),
        body: Iterable[str] = (),
    ) -> None:
        lines = [f"Response: {response}"]
        if action.action_id:
            lines.append(f"ActionID: {action.action_id}")
        lines += [f"{k}: {v}" for k, v in headers]
        lines += list(body)
        self.send("".join(f"{line}\r\n" for line in lines) + "\r\n")

    def peer_sent_more(self, wait: float) -> bool:
        """True if the client sends anything within `wait` s (catches overlapping requests)."""
        readable, _, _ = select.select([self.sock], [], [], wait)
        return bool(readable)

    def hang(self) -> None:
        """Read and ignore everything until the client or the server closes the connection."""
        with contextlib.suppress(OSError):
            while self.sock.recv(65536):
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


Handler = Callable[[FakeConnection], None]


@dataclass
class AsteriskBehaviour:
    """What `serve_asterisk` knows and how it misbehaves."""

    users: Mapping[str, str] = field(default_factory=lambda: {"synch": "secret"})
    configs: Configs = field(default_factory=dict)
    modules: frozenset[str] = frozenset({"res_pjsip.so"})
    denied: frozenset[str] = frozenset()  # actions answered "Permission denied"
    hang_on: frozenset[str] = frozenset()  # actions never answered (the peer goes silent)
    delay: Mapping[str, float] = field(default_factory=dict)  # action → seconds before answering
    extra: Mapping[str, Callable[[FakeConnection, FakeAction], None]] = field(default_factory=dict)


def serve_asterisk(conn: FakeConnection, behaviour: AsteriskBehaviour | None = None) -> None:
    """Answer like Asterisk 22 until the client leaves."""
    b = behaviour or AsteriskBehaviour()
    conn.banner()
    logged_in = False
    while (action := conn.read_action()) is not None:
        name = action.name.lower()
        if name in {n.lower() for n in b.hang_on}:
            conn.hang()
            return
        if name in b.delay:
            time.sleep(b.delay[name])
        if name in b.extra:
            b.extra[name](conn, action)
        elif name == "login":
            if b.users.get(action.get("Username")) != action.get("Secret"):
                conn.respond(action, "Error", [("Message", "Authentication failed")])
                conn.close()
                return
            logged_in = True
            conn.respond(action, "Success", [("Message", "Authentication accepted")])
        elif not logged_in:
            conn.respond(action, "Error", [("Message", "Missing action in request")])
        elif name in b.denied:
            conn.respond(action, "Error", [("Message", "Permission denied")])
        elif name == "ping":
            conn.respond(action, "Success", [("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")])
        elif name == "getconfig":
            _get_config(conn, action, b.configs)
        elif name == "corestatus":
            conn.respond(
                action,
                "Success",
                [
                    ("CoreStartupDate", "2026-01-01"),
                    ("CoreStartupTime", "10:00:00"),
                    ("CoreReloadDate", "2026-01-01"),
                    ("CoreReloadTime", "10:00:01"),
                    ("CoreCurrentCalls", "0"),
                ],
            )
        elif name == "reload":
            if action.get("Module") in b.modules:
                conn.respond(action, "Success", [("Message", "Module Reloaded")])
            else:
                conn.respond(action, "Error", [("Message", "No such module")])
        elif name == "logoff":
            conn.respond(action, "Goodbye", [("Message", "Thanks for all the fish.")])
            conn.close()
            return
        else:
            conn.respond(action, "Error", [("Message", "Invalid/unknown command")])


def _get_config(conn: FakeConnection, action: FakeAction, configs: Configs) -> None:
    categories = configs.get(action.get("Filename"))
    if categories is None:
        conn.respond(action, "Error", [("Message", "Config file not found")])
        return
    headers: list[tuple[str, str]] = []
    for c, (category, lines) in enumerate(categories):
        headers.append((f"Category-{c:06d}", category))
        headers += [(f"Line-{c:06d}-{n:06d}", line) for n, line in enumerate(lines)]
    conn.respond(action, "Success", headers, [] if headers else ["No categories found"])


class FakeAmi:
    """Loopback AMI server; counts connections and records every action it read."""

    def __init__(self, handler: Handler = serve_asterisk, *, tls: ssl.SSLContext | None = None):
        self.handler = handler
        self.tls = tls
        self.lock = threading.Lock()
        self.actions: list[FakeAction] = []
        self.connections = 0
        self.errors: list[BaseException] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="fake-ami", daemon=True)

    def __enter__(self) -> FakeAmi:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def actions_named(self, name: str) -> list[FakeAction]:
        with self.lock:
            return [a for a in self.actions if a.name.lower() == name.lower()]

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self._listener.close()
        with self.lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self.lock:
                index = self.connections
                self.connections += 1
            threading.Thread(target=self._serve, args=(sock, index), daemon=True).start()

    def _serve(self, sock: socket.socket, index: int) -> None:
        try:
            if self.tls is not None:
                sock.settimeout(5)
                sock = self.tls.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
            with self.lock:
                self._socks.append(sock)
            self.handler(FakeConnection(self, sock, index))
        except (OSError, ValueError) as exc:  # the client went away mid-script
            with self.lock:
                self.errors.append(exc)
        finally:
            with contextlib.suppress(OSError):
                sock.close()


class FakePeer:
    """One connection over a socketpair, its server side run by `handler` in a thread: for a
    session (`synch.ami.session._Session.start(peer.client)`) driven in the test process."""

    def __init__(self, handler: Handler):
        self.lock = threading.Lock()
        self.actions: list[FakeAction] = []
        self.errors: list[BaseException] = []
        self.client, server = socket.socketpair()
        self._conn = FakeConnection(self, server, 0)
        self._thread = threading.Thread(target=self._serve, args=(handler,), daemon=True)
        self._thread.start()

    def _serve(self, handler: Handler) -> None:
        try:
            handler(self._conn)
        except (OSError, ValueError) as exc:  # the client went away mid-script
            with self.lock:
                self.errors.append(exc)

    def actions_named(self, name: str) -> list[FakeAction]:
        with self.lock:
            return [a for a in self.actions if a.name.lower() == name.lower()]

    def close(self) -> None:
        """Close the server side and wait for the handler to end."""
        self._conn.close()
        self._thread.join(timeout=10)
        self.client.close()

    def __enter__(self) -> FakePeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the client side: synch.ami only works monkey-patched, pytest is not --------------------

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]

CLIENT_PRELUDE = '''
from gevent import monkey
monkey.patch_all()
import json, sys, threading, time
import gevent
from synch.ami import *
from synch.ami.client import *
from synch.ami import parse_reply
HOST, PORT = sys.argv[1], int(sys.argv[2])
ARGS = json.loads(sys.argv[3])
out = {}

def client(username="synch", password="secret", **kw):
    kw.setdefault("timeout", 2.0)
    return AmiClient(HOST, PORT, username, password, **kw)

def attempt(fn):
    """Run fn; describe its outcome as JSON-able data."""
    start = time.monotonic()
    try:
        value = fn()
    except AmiError as exc:
        return {"ok": False, "type": type(exc).__name__, "error": str(exc),
                "message": getattr(exc, "message", None), "seconds": time.monotonic() - start}
    if isinstance(value, AmiReply):
        value = {"headers": value.headers, "body": value.body}
    return {"ok": True, "value": value, "seconds": time.monotonic() - start}

def step(value):
    """Report `value` to the test and wait until it says go (see PatchedScript)."""
    print(json.dumps(value, default=repr), flush=True)
    sys.stdin.readline()
'''


def _script(body: str) -> str:
    import textwrap

    return CLIENT_PRELUDE + textwrap.dedent(body) + "\nprint(json.dumps(out, default=repr))\n"


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO)}


def run_patched(
    body: str, port: int, args: object = None, host: str = "127.0.0.1", timeout: float = 60
) -> dict[str, object]:
    """Run `body` after CLIENT_PRELUDE in a fresh monkey-patched interpreter; returns `out`."""
    import json
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _script(body), host, str(port), json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=REPO,
    )
    assert proc.returncode == 0, f"client script failed:\n{proc.stderr}"
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


SCENARIO_RUNNER = """
from gevent import monkey
monkey.patch_all()
import importlib, json, sys
scenario = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])
out = scenario(sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5]))
print(json.dumps(out, default=repr))
"""

Scenario = Callable[[str, int, Any], dict[str, Any]]


def run_scenario(
    scenario: Scenario, port: int, args: object = None, host: str = "127.0.0.1", timeout: float = 60
) -> dict[str, Any]:
    """Run `scenario(host, port, args)`, a function of a module under tests/, in a fresh
    interpreter that patches first, as the daemon does; returns what it returns (as JSON)."""
    import json
    import subprocess
    import sys

    argv = [scenario.__module__, scenario.__name__, host, str(port), json.dumps(args)]
    proc = subprocess.run(
        [sys.executable, "-c", SCENARIO_RUNNER, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=REPO,
    )
    assert proc.returncode == 0, f"{scenario.__name__} failed:\n{proc.stderr}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


class PatchedScript:
    """A client script run step by step: each `step(value)` in it is one `next()` here, and
    the script waits for `go()` before going on (e.g. while the test kills the server)."""

    def __init__(self, body: str, port: int, args: object = None, host: str = "127.0.0.1"):
        import json
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _script(body), host, str(port), json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=REPO,
        )

    def next(self, timeout: float = 60) -> object:
        import json

        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if readable else ""
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate()
            raise AssertionError(f"client script gave no step within {timeout} s:\n{err}")
        return json.loads(line)

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self, timeout: float = 60) -> object:
        """Let the script end; returns its final `out`."""
        import json

        out, err = self.proc.communicate("\n", timeout=timeout)
        assert self.proc.returncode == 0, f"client script failed:\n{err}"
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


class ScenarioScript(PatchedScript):
    """A scenario (see run_scenario) run step by step: each `step(value)` in it
    (ami_client_scenarios.step) is one `next()` here, and it waits for `go()`."""

    def __init__(self, scenario: Scenario, port: int, args: object = None, host: str = "127.0.0.1"):
        import json
        import subprocess
        import sys

        argv = [scenario.__module__, scenario.__name__, host, str(port), json.dumps(args)]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SCENARIO_RUNNER, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=REPO,
        )
