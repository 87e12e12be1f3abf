"""`synch run` as a subprocess, configured for the lab, and small clients for its sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from dnslib import QTYPE, DNSRecord

from lab.netns import ns_socket
from lab.ports import free_port
from lab.wait import wait_until

REPO = Path(__file__).resolve().parents[1]
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
            # targetnormal below is no SIP server: the SIP probe is for tests that give one
            "siptransports": [],
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
            # The sync after the central's return at once, as the tests expect (one branch).
            "jitter": 0,
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


class AmiAccount(Protocol):
    """Where and as whom synch reaches an Asterisk's AMI (an AsteriskInstance)."""

    ami_host: str
    ami_port: int
    ami_user: str
    ami_secret: str


def lab_config_for(
    central: AmiAccount,
    branch: AmiAccount,
    localconfigspath: str | Path,
    forwarders: list[str],
    *,
    central_host: str | None = None,
    **overrides: dict[str, Any],
) -> dict[str, Any]:
    """lab_config with `central`'s AMI as synch's remote (at `central_host` if given) and
    `branch`'s as its local one."""
    return lab_config(
        central_host=central_host or central.ami_host, central_port=central.ami_port,
        central_user=central.ami_user, central_secret=central.ami_secret,
        branch_port=branch.ami_port, branch_user=branch.ami_user,
        branch_secret=branch.ami_secret, localconfigspath=localconfigspath,
        forwarders=forwarders, **overrides,
    )  # fmt: skip


def synch_for(
    workdir: Path,
    central: AmiAccount,
    upstream_port: int,
    *,
    branch: AmiAccount | None = None,
    central_host: str | None = None,
    **overrides: dict[str, Any],
) -> SynchProcess:
    """A SynchProcess (not started) between `central` and `branch` (the central itself when
    none is given, for tests that need no second Asterisk), syncing into workdir/branch-etc,
    forwarding to a resolver on loopback port `upstream_port`."""
    etc = workdir / "branch-etc"
    etc.mkdir(exist_ok=True)
    config = lab_config_for(
        central, branch or central, etc, [f"127.0.0.1:{upstream_port}"],
        central_host=central_host, **overrides,
    )  # fmt: skip
    return SynchProcess(config, workdir)


class SynchProcess:
    """`synch run` as a subprocess, and clients for its sockets.

    With `netns`, synch runs inside that network namespace (the failover bed's branch) and the
    clients reach its sockets there; it then runs in its own session, and dies with the test
    process even when that one is killed outright.
    """

    def __init__(self, config: dict[str, Any], workdir: Path, netns: str | None = None):
        self.config = config
        self.workdir = workdir
        self.netns = netns
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

    def _where(self, argv: list[str]) -> list[str]:
        """`argv` as it runs: in the namespace, if any, and killed when this process dies
        (setpriv: in its own session nothing else would stop it). `ip netns exec` and setpriv
        exec it, so the pid stays the command's."""
        if self.netns is None:
            return argv
        return ["ip", "netns", "exec", self.netns, "setpriv", "--pdeathsig", "KILL", *argv]

    def _env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        # The package from this tree, whether or not it is installed in the environment.
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        return {**os.environ, "PYTHONPATH": path, **(env or {})}

    def start(
        self,
        wait: bool = True,
        env: dict[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> SynchProcess:
        """`preexec_fn` runs in the child before synch starts (e.g. to lower an rlimit)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._where(self.command("run")), stdout=log, stderr=log,
                stdin=subprocess.DEVNULL, env=self._env(env), preexec_fn=preexec_fn,
                cwd=self.workdir if self.netns else None, start_new_session=bool(self.netns),
            )  # fmt: skip
        if wait:
            wait_until(self._answering, 20, message=f"synch answering; log:\n{self.log()}")
        return self

    def _answering(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"synch exited {self.proc.returncode}:\n{self.log()}")
        try:
            return self.ask(f"GetStatus({self.token})").startswith("[{")
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "synch was never started"
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL, as in a crash or an OOM kill."""
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        """Send `sig` and wait for the exit code; one that does not exit within `timeout` s is
        killed, and TimeoutExpired raised."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self, tail: int = 8000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`synch ARGS... -c CONFIG` (where synch runs); its output."""
        return subprocess.run(
            self._where(self.command(*args)), capture_output=True, text=True, timeout=timeout,
            check=False, env=self._env(),
        )  # fmt: skip

    # -- clients ------------------------------------------------------------------------------

    @property
    def token(self) -> str:
        return str(self.config["servicecontrol"]["token"])

    @property
    def admin_token(self) -> str:
        return str(self.config["servicecontrol"]["admintoken"])

    @property
    def dns_port(self) -> int:
        return int(self.config["dnsservice"]["port"])

    @property
    def metrics_url(self) -> str:
        m = self.config["metrics"]
        return f"http://{m['listenaddress']}:{m['port']}/metrics"

    def _exchange(self, section: str, request: bytes, timeout: float) -> bytes:
        """Send `request` to the TCP listener of settings section `section` (from synch's
        namespace) and read until it closes."""
        address = (self.config[section]["listenaddress"], self.config[section]["port"])
        if self.netns is None:
            sock = socket.create_connection(address, timeout=timeout)
        else:
            sock = ns_socket(self.netns, socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.settimeout(timeout)
            if self.netns is not None:
                sock.connect(address)
            sock.sendall(request)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def ask(self, line: str, timeout: float = 5) -> str:
        """One request line on the status socket; the reply."""
        return self._exchange("servicecontrol", line.encode() + b"\n", timeout).decode()

    def status(self) -> dict[str, str]:
        reply = self.ask(f"GetStatus({self.token})")
        parsed: list[dict[str, str]] = json.loads(reply)
        return parsed[0]

    def wait_state(self, timeout: float, **expected: str) -> dict[str, Any]:
        """Until GetDetails has each `key=value` of `expected` (Monitor, Sync, Service, ...);
        the details then."""

        def matches() -> dict[str, Any] | None:
            details = self.details()
            return details if all(details.get(k) == v for k, v in expected.items()) else None

        return wait_until(matches, timeout, message=f"state {expected}; log:\n{self.log()}")

    def details(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.ask(f"GetDetails({self.token})"))
        return parsed

    def admin(self, action: str, timeout: float = 30) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.ask(f"{action}({self.admin_token})", timeout))
        return parsed

    def metrics(self, timeout: float = 5) -> str:
        """The Prometheus text of /metrics."""
        reply = self._exchange("metrics", b"GET /metrics HTTP/1.0\r\nHost: synch\r\n\r\n",
                               timeout).decode()  # fmt: skip
        head, _, body = reply.partition("\r\n\r\n")
        assert " 200 " in head.split("\r\n", 1)[0], f"/metrics answered {head!r}"
        return body

    def query(
        self, name: str, qtype: str = "A", tcp: bool = False, timeout: float = 5
    ) -> DNSRecord:
        """A DNS query to synch over loopback (from this process's namespace)."""
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


def metric_samples(text: str, name: str) -> dict[str, float]:
    """{labels-or-'': value} of the samples called exactly `name` in a Prometheus text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key[len(name) :]] = float(value)
    return out


def metric_value(text: str, sample: str) -> float:
    """The value of one sample, named as written (`name{label="x"}`); AssertionError if absent."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{sample} missing from /metrics")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """A process's resident memory now, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise ProcessLookupError(f"no VmRSS for pid {pid}: it has exited")
