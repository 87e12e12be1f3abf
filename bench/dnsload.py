"""DNS load for the benchmarks: dnsperf when installed, else a small Python load generator.

Both report queries per second and latency percentiles. dnsperf gives only the average at full
speed, so percentiles come from a second, rate-limited verbose run (well below saturation,
where latency is the server's own and not the queue's).
"""

from __future__ import annotations

import random
import re
import select
import shutil
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from dnslib import DNSRecord

DNSPERF = shutil.which("dnsperf")


@dataclass
class LoadResult:
    qps: float
    sent: int
    completed: int
    lost: int
    avg_ms: float
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def query_file(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def dnsperf(
    port: int,
    queries: Path,
    seconds: float,
    clients: int = 4,
    max_qps: int | None = None,
    verbose: bool = False,
    edns: bool = False,
) -> LoadResult:
    """One dnsperf run against 127.0.0.1:port."""
    assert DNSPERF is not None
    argv = [DNSPERF, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-c", str(clients)]
    argv += ["-l", f"{seconds:g}", "-t", "2"]
    if max_qps:
        argv += ["-Q", str(max_qps)]
    if verbose:
        argv.append("-v")
    if edns:
        argv.append("-e")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    text = out.stdout + out.stderr

    def number(label: str) -> float:
        m = re.search(rf"{label}:\s+([\d.]+)", text)
        if m is None:
            raise RuntimeError(f"dnsperf output has no {label!r}:\n{text[-2000:]}")
        return float(m.group(1))

    latencies = []
    if verbose:
        # "> NOERROR sip.example.local A 0.000123"
        for m in re.finditer(r"^> \S+ \S+ \S+ ([\d.]+)$", text, re.MULTILINE):
            latencies.append(float(m.group(1)) * 1000)
    return LoadResult(
        qps=number("Queries per second"),
        sent=int(number("Queries sent")),
        completed=int(number("Queries completed")),
        lost=int(number("Queries lost")),
        avg_ms=number("Average Latency \\(s\\)") * 1000,
        latencies_ms=latencies,
    )


def pyload(
    port: int,
    names: list[tuple[str, str]],
    seconds: float,
    outstanding: int = 64,
    max_qps: int | None = None,
    edns: bool = False,
) -> LoadResult:
    """A single-threaded UDP load generator (for machines without dnsperf): keeps
    `outstanding` queries in flight on 8 sockets, or paces to `max_qps`."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
    for sock in socks:
        sock.setblocking(False)
    packets = []
    for name, qtype in names:
        record = DNSRecord.question(name, qtype)
        if edns:
            from dnslib import EDNS0

            record.add_ar(EDNS0(udp_len=1232))
        packets.append(bytes(record.pack()))
    pending: dict[int, float] = {}
    latencies: list[float] = []
    sent = completed = 0
    start = time.monotonic()
    deadline = start + seconds
    next_id = random.randrange(65536)
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        budget = outstanding - len(pending)
        if max_qps:
            budget = min(budget, int((now - start) * max_qps) - sent)
        for _ in range(max(0, budget)):
            next_id = (next_id + 1) & 0xFFFF
            packet = next_id.to_bytes(2, "big") + packets[sent % len(packets)][2:]
            try:
                socks[sent % len(socks)].sendto(packet, ("127.0.0.1", port))
            except BlockingIOError:
                break
            pending[next_id] = time.monotonic()
            sent += 1
        ready, _, _ = select.select(socks, [], [], 0.01)
        for sock in ready:
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                sent_at = pending.pop(int.from_bytes(data[:2], "big"), None)
                if sent_at is not None:
                    completed += 1
                    latencies.append((time.monotonic() - sent_at) * 1000)
        # Queries unanswered for 2 s are lost (as dnsperf's default timeout would count them).
        stale = [qid for qid, at in pending.items() if now - at > 2]
        for qid in stale:
            del pending[qid]
    elapsed = time.monotonic() - start
    for sock in socks:
        sock.close()
    return LoadResult(
        qps=completed / elapsed,
        sent=sent,
        completed=completed,
        lost=sent - completed - len(pending),
        avg_ms=statistics.fmean(latencies) if latencies else float("nan"),
        latencies_ms=latencies,
    )


def measure(
    port: int,
    names: list[tuple[str, str]],
    workdir: Path,
    seconds: float,
    latency_qps: int = 5000,
    latency_seconds: float = 2.0,
) -> tuple[LoadResult, LoadResult]:
    """(throughput at full speed, latency at `latency_qps`), with dnsperf or the fallback."""
    if DNSPERF is not None:
        queries = query_file(workdir / f"q-{port}.txt", [f"{n} {t}" for n, t in names])
        full = dnsperf(port, queries, seconds)
        paced = dnsperf(port, queries, latency_seconds, max_qps=latency_qps, verbose=True)
        return full, paced
    full = pyload(port, names, seconds)
    paced = pyload(port, names, latency_seconds, max_qps=latency_qps)
    return full, paced


def flood(
    port: int, lines: list[str], workdir: Path, seconds: float, qps: int
) -> subprocess.Popen[str] | None:
    """Start a background dnsperf flood at `qps` (None without dnsperf: caller uses pyload)."""
    if DNSPERF is None:
        return None
    queries = query_file(workdir / "flood.txt", lines)
    argv = [DNSPERF, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-c", "4"]
    argv += ["-l", f"{seconds:g}", "-Q", str(qps), "-t", "2"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
