"""Phones for the failover bed: each resolves the SIP server by name and registers with sipp.

A phone here behaves like a desk phone configured with `sip.<domain>` as its server:

- it resolves the name through the resolver of its own network namespace (`dig`, which reads
  /etc/netns/NAME/resolv.conf, i.e. synch's DNS) and keeps the answer for its TTL; when a
  lookup fails it keeps using the last address it had, as phones do;
- it registers (REGISTER, 401 challenge, REGISTER with digest, 200) to whatever address the
  name gave, with `Expires` = `expires`, and refreshes the registration at half of it;
- after a failed registration it retries every `retry` seconds, resolving again when the TTL
  has run out: that is how it finds the branch when the central stops answering.

Every attempt is recorded (`Attempt`), so a test reads afterwards when each phone was
registered where, instead of sampling it.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lab.sipp import register_xml, sipp_argv


@dataclass(frozen=True)
class Attempt:
    """One registration attempt, times from time.monotonic()."""

    started: float
    ended: float
    target: str  # the address the name resolved to ("" when it resolved to nothing yet)
    ok: bool
    detail: str = ""


def resolve(netns: str, name: str, timeout: float = 1.0) -> tuple[str, int] | None:
    """(address, ttl) of `name`'s A record through the namespace's resolver, or None."""
    argv = [
        "ip",
        "netns",
        "exec",
        netns,
        "dig",
        "+noall",
        "+answer",
        f"+time={max(1, round(timeout))}",
        "+tries=1",
        name,
        "A",
    ]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 3, check=False)
    except subprocess.TimeoutExpired:
        return None
    for line in out.stdout.splitlines():
        fields = line.split()
        # name TTL class type data
        if len(fields) == 5 and fields[3] == "A":
            return fields[4], int(fields[1])
    return None


class Phone:
    """One phone (extension `ext`) on address `local_ip` of namespace `netns`."""

    def __init__(
        self,
        ext: int,
        password: str,
        *,
        netns: str,
        local_ip: str,
        local_port: int,
        media_port: int,
        server_name: str,
        expires: int,
        workdir: Path,
        retry: float = 1.0,
        register_timeout: float = 2.5,
    ) -> None:
        self.ext, self.password = ext, password
        self.netns, self.local_ip = netns, local_ip
        self.local_port, self.media_port = local_port, media_port
        self.server_name, self.expires = server_name, expires
        self.refresh = expires / 2  # re-register at half the expiry, as most phones do
        self.retry, self.register_timeout = retry, register_timeout
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "register.xml").write_text(
            register_xml(expires, domain=server_name, agent="synch-e2e-phone")
        )
        self._lock = threading.Lock()
        self._attempts: list[Attempt] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cached: str | None = None
        self._cache_until = 0.0

    def __repr__(self) -> str:
        last = self.last()
        where = f"{'ok' if last.ok else 'failed'} at {last.target}" if last else "not yet"
        return f"<Phone {self.ext}@{self.local_ip}: {where}>"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, delay: float = 0.0) -> Phone:
        """Power the phone on after `delay` s (phones on a LAN do not refresh in step)."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(delay,), name=f"phone-{self.ext}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.register_timeout + 10)

    def _run(self, delay: float) -> None:
        self._stop.wait(delay)
        while not self._stop.is_set():
            target = self._resolve()
            if target is None:
                now = time.monotonic()
                self._record(Attempt(now, now, "", False, "no DNS answer"))
                self._stop.wait(self.retry)
                continue
            attempt = self._register(target)
            self._record(attempt)
            # The phone's own timers (refresh or retry), not a test waiting for something.
            self._stop.wait(self.refresh if attempt.ok else self.retry)

    # -- what the phone does ------------------------------------------------------------------

    def _resolve(self) -> str | None:
        now = time.monotonic()
        if self._cached is not None and now < self._cache_until:
            return self._cached
        answer = resolve(self.netns, self.server_name)
        if answer is not None:
            self._cached, ttl = answer
            self._cache_until = time.monotonic() + ttl
        return self._cached  # a failed lookup keeps the last server, as phones do

    def _register(self, target: str) -> Attempt:
        for old in self.workdir.glob("*_errors.log"):
            old.unlink()
        argv = sipp_argv(
            "register.xml",
            service=str(self.ext),
            auth=(str(self.ext), self.password),
            local_ip=self.local_ip,
            local_port=self.local_port,
            media_port=self.media_port,
            timeout=self.register_timeout,
            options=("-recv_timeout", str(int(self.register_timeout * 1000)),
                     "-max_retrans", "3", "-trace_err"),
            remote=(target, 5060),
            netns=self.netns,
        )
        started = time.monotonic()
        try:
            proc = subprocess.run(
                argv,
                cwd=self.workdir,
                capture_output=True,
                text=True,
                timeout=self.register_timeout + 10,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            ok, detail = proc.returncode == 0, f"sipp exit {proc.returncode}"
            if not ok:
                errors = "".join(
                    p.read_text(errors="replace") for p in self.workdir.glob("*_errors.log")
                )
                detail += ": " + (errors or proc.stderr)[-300:].strip()
        except subprocess.TimeoutExpired:
            ok, detail = False, "sipp did not exit"
        return Attempt(started, time.monotonic(), target, ok, detail)

    def _record(self, attempt: Attempt) -> None:
        with self._lock:
            self._attempts.append(attempt)

    # -- what a test reads --------------------------------------------------------------------

    def attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._attempts)

    def last(self) -> Attempt | None:
        with self._lock:
            return self._attempts[-1] if self._attempts else None

    def registered_at(self, target: str) -> bool:
        """Its latest attempt succeeded at `target` and has not expired."""
        last = self.last()
        return (
            last is not None
            and last.ok
            and last.target == target
            and time.monotonic() - last.ended < self.expires
        )

    def first_ok_at(self, target: str, after: float) -> float | None:
        """When the first registration at `target` that started after `after` ended."""
        for attempt in self.attempts():
            if attempt.started >= after and attempt.ok and attempt.target == target:
                return attempt.ended
        return None

    def failures_between(self, start: float, end: float) -> list[Attempt]:
        return [a for a in self.attempts() if start <= a.started < end and not a.ok]

    def timeline(self, since: float = 0.0) -> str:
        """Its attempts since `since`, one per line, for assertion messages."""
        return "\n".join(
            f"  {self.ext} +{a.started - since:7.2f}s {a.target or '-':>12} "
            f"{'ok' if a.ok else 'FAIL ' + a.detail[:120]}"
            for a in self.attempts()
            if a.ended >= since
        )
