"""The AMI actions synch uses, over any `AmiLike` client, and what a refusal means.

Pure: a helper builds the action's headers, calls the client and reads the reply; it knows
nothing of sockets or deadlines (the client's), so callers and tests can hand it a double.
"""

from __future__ import annotations

import time

from synch.ami.message import AmiError, AmiLike, AmiReply, AmiResponseError
from synch.probe import ProbeResult
from synch.states import BranchCalls

# What the central's manager.conf user needs for an action (FACTS: write= permissions).
PERMISSION_HINTS = {
    "getconfig": "`write = config` (or system)",
    "getconfigjson": "`write = config` (or system)",
    "updateconfig": "`write = config`",
    "createconfig": "`write = config`",
    "reload": "`write = config` (or system)",
    "command": "`write = command`",
    "coreshowchannels": "`write = reporting` (or system)",
    "pjsipshowcontacts": "`write = system` (contact mirroring; `failover.mirrorcontacts` false "
    "does without)",
}


def refusal(
    action: str, reply: AmiReply, *, name: str, where: str, username: str
) -> AmiResponseError:
    """The error for a `Response: Error` answer to `action`, with a hint an operator can act
    on when it is a permission or a login problem."""
    message = reply.message or reply.body or "(no message)"
    text = f"{name} AMI {where}: {action} refused: {message}"
    if message.lower() == "permission denied":
        need = PERMISSION_HINTS.get(action.lower(), "the right read=/write= permission")
        text += (
            f" (the {name}'s manager.conf user '{username}' needs {need} "
            f"for {action}; Ping works without it)"
        )
    elif message.lower() == "authentication failed":
        text += f" (check the username '{username}' and the secret in manager.conf)"
    return AmiResponseError(text, action=action, message=message, reply=reply)


def probe_once(client: AmiLike) -> tuple[ProbeResult, float, str]:
    """One probe (connect and log in if needed, then Ping): (result, seconds taken, error
    text or "")."""
    start = time.monotonic()
    try:
        client.action("Ping")
    except AmiResponseError as exc:
        return ProbeResult.FAILURE, time.monotonic() - start, str(exc)
    except AmiError as exc:
        return ProbeResult.ERROR, time.monotonic() - start, str(exc)
    except Exception as exc:  # a bug must not stop the probe loop; it counts as an error
        return ProbeResult.ERROR, time.monotonic() - start, f"{type(exc).__name__}: {exc}"
    return ProbeResult.SUCCESS, time.monotonic() - start, ""


def get_config(
    client: AmiLike,
    filename: str,
    filter: str | None = None,  # the AMI header's name
    templates: bool = False,
    timeout: float | None = None,
) -> AmiReply:
    """GetConfig of `filename`; `filter` is Asterisk's `key_regex=value_regex[,...]`."""
    headers = {"Filename": filename}
    filters = (["TEMPLATES=include"] if templates else []) + ([filter] if filter else [])
    if filters:
        headers["Filter"] = ",".join(filters)
    return client.action("GetConfig", headers, timeout=timeout)


def core_status(client: AmiLike, timeout: float | None = None) -> dict[str, str]:
    """CoreStatus headers (CoreReloadDate, CoreReloadTime, CoreCurrentCalls, ...)."""
    reply = client.action("CoreStatus", timeout=timeout)
    status: dict[str, str] = {}
    for key, value in reply.headers:
        if key.lower() not in ("response", "actionid"):
            status.setdefault(key, value)
    return status


def reload_module(client: AmiLike, module: str, timeout: float | None = None) -> None:
    """Reload one module (e.g. res_pjsip.so); AmiResponseError if it is not loaded."""
    try:
        client.action("Reload", {"Module": module}, timeout=timeout)
    except AmiResponseError as exc:
        if exc.message.lower() == "no such module":
            note = " (chan_sip does not exist in Asterisk 21+)" if "chan_sip" in module else ""
            raise AmiResponseError(
                f"{exc} (module {module} is not loaded on the {client.name}){note}",
                action=exc.action,
                message=exc.message,
                reply=exc.reply,
            ) from None
        raise


def pjsip_contacts(client: AmiLike, timeout: float | None = None) -> tuple[AmiReply, ...]:
    """Every PJSIP contact the peer holds: PJSIPShowContacts' ContactList events (headers
    ObjectName, Endpoint, Uri, ViaAddr, ViaPort, ExpirationTime, UserAgent, Status, ...)."""
    try:
        return client.action("PJSIPShowContacts", timeout=timeout).events
    except AmiResponseError as exc:
        if exc.message.lower() == "no contacts found":  # Asterisk's answer for an empty list
            return ()
        raise


def branch_calls(client: AmiLike, timeout: float | None = None) -> BranchCalls:
    """The channels up on the peer (CoreShowChannels' CoreShowChannel events, as large as the
    client's reply cap allows) and the calls they make: channels sharing a Linkedid are one
    call (two phones talking, or a phone and a trunk: 2 channels, 1 call)."""
    events = client.action("CoreShowChannels", timeout=timeout).events
    calls = {
        event.get("Linkedid") or event.get("Uniqueid") or event.get("Channel") for event in events
    }
    return BranchCalls(calls=len(calls), channels=len(events))
