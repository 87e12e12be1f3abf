"""The one timestamp format the status socket speaks: the original's local `yyyyMMddHHmmss`."""

from __future__ import annotations

from datetime import datetime


def local_stamp(moment: datetime | None = None) -> str:
    return (moment or datetime.now()).strftime("%Y%m%d%H%M%S")
