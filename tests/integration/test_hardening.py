"""`synch run` hardening, seen from outside: no passwords or tokens in the log at the chattiest
level, not an open resolver (allow list: REFUSED, TCP closed at accept; both counted), forwarded
queries rate-limited per client while the SIP name always resolves, and the config-file mode
warning."""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dnslib import RCODE

from lab.asterisk import AsteriskInstance
from lab.dnsmasq import Dnsmasq
from lab.samples import DEFAULT_SITES, central_configs, secret_for
from lab.synchproc import ADMIN_TOKEN, TOKEN, SynchProcess, metric_value, synch_for
from lab.wait import wait_until

pytestmark = pytest.mark.asterisk


@pytest.fixture
def central(asterisk_factory: Callable[..., AsteriskInstance]) -> AsteriskInstance:
    return asterisk_factory("central", configs=central_configs())


@pytest.fixture
def upstream(dnsmasq: Callable[..., Dnsmasq]) -> Dnsmasq:
    return dnsmasq({"www.example.org": "127.0.0.42"})


def make_synch(
    tmp_path: Path, central: AsteriskInstance, upstream: Dnsmasq, **overrides: dict[str, Any]
) -> SynchProcess:
    return synch_for(tmp_path, central, upstream.port, **overrides)


def refused_count(synch: SynchProcess) -> float:
    return metric_value(synch.metrics(), 'synch_dns_queries_total{answer="refused"}')


def test_no_secret_reaches_the_log_at_trace_level(
    tmp_path: Path, central: AsteriskInstance, upstream: Dnsmasq
) -> None:
    wrong_password = "WrongPw-" + secrets.token_hex(8)
    wrong_tokens = [TOKEN + "x", "guess-" + secrets.token_hex(6), ADMIN_TOKEN[:-1]]
    # 1. a failing login to the central (wrong password), at trace level
    # (Asterisk answers a wrong secret after a 1 s pause: the probe timeout must outlast it.)
    synch = make_synch(
        tmp_path, central, upstream, loglevel={"default": "trace"},
        amiremote={"password": wrong_password, "timeout": 2.0}, probemonitor={"interval": 2.5},
    )  # fmt: skip
    synch.start()
    try:
        wait_until(lambda: "Authentication failed" in synch.log(), 20, message="login refused")
        for token in wrong_tokens:
            assert synch.ask(f"GetStatus({token})") == "Token error. Bye bye!\n"
            assert synch.ask(f"Failover({token})") == "Token error. Bye bye!\n"
    finally:
        synch.stop()
    # 2. the right password: Stable, a sync of accounts with their SIP passwords, admin actions
    synch.config["amiremote"].update(password=central.ami_secret, timeout=0.4)
    synch.config["probemonitor"]["interval"] = 0.5
    synch.write_config()
    synch.start()
    try:
        wait_until(lambda: synch.status()["Sync"] == "Synced", 40, message=synch.log())
        synch.details()
        assert synch.admin("Sync")["ok"] is True
        synch.ask(f"GetStatus({TOKEN}")  # malformed: no closing parenthesis
    finally:
        synch.stop()
    log = synch.log_path.read_text(errors="replace")
    assert "probe of central" in log and "sync" in log  # the log did record these events
    secrets_seen = {
        "central AMI secret": central.ami_secret,
        "wrong password": wrong_password,
        "status token": TOKEN,
        "admin token": ADMIN_TOKEN,
        **{f"wrong token {n}": token for n, token in enumerate(wrong_tokens)},
        **{f"SIP password of {ext}": secret_for(ext) for ext in DEFAULT_SITES["HeadOffice"]},
    }
    leaked = [what for what, value in secrets_seen.items() if value in log]
    assert not leaked, f"found in the log: {leaked}"


def test_clients_outside_allow_are_refused_and_counted(
    tmp_path: Path, central: AsteriskInstance, upstream: Dnsmasq
) -> None:
    synch = make_synch(tmp_path, central, upstream, dnsservice={"allow": ["10.0.0.0/8"]})
    synch.start()
    try:
        before = refused_count(synch)
        for name in ("sip.example.local", "www.example.org"):
            reply = synch.query(name)  # from 127.0.0.1: not in 10.0.0.0/8
            assert reply.header.rcode == RCODE.REFUSED and not reply.rr
        # Over TCP the connection is refused at accept: closed before any query is read.
        with socket.create_connection(("127.0.0.1", synch.dns_port), timeout=5) as conn:
            assert conn.recv(512) == b""
        assert refused_count(synch) - before == 3
    finally:
        synch.stop()


def test_forwarding_is_rate_limited_but_the_sip_name_always_resolves(
    tmp_path: Path, central: AsteriskInstance, upstream: Dnsmasq
) -> None:
    synch = make_synch(tmp_path, central, upstream, dnsservice={"ratelimit": 1})
    synch.start()
    try:
        rcodes = [synch.query("www.example.org").header.rcode for _ in range(40)]
        assert RCODE.NOERROR in rcodes and RCODE.REFUSED in rcodes, rcodes
        assert refused_count(synch) >= rcodes.count(RCODE.REFUSED)
        for _ in range(300):
            assert synch.resolve_a() in ("127.0.0.10", "127.0.0.20")
    finally:
        synch.stop()


def test_check_config_warns_about_a_readable_config_file(
    tmp_path: Path, central: AsteriskInstance, upstream: Dnsmasq
) -> None:
    synch = make_synch(tmp_path, central, upstream)
    os.chmod(synch.config_path, 0o644)
    result = synch.cli("check-config")
    assert result.returncode == 0, result.stderr
    assert "readable by group or others" in result.stderr and "chmod 600" in result.stderr
    os.chmod(synch.config_path, 0o600)
    assert "readable" not in synch.cli("check-config").stderr
