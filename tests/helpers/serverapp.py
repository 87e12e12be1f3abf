"""One of synch's servers run alone in a subprocess, for tests of its transport.

The server module (`python -m MODULE ARGS...`) prints `PORT <n>...` once it listens, serves
until SIGTERM or SIGINT, then stops and prints its counters as `COUNTERS {json}`, exit 0:
`serve()` is that on the server's side, `spawn()` and `ServerApp` on the test's.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerApp:
    proc: subprocess.Popen[bytes]
    ports: list[int]
    timeout: float  # for its start and its stop: only a hang should ever reach it
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.ports[0]

    def stop(self) -> dict[str, float]:
        """SIGTERM, then the counters it prints; fails if it died on its own during the test."""
        assert self.proc.poll() is None, f"the server died during the test: {self.proc.args}"
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=self.timeout)
        assert self.proc.returncode == 0, err.decode(errors="replace")
        for line in out.decode().splitlines():
            if line.startswith("COUNTERS "):
                self.counters = json.loads(line.removeprefix("COUNTERS "))
        return self.counters

    def kill(self) -> None:
        """SIGKILL, if it still runs (teardown of a test that did not stop it)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def spawn(module: str, *args: str, timeout: float) -> ServerApp:
    """`python -m MODULE ARGS...` from this tree, once it printed its ports; AssertionError
    with its stderr when it does not within `timeout` s."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("PORT "):
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"{module} did not start: {line!r} {err.decode(errors='replace')}")
    return ServerApp(proc, [int(port) for port in line.split()[1:]], timeout)


@contextmanager
def spawner(*, timeout: float) -> Iterator[Callable[..., ServerApp]]:
    """A `spawn` for a fixture: every server it started is killed at the end if still running."""
    started: list[ServerApp] = []

    def start(module: str, *args: str) -> ServerApp:
        app = spawn(module, *args, timeout=timeout)
        started.append(app)
        return app

    try:
        yield start
    finally:
        for app in started:
            app.kill()


def serve(
    ports: Sequence[int], stop: Callable[[], None], counters: Callable[[], Mapping[str, object]]
) -> int:
    """The server's side, in its gevent process once it listens on `ports`: announce them,
    wait for SIGTERM or SIGINT, `stop()`, print `counters()`. The exit code."""
    import gevent
    import gevent.event

    print("PORT " + " ".join(str(port) for port in ports), flush=True)
    stopping = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    gevent.signal_handler(signal.SIGINT, stopping.set)
    stopping.wait()
    stop()
    print("COUNTERS " + json.dumps(dict(counters())), flush=True)
    return 0
