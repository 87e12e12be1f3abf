"""The registration limits of the synced accounts: how long, at most, a phone may wait before
its next REGISTER, read from the synced file (synch.budget's `registration` term).

Pure: the synced file's text in, a `RegistrationLimit` out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from synch.sync.conftext import parse_conf_text
from synch.sync.model import ConfigFile, ConfigParseError

__all__ = [
    "CHAN_SIP_MAXEXPIRY",
    "PJSIP_DEFAULT_EXPIRATION",
    "PJSIP_MAXIMUM_EXPIRATION",
    "RegistrationLimit",
    "observed_limit",
    "registration_limit",
]

# Asterisk's defaults where the synced accounts do not say (res_pjsip's aor, chan_sip).
PJSIP_MAXIMUM_EXPIRATION = 7200
PJSIP_DEFAULT_EXPIRATION = 3600
CHAN_SIP_MAXEXPIRY = 3600
NAMES_SHOWN = 5  # accounts named in a sentence before the rest is only counted


@dataclass(frozen=True)
class RegistrationLimit:
    """What bounds the wait for a phone's next REGISTER, and where that bound comes from."""

    seconds: float
    key: str  # maximum_expiration | maxexpiry | observed
    mode: str  # pjsip | sip
    explicit: bool  # set in the synced file (or observed), not Asterisk's default
    accounts: tuple[str, ...] = ()  # the AORs with the largest value; () = every account
    note: str = ""  # why the default was taken (no synced file yet, ...)

    def describe(self) -> str:
        """Where the value comes from, as a clause: `maximum_expiration 7200 s of AOR 1001`."""
        if self.key == "observed":
            return f"the longest registration interval observed, {seconds_text(self.seconds)}"
        if self.key == "maxexpiry":
            where = (
                "maxexpiry of the synced [general]"
                if self.explicit
                else "chan_sip's default maxexpiry (the central's sip.conf [general] is not synced)"
            )
            return f"{where}, {seconds_text(self.seconds)}"
        what = f"maximum_expiration {seconds_text(self.seconds)}"
        if not self.explicit:
            what += " (Asterisk's default: not set)"
        if self.accounts:
            what += f" of AOR{'s' if len(self.accounts) > 1 else ''} {names_text(self.accounts)}"
        return what + (f"; {self.note}" if self.note else "")


def registration_limit(text: str | None, mode: str, note: str = "") -> RegistrationLimit:
    """The registration bound of the synced file `text` (None: there is none yet) in `mode`.

    PJSIP: the largest `maximum_expiration` over the `type=aor` sections that accept
    registrations (`max_contacts` above 0: a trunk's AOR with a fixed `contact=` takes none);
    a section without it has Asterisk's default. chan_sip: `maxexpiry` of a synced `[general]`,
    which a filtered peer file does not hold, else chan_sip's default. A file that does not
    parse gives the default, with a note.
    """
    if mode not in ("sip", "pjsip"):
        raise ValueError(f"unknown mode {mode!r}")
    config = ConfigFile()
    if text is not None:
        try:
            config = parse_conf_text(text)
        except ConfigParseError:
            # Its content is not quoted: the file may not be what synch wrote.
            note = note or "the synced file does not parse"
    if mode == "sip":
        return _chan_sip_limit(config, note)
    return _pjsip_limit(config, note)


def _number(value: str | None) -> int | None:
    text = (value or "").strip()
    return int(text) if text.isdigit() else None


def _chan_sip_limit(config: ConfigFile, note: str) -> RegistrationLimit:
    for category in config:
        if category.name.lower() == "general":
            value = _number(category.get("maxexpiry"))
            if value is not None:
                return RegistrationLimit(value, "maxexpiry", "sip", explicit=True)
    return RegistrationLimit(CHAN_SIP_MAXEXPIRY, "maxexpiry", "sip", explicit=False, note=note)


def _pjsip_limit(config: ConfigFile, note: str) -> RegistrationLimit:
    limits: dict[str, tuple[int, bool]] = {}  # AOR -> (its limit, set explicitly)
    for category in config:
        if category.is_template or category.type != "aor":
            continue
        if not (_number(category.get("max_contacts")) or 0):
            continue  # no registration accepted: no phone registers here
        value = _number(category.get("maximum_expiration"))
        limits.setdefault(
            category.name,
            (value, True) if value is not None else (PJSIP_MAXIMUM_EXPIRATION, False),
        )
    if not limits:
        why = note or ("no synced account yet" if not len(config) else "no synced AOR accepts "
                       "registrations")  # fmt: skip
        return RegistrationLimit(PJSIP_MAXIMUM_EXPIRATION, "maximum_expiration", "pjsip",
                                 explicit=False, note=why)  # fmt: skip
    largest = max(value for value, _ in limits.values())
    accounts = tuple(name for name, (value, _) in limits.items() if value == largest)
    explicit = all(limits[name][1] for name in accounts)
    return RegistrationLimit(largest, "maximum_expiration", "pjsip", explicit, accounts, note)


def observed_limit(intervals: Sequence[float], mode: str) -> RegistrationLimit | None:
    """The longest of the phones' observed registration intervals (e.g. the expiries the
    central granted their contacts), as the registration bound; None when none is known."""
    known = [float(s) for s in intervals if s > 0]
    if not known:
        return None
    return RegistrationLimit(max(known), "observed", mode, explicit=True)


def names_text(names: Sequence[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    rest = len(names) - NAMES_SHOWN
    return f"{shown} and {rest} more" if rest > 0 else shown


def rounded(seconds: float) -> float | int:
    value = round(seconds, 3)
    return int(value) if value == int(value) else value


def seconds_text(seconds: float) -> str:
    return f"{rounded(seconds)} s"
