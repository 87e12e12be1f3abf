"""appsettings.json → frozen Settings.

The dataclasses below are the interface every other module uses. Field names are the lowercase
key names of the file (the file's keys are case-insensitive).

Reading rules, chosen so that a file that worked with the original Synch v1.0b keeps working:

- JSON with `//` and `/* */` comments (a `//` inside a string is text, not a comment).
- Trailing commas (`{"a": 1,}`) are accepted silently: the original's JSON reader accepted
  them, their meaning is unambiguous, and refusing them would break working files.
- An invalid JSON escape `\\X` (X not one of ``"\\/bfnrtu``) is kept as the two characters
  backslash + X, with a warning naming the key. The original README's filter examples
  (``"^192\\.168\\.0..."``, ``"^from\\-internal..."``) are written that way, and a regex
  author means exactly backslash + X; no valid JSON text changes meaning under this rule.
- Section and key names are case-insensitive; the same key twice (in any case) is an error,
  as it was for the original.
- `null` means "not set": the default applies (required keys are then reported missing).
- Numbers written as strings (`"port": "5038"`) and booleans written as strings
  (`"tls": "true"`) are accepted without a warning, and an integer where text is expected
  (`"password": 1234`) is taken as its digits: the original read every value as text and
  converted it, so existing files may hold either form. Anything else of the wrong type
  (an object for a port, `true` for a password, `5.5` for a count) is an error.
- Every problem is collected and reported at once, each named by its `section.key`.
- No text value may hold a control character (a line break in an AMI password would end its
  header; in a file name or a regex it is never meant). Secrets (SECRET_KEYS) are never quoted
  in a problem or a warning: the journal would keep them.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TypeVar

from synch import names as dialplan_names
from synch.jsonc import JsoncParser, JsonSyntaxError, Member, Node

log = logging.getLogger("synch.config")
_T = TypeVar("_T")

DEFAULT_CONFIG_PATH = "/etc/synch/appsettings.json"
DEFAULT_METRICS_PORT = 9386
CONFIG_ENV = "SYNCH_CONFIG"
# Who may query the DNS service by default: loopback, RFC 1918, unique local and link-local
# (where a branch's phones live). Anyone else gets REFUSED: no open resolver.
DEFAULT_DNS_ALLOW = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)
DEFAULT_DNS_RATELIMIT = 50.0  # forwarded queries per second per client; 0 = no limit


class ConfigError(Exception):
    """Raised with every problem found; `problems` holds ("section.key", message) pairs.

    For problems with the file itself (missing, unreadable, not JSON) the key is the file name,
    with `:line:column` for a syntax error. `warnings` holds what was accepted but looked wrong.
    """

    def __init__(self, problems: list[tuple[str, str]], warnings: tuple[str, ...] = ()):
        self.problems = problems
        self.warnings = warnings
        super().__init__("; ".join(f"{key}: {msg}" for key, msg in problems))


@dataclass(frozen=True)
class Endpoint:
    """A host and port, e.g. a DNS forwarder."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LogLevel:
    default: str = "information"  # trace|debug|information|warning|error|critical


@dataclass(frozen=True)
class ProbeMonitorSettings:
    failuretolerance: int = 5
    alivethreshold: int = 5
    errorpenaltypoints: int = 1
    interval: float = 5.0


@dataclass(frozen=True)
class AmiSettings:
    hostname: str = "127.0.0.1"
    port: int = 5038
    username: str = "synch"
    password: str = ""
    timeout: float = 4.0  # effective value is min(timeout, probemonitor.interval) for amiremote
    tls: bool = False
    cafile: str | None = None
    maxreplymb: int = 32  # a larger AMI reply is refused (a 10k-extension GetConfig: ~8 MB)


@dataclass(frozen=True)
class SyncManagerSettings:
    remotefilename: str = "sip_additional.conf"
    interval: float = 300.0
    filterkey: str = "accountcode"
    filtervalue: str = ".*"
    localconfigspath: str = "/etc/asterisk/"
    mode: str = "sip"  # sip | pjsip
    localfilename: str = "sip_synch.conf"  # by mode: sip_synch.conf / pjsip_synch.conf
    maxremovepercent: float = 50.0
    # a full GetConfig at least every N cycles even if CoreStatus is unchanged
    fullcheckevery: int = 12


@dataclass(frozen=True)
class DnsSettings:
    listenaddress: str = "0.0.0.0"
    port: int = 53
    domain: str = "example.local"
    record: str = "sip"
    recordttl: int = 300
    targetnormal: str = "127.0.0.1"
    targetfailover: str = "127.0.0.1"
    forwarders: tuple[Endpoint, ...] = ()
    forwardtimeout: float = 2.0
    refreshinterval: int = 300
    retryinterval: int = 300
    expireinterval: int = 300
    minttl: int = 300
    ttl: int = 300
    defaultstate: str = "Failover"  # Normal | Failover
    allow: tuple[str, ...] = DEFAULT_DNS_ALLOW  # networks, normalised ("10.0.0.0/8")
    ratelimit: float = DEFAULT_DNS_RATELIMIT

    @property
    def fqdn(self) -> str:
        """The SIP record's full name, lowercase, no trailing dot."""
        return f"{self.record}.{self.domain}".lower().rstrip(".")


@dataclass(frozen=True)
class ServiceControlSettings:
    token: str = ""
    listenaddress: str = "127.0.0.1"
    port: int = 65038
    admintoken: str | None = None


@dataclass(frozen=True)
class MetricsSettings:
    listenaddress: str = "0.0.0.0"
    port: int = DEFAULT_METRICS_PORT


@dataclass(frozen=True)
class DialplanSettings:
    """Survivable calling (synch.dialplan). Off by default: an existing site's files and
    reloads stay exactly as they were until the operator turns it on."""

    enabled: bool = False
    trunk: str = ""  # the branch's own PSTN endpoint (pjsip) or peer (sip); required if enabled
    outbound: tuple[str, ...] = ()  # `_0XXXXXXXXX`, `00X.`-style patterns, or `9|_0X.`
    emergency: tuple[str, ...] = ("112", "911", "999", "000")
    ringtimeout: int = 20  # seconds a local phone rings before voicemail
    centralfallback: str = ""  # dial prefix for central-only extensions via the trunk
    voicemailaccess: str = "*97"  # a user's own mailbox; "" = none
    # The only contexts synch writes: Asterisk merges same-named sections, so an account with
    # context=from-pstn must never add routes to the trunk's inbound context of the branch.
    contexts: tuple[str, ...] = ("from-internal",)


@dataclass(frozen=True)
class Settings:
    loglevel: LogLevel = field(default_factory=LogLevel)
    probemonitor: ProbeMonitorSettings = field(default_factory=ProbeMonitorSettings)
    amiremote: AmiSettings = field(default_factory=AmiSettings)
    amilocal: AmiSettings = field(default_factory=AmiSettings)
    syncmanager: SyncManagerSettings = field(default_factory=SyncManagerSettings)
    dnsservice: DnsSettings = field(default_factory=DnsSettings)
    servicecontrol: ServiceControlSettings = field(default_factory=ServiceControlSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    dialplan: DialplanSettings = field(default_factory=DialplanSettings)
    source: str = ""  # path the settings were read from
    # What was accepted but looked wrong (already logged once by parse_settings).
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def probe_timeout(self) -> float:
        """amiremote.timeout, capped at the probe interval (capped, not an error)."""
        return min(self.amiremote.timeout, self.probemonitor.interval)


# --------------------------------------------------------------------------------------------
# Limits and vocabularies

LOG_LEVELS = ("trace", "debug", "information", "warning", "error", "critical")
MODES = ("sip", "pjsip")
LOCAL_FILENAMES = {"sip": "sip_synch.conf", "pjsip": "pjsip_synch.conf"}
STATES = ("Normal", "Failover")
DEFAULT_TLS_AMI_PORT = 5039  # Asterisk's tlsbindport default
MAX_SECONDS = 7 * 86400.0  # beyond a week an interval or timeout is a typo, not a wish
MAX_DNS_TIME = 2**31 - 1  # RFC 2181: TTLs and SOA timers are 31-bit
MAX_COUNT = 1_000_000
MAX_TOKEN_BYTES = 200  # the status socket reads at most 256 bytes per request
# Values never shown in a problem or a warning, only named.
SECRET_KEYS = frozenset(
    {"amiremote.password", "amilocal.password", "servicecontrol.token", "servicecontrol.admintoken"}
)

_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")
_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d{1,18}\s*\Z")
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _parse_jsonc(text: str, source: str) -> Node:
    parser = JsoncParser(text)
    try:
        return parser.document()
    except JsonSyntaxError as err:
        line, col = parser.line_col(err.pos)
        raise ConfigError([(f"{source}:{line}:{col}", f"invalid JSON: {err.message}")]) from None


# --------------------------------------------------------------------------------------------
# Reading values: each section reader records which keys it knows, converts with the
# leniencies above, and collects problems instead of stopping at the first one.


class _Context:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []
        self.warnings: list[str] = []
        self.sections: list[_Section] = []

    def known_keys(self) -> dict[str, set[str]]:
        return {sec.name: sec.known for sec in self.sections}


def _where(node: Node | None) -> str:
    return f" (line {node.line})" if node is not None else ""


def _describe(node: Node, *, secret: bool = False) -> str:
    """The value as a problem message quotes it; a secret only by its kind."""
    if secret and node.kind in ("string", "number"):
        return "text" if node.kind == "string" else "a number"
    if node.kind == "string":
        text = str(node.scalar)
        return f'"{text[:40]}..."' if len(text) > 40 else f'"{text}"'
    if node.kind == "number":
        return node.raw
    if node.kind == "bool":
        return "true" if node.scalar else "false"
    return {"object": "an object", "array": "a list", "null": "null"}[node.kind]


class _Section:
    def __init__(self, ctx: _Context, name: str, node: Node | None):
        self.ctx = ctx
        self.name = name
        self.known: set[str] = set()
        self.entries: dict[str, Member] = {}
        ctx.sections.append(self)
        for member in node.members if node is not None else ():
            key = member.name.lower()
            if key in self.entries:
                first = self.entries[key].line
                self.problem(
                    key,
                    f"duplicate key (also on line {first}; keys are case-insensitive)",
                    member.node,
                )
            else:
                self.entries[key] = member

    def problem(self, key: str, message: str, node: Node | None = None) -> None:
        self.ctx.problems.append((f"{self.name}.{key}", message + _where(node)))

    def secret(self, key: str) -> bool:
        return f"{self.name}.{key}" in SECRET_KEYS

    def warn(self, key: str, message: str, node: Node | None = None) -> None:
        self.ctx.warnings.append(f"{self.name}.{key}: {message}{_where(node)}")

    def get(self, key: str) -> Node | None:
        """The value of `key`, or None if absent or null (null means "not set")."""
        self.known.add(key)
        member = self.entries.get(key)
        if member is None or member.node.kind == "null":
            return None
        return member.node

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def missing(self, key: str, why: str = "") -> None:
        self.problem(key, "is required" + (f": {why}" if why else ""))

    # -- typed readers: on any problem they record it and return the default ----------------

    def given(
        self, key: str, *, required: bool = False, nonempty: bool = False, why: str = ""
    ) -> tuple[str, Node] | None:
        """The text of `key` and its node; None if absent or already reported as wrong.

        `required`: must be present and not empty; `nonempty`: may be absent, not empty.
        """
        node = self.get(key)
        if node is None:
            if required:
                self.missing(key, why)
            return None
        value = self.text_of(key, node)
        if value is None:
            return None
        if (required or nonempty) and not value:
            self.problem(key, "must not be empty" + (f": {why}" if why else ""), node)
            return None
        return value, node

    def text(
        self,
        key: str,
        default: str,
        *,
        required: bool = False,
        nonempty: bool = False,
        why: str = "",
    ) -> str:
        got = self.given(key, required=required, nonempty=nonempty, why=why)
        return default if got is None else got[0]

    def text_of(self, key: str, node: Node) -> str | None:
        """The text of a value; None (reported) if it is not text or holds a control character."""
        secret = self.secret(key)
        if node.kind == "string":
            value = str(node.scalar)
            if _CONTROL.search(value):
                self.problem(key, _control_problem(value, secret), node)
                return None
            if node.bad_escapes:
                self.warn(key, _escape_warning(node.bad_escapes, secret), node)
            return value
        if node.kind == "number" and isinstance(node.scalar, int):
            return node.raw
        got = _describe(node, secret=secret)
        self.problem(key, f"must be text in double quotes, got {got}", node)
        return None

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        node = self.get(key)
        if node is None:
            return default
        value: int | None = None
        if node.kind == "number":
            number = node.scalar
            if isinstance(number, int):
                value = number
            elif isinstance(number, float) and number.is_integer():
                value = int(number)
        elif node.kind == "string" and _INTEGER_TEXT.match(str(node.scalar)):
            value = int(str(node.scalar))
        if value is None:
            self.problem(key, f"must be a whole number, got {_describe(node)}", node)
            return default
        return self.in_range(key, value, default, low, high, node)

    def in_range(self, key: str, value: int, default: int, low: int, high: int, node: Node) -> int:
        if low <= value <= high:
            return value
        self.problem(key, f"must be from {low} to {high}, got {value}", node)
        return default

    def real(
        self, key: str, default: float, *, low: float, high: float, low_inclusive: bool = False
    ) -> float:
        node = self.get(key)
        if node is None:
            return default
        value: float | None = None
        if node.kind == "number" and isinstance(node.scalar, int | float):
            value = float(node.scalar)
        elif node.kind == "string" and _NUMBER_TEXT.match(str(node.scalar)):
            value = float(str(node.scalar))
        if value is None or not math.isfinite(value):
            self.problem(key, f"must be a number, got {_describe(node)}", node)
            return default
        too_low = value < low if low_inclusive else value <= low
        if too_low or value > high:
            bound = f"at least {low:g}" if low_inclusive else f"more than {low:g}"
            self.problem(key, f"must be {bound} and at most {high:g}, got {value:g}", node)
            return default
        return value

    def seconds(self, key: str, default: float) -> float:
        return self.real(key, default, low=0.0, high=MAX_SECONDS)

    def boolean(self, key: str, default: bool) -> bool:
        node = self.get(key)
        if node is None:
            return default
        if node.kind == "bool":
            return bool(node.scalar)
        if node.kind == "string" and str(node.scalar).strip().lower() in ("true", "false"):
            return str(node.scalar).strip().lower() == "true"
        self.problem(key, f"must be true or false, got {_describe(node)}", node)
        return default

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        """A case-insensitive choice, returned in the spelling of `choices`."""
        node = self.get(key)
        if node is None:
            return default
        value = self.text_of(key, node)
        if value is None:
            return default
        for choice in choices:
            if value.strip().lower() == choice.lower():
                return choice
        self.problem(key, f"must be one of {', '.join(choices)}, got {_describe(node)}", node)
        return default

    def port(self, key: str, default: int) -> int:
        return self.integer(key, default, 1, 65535)

    def ip(
        self,
        key: str,
        default: str,
        *,
        version: int | None = None,
        required: bool = False,
        why: str = "",
    ) -> str:
        got = self.given(key, required=required, why=why)
        if got is None:
            return default
        value, node = got
        address = _ip_literal(value)
        if address is None or (version is not None and address.version != version):
            kind = {None: "an IP address", 4: "an IPv4 address", 6: "an IPv6 address"}[version]
            self.problem(key, f"must be {kind}{why and f' ({why})'}, got {_describe(node)}", node)
            return default
        return str(address)

    def host(self, key: str, default: str, *, required: bool = False) -> str:
        got = self.given(key, required=required)
        if got is None:
            return default
        value, node = got
        address = _ip_literal(value)
        if address is not None:
            return str(address)
        reason = _hostname_problem(value.strip())
        if reason:
            self.problem(key, f"must be an IP address or a host name: {reason}", node)
            return default
        return value.strip().rstrip(".")

    def report_unknown(self) -> None:
        others = {s.name: s.known for s in self.ctx.sections if s is not self}
        for key, member in self.entries.items():
            if key not in self.known:
                self.problem(key, "unknown key" + _suggest(key, self.known, others), member.node)


def _control_problem(value: str, secret: bool) -> str:
    if "\b" in value:  # JSON "\b" is a backspace, never what a regex author meant
        return (
            'must not contain control characters: "\\b" in JSON is a backspace; '
            'for a regex word boundary write "\\\\b"'
        )
    found = _CONTROL.search(value)
    assert found is not None
    where = "" if secret else f": found U+{ord(found.group()):04X}"
    return f"must not contain control characters (line breaks, tabs...){where}"


def _escape_warning(escapes: list[str], secret: bool) -> str:
    if secret:  # not even two characters of a secret
        return (
            "invalid JSON escape kept as written (not shown: the value is a secret); "
            "double its backslash to make the file valid JSON"
        )
    kinds = ", ".join(dict.fromkeys(escapes))
    doubled = ", ".join("\\" + e for e in dict.fromkeys(escapes))
    return (
        f"invalid JSON escape {kinds} kept as written; write {doubled} to make the file valid JSON"
    )


def _suggest(key: str, known: set[str], others: dict[str, set[str]]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    if close:
        return f'; did you mean "{close[0]}"?'
    homes = [f"{name}.{key}" for name, keys in others.items() if key in keys]
    if homes:
        return f"; it belongs in another section: {' or '.join(homes)}"
    if known:
        return f"; known keys here: {', '.join(sorted(known))}"
    return ""


def _ip_literal(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _hostname_problem(name: str) -> str | None:
    """Why `name` is not a valid host name (RFC 1123), or None if it is one."""
    if not name or len(name.rstrip(".")) > 253:
        return "empty" if not name else "longer than 253 characters"
    labels = name.rstrip(".").split(".")
    for label in labels:
        if not _HOST_LABEL.match(label):
            return f"{label!r} is not a valid name part (letters, digits, '-'; 1 to 63)"
    if labels[-1].isdigit():
        return "looks like an IP address but is not one"
    return None


def _dns_name_problem(name: str) -> str | None:
    """Why `name` is not a valid DNS name for a zone or record, or None if it is one."""
    bare = name.rstrip(".") if name != "." else ""
    if not bare:
        return "empty"
    if len(bare) > 253:
        return "longer than 253 characters"
    for label in bare.split("."):
        if not _DNS_LABEL.match(label):
            return f"{label!r} is not a valid DNS label (letters, digits, '-', '_'; 1 to 63)"
    return None


# --------------------------------------------------------------------------------------------
# Sections


def _loglevel(sec: _Section) -> LogLevel:
    return LogLevel(default=sec.choice("default", LogLevel.default, LOG_LEVELS))


def _probemonitor(sec: _Section) -> ProbeMonitorSettings:
    d = ProbeMonitorSettings()
    return ProbeMonitorSettings(
        failuretolerance=sec.integer("failuretolerance", d.failuretolerance, 1, MAX_COUNT),
        alivethreshold=sec.integer("alivethreshold", d.alivethreshold, 1, MAX_COUNT),
        errorpenaltypoints=sec.integer("errorpenaltypoints", d.errorpenaltypoints, 0, MAX_COUNT),
        interval=sec.seconds("interval", d.interval),
    )


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


def _dnsservice(sec: _Section) -> DnsSettings:
    d = DnsSettings()
    before = len(sec.ctx.problems)
    listen = sec.ip("listenaddress", d.listenaddress)
    port = sec.port("port", d.port)
    # A refused listen address or port stands in as its default: no loop check against it.
    own = Endpoint(listen, port) if len(sec.ctx.problems) == before else None
    return DnsSettings(
        listenaddress=listen,
        port=port,
        domain=_dns_name(sec, "domain", d.domain),
        record=_dns_name(sec, "record", d.record),
        recordttl=sec.integer("recordttl", d.recordttl, 0, MAX_DNS_TIME),
        targetnormal=sec.ip(
            "targetnormal",
            "",
            version=4,
            required=True,
            why="the central PBX's address, served as an A record",
        ),
        targetfailover=sec.ip(
            "targetfailover",
            "",
            version=4,
            required=True,
            why="the branch Asterisk's address, served as an A record",
        ),
        forwarders=_forwarders(sec, own),
        forwardtimeout=sec.seconds("forwardtimeout", d.forwardtimeout),
        refreshinterval=sec.integer("refreshinterval", d.refreshinterval, 1, MAX_DNS_TIME),
        retryinterval=sec.integer("retryinterval", d.retryinterval, 1, MAX_DNS_TIME),
        expireinterval=sec.integer("expireinterval", d.expireinterval, 1, MAX_DNS_TIME),
        minttl=sec.integer("minttl", d.minttl, 0, MAX_DNS_TIME),
        ttl=sec.integer("ttl", d.ttl, 0, MAX_DNS_TIME),
        defaultstate=sec.choice("defaultstate", d.defaultstate, STATES),
        allow=_allow(sec, d.allow),
        ratelimit=sec.real("ratelimit", d.ratelimit, low=0.0, high=MAX_COUNT, low_inclusive=True),
    )


def _strict_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=True)
    except ValueError:
        return False
    return True


def _allow(sec: _Section, default: tuple[str, ...]) -> tuple[str, ...]:
    """`allow`: networks (`10.0.0.0/8`) or addresses (a /32 or /128); a lone string is a list
    of one. Host bits set (`10.1.2.3/8`) are cleared: the intent is clear, and a warning says so.
    """
    node = sec.get("allow")
    if node is None:
        return default
    elements = node.elements if node.kind == "array" else [node]
    networks: list[str] = []
    for n, element in enumerate(elements):
        key = f"allow[{n}]" if node.kind == "array" else "allow"
        if element.kind != "string":
            sec.problem(
                key,
                'must be a network ("10.0.0.0/8") or an address in double '
                f"quotes, got {_describe(element)}",
                element,
            )
            continue
        text = str(element.scalar).strip()
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            sec.problem(
                key,
                'must be a network like "192.168.0.0/16" or "fd00::/8", or an '
                f"address, got {_describe(element)}",
                element,
            )
            continue
        if not _strict_network(text):
            sec.warn(key, f"{text} has host bits set: taken as {network}", element)
        if str(network) not in networks:
            networks.append(str(network))
    if not elements:
        sec.problem(
            "allow",
            'must list at least one network; ["0.0.0.0/0", "::/0"] '
            "answers everyone (an open resolver)",
            node,
        )
    return tuple(networks) if networks else default


def _dns_name(sec: _Section, key: str, default: str) -> str:
    got = sec.given(key, nonempty=True)
    if got is None:
        return default
    value, node = got
    reason = _dns_name_problem(value.strip())
    if reason:
        sec.problem(key, f"must be a DNS name: {reason}", node)
        return default
    return value.strip().rstrip(".").lower()


def _forwarders(sec: _Section, listen: Endpoint | None) -> tuple[Endpoint, ...]:
    """`forwarder` (the original's single key) first, then `forwarders`; duplicates dropped."""
    entries: list[tuple[str, Node]] = []
    single = sec.get("forwarder")
    if single is not None:
        entries.append(("forwarder", single))
    many = sec.get("forwarders")
    if many is not None:
        if many.kind == "array":
            entries += [(f"forwarders[{n}]", node) for n, node in enumerate(many.elements)]
        else:  # a lone "ADDRESS" where a list was expected means a list of one
            entries.append(("forwarders", many))
    result: list[Endpoint] = []
    for key, node in entries:
        endpoint = _forwarder(sec, key, node)
        if endpoint is None or endpoint in result:
            continue
        if listen is not None and endpoint == listen:
            sec.problem(key, f"{endpoint} is this DNS service itself: queries would loop", node)
            continue
        if listen is not None and _maybe_loops(endpoint, listen):
            sec.warn(
                key,
                f"{endpoint} is probably this DNS service itself (it listens on "
                f"{listen}): queries would loop",
                node,
            )
        result.append(endpoint)
    if not entries:
        sec.problem(
            "forwarders",
            "at least one upstream DNS resolver is required (forwarder "
            'or forwarders: ["ADDRESS", "ADDRESS:PORT"])',
        )
    return tuple(result)


def _forwarder(sec: _Section, key: str, node: Node) -> Endpoint | None:
    if node.kind != "string":
        sec.problem(
            key,
            f'must be "ADDRESS" or "ADDRESS:PORT" in double quotes, got {_describe(node)}',
            node,
        )
        return None
    text = sec.text_of(key, node)
    if text is None:
        return None
    endpoint = parse_endpoint(text, default_port=53)
    if endpoint is None:
        sec.problem(
            key,
            "must be an IP address, ADDRESS:PORT or [IPv6]:PORT with a port from "
            f"1 to 65535, got {_describe(node)}",
            node,
        )
    return endpoint


def parse_endpoint(text: str, default_port: int) -> Endpoint | None:
    """`ADDRESS`, `ADDRESS:PORT`, `IPV6` or `[IPV6]:PORT` → Endpoint, or None if malformed."""
    text = text.strip()
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d{1,5}))?", text)
    if m:
        host, port_text = m.group(1), m.group(2)
        address = _ip_literal(host)
        if address is None or address.version != 6:
            return None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        if not port_text.isdigit() or len(port_text) > 5:
            return None
        address = _ip_literal(host)
        if address is None or address.version != 4:
            return None
    else:
        address, port_text = _ip_literal(text), None
        if address is None:
            return None
    port = int(port_text) if port_text else default_port
    if not 1 <= port <= 65535:
        return None
    return Endpoint(str(address), port)


def _maybe_loops(endpoint: Endpoint, listen: Endpoint) -> bool:
    """A wildcard listener also owns 127.0.0.1/::1, unless another resolver bound that address
    itself (SO_REUSEADDR): likely a loop, not certainly (127.0.0.53 is systemd-resolved's)."""
    return (
        endpoint.port == listen.port
        and listen.host in ("0.0.0.0", "::")
        and endpoint.host in ("127.0.0.1", "::1")
        and (":" in endpoint.host) == (":" in listen.host)
    )


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


def _dialplan(sec: _Section) -> DialplanSettings:
    d = DialplanSettings()
    enabled = sec.boolean("enabled", d.enabled)
    trunk = _dialplan_word(sec, "trunk", d.trunk, dialplan_names.trunk_problem)
    if enabled and not trunk and not sec.has("trunk"):
        sec.missing("trunk", "the branch's own PSTN endpoint/peer, which emergency calls need")
    emergency = _dialplan_list(sec, "emergency", d.emergency, dialplan_names.number_problem)
    if not emergency and sec.has("emergency"):
        sec.problem(
            "emergency",
            "must list at least one number: emergency calls must always work",
            sec.get("emergency"),
        )
        emergency = d.emergency
    access = _dialplan_word(
        sec, "voicemailaccess", d.voicemailaccess, dialplan_names.number_problem, empty_ok=True
    )
    if access and access in emergency:
        sec.problem(
            "voicemailaccess", f"{access} is also an emergency number", sec.get("voicemailaccess")
        )
    contexts = _dialplan_list(sec, "contexts", d.contexts, dialplan_names.context_problem)
    if not contexts and sec.has("contexts"):
        sec.problem(
            "contexts",
            "must list at least one context: the contexts of the synced phones that synch "
            'writes the dialplan of (FreePBX: ["from-internal"])',
            sec.get("contexts"),
        )
        contexts = d.contexts
    return DialplanSettings(
        enabled=enabled,
        trunk=trunk,
        outbound=_dialplan_list(sec, "outbound", d.outbound, dialplan_names.route_problem),
        emergency=emergency,
        ringtimeout=sec.integer("ringtimeout", d.ringtimeout, 1, 600),
        centralfallback=_dialplan_word(
            sec,
            "centralfallback",
            d.centralfallback,
            dialplan_names.fallback_problem,
            empty_ok=True,
        ),
        voicemailaccess=access,
        contexts=contexts,
    )


def _dialplan_word(
    sec: _Section,
    key: str,
    default: str,
    check: Callable[[str], str | None],
    *,
    empty_ok: bool = False,
) -> str:
    got = sec.given(key)
    if got is None:
        return default
    value, node = got
    if empty_ok and not value:
        return ""
    reason = check(value)
    if reason:
        sec.problem(key, f"{reason}, got {_describe(node)}", node)
        return default
    return value


def _dialplan_list(
    sec: _Section, key: str, default: tuple[str, ...], check: Callable[[str], str | None]
) -> tuple[str, ...]:
    """A list of strings (a lone string is a list of one); duplicates dropped."""
    node = sec.get(key)
    if node is None:
        return default
    elements = node.elements if node.kind == "array" else [node]
    result: list[str] = []
    for n, element in enumerate(elements):
        where = f"{key}[{n}]" if node.kind == "array" else key
        if element.kind != "string":
            sec.problem(where, f"must be text in double quotes, got {_describe(element)}", element)
            continue
        value = sec.text_of(where, element)
        if value is None:
            continue
        reason = check(value)
        if reason:
            sec.problem(where, f"{reason}, got {_describe(element)}", element)
        elif value not in result:
            result.append(value)
    return tuple(result)


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
