"""A local dnsmasq as the upstream resolver in tests, and a UDP server that never answers.

dnsmasq runs with no upstream at all (`--no-resolv`, no `--server`): it answers only the names
it is given, so no test query can leak to a real resolver.
"""

from __future__ import annotations

import contextlib
import secrets
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType

from dnslib import DNSRecord

from lab.ports import free_port

DNSMASQ = "/usr/sbin/dnsmasq"


def dns_query(name: str, port: int, qtype: str = "A", host: str = "127.0.0.1",
              timeout: float = 1.0) -> DNSRecord | None:
    """One UDP query; the parsed reply, or None when nothing comes back in `timeout` s."""
    request = DNSRecord.question(name, qtype)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(request.pack(), (host, port))
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
    reply = DNSRecord.parse(data)
    return reply if reply.header.id == request.header.id else None


class Dnsmasq:
    """`with Dnsmasq(port, {"name": "ip"}) as dns:` a dnsmasq on 127.0.0.1:port (UDP and TCP).

    port None (or 0) picks a free one; read it back from `.port`. Names not in `records`
    get NXDOMAIN, as from a real resolver (dnsmasq alone would say REFUSED); records are
    served with TTL `ttl`. Every query is logged (`log()`) unless `log_queries` is off (a
    benchmark's reference server).
    """

    def __init__(self, port: int | None = None, records: dict[str, str] | None = None,
                 host: str = "127.0.0.1", ttl: int = 60, log_queries: bool = True) -> None:
        self.host = host
        self.ttl = ttl
        self.log_queries = log_queries
        self.port = port or free_port("both", host)
        self.records = dict(records or {})
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = Path(f"/tmp/synch-lab-dnsmasq-{self.port}-{secrets.token_hex(3)}.log")

    def argv(self) -> list[str]:
        return [
            DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            f"--listen-address={self.host}", f"--port={self.port}", "--bind-interfaces",
            "--pid-file", "--user=root", "--log-facility=-",
            *(["--log-queries"] if self.log_queries else []),
            f"--local-ttl={self.ttl}", "--address=/#/",
            *(f"--address=/{name}/{ip}" for name, ip in self.records.items()),
        ]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self._log.read_text(errors="replace")
        return ""

    def start(self, timeout: float = 10) -> None:
        with open(self._log, "wb") as out:
            self._proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        probe = next(iter(self.records), "synch-lab-probe.invalid")
        while dns_query(probe, self.port, host=self.host, timeout=0.2) is None:
            if not self.running:
                raise RuntimeError(f"dnsmasq exited ({self._proc.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dnsmasq on {self.host}:{self.port} silent after "
                                   f"{timeout}s:\n{self.log()}")

    def pause(self) -> None:
        """SIGSTOP: dnsmasq stays bound but answers nothing (a silent upstream, as when the
        WAN drops packets) until `resume()`."""
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None:
            if self.running:
                self._proc.send_signal(signal.SIGCONT)  # a paused one would not terminate
                self._proc.terminate()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
            self._proc.wait()
        self._log.unlink(missing_ok=True)

    def __enter__(self) -> Dnsmasq:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class SilentUdpServer:
    """A bound UDP socket that reads every datagram and never answers: a dead forwarder.

    `received` counts datagrams, so a test can tell "asked and got nothing" from "never asked".
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                   socket.SOCK_DGRAM)
        self._sock.bind((host, port))
        self.host = host
        self.port: int = self._sock.getsockname()[1]
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def _drain(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock], [], [], 0.1)
            if ready:
                self._sock.recvfrom(65535)
                self.received += 1

    def __enter__(self) -> SilentUdpServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()
