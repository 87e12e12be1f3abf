"""Synced accounts + dialplan settings → `extensions_synch.conf` text. Pure.

FreePBX's own `from-internal` needs its macros, AGI scripts and AstDB, none of which exist on
a plain branch Asterisk. This writes a small, readable dialplan instead: one context for every
`context=` the synced accounts use that `dialplan.contexts` lists (Asterisk merges sections of
the same name, so a context the branch uses otherwise, such as the trunk's inbound one, is
never written: its accounts are left out with a warning), holding, in this order,

1. the emergency numbers, as explicit extensions (Asterisk always prefers an explicit
   extension to any pattern of the same context, so no `_X.` of a route or of the operator can
   take them), sent to the trunk first;
2. the synced extensions: a hint each (`exten => 1001,hint,PJSIP/1001`), so that a phone
   subscribed to another's dialog state (its busy lamp field) gets NOTIFYs at the branch too;
   then ring the phone, then voicemail when it has a mailbox (busy or no answer), else a
   "nobody available" announcement or a busy signal;
3. the central's other extensions (known from its account file): the configured fallback
   through the trunk, else an "all circuits busy" announcement;
4. the voicemail access code (a user's own mailbox, found by the calling endpoint, not by its
   caller ID);
5. the outbound routes to the trunk;
6. `include => synch-unknown`: anything else hears "cannot be completed as dialled". Being in
   an included context it loses to every extension of the context itself, the operator's too.

Every name and number comes from the settings (validated by synch.config) or from the central
(checked here: see synch.names). What the phone dialled reaches an application only
through FILTER() (dialled()): extensions are written as literals, patterns pass it filtered.
An unsafe context or mailbox refuses the whole file (DialplanError); an account whose name is
not a number is left out with a warning (it can still call, nobody can dial it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from synch import names
from synch.config import DialplanSettings
from synch.sync.model import Category, ConfigFile

# Stock sounds of Debian's asterisk-core-sounds-en (checked in the lab chroot).
SOUND_CENTRAL_DOWN = "all-circuits-busy-now"  # "All circuits are busy now, try again later"
SOUND_UNKNOWN = "cannot-complete-as-dialed"  # "...cannot be completed as dialed..."
SOUND_NOBODY = "vm-nobodyavail"  # "Nobody is available to take your call"

# FreePBX writes `mailbox=1001@device` for a user whose voicemail is off (MWI only).
NO_VOICEMAIL = "device"

USER = "synch-user"
EMERGENCY = "synch-emergency"
OUTBOUND = "synch-outbound"
CENTRAL = "synch-central"
VOICEMAIL = "synch-voicemail"
UNKNOWN = "synch-unknown"
# What reaches synch-unknown: any dialled string of digits, '*', '#', '+' (1 character or more).
UNKNOWN_PATTERNS = ("_[0-9*#+]", "_[0-9*#+].")
# The characters of a number that may reach an application. A pattern's `.` matches anything,
# so a phone can dial `0044&PJSIP/00900...`: unfiltered, `&` adds a Dial() leg, `,` and `)`
# end an argument (AST-2010-002).
DIALLED_CHARS = "0-9*#+"


class DialplanError(ValueError):
    """The synced accounts cannot be turned into safe dialplan; `problems` says why."""

    def __init__(self, problems: list[str]):
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__("refused unsafe dialplan input: " + "; ".join(problems[:5]) + more)
        self.problems = problems


@dataclass(frozen=True)
class Account:
    """A synced account as the dialplan sees it."""

    name: str
    context: str
    mailboxes: tuple[tuple[str, str], ...]  # (box, voicemail context), in the account's order


@dataclass(frozen=True)
class Dialplan:
    text: str
    contexts: tuple[str, ...]
    warnings: list[str] = field(default_factory=list)


def accounts_of(synced: ConfigFile, mode: str) -> list[Account]:
    """The dialable accounts of a synced file: PJSIP `type=endpoint` sections, or every
    chan_sip peer; with their `context=` and mailboxes: chan_sip `mailbox=`; PJSIP the
    endpoint's `mailboxes=` (unsolicited MWI), then those of its AORs (`aors=`) not already
    named: the mailboxes a phone subscribes to (FreePBX's MWI type "auto", its default, writes
    them on both; "solicited" on the AOR only)."""
    if mode != "pjsip":
        return [
            Account(cat.name, (cat.get("context") or "").strip(), _boxes(cat, "mailbox"))
            for cat in synced
            if not cat.is_template
        ]
    aors = {cat.name: cat for cat in synced if not cat.is_template and cat.type == "aor"}
    found: list[Account] = []
    for cat in synced:
        if cat.is_template or cat.type != "endpoint":
            continue
        boxes = list(_boxes(cat, "mailboxes"))
        for aor in (a.strip() for value in cat.values("aors") for a in value.split(",")):
            if aor in aors:
                boxes += [b for b in _boxes(aors[aor], "mailboxes") if b not in boxes]
        found.append(Account(cat.name, (cat.get("context") or "").strip(), tuple(boxes)))
    return found


def _boxes(cat: Category, key: str) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for value in cat.values(key):
        pairs += [pair for pair in names.split_mailboxes(value) if pair not in pairs]
    return tuple(pairs)


def central_extensions(central: ConfigFile, mode: str) -> set[str]:
    """The extension numbers the central has (its PJSIP endpoints or chan_sip peers whose name
    is a number: trunks have names, FreePBX extensions are numbers)."""
    return {
        cat.name
        for cat in central
        if not cat.is_template
        and (mode != "pjsip" or cat.type == "endpoint")
        and names.EXTENSION.fullmatch(cat.name)
    }


def check_accounts(accounts: Iterable[Account]) -> list[str]:
    """Every reason these accounts cannot be written as dialplan (unsafe names)."""
    problems: list[str] = []
    for acc in accounts:
        if acc.context and (reason := names.context_problem(acc.context)):
            problems.append(f"account {acc.name!r}: context={acc.context!r} {reason}")
        for box, context in acc.mailboxes:
            if reason := names.mailbox_problem(box, context):
                problems.append(f"account {acc.name!r}: {reason}")
    return problems


def generate(
    synced: ConfigFile,
    settings: DialplanSettings,
    mode: str,
    *,
    header: str,
    central: Collection[str] = (),
    mailboxes: Collection[tuple[str, str]] | None = None,
) -> Dialplan:
    """The dialplan for `synced` (the accounts file just rendered, in `mode` sip|pjsip).

    `central`: the central's extension numbers (central_extensions()); those not synced get
    the central-only treatment. `mailboxes`: the (box, context) pairs that exist in the
    central's voicemail.conf; a mailbox not among them is not used. None: trust `mailboxes=`.
    Raises DialplanError if a name from the central is unsafe.
    """
    accounts = accounts_of(synced, mode)
    problems = check_accounts(accounts)
    if problems:
        raise DialplanError(problems)
    warnings: list[str] = []
    emergency = list(settings.emergency)
    users: dict[str, Account] = {}
    contexts: list[str] = []
    foreign: dict[str, list[str]] = {}  # context not in settings.contexts → its extensions
    for acc in accounts:
        if not names.EXTENSION.fullmatch(acc.name):
            # Not an extension (a trunk picked up by the filter, say): giving its context a
            # dialplan could let calls from the PSTN out through the branch's trunk.
            warnings.append(
                f"account {acc.name!r}: not an extension number, so it gets no "
                "dialplan (it cannot be dialled, and its context is not written)"
            )
            continue
        if not acc.context:
            warnings.append(f"extension {acc.name}: no context=, so it gets no dialplan")
            continue
        if acc.context not in settings.contexts:
            foreign.setdefault(acc.context, []).append(acc.name)
            continue
        if acc.context not in contexts:
            contexts.append(acc.context)
        if acc.name in emergency or acc.name == settings.voicemailaccess:
            warnings.append(f"extension {acc.name} is also a service number; the service wins")
        else:
            users.setdefault(acc.name, acc)
    warnings += [_foreign_warning(c, exts, settings.contexts) for c, exts in foreign.items()]
    boxes = {name: _usable_mailbox(acc, mailboxes, warnings) for name, acc in users.items()}
    others = sorted(
        (
            n
            for n in central
            if n not in users
            and n not in emergency
            and n != settings.voicemailaccess
            and names.EXTENSION.fullmatch(n)
        ),
        key=_numeric,
    )
    out = [_comment(line) for line in header.splitlines()]
    out += _summary(settings, mode)
    for context in contexts:
        out += _context(context, settings, mode, users, boxes, others)
    out += _subroutines(settings, mode, boxes)
    return Dialplan("\n".join(out) + "\n", tuple(contexts), warnings)


def _foreign_warning(context: str, extensions: list[str], allowed: Collection[str]) -> str:
    # Left out, not refused: the name is valid (FreePBX has per-extension contexts), and
    # refusing would stop every other account's sync over one extension's setting.
    which = ", ".join(sorted(extensions, key=_numeric))
    return (
        f"extension(s) {which}: context={context} is not in dialplan.contexts "
        f"({', '.join(allowed)}), so they get no dialplan and [{context}] is not written "
        "(on the branch that name may belong to something else, such as the trunk's inbound "
        "context); add it to dialplan.contexts if it is a context of phones"
    )


def _numeric(ext: str) -> tuple[int, str]:
    return (len(ext), ext)


def _usable_mailbox(
    acc: Account, existing: Collection[tuple[str, str]] | None, warnings: list[str]
) -> str:
    """`box@context` for the account's first mailbox that exists, or ""."""
    for box, context in acc.mailboxes:
        if existing is None or (box, context) in existing:
            return f"{box}@{context}"
    if any(context != NO_VOICEMAIL for _, context in acc.mailboxes):
        listed = ", ".join(f"{b}@{c}" for b, c in acc.mailboxes)
        warnings.append(
            f"extension {acc.name}: mailbox {listed} is not in the central's voicemail.conf: "
            "unanswered calls hear an announcement instead"
        )
    return ""


def _comment(line: str) -> str:
    text = "".join(c if c.isprintable() else "?" for c in line).rstrip()
    return f"; {text}" if text else ";"


def _trunk_dial(settings: DialplanSettings, mode: str, number: str) -> str:
    if mode == "pjsip":
        return f"PJSIP/{number}@{settings.trunk}"
    return f"SIP/{settings.trunk}/{number}"


def _summary(settings: DialplanSettings, mode: str) -> list[str]:
    lines = [
        ";",
        f"; Emergency numbers {', '.join(settings.emergency)} go to "
        f"{_trunk_dial(settings, mode, '<number>')} before anything else, from every context.",
        f"; Local phones ring {settings.ringtimeout} s, then voicemail (if they have a mailbox).",
        "; Each local phone has a hint: busy lamps work at the branch.",
    ]
    if settings.outbound:
        lines.append(f"; Outbound routes to the trunk: {', '.join(settings.outbound)}.")
    if settings.centralfallback:
        lines.append(
            f"; Central-only extensions: dialled as {settings.centralfallback}<ext> "
            "through the trunk."
        )
    else:
        lines.append(f"; Central-only extensions: announcement {SOUND_CENTRAL_DOWN}.")
    lines.append("; Include it from extensions.conf: #include extensions_synch.conf")
    return lines


def _context(
    context: str,
    settings: DialplanSettings,
    mode: str,
    users: dict[str, Account],
    boxes: dict[str, str],
    others: list[str],
) -> list[str]:
    out = ["", f"[{context}]", "; emergency: explicit numbers, matched before any pattern"]
    out += [f"exten => {n},1,Goto({EMERGENCY},{n},1)" for n in settings.emergency]
    # Every synced phone from every context: on the central they all reach each other.
    if users:
        out.append("; phones registered at this branch, each with its hint (busy lamp field)")
    for name in sorted(users, key=_numeric):
        device = f"{_TECH[mode]}/{name}"
        out.append(f"exten => {name},hint,{device}")
        out.append(f"exten => {name},1,Gosub({USER},s,1({device},{boxes[name]}))")
    if others:
        out.append("; extensions that live on the central only")
        out += [f"exten => {n},1,Goto({CENTRAL},{n},1)" for n in others]
    if settings.voicemailaccess and any(boxes.values()):
        out.append("; voicemail: the calling phone's own mailbox")
        out.append(
            f"exten => {settings.voicemailaccess},1,Goto({VOICEMAIL},${{{_CALLER[mode]}}},1)"
        )
    if settings.outbound:
        out.append("; outbound routes")
        for route in settings.outbound:
            prefix, _, pattern = route.rpartition("|")
            exten = _join(prefix, pattern)
            number = dialled(f"${{EXTEN:{len(prefix)}}}" if prefix else "${EXTEN}")
            out.append(f"exten => {exten},1,Gosub({OUTBOUND},s,1({number}))")
    out.append(f"include => {UNKNOWN}")
    return out


# The calling endpoint's name: not its caller ID, which the phone chooses.
_CALLER = {"pjsip": "CHANNEL(endpoint)", "sip": "CHANNEL(peername)"}
_TECH = {"pjsip": "PJSIP", "sip": "SIP"}


def dialled(expression: str) -> str:
    """`${EXTEN}` → `${FILTER(0-9*#+,${EXTEN})}`: a dialled number as an application may see it.
    FILTER takes everything after its first comma as the string, so `,` and `)` in the number
    are filtered out too."""
    return f"${{FILTER({DIALLED_CHARS},{expression})}}"


def _join(prefix: str, pattern: str) -> str:
    """`9` + `_0X.` → `_90X.`; `9` + `112` → `9112`."""
    if pattern.startswith("_"):
        return f"_{prefix}{pattern[1:]}"
    return prefix + pattern


def _subroutines(settings: DialplanSettings, mode: str, boxes: dict[str, str]) -> list[str]:
    out = [
        "",
        f"[{EMERGENCY}]",
        "; no ring timeout, no announcement: the trunk must get the call",
    ]
    for number in settings.emergency:
        out += [
            f"exten => {number},1,NoOp(EMERGENCY call to {number} from ${{CALLERID(all)}})",
            f" same => n,Dial({_trunk_dial(settings, mode, number)})",
            " same => n,Congestion()",
        ]
    out += [
        "",
        f"[{USER}]",
        "; ARG1: the phone, ARG2: its mailbox (box@context) or empty",
        f"exten => s,1,Dial(${{ARG1}},{settings.ringtimeout})",
        ' same => n,GotoIf($["${DIALSTATUS}" = "BUSY"]?busy)',
        ' same => n,GotoIf($["${ARG2}" = ""]?nobody)',
        " same => n,VoiceMail(${ARG2},u)",
        " same => n,Hangup()",
        ' same => n(busy),GotoIf($["${ARG2}" = ""]?engaged)',
        " same => n,VoiceMail(${ARG2},b)",
        " same => n,Hangup()",
        " same => n(engaged),Busy(10)",
        " same => n(nobody),Answer()",
        f" same => n,Playback({SOUND_NOBODY})",
        " same => n,Hangup()",
        "",
        f"[{OUTBOUND}]",
        "; ARG1: the number for the trunk (filtered by the caller, and here again)",
        f"exten => s,1,Dial({_trunk_dial(settings, mode, dialled('${ARG1}'))})",
        ' same => n,GotoIf($["${DIALSTATUS}" = "BUSY"]?busy)',
        " same => n,Congestion()",
        " same => n(busy),Busy(10)",
        "",
        f"[{CENTRAL}]",
        "; extensions of the central, which this branch cannot reach",
    ]
    for pattern in UNKNOWN_PATTERNS:
        if settings.centralfallback:
            number = settings.centralfallback + dialled("${EXTEN}")
            fallback = _trunk_dial(settings, mode, number)
            out += [f"exten => {pattern},1,Dial({fallback})", " same => n,Answer()"]
        else:
            out.append(f"exten => {pattern},1,Answer()")
        out += [f" same => n,Playback({SOUND_CENTRAL_DOWN})", " same => n,Hangup()"]
    if settings.voicemailaccess and any(boxes.values()):
        out += ["", f"[{VOICEMAIL}]", "; the calling endpoint's name → its own mailbox"]
        for name in sorted(boxes, key=_numeric):
            if boxes[name]:
                out.append(f"exten => {name},1,VoiceMailMain({boxes[name]})")
        out += [
            "exten => i,1,Answer()  ; a phone without a mailbox",
            f" same => n,Playback({SOUND_NOBODY})",
            " same => n,Hangup()",
        ]
    out += ["", f"[{UNKNOWN}]", "; included last: everything else"]
    for pattern in UNKNOWN_PATTERNS:
        out += [
            f"exten => {pattern},1,Answer()",
            f" same => n,Playback({SOUND_UNKNOWN})",
            " same => n,Hangup()",
        ]
    return out
