"""A scriptable central for races a real Asterisk will not produce on demand (a GetConfig that
takes seconds): the FakeAmi serving FreePBX-style PJSIP files from lab.samples, with a
CoreStatus reload mark that moves whenever the files do."""

from __future__ import annotations

import threading

from lab.samples import PJSIP_KINDS, freepbx_pjsip
from tests.unit.fake_ami import (
    AsteriskBehaviour,
    FakeAction,
    FakeAmi,
    FakeConnection,
    serve_asterisk,
)

Categories = list[tuple[str, list[str]]]


def as_getconfig(text: str) -> Categories:
    """A config file's text as GetConfig hands it over: sections with their `key=value` lines,
    directives and comments gone, `\\;` turned into `;`."""
    categories: Categories = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith((";", "#")):
            continue
        if line.startswith("["):
            categories.append((line[1 : line.index("]")], []))
        else:
            categories[-1][1].append(line.replace("\\;", ";"))
    return categories


class FakeCentral:
    """`with FakeCentral(sites) as central:` a central at `central.port` (user synch/secret)."""

    def __init__(self, sites: dict[str, list[int]]):
        self.configs: dict[str, Categories] = {}
        self.delay: dict[str, float] = {}
        self._reloads = 0
        self._lock = threading.Lock()
        self.set_sites(sites)
        behaviour = AsteriskBehaviour(
            configs=self.configs, delay=self.delay, extra={"corestatus": self._core_status}
        )
        self.server = FakeAmi(lambda conn: serve_asterisk(conn, behaviour))

    @property
    def port(self) -> int:
        return self.server.port

    def set_sites(self, sites: dict[str, list[int]]) -> None:
        files = freepbx_pjsip(sites)
        with self._lock:
            for kind in PJSIP_KINDS:
                name = f"pjsip.{kind}.conf"
                self.configs[name] = as_getconfig(files[name])
            self._reloads += 1

    def get_configs(self) -> int:
        return len(self.server.actions_named("GetConfig"))

    def _core_status(self, conn: FakeConnection, action: FakeAction) -> None:
        with self._lock:
            reloads = self._reloads
        conn.respond(
            action,
            "Success",
            [("CoreReloadDate", "2026-01-01"), ("CoreReloadTime", f"10:{reloads // 60:02d}:"
                                                                   f"{reloads % 60:02d}")],
        )

    def __enter__(self) -> FakeCentral:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
