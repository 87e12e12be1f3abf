"""What a sync would change, whether to allow it, and how to describe it in git.

Changes are counted per account: in sip mode an account is a section (all sections of that
name together); in pjsip mode an account is an endpoint together with the aors and auths it
names, so a new password in `[1001-auth]` shows as `~1001`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass

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


def diff(old: ConfigFile, new: ConfigFile, mode: str) -> Change:
    """Accounts added, removed and changed from `old` to `new`, each sorted naturally."""
    before = _contents(old, mode)
    after = _contents(new, mode)
    return Change(
        added=_sorted(n for n in after if n not in before),
        removed=_sorted(n for n in before if n not in after),
        changed=_sorted(n for n in after if n in before and after[n] != before[n]),
    )


def guard(old_accounts: int, change: Change, max_remove_percent: float) -> str | None:
    """Why this change must not be applied automatically, or None.

    Refused: removing more than `max_remove_percent` of the accounts synced now, or removing
    every one of them (whatever the percentage). A first sync (nothing synced yet) is allowed.
    """
    if old_accounts <= 0:
        return None
    removed = len(change.removed)
    remaining = old_accounts - removed + len(change.added)
    if removed and remaining <= 0:
        return (f"refusing to remove all {old_accounts} synced accounts "
                "(the central's filtered list is empty)")
    share = 100.0 * removed / old_accounts
    if share > max_remove_percent:
        return (f"refusing to remove {removed} of {old_accounts} synced accounts "
                f"({share:.0f}% > maxremovepercent {max_remove_percent:g}%)")
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


def _contents(config: ConfigFile, mode: str) -> dict[str, _Content]:
    _check_mode(mode)
    if mode == "sip":
        grouped: dict[str, list[Category]] = {}
        for cat in config:
            if not cat.is_template:
                grouped.setdefault(cat.name, []).append(cat)
        return {name: tuple(_section(c) for c in cats) for name, cats in grouped.items()}
    result: dict[str, _Content] = {}
    for name in accounts(config, mode):
        endpoint = config.find(name, "endpoint")
        assert endpoint is not None
        refs = endpoint_references(endpoint)
        parts = [endpoint]
        for kind in ("aor", "auth"):
            parts.extend(c for ref in refs[kind] if (c := config.find(ref, kind)) is not None)
        # A referenced section that went missing is a change too: record the names looked for.
        result[name] = tuple(_section(c) for c in parts) + tuple(
            (kind, ref, False, ()) for kind in ("aor", "auth") for ref in refs[kind]
        )
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
