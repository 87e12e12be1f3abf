"""Reading the values of one section, with the reading rules of appsettings.json.

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
import math
import re

from synch.config.addresses import _hostname_problem, _ip_literal
from synch.jsonc import Member, Node

# --------------------------------------------------------------------------------------------
# Limits shared by the sections

MAX_SECONDS = 7 * 86400.0  # beyond a week an interval or timeout is a typo, not a wish
MAX_COUNT = 1_000_000
# Values never shown in a problem or a warning, only named.
SECRET_KEYS = frozenset(
    {"amiremote.password", "amilocal.password", "servicecontrol.token", "servicecontrol.admintoken"}
)

_INTEGER_TEXT = re.compile(r"\s*[+-]?\d{1,18}\s*\Z")
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


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
