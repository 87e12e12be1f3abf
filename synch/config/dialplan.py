"""The `dialplan` section (survivable calling): what the branch's own dialplan may route. The
names and numbers are checked by synch.names, which the dialplan generator shares."""

from __future__ import annotations

from collections.abc import Callable

from synch import names as dialplan_names
from synch.config.reader import _describe, _Section
from synch.config.settings import DialplanSettings


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
