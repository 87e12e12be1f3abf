"""What a section from the central may carry onto the branch, per kind of section, in one place.

render.check_safe() makes sure no name or value can be *read* as something else (a directive, a
new section, a comment). This module is about values Asterisk *acts on*: a value that is plain
text to the config parser but that Asterisk evaluates, or that sends calls somewhere, is the
central's way of running something on the branch. Each such key has a rule here, per section
kind; every other key is data (passwords, codecs, caller IDs) and passes as it is.

Found by reading what Asterisk 22 does with each key of a FreePBX account:
- `set_var` (PJSIP endpoint) and `setvar` (chan_sip peer) go through
  `pbx_builtin_setvar_helper` on every call: a name ending in `)` is a dialplan function write
  (`FILE()`, `DB()`, `SHELL()`...), and some plain variables steer the call (transfer and
  forward contexts, feature maps that run applications). Only plain channel variables outside
  that list may be set, with values free of expressions and escapes.
- `context`, `subscribe_context`, `message_context` (chan_sip: `subscribecontext`,
  `messagecontext`) choose the branch dialplan that handles the phone's calls, subscriptions
  and messages: they must be plain context names.
- a mailbox's voicemail options `callback=`, `dialout=`, `exitcontext=` let a voicemail caller
  reach a dialplan context of the central's choosing from VoiceMailMain: refused.
- `transport` (PJSIP endpoint) names the central's own transport; it is left out, so that the
  branch's transport serves the phone (see TRANSPORT_NOTE).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from synch.sync.model import Category, ConfigFile

Check = Callable[[str], "str | None"]

# A channel variable: letters, digits and '_', with Asterisk's inheritance prefixes `_`/`__`.
_VARIABLE = re.compile(r"_{0,2}[A-Za-z][A-Za-z0-9_]{0,79}")
# Variables that move a call into another context or add features that run applications.
DENIED_VARIABLES = frozenset(
    {
        "TRANSFER_CONTEXT",
        "FORWARD_CONTEXT",
        "GOTO_ON_BLINDXFR",
        "DYNAMIC_FEATURES",
        "ATTENDED_TRANSFER_COMPLETE_SOUND",
        "OUTBOUND_GROUP",
        "OUTBOUND_GROUP_ONCE",
        "MACRO_CONTEXT",
        "GOSUB_RETVAL",
    }
)
# `${...}` and `$[...]` are expressions; a backslash starts an escape some consumers decode.
_EXPRESSION = re.compile(r"\$[{\[]|\\")
_CONTEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,78}")
# Voicemail mailbox options (the fifth field, `a=b|c=d`) that send the caller to a context.
DENIED_VOICEMAIL_OPTIONS = frozenset({"callback", "dialout", "exitcontext"})

TRANSPORT_NOTE = "Endpoints are written without transport=: the branch's own transport serves them."


def channel_variable_problem(assignment: str) -> str | None:
    """Why `NAME=value` (set_var/setvar) must not be synced, or None."""
    name, sep, value = assignment.partition("=")
    if not sep:
        return "is not NAME=value"
    if not _VARIABLE.fullmatch(name):
        return (
            f"may set a plain channel variable only, not {name!r} "
            "(a name with '(' is a dialplan function, run on every call)"
        )
    if name.lstrip("_").upper() in DENIED_VARIABLES:
        return f"may not set {name.lstrip('_')}, which sends calls elsewhere or runs features"
    if _EXPRESSION.search(value):
        return "value holds an expression (${...}, $[...]) or a backslash escape"
    return None


def context_name_problem(value: str) -> str | None:
    if not _CONTEXT.fullmatch(value):
        return f"{value!r} is not a plain dialplan context name"
    return None


def voicemail_entry_problem(value: str) -> str | None:
    """Why a voicemail.conf mailbox entry (`pin,name,email,pager,options`) must not be synced."""
    fields = value.split(",", 4)
    if len(fields) < 5:
        return None
    for option in fields[4].split("|"):
        name = option.partition("=")[0].strip().lower()
        if name in DENIED_VOICEMAIL_OPTIONS:
            return f"voicemail option {name}= would let a caller reach a dialplan context"
    return None


@dataclass(frozen=True)
class SectionPolicy:
    """Rules for one kind of section: `checked` keys must pass their check (else the whole
    sync is refused), `dropped` keys are left out (with the reason, for the file's header)."""

    checked: Mapping[str, Check] = field(default_factory=dict)
    dropped: Mapping[str, str] = field(default_factory=dict)


_CONTEXT_KEYS = ("context", "subscribe_context", "message_context")
POLICIES: Mapping[str, Mapping[str, SectionPolicy]] = {
    "pjsip": {
        "endpoint": SectionPolicy(
            checked={
                "set_var": channel_variable_problem,
                **dict.fromkeys(_CONTEXT_KEYS, context_name_problem),
            },
            dropped={"transport": TRANSPORT_NOTE},
        ),
        "aor": SectionPolicy(),
        "auth": SectionPolicy(),
    },
    "sip": {
        "peer": SectionPolicy(
            checked={
                "setvar": channel_variable_problem,
                **dict.fromkeys(
                    ("context", "subscribecontext", "messagecontext"), context_name_problem
                ),
            }
        ),
    },
    "voicemail": {"mailboxes": SectionPolicy()},  # entries are checked by value, not by key
}


def _policy(mode: str, cat: Category) -> SectionPolicy:
    kinds = POLICIES[mode]
    if mode == "sip":
        return kinds["peer"]  # chan_sip sections are all peers, whatever their type=
    return kinds.get(cat.type, _EMPTY)


_EMPTY = SectionPolicy()


def policy_problems(config: ConfigFile, mode: str) -> list[str]:
    """Every checked value that breaks its rule, as `section 'N': key= problem`."""
    problems: list[str] = []
    for cat in config:
        checked = _policy(mode, cat).checked
        if not checked:
            continue
        # Lowercasing only keys that may be checked ones (this runs for every line synced).
        initials = _initials(checked)
        for key, value in cat.lines:
            if key[:1] not in initials:
                continue
            check = checked.get(key.strip().lower())
            if check is not None and (problem := check(value)):
                problems.append(f"section {cat.name!r}: {key}= {problem}")
    return problems


def _initials(checked: Mapping[str, Check]) -> frozenset[str]:
    return frozenset(c for key in checked for c in (key[0], key[0].upper()))


def voicemail_problems(config: ConfigFile) -> list[str]:
    """voicemail_problems for the mailbox sections copied to voicemail_synch.conf."""
    return [
        f"mailbox {key}@{cat.name}: {problem}"
        for cat in config
        for key, value in cat.lines
        if (problem := voicemail_entry_problem(value))
    ]


def without_dropped(config: ConfigFile, mode: str) -> ConfigFile:
    """The config with every dropped key left out (today: endpoints' `transport=`)."""
    return ConfigFile(tuple(_without_dropped(cat, _policy(mode, cat).dropped) for cat in config))


def _without_dropped(cat: Category, dropped: Mapping[str, str]) -> Category:
    if not dropped:
        return cat
    lines = tuple((k, v) for k, v in cat.lines if k.strip().lower() not in dropped)
    if len(lines) == len(cat.lines):
        return cat
    return Category(cat.name, lines, cat.templates, cat.is_template)
