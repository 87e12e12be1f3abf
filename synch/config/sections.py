"""The sections of the service itself: loglevel, probemonitor, amiremote/amilocal,
syncmanager, servicecontrol (tokens) and metrics. Each reader returns its frozen settings,
with the default of any value it refused (the problem is recorded on the section)."""

from __future__ import annotations

import os
import re

from synch.config.addresses import parse_endpoint
from synch.config.reader import _CONTROL, MAX_COUNT, MAX_SECONDS, _describe, _Section
from synch.config.settings import (
    DEFAULT_UPLINK_PORT,
    AmiSettings,
    Endpoint,
    LogLevel,
    MetricsSettings,
    ProbeMonitorSettings,
    ServiceControlSettings,
    SyncManagerSettings,
)
from synch.jsonc import Node
from synch.sip.message import TRANSPORTS, is_sip_user

# --------------------------------------------------------------------------------------------
# Vocabularies

LOG_LEVELS = ("trace", "debug", "information", "warning", "error", "critical")
MODES = ("sip", "pjsip")
LOCAL_FILENAMES = {"sip": "sip_synch.conf", "pjsip": "pjsip_synch.conf"}
DEFAULT_TLS_AMI_PORT = 5039  # Asterisk's tlsbindport default
MAX_TOKEN_BYTES = 200  # the status socket reads at most 256 bytes per request


def _loglevel(sec: _Section) -> LogLevel:
    return LogLevel(default=sec.choice("default", LogLevel.default, LOG_LEVELS))


def _probemonitor(sec: _Section) -> ProbeMonitorSettings:
    d = ProbeMonitorSettings()
    return ProbeMonitorSettings(
        failuretolerance=sec.integer("failuretolerance", d.failuretolerance, 1, MAX_COUNT),
        alivethreshold=sec.integer("alivethreshold", d.alivethreshold, 1, MAX_COUNT),
        errorpenaltypoints=sec.integer("errorpenaltypoints", d.errorpenaltypoints, 0, MAX_COUNT),
        interval=sec.seconds("interval", d.interval),
        siptransports=_sip_transports(sec, d.siptransports),
        sipport=sec.port("sipport", d.sipport),
        siptlsport=sec.port("siptlsport", d.siptlsport),
        sipuser=_sip_user(sec, d.sipuser),
        uplinkcheck=_uplink_check(sec),
        fallbackholdmax=sec.real(
            "fallbackholdmax", d.fallbackholdmax, low=0.0, high=MAX_SECONDS, low_inclusive=True
        ),
        failoverbudgettarget=sec.real(
            "failoverbudgettarget", d.failoverbudgettarget, low=0.0, high=MAX_SECONDS,
            low_inclusive=True,
        ),
    )


def _elements(sec: _Section, key: str) -> list[tuple[str, Node]] | None:
    """A list's elements with their keys (`key[n]`); a lone value is a list of one."""
    node = sec.get(key)
    if node is None:
        return None
    if node.kind == "array":
        return [(f"{key}[{n}]", element) for n, element in enumerate(node.elements)]
    return [(key, node)]


def _sip_transports(sec: _Section, default: tuple[str, ...]) -> tuple[str, ...]:
    """`siptransports`: the transports the SIP probe uses, e.g. ["udp", "tcp"]; [] = none."""
    elements = _elements(sec, "siptransports")
    if elements is None:
        return default
    chosen: list[str] = []
    for key, node in elements:
        text = sec.text_of(key, node) if node.kind == "string" else None
        if text is None:
            if node.kind != "string":
                sec.problem(key, f"must be one of {', '.join(TRANSPORTS)} in double quotes, "
                            f"got {_describe(node)}", node)  # fmt: skip
            continue
        name = text.strip().lower()
        if name not in TRANSPORTS:
            sec.problem(key, f"must be one of {', '.join(TRANSPORTS)}, got {_describe(node)}",
                        node)  # fmt: skip
        elif name in chosen:
            sec.problem(key, f"{name} is listed twice", node)
        else:
            chosen.append(name)
    return tuple(chosen)


def _sip_user(sec: _Section, default: str) -> str:
    got = sec.given("sipuser")
    if got is None or not got[0]:  # "" means "choose for me", like null
        return default
    value, node = got
    if not is_sip_user(value):
        sec.problem(
            "sipuser",
            "must be a SIP user name (letters, digits and - _ . ! ~ * ' ( ) & = + $ , ; ? /, "
            f"at most 64), got {_describe(node)}",
            node,
        )
        return default
    return value


def _uplink_check(sec: _Section) -> tuple[Endpoint, ...]:
    """`uplinkcheck`: addresses beyond the WAN, each `ADDRESS` (port 53) or `ADDRESS:PORT`."""
    elements = _elements(sec, "uplinkcheck")
    targets: list[Endpoint] = []
    for key, node in elements or []:
        text = sec.text_of(key, node) if node.kind == "string" else None
        endpoint = None if text is None else parse_endpoint(text, DEFAULT_UPLINK_PORT)
        if endpoint is None:
            if node.kind != "string" or text is not None:
                sec.problem(
                    key,
                    "must be an IP address, ADDRESS:PORT or [IPv6]:PORT in double quotes "
                    f"(a host beyond the WAN that answers TCP), got {_describe(node)}",
                    node,
                )
            continue
        if endpoint not in targets:
            targets.append(endpoint)
    return tuple(targets)


def _ami(sec: _Section, *, remote: bool) -> AmiSettings:
    d = AmiSettings()
    if remote:
        hostname = sec.host("hostname", "", required=True)
    else:
        hostname = sec.host("hostname", d.hostname)
    tls = sec.boolean("tls", d.tls)
    # With TLS and no port given, Asterisk's TLS port is the one that answers.
    port = sec.port("port", DEFAULT_TLS_AMI_PORT if tls else d.port)
    username = sec.text("username", d.username, nonempty=True, why="the AMI user")
    password = sec.text(
        "password", d.password, required=True, why="the AMI secret of that user in manager.conf"
    )
    return AmiSettings(
        hostname=hostname,
        port=port,
        username=username,
        password=password,
        timeout=sec.seconds("timeout", d.timeout),
        tls=tls,
        cafile=_cafile(sec, tls),
        maxreplymb=sec.integer("maxreplymb", d.maxreplymb, 1, 4096),
    )


def _cafile(sec: _Section, tls: bool) -> str | None:
    got = sec.given("cafile")
    if got is None or not got[0]:  # "" means "not set", like null
        return None
    value, node = got
    if _CONTROL.search(value) or not os.path.isfile(value):
        sec.problem("cafile", f"no such file: {_describe(node)}", node)
        return None
    if not os.access(value, os.R_OK):
        sec.problem("cafile", f"cannot be read: {_describe(node)}", node)
        return None
    if not tls:
        sec.warn("cafile", "ignored because tls is false", node)
    return value


def _syncmanager(sec: _Section) -> SyncManagerSettings:
    d = SyncManagerSettings()
    _workdirectory(sec)
    mode = sec.choice("mode", d.mode, MODES)
    return SyncManagerSettings(
        remotefilename=_remote_filename(sec, d.remotefilename),
        interval=sec.seconds("interval", d.interval),
        filterkey=_filter_key(sec, d.filterkey),
        filtervalue=_filter_value(sec, d.filtervalue),
        localconfigspath=_configs_path(sec, d.localconfigspath),
        mode=mode,
        localfilename=_local_filename(sec, LOCAL_FILENAMES[mode]),
        maxremovepercent=sec.real(
            "maxremovepercent", d.maxremovepercent, low=0.0, high=100.0, low_inclusive=True
        ),
        fullcheckevery=sec.integer("fullcheckevery", d.fullcheckevery, 1, MAX_COUNT),
        jitter=sec.real("jitter", d.jitter, low=0.0, high=MAX_SECONDS, low_inclusive=True),
    )


def _workdirectory(sec: _Section) -> None:
    """The original's `workdirectory` (its copy of the synced file) is accepted and ignored."""
    node = sec.get("workdirectory")
    if node is not None:
        sec.warn(
            "workdirectory",
            "ignored: the history of the synced files is now a git repository in localconfigspath",
            node,
        )


def _remote_filename(sec: _Section, default: str) -> str:
    return sec.text("remotefilename", default, nonempty=True)


def _filter_key(sec: _Section, default: str) -> str:
    got = sec.given("filterkey", nonempty=True)
    if got is None:
        return default
    value, node = got
    if re.search(r"[\s=\x00-\x1f\x7f]", value):
        sec.problem(
            "filterkey",
            "must be one Asterisk key name (no spaces, '=' or control "
            f"characters), got {_describe(node)}",
            node,
        )
        return default
    return value


def _filter_value(sec: _Section, default: str) -> str:
    got = sec.given("filtervalue")
    if got is None:
        return default
    value, node = got
    try:
        re.compile(value)
    except re.error as err:
        sec.problem("filtervalue", f"invalid regular expression: {err}", node)
        return default
    except (RecursionError, OverflowError, ValueError) as err:
        sec.problem("filtervalue", f"invalid regular expression: {err}", node)
        return default
    return value


def _configs_path(sec: _Section, default: str) -> str:
    got = sec.given("localconfigspath", nonempty=True)
    if got is None:
        return default
    value, node = got
    if not value.startswith("/") or _CONTROL.search(value):
        sec.problem(
            "localconfigspath", f"must be an absolute directory path, got {_describe(node)}", node
        )
        return default
    return value if value.endswith("/") else value + "/"


def _local_filename(sec: _Section, default: str) -> str:
    got = sec.given("localfilename", nonempty=True)
    if got is None:
        return default
    value, node = got
    if "/" in value or value.startswith(".") or _CONTROL.search(value) or value != value.strip():
        sec.problem(
            "localfilename",
            "must be a plain file name inside localconfigspath (no "
            f"'/', not starting with '.'), got {_describe(node)}",
            node,
        )
        return default
    return value


def _servicecontrol(sec: _Section) -> ServiceControlSettings:
    d = ServiceControlSettings()
    token = _token(sec, "token", required=True)
    admintoken = _token(sec, "admintoken", required=False) or None
    if admintoken is not None and token and admintoken == token:
        sec.problem(
            "admintoken",
            "must differ from token (anyone who may read the status "
            "could otherwise force failover)",
            sec.get("admintoken"),
        )
        admintoken = None
    return ServiceControlSettings(
        token=token,
        listenaddress=sec.ip("listenaddress", d.listenaddress),
        port=sec.port("port", d.port),
        admintoken=admintoken,
    )


def _token(sec: _Section, key: str, *, required: bool) -> str:
    got = sec.given(
        key, required=required, why="clients send it as GetStatus(token)" if required else ""
    )
    if got is None or not got[0]:  # an empty admintoken means "none"
        return ""
    value, node = got
    if re.search(r"[\s()\x00-\x1f\x7f]", value):
        sec.problem(
            key,
            "must not contain spaces, '(', ')' or control characters: clients "
            "send it as Action(token)",
            node,
        )
        return ""
    if len(value.encode()) > MAX_TOKEN_BYTES:
        sec.problem(key, f"must be at most {MAX_TOKEN_BYTES} bytes long", node)
        return ""
    return value


def _metrics(sec: _Section) -> MetricsSettings:
    d = MetricsSettings()
    return MetricsSettings(
        listenaddress=sec.ip("listenaddress", d.listenaddress), port=sec.port("port", d.port)
    )
