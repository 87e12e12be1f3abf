"""`synch run` against a lab Asterisk for the benchmarks, with a probe clock.

The central's AMI is reached through `PingClock`, a small TCP relay in this process that notes
when each `Action: Ping` passes: the gaps between pings, minus the probe interval, are how late
the probes ran. The relay runs in threads of the benchmark process, not in synch.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lab.asterisk import AsteriskInstance, new_instance
from lab.dnsmasq import Dnsmasq
from lab.samples import central_configs
from lab.synchproc import SynchProcess, lab_config

PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 0.8
_PING = b"action: ping"


class PingClock:
    """A TCP relay to `upstream` that records the monotonic time of every AMI Ping."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.pings: list[float] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._start(self._accept)

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            self._start(self._pump, client, server, True)
            self._start(self._pump, server, client, False)

    def _pump(self, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        tail = b""
        try:
            while chunk := src.recv(65536):
                if watch:
                    seen = (tail + chunk).lower()
                    self.pings.extend(time.monotonic() for _ in range(seen.count(_PING)))
                    tail = chunk[-len(_PING) :]
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def lateness(self, since: float, until: float, interval: float) -> tuple[float, int]:
        """(worst gap between two pings in [since, until] minus `interval`, pings counted)."""
        times = [t for t in self.pings if since <= t <= until]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return (max(gaps) - interval if gaps else float("nan")), len(times)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


class SynchLab:
    """A central Asterisk (also used as the branch), an upstream dnsmasq, and `synch run`."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="synch-bench-"))
        self.central: AsteriskInstance | None = None
        self.upstream: Dnsmasq | None = None
        self.clock: PingClock | None = None
        self.synch: SynchProcess | None = None
        self.started_at = 0.0

    def start_lab(self) -> None:
        self.central = new_instance("bench-central", configs=central_configs())
        self.central.start()
        self.upstream = Dnsmasq(records={"www.example.org": "127.0.0.42"})
        self.upstream.start()
        self.clock = PingClock((self.central.ami_host, self.central.ami_port))

    def config(self, **overrides: dict[str, Any]) -> dict[str, Any]:
        assert self.central and self.upstream and self.clock
        etc = self.workdir / "branch-etc"
        etc.mkdir(exist_ok=True)
        central = self.central
        config = lab_config(
            central_host="127.0.0.1", central_port=self.clock.port,
            central_user=central.ami_user, central_secret=central.ami_secret,
            branch_port=central.ami_port, branch_user=central.ami_user,
            branch_secret=central.ami_secret, localconfigspath=etc,
            forwarders=[f"127.0.0.1:{self.upstream.port}"],
        )  # fmt: skip
        config["loglevel"] = {"default": "information"}
        config["probemonitor"]["interval"] = PROBE_INTERVAL
        config["amiremote"]["timeout"] = PROBE_TIMEOUT
        for section, values in overrides.items():
            config.setdefault(section, {}).update(values)
        return config

    def start_synch(self) -> SynchProcess:
        """Start `synch run`; returns once it is started (not waiting for readiness)."""
        self.synch = SynchProcess(self.config(), self.workdir)
        self.started_at = time.monotonic()
        self.synch.start(wait=False)
        return self.synch

    @property
    def pid(self) -> int:
        assert self.synch is not None
        return self.synch.pid

    def stop(self) -> None:
        if self.synch is not None:
            self.synch.stop()
        if self.clock is not None:
            self.clock.close()
        if self.upstream is not None:
            self.upstream.stop()
        if self.central is not None:
            self.central.stop()
            self.central.remove()
