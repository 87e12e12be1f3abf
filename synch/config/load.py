"""Loading: the file → its sections → frozen Settings, with the checks across sections,
every problem collected into one ConfigError; where the file is and whether it is private."""

from __future__ import annotations

import difflib
import ipaddress
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar

from synch.config.dialplan import _dialplan
from synch.config.dnsservice import _dnsservice
from synch.config.failover import _failover
from synch.config.reader import _Context, _describe, _Section, _where
from synch.config.sections import (
    _ami,
    _loglevel,
    _metrics,
    _probemonitor,
    _servicecontrol,
    _syncmanager,
)
from synch.config.settings import (
    AmiSettings,
    DialplanSettings,
    DnsSettings,
    FailoverSettings,
    LogLevel,
    MetricsSettings,
    ProbeMonitorSettings,
    ServiceControlSettings,
    Settings,
    SyncManagerSettings,
)
from synch.jsonc import JsoncParser, JsonSyntaxError, Member, Node

log = logging.getLogger("synch.config")
_T = TypeVar("_T")

DEFAULT_CONFIG_PATH = "/etc/synch/appsettings.json"
CONFIG_ENV = "SYNCH_CONFIG"


class ConfigError(Exception):
    """Raised with every problem found; `problems` holds ("section.key", message) pairs.

    For problems with the file itself (missing, unreadable, not JSON) the key is the file name,
    with `:line:column` for a syntax error. `warnings` holds what was accepted but looked wrong.
    """

    def __init__(self, problems: list[tuple[str, str]], warnings: tuple[str, ...] = ()):
        self.problems = problems
        self.warnings = warnings
        super().__init__("; ".join(f"{key}: {msg}" for key, msg in problems))


def _parse_jsonc(text: str, source: str) -> Node:
    parser = JsoncParser(text)
    try:
        return parser.document()
    except JsonSyntaxError as err:
        line, col = parser.line_col(err.pos)
        raise ConfigError([(f"{source}:{line}:{col}", f"invalid JSON: {err.message}")]) from None


_SECTIONS: dict[str, Callable[[_Section], object]] = {
    "loglevel": _loglevel,
    "probemonitor": _probemonitor,
    "amiremote": lambda sec: _ami(sec, remote=True),
    "amilocal": lambda sec: _ami(sec, remote=False),
    "syncmanager": _syncmanager,
    "dnsservice": _dnsservice,
    "servicecontrol": _servicecontrol,
    "metrics": _metrics,
    "dialplan": _dialplan,
    "failover": _failover,
}


# --------------------------------------------------------------------------------------------
# Whole-file checks


def _read_sections(root: Node, ctx: _Context) -> dict[str, object]:
    members: dict[str, Member] = {}
    for member in root.members:
        name = member.name.lower()
        if name in members:
            ctx.problems.append(
                (
                    name,
                    f"duplicate section (also on line {members[name].line}; "
                    "names are case-insensitive)" + _where(member.node),
                )
            )
        elif name not in _SECTIONS:
            close = difflib.get_close_matches(name, list(_SECTIONS), n=1, cutoff=0.6)
            hint = (
                f'; did you mean "{close[0]}"?'
                if close
                else (f"; known sections: {', '.join(_SECTIONS)}")
            )
            ctx.problems.append((name, "unknown section" + hint + _where(member.node)))
        elif member.node.kind not in ("object", "null"):
            ctx.problems.append(
                (
                    name,
                    f"must be an object {{...}}, got "
                    f"{_describe(member.node)}" + _where(member.node),
                )
            )
        else:
            members[name] = member
    built: dict[str, object] = {}
    for name, build in _SECTIONS.items():
        found = members.get(name)
        node = found.node if found is not None and found.node.kind == "object" else None
        built[name] = build(_Section(ctx, name, node))
    for sec in ctx.sections:
        sec.report_unknown()
    return built


def _listeners(s: Settings) -> list[tuple[str, str, int]]:
    return [
        ("dnsservice.port", s.dnsservice.listenaddress, s.dnsservice.port),
        ("servicecontrol.port", s.servicecontrol.listenaddress, s.servicecontrol.port),
        ("metrics.port", s.metrics.listenaddress, s.metrics.port),
    ]


def _cross_checks(s: Settings, ctx: _Context, timeout_set: bool) -> None:
    reported = {key for key, _ in ctx.problems}
    seen: list[tuple[str, str, int]] = []
    for key, address, port in _listeners(s):
        section = key.split(".")[0]
        if key in reported or f"{section}.listenaddress" in reported:
            continue  # a value already refused was replaced by its default: no conflict to see
        for other_key, other_address, other_port in seen:
            if port == other_port and _overlap(address, other_address):
                ctx.problems.append((key, f"{address}:{port} is already used by {other_key}"))
        seen.append((key, address, port))
    if timeout_set and s.amiremote.timeout > s.probemonitor.interval:
        ctx.warnings.append(
            f"amiremote.timeout: {s.amiremote.timeout:g} s is more than probemonitor.interval; "
            f"each probe is bounded by {s.probe_timeout:g} s"
        )


def _overlap(a: str, b: str) -> bool:
    x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    return (
        x == y
        or (x.is_unspecified and x.version == y.version)
        or (y.is_unspecified and x.version == y.version)
    )


# --------------------------------------------------------------------------------------------
# Public functions


def parse_settings(text: str, source: str = "<string>") -> Settings:
    """Validate JSON-with-comments text; raises ConfigError listing every problem.

    Warnings (accepted but suspicious input, e.g. invalid escapes kept verbatim) are logged on
    the `synch.config` logger and kept in `Settings.warnings` / `ConfigError.warnings`.
    """
    root = _parse_jsonc(text.removeprefix("\ufeff"), source)
    ctx = _Context()
    built = _read_sections(root, ctx)
    settings = Settings(
        loglevel=_as(built["loglevel"], LogLevel),
        probemonitor=_as(built["probemonitor"], ProbeMonitorSettings),
        amiremote=_as(built["amiremote"], AmiSettings),
        amilocal=_as(built["amilocal"], AmiSettings),
        syncmanager=_as(built["syncmanager"], SyncManagerSettings),
        dnsservice=_as(built["dnsservice"], DnsSettings),
        servicecontrol=_as(built["servicecontrol"], ServiceControlSettings),
        metrics=_as(built["metrics"], MetricsSettings),
        dialplan=_as(built["dialplan"], DialplanSettings),
        failover=_as(built["failover"], FailoverSettings),
        source=source,
    )
    remote = next(sec for sec in ctx.sections if sec.name == "amiremote")
    _cross_checks(settings, ctx, timeout_set="timeout" in remote.entries)
    warnings = tuple(ctx.warnings)
    for warning in warnings:
        log.warning("%s: %s", source, warning)
    if ctx.problems:
        raise ConfigError(ctx.problems, warnings)
    return replace(settings, warnings=warnings)


def _as(value: object, cls: type[_T]) -> _T:
    assert isinstance(value, cls)
    return value


def load_settings(path: str) -> Settings:
    """Read and validate a file; raises ConfigError listing every problem."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError([(path, "no such file")]) from None
    except IsADirectoryError:
        raise ConfigError([(path, "is a directory, not a file")]) from None
    except OSError as err:
        raise ConfigError([(path, f"cannot be read: {err.strerror or err}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError([(path, f"not UTF-8 text (byte {err.start})")]) from None
    return parse_settings(text, path)


def describe_problems(err: ConfigError) -> str:
    """One line per problem, `key: message`."""
    return "\n".join(f"{key}: {message}" for key, message in err.problems)


def config_path(cli_value: str | None) -> str:
    """The file to read: `-c` value, else $SYNCH_CONFIG, else /etc/synch/appsettings.json."""
    return cli_value or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def file_mode_warning(path: str) -> str | None:
    """A warning if the file (it holds passwords and tokens) is open to group or others."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    loose = mode & (stat.S_IRWXG | stat.S_IRWXO)
    if not loose:
        return None
    who = []
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        who.append("readable")
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        who.append("writable")
    what = " and ".join(who) or "accessible"
    return (
        f"{path} is {what} by group or others (mode {stat.S_IMODE(mode):04o}) and holds "
        f"passwords: chmod 600 {path}"
    )
