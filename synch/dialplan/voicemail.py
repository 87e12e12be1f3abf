"""The synced users' mailboxes, copied from the central's voicemail.conf → voicemail_synch.conf.

Pure. The central's file arrives through GetConfig, which hands `1001 => 1234,Alice,...` over as
`1001=1234,Alice,...` (FACTS: it turns `=>` into `=`); app_voicemail reads both forms alike,
so the value is copied whole: the PIN, name, e-mail and options stay as the central has them,
and a user's PIN works at the branch too. Only the contexts and mailboxes the synced accounts
name are written; `[general]`, `[zonemessages]` and the other users stay on the central.

The branch's voicemail.conf includes the result at its end (`#include voicemail_synch.conf`).
Asterisk 22's app_voicemail reads a context that appears twice (the branch's own `[default]`
and this file's) as one, so the branch may keep mailboxes of its own in the same context, as
long as their numbers differ from the synced ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from synch import names
from synch.sync.model import Category, ConfigFile
from synch.sync.policy import voicemail_problems
from synch.sync.render import check_safe, render

FILENAME = "voicemail_synch.conf"


class VoicemailError(ValueError):
    """The central's mailbox entries cannot be copied safely; `problems` says why."""

    def __init__(self, problems: list[str]):
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__("refused unsafe central voicemail.conf: " + "; ".join(problems[:5]) + more)
        self.problems = problems


@dataclass(frozen=True)
class Mailboxes:
    text: str
    found: frozenset[tuple[str, str]]  # (box, context) pairs that were copied
    warnings: list[str] = field(default_factory=list)


def render_mailboxes(
    central: ConfigFile, wanted: Iterable[tuple[str, str]], *, header: str
) -> Mailboxes:
    """voicemail_synch.conf for the `wanted` (box, context) pairs, as found in `central`.

    Contexts come in the order the accounts first name them, mailboxes sorted by number, so
    the text changes only when a mailbox does. A pair the central does not have is skipped
    with a warning. Raises VoicemailError for an unsafe name or value.
    """
    by_context: dict[str, list[str]] = {}
    problems: list[str] = []
    for box, context in wanted:
        if context == "device":  # FreePBX: voicemail off for this user, MWI only
            continue
        if reason := names.mailbox_problem(box, context):
            problems.append(reason)
        elif box not in by_context.setdefault(context, []):
            by_context[context].append(box)
    if problems:
        raise VoicemailError(problems)
    sections: list[Category] = []
    found: set[tuple[str, str]] = set()
    warnings: list[str] = []
    for context, boxes in by_context.items():
        entries = _entries(central, context)
        lines = []
        for box in sorted(boxes, key=lambda b: (len(b), b)):
            if box in entries:
                lines.append((box, entries[box]))
                found.add((box, context))
            else:
                warnings.append(f"mailbox {box}@{context} is not in the central's voicemail.conf")
        if lines:
            sections.append(Category(context, tuple(lines)))
    config = ConfigFile(tuple(sections))
    problems = check_safe(config) + voicemail_problems(config)
    if problems:
        raise VoicemailError(problems)
    return Mailboxes(render(config, header), frozenset(found), warnings)


def _entries(central: ConfigFile, context: str) -> dict[str, str]:
    """Mailbox → its whole value, from every `[context]` section (a context may be split);
    of two definitions of one mailbox, the first is kept."""
    entries: dict[str, str] = {}
    for cat in central:
        if cat.name == context and not cat.is_template:
            for key, value in cat.lines:
                entries.setdefault(key.strip(), value)
    return entries
