"""Which of the central's accounts belong to this branch.

The filter is the original's: a category matches when ANY of its lines with key `filterkey`
has a value that Python's `re.search(filtervalue, value)` finds; the reserved key
`categoryname` matches the section name instead. Keys are compared case-insensitively, as
Asterisk compares variable names.

`central_filter()` offers the central an equivalent AMI `Filter:` to cut the transfer, only when
the translation is provably no narrower than the Python filter (which always runs afterwards).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from synch.sync.model import Category, ConfigFile

CATEGORYNAME = "categoryname"


@dataclass(frozen=True)
class Selector:
    """`key` = syncmanager.filterkey, `value` = syncmanager.filtervalue (a Python regex)."""

    key: str
    value: str
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            compiled = re.compile(self.value)
        except re.error as exc:
            raise ValueError(f"filtervalue {self.value!r} is not a valid regex: {exc}") from exc
        if not self.key.strip():
            raise ValueError("filterkey is empty")
        object.__setattr__(self, "pattern", compiled)

    @property
    def by_name(self) -> bool:
        return self.key.strip().lower() == CATEGORYNAME

    def matches(self, category: Category) -> bool:
        if self.by_name:
            return self.pattern.search(category.name) is not None
        return any(self.pattern.search(v) is not None for v in category.values(self.key.strip()))


def select_sip(config: ConfigFile, selector: Selector) -> ConfigFile:
    """chan_sip mode: the matching sections, in the central's order (templates never)."""
    return ConfigFile(tuple(c for c in config if not c.is_template and selector.matches(c)))


class Selection(NamedTuple):
    """A PJSIP selection and what is wrong with it (unpacks as `config, warnings`)."""

    config: ConfigFile
    warnings: list[str]


def select_pjsip(
    endpoints: ConfigFile, aors: ConfigFile, auths: ConfigFile, selector: Selector
) -> Selection:
    """PJSIP mode: matching `type=endpoint` sections with exactly the aors and auths they name.

    Order: account by account, in the central's endpoint order: the endpoint, then its aors
    (`aors=`, in order), then its auths (`auth=`, then `outbound_auth=`). A section shared by
    several endpoints is written once, where first needed. Keeping an account's sections
    together keeps a one-account change a one-place diff; Asterisk ignores the order.

    A missing aor/auth is a warning, not a refusal: the endpoint is kept (without its auth it
    cannot register, but dropping it would also drop it from the branch's dialplan targets).
    """
    chosen: list[Category] = []
    seen: set[tuple[str, str]] = set()
    warnings: list[str] = []

    def add(cat: Category) -> None:
        ident = (cat.type, cat.name)
        if ident not in seen:
            seen.add(ident)
            chosen.append(cat)

    for endpoint in endpoints:
        if not _selected(endpoint, selector):
            continue
        add(endpoint)
        refs = endpoint_references(endpoint)
        for kind, source in (("aor", aors), ("auth", auths)):
            for name in refs[kind]:
                found = source.find(name, kind)
                if found is None:
                    warnings.append(
                        f"endpoint {endpoint.name}: {kind} {name!r} not found on the central"
                    )
                else:
                    add(found)
        if not refs["aor"]:
            warnings.append(f"endpoint {endpoint.name} has no aors=: phones cannot register")
    return Selection(ConfigFile(tuple(chosen)), warnings)


def referenced_names(endpoints: ConfigFile, selector: Selector) -> set[str]:
    """Every aor and auth name that the endpoints select_pjsip selects refer to: all it will
    look up in the aors and auths (see parse_getconfig's `names`)."""
    names: set[str] = set()
    for endpoint in endpoints:
        if _selected(endpoint, selector):
            refs = endpoint_references(endpoint)
            names.update(refs["aor"], refs["auth"])
    return names


def _selected(endpoint: Category, selector: Selector) -> bool:
    return not endpoint.is_template and endpoint.type == "endpoint" and selector.matches(endpoint)


def endpoint_references(endpoint: Category) -> dict[str, list[str]]:
    """The aor and auth names an endpoint uses: {"aor": [...], "auth": [...]}, in order."""
    # One pass over the lines (this runs for every account, several times per cycle).
    aors: list[str] = []
    auths: list[str] = []
    outbound: list[str] = []
    wanted = {"aors": aors, "auth": auths, "outbound_auth": outbound}
    for key, value in endpoint.lines:
        # Lowercasing only keys that may be one of them: their first letter is a or o.
        if key[:1] in "aAoO":
            found = wanted.get(key.lower())
            if found is not None:
                found.append(value)
    return {"aor": _split_names(aors), "auth": _split_names(auths + outbound)}


def _split_names(values: list[str]) -> list[str]:
    names: list[str] = []
    for value in values:
        for part in value.split(","):
            name = part.strip()
            if name and name not in names:
                names.append(name)
    return names


# -- pushing the filter to the central ----------------------------------------------------------
#
# Asterisk applies `Filter: name_regex=value_regex` per category: it matches when some variable
# has a name matching name_regex AND a value matching value_regex (POSIX ERE, regexec, no
# anchors added). Before compiling, it splits the header on ',' and '&', then on '=', and strips
# blanks and quotes ('\'' '"'); a regex it cannot compile matches NOTHING (every account would
# vanish). So only a small, well-understood subset of Python syntax is translated, and every
# construct in it either means the same in ERE or matches more there (never less): see
# _ere_value. Anything else: None, and the central sends the whole file.

_KEY = re.compile(r"[A-Za-z0-9_]+")
# Literal characters, outside brackets, that are ordinary in both syntaxes and in AMI/strsep.
_LITERAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-@/:%#!~<>")
# Inside [...] (no '\\', '[', ']', '^' except first, '-' only in ranges or at an end).
_IN_CLASS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.@/:+*?()$#%")
# `\x` escapes of characters special in ERE: kept escaped.
_SPECIAL_ESCAPES = frozenset(".^$*+?()[{|\\")
# `\x` where x is ordinary in ERE: Python means the literal, ERE leaves `\x` undefined: unescape.
_PLAIN_ESCAPES = frozenset("-/@:%#!~<>")


def central_filter(selector: Selector) -> str | None:
    """An AMI `Filter:` value equivalent to (or wider than) the selector, or None if unsure."""
    if selector.by_name:
        return None  # Filter matches variables only; section names cannot be pushed
    key = selector.key.strip()
    if not _KEY.fullmatch(key):
        return None
    value = _ere_value(selector.value)
    if value is None:
        return None
    # Asterisk names are compared case-insensitively by us, case-sensitively by regexec.
    name = "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in key)
    return f"^{name}$={value}"


def _ere_value(pattern: str) -> str | None:
    """Translate a Python regex to POSIX ERE for the subset where that is safe, else None.

    Matching is yes/no here (REG_NOSUB), so leftmost-longest vs. leftmost-first is irrelevant.
    Asterisk may match bytes where Python matches characters: `.` and `[^...]` are only
    accepted directly before `*` or `+`, where a run of bytes covers the same characters, so
    the central can only keep more, never less.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    depth = 0
    # What the previous token was: None (start / after '(' or '|'), "atom", "wide" (an atom
    # that must be followed by * or +), "quant", "anchor".
    prev: str | None = None
    if n == 0:
        return None
    while i < n:
        c = pattern[i]
        if prev == "wide" and c not in "*+":
            return None
        if c == "\\":
            if i + 1 >= n:
                return None
            e = pattern[i + 1]
            if e in _SPECIAL_ESCAPES:
                out.append("\\" + e)
            elif e in _PLAIN_ESCAPES:
                out.append(e)
            else:
                return None  # \d \w \s \b \A \Z, backreferences, \n, ...
            prev = "atom"
            i += 2
            continue
        if c == "[":
            end = _bracket_end(pattern, i)
            if end is None:
                return None
            out.append(pattern[i : end + 1])
            prev = "wide" if pattern[i + 1] == "^" else "atom"
            i = end + 1
            continue
        if c == ".":
            out.append(c)
            prev = "wide"
        elif c in "*+?":
            if prev not in ("atom", "wide"):
                return None  # nothing to repeat, or a lazy/possessive/stacked quantifier
            out.append(c)
            prev = "quant"
        elif c == "{":
            m = re.compile(r"\{([0-9]{1,3})\}").match(pattern, i)
            if not m or prev != "atom":
                return None  # {m,n} carries a ',' (Asterisk splits there); others: unsure
            out.append(m.group(0))
            prev = "quant"
            i = m.end()
            continue
        elif c == "(":
            if pattern[i + 1 : i + 2] in ("?", ")", "|", ""):
                return None  # (?...) extensions, empty group or branch
            depth += 1
            out.append(c)
            prev = None
        elif c == ")":
            if depth == 0 or prev is None:
                return None
            depth -= 1
            out.append(c)
            prev = "atom"
        elif c == "|":
            if prev is None or i + 1 >= n or pattern[i + 1] in "|)":
                return None  # empty alternatives are undefined in ERE
            out.append(c)
            prev = None
        elif c in "^$":
            out.append(c)
            prev = "anchor"
        elif c in _LITERAL:
            out.append(c)
            prev = "atom"
        else:
            return None  # ',', '&', '=', quotes, blanks, ']', '}', non-ASCII, controls, ...
        i += 1
    if depth or prev == "wide":
        return None
    return "".join(out)


def _bracket_end(pattern: str, start: int) -> int | None:
    """Index of the `]` closing a simple bracket expression at `start`, or None if not simple."""
    i = start + 1
    if pattern[i : i + 1] == "^":
        i += 1
    first = i
    while i < len(pattern) and pattern[i] != "]":
        c = pattern[i]
        if c == "-":
            at_edge = i == first or pattern[i + 1 : i + 2] == "]"
            if not at_edge:
                lo, hi = pattern[i - 1], pattern[i + 1]
                same_kind = any(
                    lo in kind and hi in kind
                    for kind in ("0123456789", "abcdefghijklmnopqrstuvwxyz",
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
                )
                if not same_kind or lo > hi or pattern[i - 2 : i - 1] == "-":
                    return None
        elif c not in _IN_CLASS:
            return None
        i += 1
    if i >= len(pattern) or i == first:
        return None  # unterminated, or `[]` / `[^]`
    return i
