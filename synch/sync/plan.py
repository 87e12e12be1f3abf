"""What a sync would change, whether to allow it, and how to describe it in git.

Changes are counted per account: in sip mode an account is a section (all sections of that
name together); in pjsip mode an account is an endpoint together with the aors and auths it
names, so a new password in `[1001-auth]` shows as `~1001`.

The guard counts the accounts whose phones would stop working at the branch: removed, broken
(a PJSIP account that would lose an aor or auth it names, as when the central's
pjsip.auth.conf comes back empty) or given new credentials (a phone keeps its old password
until it is provisioned again).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from synch.sync.filter import endpoint_references
from synch.sync.model import Category, ConfigFile

MODES = ("sip", "pjsip")
# Names listed per kind in a commit subject before the rest is only counted.
SUBJECT_NAMES = 5

# An account's comparable content: the sections that make it, without `templates` (GetConfig
# reports them, the rendered file cannot: their lines are already flattened in).
_Content = tuple[tuple[str, str, bool, tuple[tuple[str, str], ...]], ...]


@dataclass(frozen=True)
class Change:
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    # Of `changed`: accounts that would lose a section they name (pjsip), and accounts whose
    # credentials change. Neither shows in commit subjects; both weigh in the guard.
    broken: tuple[str, ...] = ()
    rekeyed: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def __str__(self) -> str:
        return _tokens(self) or "no account changes"


def accounts(config: ConfigFile, mode: str) -> list[str]:
    """The account names in a config, in order, each once.

    sip: every section that is not a template (the synced file holds only the filtered peers,
    whatever their `type=`); pjsip: the `type=endpoint` sections.
    """
    _check_mode(mode)
    pjsip = mode == "pjsip"
    # A dict keeps the first occurrence's order (a list's `in` made 10k accounts quadratic).
    names = {
        cat.name: None
        for cat in config
        if not cat.is_template and not (pjsip and cat.type != "endpoint")
    }
    return list(names)


def first_account(text: str, mode: str) -> str | None:
    """The first account name of a file synch rendered (see `accounts`), found without parsing
    the whole file: the SIP probe asks for it after every change of a 10k-account file."""
    _check_mode(mode)
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            name, _, rest = line[1:].partition("]")
            current = None if rest.startswith("(!)") else name.strip() or None
            if current is not None and mode == "sip":
                return current
        elif current is not None and "".join(line.split()).lower() == "type=endpoint":
            return current
    return None


def diff(old: ConfigFile, new: ConfigFile, mode: str) -> Change:
    """Accounts added, removed and changed from `old` to `new`, each sorted naturally."""
    before = _contents(old, mode)
    after = _contents(new, mode)
    changed = [n for n in after if n in before and after[n].content != before[n].content]
    return Change(
        added=_sorted(n for n in after if n not in before),
        removed=_sorted(n for n in before if n not in after),
        changed=_sorted(changed),
        broken=_sorted(n for n in changed if before[n].complete and not after[n].complete),
        rekeyed=_sorted(n for n in changed if after[n].credentials != before[n].credentials),
    )


def guard(old_accounts: int, change: Change, max_remove_percent: float) -> str | None:
    """Why this change must not be applied automatically, or None.

    Refused: when more than `max_remove_percent` of the accounts synced now would be lost
    (removed, or broken: see the module's docstring), or would get new credentials (a mass
    change of passwords is a restore gone wrong or an attack, not an edit), or when none would
    be left (whatever the percentage). A first sync (nothing synced yet) is allowed.
    """
    if old_accounts <= 0:
        return None
    removed = len(change.removed)
    remaining = old_accounts - removed + len(change.added)
    if removed and remaining <= 0:
        return (f"refusing to remove all {old_accounts} synced accounts "
                "(the central's filtered list is empty)")
    limit = f"maxremovepercent {max_remove_percent:g}%"
    lost = len(set(change.removed) | set(change.broken))
    share = 100.0 * lost / old_accounts
    if share > max_remove_percent:
        if not change.broken:
            return (f"refusing to remove {removed} of {old_accounts} synced accounts "
                    f"({share:.0f}% > {limit})")
        parts = [f"{removed} would be removed"] if removed else []
        parts.append(f"{len(change.broken)} would lose an auth or aor they name "
                     "(missing on the central)")
        return (f"refusing this change: {lost} of {old_accounts} synced accounts would stop "
                f"working: {', '.join(parts)} ({share:.0f}% > {limit})")
    share = 100.0 * len(change.rekeyed) / old_accounts
    if share > max_remove_percent:
        return (f"refusing this change: {len(change.rekeyed)} of {old_accounts} synced "
                f"accounts would get new credentials ({share:.0f}% > {limit})")
    return None


def commit_subject(change: Change, source_host: str, mode: str) -> str:
    """`sync: +1004 -1002 ~1001 from 10.0.0.254 (pjsip)`.

    Up to SUBJECT_NAMES names per kind, then a count: `+1004 +1005 ... (+7 more)`.
    """
    tokens = _tokens(change) or "no account changes"
    return f"sync: {tokens} from {source_host} ({mode})"


def unified_diff(old_text: str, new_text: str, path: str) -> str:
    """A `git diff`-style unified diff of the file ('' when equal)."""
    if old_text == new_text:
        return ""
    lines = difflib.unified_diff(
        _diff_lines(old_text), _diff_lines(new_text), fromfile=f"a/{path}", tofile=f"b/{path}"
    )
    return "".join(lines)


# -- helpers ------------------------------------------------------------------------------------


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown sync mode {mode!r} (expected sip or pjsip)")


class _Account(NamedTuple):
    content: _Content
    complete: bool  # every aor and auth it names is there (always True in sip mode)
    credentials: tuple[str, ...]


# What a phone proves itself with: chan_sip peer keys, PJSIP auth keys.
_SIP_CREDENTIALS = frozenset({"secret", "md5secret", "username", "defaultuser"})
_AUTH_CREDENTIALS = frozenset({"password", "md5_cred", "username", "auth_type"})


def _credentials(sections: list[Category], keys: frozenset[str]) -> tuple[str, ...]:
    return tuple(
        f"{cat.name}.{key.lower()}={value}"
        for cat in sections
        for key, value in cat.lines
        if key.lower() in keys
    )


def _contents(config: ConfigFile, mode: str) -> dict[str, _Account]:
    _check_mode(mode)
    if mode == "sip":
        grouped: dict[str, list[Category]] = {}
        for cat in config:
            if not cat.is_template:
                grouped.setdefault(cat.name, []).append(cat)
        return {
            name: _Account(
                tuple(_section(c) for c in cats), True, _credentials(cats, _SIP_CREDENTIALS)
            )
            for name, cats in grouped.items()
        }
    result: dict[str, _Account] = {}
    for name in accounts(config, mode):
        endpoint = config.find(name, "endpoint")
        assert endpoint is not None
        refs = endpoint_references(endpoint)
        parts = [endpoint]
        missing = False
        auths: list[Category] = []
        for kind in ("aor", "auth"):
            for ref in refs[kind]:
                found = config.find(ref, kind)
                if found is None:
                    missing = True
                    continue
                parts.append(found)
                if kind == "auth":
                    auths.append(found)
        # A referenced section that went missing is a change too: record the names looked for.
        content = tuple(_section(c) for c in parts) + tuple(
            (kind, ref, False, ()) for kind in ("aor", "auth") for ref in refs[kind]
        )
        result[name] = _Account(content, not missing, _credentials(auths, _AUTH_CREDENTIALS))
    return result


def _section(cat: Category) -> tuple[str, str, bool, tuple[tuple[str, str], ...]]:
    return (cat.type, cat.name, cat.is_template, cat.lines)


_NUMBER = re.compile(r"([0-9]+)")


def _natural(name: str) -> tuple[tuple[int, int | str], ...]:
    # 2 < 10 < 1001 and digits sort before letters, so extension lists read naturally.
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part) for part in _NUMBER.split(name) if part
    )


def _sorted(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(names, key=lambda n: (_natural(n), n)))


def _tokens(change: Change) -> str:
    parts: list[str] = []
    for sign, names in (("+", change.added), ("-", change.removed), ("~", change.changed)):
        parts.extend(f"{sign}{name}" for name in names[:SUBJECT_NAMES])
        if len(names) > SUBJECT_NAMES:
            parts.append(f"({sign}{len(names) - SUBJECT_NAMES} more)")
    return " ".join(parts)


def _diff_lines(text: str) -> list[str]:
    # Split on "\n" only, as Asterisk does (str.splitlines would also split on U+2028 etc.).
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines
