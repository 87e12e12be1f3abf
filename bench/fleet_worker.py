"""The branches of bench/fleet.py: N synch branches in one gevent process, driven over a pipe.

    python -m bench.fleet_worker        # started by bench/fleet.py; JSON commands on stdin

Each branch is the daemon's own central-facing part, wired as the daemon wires it
(synch.daemon.Daemon): a ProbeService (AMI Ping and a SIP OPTIONS to the central every
`probemonitor.interval`), a SyncService with its SyncJob (`make_sync_job`: CoreStatus, GetConfig,
the branch's own directory and git history) and the FailoverOverlay (the central's contacts).
What is left out talks to nobody at the head office: the DNS, the status socket, /metrics, the
watchdog. The branch Asterisk is a stand-in (`FakeBranch`) that accepts `Reload` and counts no
calls: 500 Asterisks would not fit on the machine, and the branch's side costs the central
nothing.

Measuring: every AMI session's stream counts its bytes each way by action (the counting layer
replaces synch.ami.session._Stream in this process only), every request is counted (a GetConfig
with its start and end); every branch records its sync cycles, its monitor's changes and its
probe rounds in error, with their unix times. Several workers may share a fleet: the parent
merges what they report.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Mapping, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.event  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402

from synch.ami import core_status  # noqa: E402
from synch.ami import session as ami_session  # noqa: E402
from synch.ami.client import AmiClient  # noqa: E402
from synch.ami.message import AmiReply  # noqa: E402
from synch.config import Settings, parse_settings  # noqa: E402
from synch.metrics import Metrics  # noqa: E402
from synch.probe import ProbeResult, ProbeRound  # noqa: E402
from synch.services.failover import FailoverOverlay  # noqa: E402
from synch.services.probing import ProbeService  # noqa: E402
from synch.services.syncing import SESSION_IDLE_CLOSE, SyncService, make_sync_job  # noqa: E402
from synch.states import Monitor  # noqa: E402
from synch.sync.outcome import Outcome  # noqa: E402
from synch.sync.schedule import Plan, Trigger  # noqa: E402

log = logging.getLogger("fleet")
SYNCED = ("applied", "unchanged")


# -- counting ---------------------------------------------------------------------------------


class Counters:
    """AMI traffic to the central since the last reset. The GetConfig requests are kept one by
    one (unix start and end times), so that the parent can merge several workers' requests and
    count how many were in flight at once."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.bytes_in: Counter[str] = Counter()  # central -> branches, by the action answered
        self.bytes_out: Counter[str] = Counter()  # branches -> central
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.spans: list[tuple[float, float]] = []  # GetConfig: (unix start, unix end)

    def begin(self, action: str) -> float:
        self.requests[action] += 1
        return time.time()

    def end(self, action: str, started: float, ok: bool) -> None:
        if action == "GetConfig":
            self.spans.append((started, time.time()))
        if not ok:
            self.errors[action] += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "bytes_in": dict(self.bytes_in),
            "bytes_out": dict(self.bytes_out),
            "requests": dict(self.requests),
            "errors": dict(self.errors),
            "getconfig_spans": self.spans,
        }


COUNTERS = Counters()


class CountingStream(ami_session._Stream):
    """An AMI session's stream that counts the bytes each way, by the action last sent."""

    def __init__(self, sock: Any):
        super().__init__(sock)
        self.action = "greeting"

    def write(self, data: bytes) -> None:
        head = data[:300].decode(errors="replace")
        fields = dict(
            (k.strip().lower(), v.strip())
            for k, _, v in (line.partition(":") for line in head.split("\r\n"))
            if k and v
        )
        if "action" in fields:
            # A GetConfig is counted per file (the pjsip files differ a lot in size).
            filename = fields.get("filename")
            self.action = fields["action"] + (f" {filename}" if filename else "")
        COUNTERS.bytes_out[self.action] += len(data)
        super().write(data)

    def read_chunk(self) -> bytes:
        data = super().read_chunk()
        COUNTERS.bytes_in[self.action] += len(data)
        return data


ami_session._Stream = CountingStream  # type: ignore[misc]  # this process only


class CountedClient(AmiClient):
    """The daemon's AMI client, counting each request (and each GetConfig's time span)."""

    def _request(self, session: Any, fields: dict[str, Any]) -> AmiReply:
        action = str(fields.get("Action", "?"))  # the counters' key: GetConfig of any file
        started, ok = COUNTERS.begin(action), False
        try:
            reply = super()._request(session, fields)
            ok = reply.ok
            return reply
        finally:
            COUNTERS.end(action, started, ok)


class FakeBranch:
    """The branch Asterisk's AMI: every Reload succeeds, no calls are up."""

    name = "branch"

    def __init__(self) -> None:
        self.actions: Counter[str] = Counter()

    def action(
        self,
        action: str,
        headers: Mapping[str, str | Sequence[str]] | None = None,
        timeout: float | None = None,
    ) -> AmiReply:
        self.actions[action] += 1
        if action.lower() == "coreshowchannels":
            return AmiReply((("Response", "Success"), ("EventList", "start")))
        return AmiReply((("Response", "Success"), ("Message", "Module Reloaded")))

    def close(self) -> None:
        pass


# -- a branch ---------------------------------------------------------------------------------


class RecordingSync(SyncService):
    """The daemon's SyncService, noting each cycle: (unix time, result, trigger, seconds,
    central failed)."""

    records: list[tuple[float, str, str, float, bool]]

    def _record(self, outcome: Outcome, seconds: float, why: Trigger) -> None:
        super()._record(outcome, seconds, why)
        self.records.append(
            (time.time(), outcome.result.value, why.value, seconds, outcome.central_failed)
        )


class Branch:
    def __init__(self, index: int, settings: Settings, seed: int):
        self.index = index
        self.metrics = Metrics()
        ar = settings.amiremote

        def client(timeout: float, idle_close: float | None = None) -> CountedClient:
            return CountedClient(
                ar.hostname, ar.port, ar.username, ar.password,
                timeout=timeout, name="central", idle_close=idle_close,
            )  # fmt: skip

        # As the daemon makes them (synch.daemon.Daemon): the probes' session stays open, the
        # sync's closes SESSION_IDLE_CLOSE s after its last use (Fleet.sessions can hold it).
        self.probe_client = client(settings.probe_timeout)
        self.sync_client = client(ar.timeout, SESSION_IDLE_CLOSE)
        self.branch = FakeBranch()
        self.probes = ProbeService(settings, self.probe_client, self.metrics, self.branch)
        job = make_sync_job(settings, self.sync_client, self.branch)  # type: ignore[arg-type]
        self.sync = RecordingSync(
            settings, job, self.metrics, lambda: self.probes.monitor.state,
            self.probes.ami_problem, rng=random.Random(seed * 100003 + index),
        )  # fmt: skip
        self.sync.records = []
        self.overlay = FailoverOverlay(
            settings, self.sync_client, self.branch, job.store, self.metrics,
            lambda: self.probes.service, self.probes.usable,
        )  # fmt: skip
        # The daemon's wiring (Daemon._wire), less the DNS and systemd.
        self.probes.control.listeners.append(self.overlay.wake)
        self.sync.follow(self.probes)
        self.changes: list[tuple[float, str]] = []  # (unix time, new monitor state)
        self.probes.monitor_listeners.append(
            lambda old, new: self.changes.append((time.time(), new.value))
        )
        self.errors: list[float] = []  # unix times of probe rounds that counted as errors
        record = self.probes.record

        def noting(probe: ProbeRound) -> None:
            if probe.verdict is ProbeResult.ERROR:
                self.errors.append(time.time())
            record(probe)

        self.probes.record = noting  # type: ignore[method-assign]


class Fleet:
    def __init__(self) -> None:
        self.branches: list[Branch] = []
        self.stop = gevent.event.Event()
        self.rng = random.Random(1)

    def build(self, cmd: dict[str, Any]) -> dict[str, Any]:
        base: dict[str, Any] = cmd["settings"]
        workdir = Path(cmd["workdir"])
        self.rng = random.Random(cmd["seed"])
        started = time.monotonic()
        for index, site in enumerate(cmd["sites"]):
            directory = workdir / f"branch-{index:03d}"
            directory.mkdir(parents=True, exist_ok=True)
            config = json.loads(json.dumps(base))
            config["syncmanager"].update(filtervalue=f"^{site}$", localconfigspath=str(directory))
            settings = parse_settings(json.dumps(config), f"<branch {index}>")
            self.branches.append(Branch(index, settings, cmd["seed"]))
        return {"branches": len(self.branches), "seconds": time.monotonic() - started}

    def _spawn_spread(self, run: Any, spread: float) -> None:
        """Start `run(stop)` after a random moment within `spread` s (independent daemons are
        not in phase)."""

        def later() -> None:
            if spread > 0:
                self.stop.wait(self.rng.uniform(0, spread))
            if not self.stop.is_set():
                run(self.stop)

        gevent.spawn(later)

    def probes(self, cmd: dict[str, Any]) -> dict[str, Any]:
        for b in self.branches:
            self._spawn_spread(b.probes.run, b.probes.interval)
            self._spawn_spread(b.overlay.run, b.probes.interval)
        return self.wait_monitor({"state": "Stable", "timeout": cmd.get("timeout", 120)})

    def syncs(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Start the sync loops, each at a random moment within `spread` s (0: all at once);
        each runs its first cycle at once (the central answered long ago)."""
        for b in self.branches:
            self._spawn_spread(b.sync.run, cmd.get("spread", 0.0))
        return {"ok": True}

    def schedule(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Change every branch's timers live (the bench's time compression)."""
        for b in self.branches:
            s = b.sync.schedule
            for key in ("interval", "jitter", "spread", "retry_first"):
                if key in cmd:
                    setattr(s, key, float(cmd[key]))
            replan = cmd.get("replan")
            if replan:
                # "spread": the next cycle at a random moment of the (new) interval, as the
                # phases of independent daemons, so that a window sees the steady rate at once;
                # "later": a whole interval from now (a window without cycles).
                wait = s.interval if replan == "later" else self.rng.uniform(0, s.interval)
                s.plan = Plan(time.monotonic() + wait, Trigger.SCHEDULED)
                b.sync._changed.set()
        return {"ok": True}

    def sessions(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """`hold`: every branch's sync session opened and held open, as synch did before it
        closed them between uses; else back to the daemon's way (closed when idle)."""
        hold = bool(cmd["hold"])
        for b in self.branches:
            b.sync_client.idle_close = None if hold else SESSION_IDLE_CLOSE
        if hold:
            gevent.joinall([gevent.spawn(core_status, b.sync_client) for b in self.branches])
        else:
            for b in self.branches:
                b.sync_client.close()
        return {"connected": sum(b.sync_client.connected for b in self.branches)}

    def probe_user(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Every branch's SIP probe From user (`probemonitor.sipuser`; None: the first synced
        account, the default)."""
        for b in self.branches:
            b.probes._sip_user = cmd["user"]
        return {"ok": True}

    def states(self) -> dict[str, Any]:
        return {
            "monitor": Counter(b.probes.monitor.state.value for b in self.branches),
            "sync": Counter(b.sync.state.value for b in self.branches),
            "service": Counter(b.probes.service.value for b in self.branches),
        }

    def wait_monitor(self, cmd: dict[str, Any]) -> dict[str, Any]:
        state, deadline = Monitor(cmd["state"]), time.monotonic() + cmd["timeout"]
        while time.monotonic() < deadline:
            if all(b.probes.monitor.state is state for b in self.branches):
                return {"ok": True, **self.states()}
            gevent.sleep(0.1)
        return {"ok": False, **self.states()}

    def fulls(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Full cycles of the first `count` branches, one after the other (`cheap`: the
        ordinary cycle, which is the cheap one when the central is unchanged, `count` times
        on the first branch)."""
        results: Counter[str] = Counter()
        seconds = []
        cheap = bool(cmd.get("cheap"))
        chosen = [self.branches[0]] * cmd["count"] if cheap else self.branches[: cmd["count"]]
        if not chosen:
            return {"results": results, "seconds": seconds}
        for b in chosen:
            with b.sync._lock:
                started = time.monotonic()
                outcome = b.sync.job.run(full=not cheap)
                seconds.append(time.monotonic() - started)
            results[outcome.result.value] += 1
        return {"results": results, "seconds": seconds}

    def synced_since(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Per branch, the first cycle after unix time `since` that ended Synced (None: not
        yet); with `wait`, waits up to `timeout` s until every branch has one."""
        since, deadline = cmd["since"], time.monotonic() + cmd.get("timeout", 0)
        while True:
            firsts = []
            for b in self.branches:
                good = (r for r in b.sync.records if r[0] > since and r[1] in SYNCED)
                first = next(good, None)
                firsts.append(first[0] if first else None)
            if all(t is not None for t in firsts) or time.monotonic() >= deadline:
                break
            gevent.sleep(0.2)
        cycles: Counter[str] = Counter()
        whys: Counter[str] = Counter()
        central_failed = 0
        for b in self.branches:
            for t, result, why, _, failed in b.sync.records:
                if t > since:
                    cycles[result] += 1
                    whys[why] += 1
                    central_failed += failed
        stable = [
            next((t for t, state in b.changes if t > since and state == "Stable"), None)
            for b in self.branches
        ]
        # Once a branch saw the central Stable again: probe rounds in error (the central too
        # busy to answer a Ping or an OPTIONS within the timeout) and new failovers.
        late = failed_again = 0
        for b, back in zip(self.branches, stable, strict=True):
            if back is not None:
                late += sum(t > back for t in b.errors)
                failed_again += any(t > back and s == "Failed" for t, s in b.changes)
        return {"synced": firsts, "stable": stable, "cycles": cycles, "whys": whys,
                "central_failed": central_failed, "late_probes": late,
                "failed_again": failed_again, **self.states()}  # fmt: skip

    def counters(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """The AMI counters since the last reset (then reset them, unless `reset` is false)."""
        snapshot = COUNTERS.snapshot()
        if cmd.get("reset", True):
            COUNTERS.reset()
        snapshot["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return snapshot


def main() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(
        level=logging.WARNING,
        filename=sys.argv[1] if len(sys.argv) > 1 else None,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    fleet = Fleet()
    stdin = FileObjectPosix(sys.stdin.fileno(), "r")  # read without blocking the branches
    handlers = {
        "build": fleet.build,
        "probes": fleet.probes,
        "syncs": fleet.syncs,
        "schedule": fleet.schedule,
        "states": lambda cmd: fleet.states(),
        "wait_monitor": fleet.wait_monitor,
        "fulls": fleet.fulls,
        "synced_since": fleet.synced_since,
        "counters": fleet.counters,
        "sessions": fleet.sessions,
        "probe_user": fleet.probe_user,
    }
    for line in stdin:
        cmd = json.loads(line)
        if cmd["do"] == "quit":
            break
        reply = handlers[cmd["do"]](cmd)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    fleet.stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
