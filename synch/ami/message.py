"""AMI replies and errors: what every layer above the wire speaks.

Pure (no gevent, no socket, no pyst2), so that callers and their tests depend on this and on
`AmiLike`, not on the client. A reply is rebuilt from the raw lines as Asterisk sent them:
order, duplicate keys and whole values kept (pyst2's `ManagerMsg` keeps one value per key).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

OK_RESPONSES = frozenset({"success", "follows", "goodbye"})
KNOWN_RESPONSES = OK_RESPONSES | {"error"}
# A header is `Key: Value`; Asterisk keys are tokens (Line-000000-000001, ActionID, ...).
HEADER = re.compile(r"([A-Za-z0-9_.()/-]+):(.*)", re.DOTALL)


class AmiError(Exception):
    """Any AMI problem."""


class AmiTransportError(AmiError):
    """No usable answer: connect refused or timed out, connection closed, garbage, timeout."""


class AmiResponseError(AmiError):
    """The peer answered `Response: Error`; `message` holds its Message header."""

    def __init__(self, text: str, *, action: str, message: str, reply: AmiReply | None = None):
        super().__init__(text)
        self.action = action
        self.message = message
        self.reply = reply


@dataclass(frozen=True)
class AmiReply:
    """One AMI response: every header line in order (duplicates kept, values whole)."""

    headers: tuple[tuple[str, str], ...]
    body: str = ""  # lines that are not `Key: Value`, e.g. "No categories found"
    # A list action's items (`EventList: start` ... `EventList: Complete`), e.g. the
    # ContactList events of PJSIPShowContacts; the closing event is not among them.
    events: tuple[AmiReply, ...] = ()

    def get(self, key: str, default: str | None = None) -> str | None:
        """The first value of `key` (case-insensitive)."""
        wanted = key.lower()
        for name, value in self.headers:
            if name.lower() == wanted:
                return value
        return default

    def get_all(self, key: str) -> list[str]:
        """Every value of `key` (case-insensitive), in order."""
        wanted = key.lower()
        return [value for name, value in self.headers if name.lower() == wanted]

    @property
    def response(self) -> str:
        return self.get("Response") or ""

    @property
    def message(self) -> str:
        return self.get("Message") or ""

    @property
    def ok(self) -> bool:
        return self.response.lower() in OK_RESPONSES


def parse_reply(lines: Sequence[str]) -> AmiReply:
    """Build an AmiReply from raw lines (pyst2's `ManagerMsg.response`)."""
    headers: list[tuple[str, str]] = []
    body: list[str] = []
    for raw in lines:
        line = raw[:-2] if raw.endswith("\r\n") else raw.rstrip("\n")
        match = HEADER.fullmatch(line)
        if match is None:
            if line:
                body.append(line)
            continue
        value = match.group(2)
        # Asterisk writes exactly one space after the colon; the rest belongs to the value.
        headers.append((match.group(1), value[1:] if value.startswith(" ") else value))
    return AmiReply(headers=tuple(headers), body="\n".join(body))


class AmiLike(Protocol):
    """What callers need of an AMI client (`AmiClient`, or a test double).

    `action` returns the reply to one action, raising AmiResponseError for `Response: Error`
    and AmiTransportError when there is no usable answer; `name` ("central", "branch") is
    used in messages."""

    name: str

    def action(
        self,
        action: str,
        headers: Mapping[str, str | Sequence[str]] | None = None,
        timeout: float | None = None,
    ) -> AmiReply: ...

    def close(self) -> None: ...
