"""Shared fixtures: the real Asterisk lab, local dnsmasq and network namespaces.

Tests that use `lab`/`asterisk_factory` are marked `asterisk` and those that use
`netns_factory` are marked `netns` automatically, so `-m "not asterisk"` selects the
quick ones. Nothing is skipped: a missing prerequisite is a failure that says what is missing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import chroot
from lab.asterisk import AsteriskInstance, new_instance
from lab.dnsmasq import Dnsmasq
from lab.netns import Netns, create_netns

_MARKERS = {"lab": "asterisk", "asterisk_factory": "asterisk", "netns_factory": "netns"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in _MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[_FAILED] = report.failed


_FAILED = pytest.StashKey[bool]()


def _failed(request: pytest.FixtureRequest) -> bool:
    return bool(request.node.stash.get(_FAILED, False))


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config) -> Path:
    """The Asterisk chroot (built on first use, about a minute, then cached)."""
    if os.geteuid() != 0:
        pytest.fail("the Asterisk lab needs root (chroot, chown, namespaces): run as root")
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    try:
        if chroot.is_ready(chroot.chroot_dir()) or capture is None:
            return chroot.lab_root()
        with capture.global_and_fixture_disabled():  # show the build's progress line live
            return chroot.lab_root()
    except chroot.LabError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def asterisk_factory(
    lab: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., AsteriskInstance]]:
    """`asterisk_factory(name, **new_instance_kwargs)` → a started instance; all are stopped
    at teardown. Their directories are kept when the test failed (path printed), else removed."""
    instances: list[AsteriskInstance] = []

    def start(name: str, *, timeout: float = 60, **kwargs: Any) -> AsteriskInstance:
        inst = new_instance(name, **kwargs)
        instances.append(inst)
        inst.start(timeout=timeout)
        return inst

    yield start
    keep = _failed(request) or bool(os.environ.get("SYNCH_LAB_KEEP"))
    for inst in instances:
        inst.stop()
        if keep:
            sys.stderr.write(f"\nkept Asterisk instance {inst.name}: {inst.host_dir}\n")
        else:
            inst.remove()


@pytest.fixture
def dnsmasq() -> Iterator[Callable[..., Dnsmasq]]:
    """`dnsmasq({"name": "ip"}, port=None)` → a running loopback dnsmasq; stopped at teardown."""
    servers: list[Dnsmasq] = []

    def start(records: dict[str, str] | None = None, port: int | None = None) -> Dnsmasq:
        server = Dnsmasq(port, records)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def netns_factory() -> Iterator[Callable[..., Netns]]:
    """`netns_factory(resolv_conf=None)` → a namespace joined to the host by a veth pair;
    every one is deleted at teardown."""
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root: run as root")
    made: list[Netns] = []

    def create(resolv_conf: str | None = None) -> Netns:
        ns = create_netns(resolv_conf)
        made.append(ns)
        return ns

    yield create
    for ns in made:
        ns.delete()
