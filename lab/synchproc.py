"""`synch run` as a subprocess, configured for the lab, and small clients for its sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dnslib import QTYPE, DNSRecord

from lab.ports import free_port
from lab.wait import wait_until

TOKEN = "token1"
ADMIN_TOKEN = "admin-secret-1"


def lab_config(
    *,
    central_host: str,
    central_port: int,
    central_user: str,
    central_secret: str,
    branch_port: int,
    branch_user: str,
    branch_secret: str,
    localconfigspath: str | Path,
    forwarders: list[str],
    **overrides: dict[str, Any],
) -> dict[str, Any]:
    """A complete appsettings dict on free loopback ports with quick probe timers."""
    config: dict[str, Any] = {
        "loglevel": {"default": "debug"},
        "probemonitor": {
            "failureTolerance": 5,
            "aliveThreshold": 3,
            "errorPenaltyPoints": 1,
            "interval": 0.5,
        },
        "amiremote": {
            "hostname": central_host,
            "port": central_port,
            "username": central_user,
            "password": central_secret,
            "timeout": 0.4,
        },
        "amilocal": {
            "port": branch_port,
            "username": branch_user,
            "password": branch_secret,
        },
        "syncmanager": {
            "mode": "pjsip",
            "interval": 300,
            "filterkey": "accountcode",
            "filtervalue": "^HeadOffice$",
            "localconfigspath": str(localconfigspath),
        },
        "dnsservice": {
            "listenaddress": "127.0.0.1",
            "port": free_port("both"),
            "domain": "example.local",
            "record": "sip",
            "recordttl": 5,
            "targetnormal": "127.0.0.10",
            "targetfailover": "127.0.0.20",
            "forwarders": forwarders,
            "forwardtimeout": 0.5,
            "defaultstate": "Failover",
        },
        "servicecontrol": {
            "token": TOKEN,
            "admintoken": ADMIN_TOKEN,
            "listenaddress": "127.0.0.1",
            "port": free_port("tcp"),
        },
        "metrics": {"listenaddress": "127.0.0.1", "port": free_port("tcp")},
    }
    for section, values in overrides.items():
        config.setdefault(section, {}).update(values)
    return config


class SynchProcess:
    def __init__(self, config: dict[str, Any], workdir: Path):
        self.config = config
        self.workdir = workdir
        self.config_path = workdir / "appsettings.json"
        self.log_path = workdir / "synch.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config()

    def write_config(self) -> None:
        self.config_path.write_text(json.dumps(self.config, indent=2))
        os.chmod(self.config_path, 0o600)

    # -- process ------------------------------------------------------------------------------

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "synch.cli", *args, "-c", str(self.config_path)]

    def start(
        self,
        wait: bool = True,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> SynchProcess:
        """`preexec_fn` runs in the child before synch starts (e.g. to lower an rlimit)."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self.command("run"), stdout=log, stderr=log,
            env={**os.environ, **env} if env else None, preexec_fn=preexec_fn,
        )
        log.close()
        if wait:
            wait_until(self._answering, 15, message=f"synch answering; log:\n{self.log()}")
        return self

    def _answering(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"synch exited {self.proc.returncode}:\n{self.log()}")
        try:
            return self.ask(f"GetStatus({TOKEN})").startswith("[{")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=timeout, check=False
        )

    # -- clients ------------------------------------------------------------------------------

    @property
    def dns_port(self) -> int:
        return int(self.config["dnsservice"]["port"])

    @property
    def metrics_url(self) -> str:
        m = self.config["metrics"]
        return f"http://{m['listenaddress']}:{m['port']}/metrics"

    def ask(self, line: str, timeout: float = 5) -> str:
        sc = self.config["servicecontrol"]
        with socket.create_connection((sc["listenaddress"], sc["port"]), timeout=timeout) as s:
            s.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def status(self) -> dict[str, str]:
        reply = self.ask(f"GetStatus({TOKEN})")
        parsed: list[dict[str, str]] = json.loads(reply)
        return parsed[0]

    def details(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.ask(f"GetDetails({TOKEN})"))
        return parsed

    def admin(self, action: str) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.ask(f"{action}({ADMIN_TOKEN})", timeout=30))
        return parsed

    def query(
        self, name: str, qtype: str = "A", tcp: bool = False, timeout: float = 5
    ) -> DNSRecord:
        q = DNSRecord.question(name, qtype)
        raw = q.send("127.0.0.1", self.dns_port, tcp=tcp, timeout=timeout)
        return DNSRecord.parse(raw)

    def resolve_a(self, name: str = "sip.example.local") -> str:
        reply = self.query(name)
        answers = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
        return answers[0] if answers else ""

    def soa_serial(self) -> int:
        reply = self.query(self.config["dnsservice"]["domain"], "SOA")
        return int(reply.rr[0].rdata.times[0])


def elapsed_since(start: float) -> float:
    return time.monotonic() - start
