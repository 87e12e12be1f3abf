"""What test_ami_real.py makes an AmiClient do against a real Asterisk, one function per
scenario, run in a patched subprocess (see tests/unit/ami_client_scenarios.py). `args` holds
the lab user and secret."""

from __future__ import annotations

from typing import Any

from synch.ami import core_status, get_config, pjsip_contacts, probe_once, reload_module
from synch.ami.client import AmiClient
from tests.unit.ami_client_scenarios import Out, attempt, step


def central(host: str, port: int, args: Any, **kw: Any) -> AmiClient:
    kw.setdefault("timeout", 4.0)
    return AmiClient(host, port, args["user"], args["secret"], **kw)


def ping_and_probe(host: str, port: int, args: Any) -> Out:
    c = central(host, port, args)
    out: Out = {"ping": attempt(c.ping), "connected": c.connected}
    out["probe"] = probe_once(c)
    return out


def wrong_password(host: str, port: int, args: Any) -> Out:
    c = AmiClient(host, port, args["user"], "not-the-secret", timeout=4)
    out: Out = {"ping": attempt(c.ping)}
    out["probe"] = probe_once(c)
    return out


def get_configs(host: str, port: int, args: Any) -> Out:
    c = central(host, port, args)
    return {
        "all": attempt(lambda: get_config(c, "test.conf")),
        "filtered": attempt(lambda: get_config(c, "test.conf", "accountcode=^HeadOffice$")),
        "templates": attempt(lambda: get_config(c, "test.conf", templates=True)),
        "none": attempt(lambda: get_config(c, "test.conf", "accountcode=^Nobody$")),
        "no_cat": attempt(
            lambda: c.action("GetConfig", {"Filename": "test.conf", "Category": "nope"})
        ),
    }


def get_config_errors(host: str, port: int, args: Any) -> Out:
    c = central(host, port, args)
    out: Out = {"missing": attempt(lambda: get_config(c, "no-such-file.conf"))}
    weak = AmiClient(host, port, "pingonly", "pingonly-secret", timeout=4)
    out["weak_ping"] = attempt(weak.ping)
    out["weak_get"] = attempt(lambda: get_config(weak, "test.conf"))
    out["after"] = attempt(c.ping)
    return out


def status_and_reload(host: str, port: int, args: Any) -> Out:
    c = central(host, port, args)
    out: Out = {"before": core_status(c)}
    out["reload"] = attempt(lambda: reload_module(c, "res_pjsip.so"))
    out["chan_sip"] = attempt(lambda: reload_module(c, "chan_sip.so"))
    out["after"] = core_status(c)
    return out


def ping_across_a_crash(host: str, port: int, args: Any) -> Out:
    c = central(host, port, args, timeout=3)
    step(attempt(c.ping))  # 1: a live session
    step(attempt(c.ping))  # 2: Asterisk was killed meanwhile
    step(attempt(c.ping))  # 3: still down
    return {"restarted": attempt(c.ping), "status": attempt(lambda: core_status(c))}


def ping_across_a_freeze(host: str, port: int, args: Any) -> Out:
    c = central(host, port, args, timeout=1)
    step(attempt(c.ping))
    step(attempt(c.ping))
    return {"thawed": attempt(c.ping)}


def contacts(host: str, port: int, args: Any) -> Out:
    c = central(host, port, args)
    out: Out = {"contacts": attempt(lambda: [dict(e.headers) for e in pjsip_contacts(c)])}
    out["after"] = attempt(c.ping)  # the list's events left nothing behind in the session
    return out
