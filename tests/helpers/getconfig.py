"""The recorded GetConfig replies in tests/fixtures/getconfig, parsed as synch parses them."""

from __future__ import annotations

from pathlib import Path

from synch.sync.getconfig import parse_getconfig, split_reply
from synch.sync.model import ConfigFile

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "getconfig"


def load(name: str) -> ConfigFile:
    """The ConfigFile of the recorded reply `name` (e.g. "sip_additional.ami")."""
    return parse_getconfig(*split_reply((FIXTURES / name).read_text(encoding="utf-8")))
