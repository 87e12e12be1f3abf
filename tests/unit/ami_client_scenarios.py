"""What test_ami_client.py makes an AmiClient do, one function per scenario.

Each runs in a fresh interpreter that called `gevent.monkey.patch_all()` first, as the daemon
does (`fake_ami.run_scenario(scenario, port, args)`): the client's deadlines need greenlets,
and pytest is not patched. A scenario takes (host, port, args) and returns JSON-able results;
`attempt` describes the outcome of one call.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import gevent

from synch.ami import AmiError, AmiReply, core_status, get_config, probe_once, reload_module
from synch.ami.client import AmiClient

Out = dict[str, Any]


def client(
    host: str, port: int, username: str = "synch", password: str = "secret", **kw: Any
) -> AmiClient:
    kw.setdefault("timeout", 2.0)
    return AmiClient(host, port, username, password, **kw)


def attempt(fn: Callable[[], object]) -> Out:
    """Run fn; describe its outcome as JSON-able data."""
    start = time.monotonic()
    try:
        value = fn()
    except AmiError as exc:
        return {
            "ok": False,
            "type": type(exc).__name__,
            "error": str(exc),
            "message": getattr(exc, "message", None),
            "seconds": time.monotonic() - start,
        }
    if isinstance(value, AmiReply):
        value = {"headers": value.headers, "body": value.body}
    return {"ok": True, "value": value, "seconds": time.monotonic() - start}


def normal_session(host: str, port: int, args: Any) -> Out:
    c = client(host, port)
    out: Out = {"ping": attempt(c.ping), "connected": c.connected}
    out["config"] = attempt(lambda: get_config(c, "test.conf"))
    out["filtered"] = attempt(
        lambda: get_config(c, "test.conf", "accountcode=^HeadOffice$", templates=True)
    )
    out["empty"] = attempt(
        lambda: c.action("GetConfig", {"Filename": "test.conf", "Category": "nope"})
    )
    out["missing"] = attempt(lambda: get_config(c, "no-such-file.conf"))
    out["status"] = attempt(lambda: core_status(c))
    out["reload"] = attempt(lambda: reload_module(c, "res_pjsip.so"))
    out["nomodule"] = attempt(lambda: reload_module(c, "chan_sip.so"))
    out["list"] = attempt(
        lambda: c.action("UserEvent", {"UserEvent": "SynchTest", "Variable": ["a=1", "b=2"]})
    )
    out["unknown"] = attempt(lambda: c.action("NoSuchAction"))
    out["probe"] = probe_once(c)
    c.close()
    out["after_close"] = c.connected
    return out


def denied_get_config(host: str, port: int, args: Any) -> Out:
    c = client(host, port, args["user"])
    return {
        "get": attempt(lambda: get_config(c, "test.conf")),
        "ping": attempt(c.ping),
    }


def ping_then_probe(host: str, port: int, args: Any) -> Out:
    c = client(host, port, **(args or {}))
    out: Out = {"ping": attempt(c.ping), "connected": c.connected}
    out["probe"] = probe_once(c)
    return out


def ping_once(host: str, port: int, args: Any) -> Out:
    c = client(host, port, **(args or {}))
    return {"ping": attempt(c.ping), "connected": c.connected}


def ping_three_times(host: str, port: int, args: Any) -> Out:
    c = client(host, port, timeout=5, max_reply_bytes=1024 * 1024)
    return {"first": attempt(c.ping), "second": attempt(c.ping), "third": attempt(c.ping)}


def ping_until_dropped(host: str, port: int, args: Any) -> Out:
    c = client(host, port, timeout=5)
    out: Out = {"first": attempt(c.ping)}
    deadline = time.monotonic() + 5
    while c.connected and time.monotonic() < deadline:
        gevent.sleep(0.01)
    out["dropped"] = not c.connected
    out["second"] = attempt(c.ping)
    return out


def late_answer_never_reused(host: str, port: int, args: Any) -> Out:
    c = client(host, port, timeout=0.3)
    out: Out = {"first": attempt(c.ping)}
    out["second"] = attempt(lambda: c.action("CoreStatus"))
    gevent.sleep(1.2)  # let the late Pong arrive, were the old session still read
    out["third"] = attempt(lambda: c.action("Ping"))
    return out


def close_while_waiting(host: str, port: int, args: Any) -> Out:
    c = client(host, port, timeout=30)
    c.ping()
    pending = gevent.spawn(attempt, lambda: c.action("CoreStatus"))
    while not pending.dead and not c._lock.locked():
        gevent.sleep(0)
    gevent.sleep(0.05)  # let it send and block on the reply
    start = time.monotonic()
    c.close()
    out: Out = {"close_seconds": time.monotonic() - start}
    out["pending"] = pending.get(timeout=10)
    out["again"] = attempt(c.ping)
    c.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > 1 and time.monotonic() < deadline:
        gevent.sleep(0.02)
    out["threads_left"] = threading.active_count()
    return out


def concurrent_pings(host: str, port: int, args: Any) -> Out:
    c = client(host, port, timeout=5)
    jobs = [gevent.spawn(attempt, lambda: c.action("Ping")) for _ in range(4)]
    gevent.joinall(jobs, timeout=30)
    return {"results": [job.value for job in jobs]}


def get_then_ping(host: str, port: int, args: Any) -> Out:
    c = client(host, port, timeout=args["timeout"])
    get = attempt(lambda: get_config(c, args["file"]))
    if get["ok"]:  # keep the output small: the count and the last header
        headers = get["value"]["headers"]
        get["value"] = {"count": len(headers), "last": headers[-1]}
    return {"get": get, "ping": attempt(c.ping)}


def probes(host: str, port: int, args: Any) -> Out:
    return {
        "success": probe_once(client(host, port)),
        "failure": probe_once(client(host, args["refusing"], password="nope")),
        "error": probe_once(AmiClient(host, args["closed"], "synch", "x", timeout=1)),
    }


def idle_close(host: str, port: int, args: Any) -> Out:
    """`idle_close` 0.3 s: the session stays while used, closes once idle that long (never
    under a call in progress: a Ping the peer answers after 0.5 s), and the next call logs in
    again."""
    c = client(host, port, timeout=5, idle_close=0.3)
    out: Out = {"first": attempt(lambda: core_status(c))}
    for n in range(3):  # used every 0.15 s: never idle for 0.3 s
        gevent.sleep(0.15)
        out[f"kept {n}"] = c.connected
        core_status(c)
    started = time.monotonic()
    while c.connected and time.monotonic() - started < 5:
        gevent.sleep(0.02)
    out["closed"] = not c.connected
    out["idle"] = time.monotonic() - started
    out["slow"] = attempt(c.ping)  # answered after 0.5 s, longer than idle_close
    out["after slow"] = c.connected
    while c.connected and time.monotonic() - started < 10:
        gevent.sleep(0.02)
    out["again"] = attempt(lambda: core_status(c))
    c.close()
    return out


def step(value: object) -> None:
    """Report `value` to the test and wait until it says go (see fake_ami.ScenarioScript)."""
    print(json.dumps(value, default=repr), flush=True)
    sys.stdin.readline()
