"""What may appear in generated dialplan: every name and number checked before it is written.

Pure and import-free, below both the settings (synch.config validates the `dialplan` section
with it) and the generator (synch.dialplan), so that they share one set of rules. Each
check returns the reason a value is refused, or None when it is safe. The rules are narrower
than Asterisk's: anything that could end an argument (`,` `)`), start an expression (`$[`,
`${`), a comment (`;`) or a new line is refused, so no value from the central or the settings
can add dialplan of its own.
"""

from __future__ import annotations

import re

# Dialplan context names: FreePBX uses from-internal, from-internal-xyz, ext-local...
CONTEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,78}")
# An extension synch dials: digits only (FreePBX extension numbers). A leading '_' would make
# it a pattern, letters could spell `s`, `i`, `h`, `t` (Asterisk's special extensions).
EXTENSION = re.compile(r"[0-9]{1,20}")
# A dialled number given explicitly (emergency numbers, the voicemail access code).
NUMBER = re.compile(r"[0-9*#]{1,20}")
# An Asterisk extension pattern: `_` then digits, X/Z/N, simple [ranges], *, #, + and an
# optional final `.` or `!`.
PATTERN = re.compile(r"_(?:[0-9XZNxzn*#+]|\[[0-9*#+-]+\]){1,40}[.!]?")
# A dial prefix that a route strips (`9|_0X.`) or prepends (centralfallback).
PREFIX = re.compile(r"[0-9*#]{1,20}")
FALLBACK_PREFIX = re.compile(r"\+?[0-9]{1,20}")
# The trunk: a PJSIP endpoint or chan_sip peer name of the branch's own configuration.
TRUNK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,78}")
# A voicemail mailbox and its voicemail.conf context: `1001@default`.
MAILBOX = re.compile(r"[A-Za-z0-9_-]{1,40}")
VM_CONTEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,78}")

# extensions.conf sections that are not contexts; voicemail.conf sections that hold no mailboxes.
RESERVED_CONTEXTS = frozenset({"general", "globals"})
RESERVED_VM_CONTEXTS = frozenset({"general", "zonemessages", "aliases"})
# Contexts the generated file defines for itself; a central context must not be one of them.
OWN_PREFIX = "synch-"


def context_problem(name: str) -> str | None:
    if not CONTEXT.fullmatch(name):
        return "is not a plain dialplan context name (letters, digits, '-', '_'; up to 79)"
    if name.lower() in RESERVED_CONTEXTS:
        return f"[{name}] is a reserved section of extensions.conf, not a context"
    if name.lower().startswith(OWN_PREFIX):
        return f"names starting with {OWN_PREFIX!r} are synch's own contexts"
    return None


def number_problem(value: str) -> str | None:
    if not NUMBER.fullmatch(value):
        return "must be a number: 1 to 20 of 0-9, '*', '#'"
    return None


def trunk_problem(value: str) -> str | None:
    if not TRUNK.fullmatch(value):
        return "must be an endpoint/peer name (letters, digits, '.', '-', '_'; up to 79)"
    return None


def fallback_problem(value: str) -> str | None:
    if not FALLBACK_PREFIX.fullmatch(value):
        return "must be a dial prefix: digits, optionally after one leading '+'"
    return None


def route_problem(value: str) -> str | None:
    """An outbound route: `PATTERN`, `NUMBER`, or `PREFIX|PATTERN` (dialled with PREFIX, sent
    to the trunk without it, as FreePBX writes its route prefixes)."""
    prefix, sep, rest = value.rpartition("|")
    if sep and not PREFIX.fullmatch(prefix):
        return f"prefix {prefix!r} before '|' must be digits, '*' or '#'"
    if PATTERN.fullmatch(rest) or NUMBER.fullmatch(rest):
        return None
    return (
        "must be an Asterisk pattern like _0XXXXXXXXX or _00X. (X Z N, digits, [1-5], *, #, +, "
        "final . or !), a plain number, or PREFIX|PATTERN like 9|_0X."
    )


def mailbox_problem(box: str, context: str) -> str | None:
    if not MAILBOX.fullmatch(box):
        return f"mailbox {box!r} is not a plain mailbox number"
    if not VM_CONTEXT.fullmatch(context):
        return f"voicemail context {context!r} is not a plain name"
    if context.lower() in RESERVED_VM_CONTEXTS:
        return f"[{context}] of voicemail.conf holds settings, not mailboxes"
    return None


def split_mailboxes(value: str) -> list[tuple[str, str]]:
    """`1001@default,1002` (PJSIP `mailboxes=`, chan_sip `mailbox=`, '&' of old) → pairs,
    the context `default` when none is given, as app_voicemail reads it."""
    pairs: list[tuple[str, str]] = []
    for part in re.split(r"[,&]", value):
        part = part.strip()
        if not part:
            continue
        box, _, context = part.partition("@")
        pair = (box.strip(), context.strip() or "default")
        if pair not in pairs:
            pairs.append(pair)
    return pairs
