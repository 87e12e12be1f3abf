"""The systemd notifier never raises and never blocks: one socket, opened at start, reused."""

from __future__ import annotations

import errno
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest

import synch.sdnotify
from synch.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Any:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every new socket fails as in a process out of file descriptors."""

    def emfile(*args: Any, **kwargs: Any) -> socket.socket:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(synch.sdnotify.socket, "socket", emfile)


def test_pings_reuse_the_socket_opened_at_start(
    listener: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    no_sockets(monkeypatch)
    assert notifier.watchdog() is True
    assert notifier.watchdog() is True
    assert sock.recv(100) == b"WATCHDOG=1"
    notifier.close()


def test_no_socket_at_start_is_reported_not_raised_and_retried(
    listener: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sock, path = listener
    with monkeypatch.context() as patched, caplog.at_level(logging.WARNING, logger="synch"):
        no_sockets(patched)
        notifier = Notifier({"NOTIFY_SOCKET": path})
        assert notifier.ready() is False
        assert notifier.watchdog() is False
    warnings = [r for r in caplog.records if "notification failed" in r.getMessage()]
    assert len(warnings) == 1  # once per run of failures, not once per ping
    assert notifier.watchdog() is True  # descriptors are back: it opens one and sends
    assert sock.recv(100) == b"WATCHDOG=1"
    notifier.close()


def test_a_vanished_or_full_receiver_costs_false_never_an_exception_or_a_wait(
    listener: Any,
) -> None:
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    started = time.monotonic()
    results = [notifier.watchdog() for _ in range(5000)]  # nobody reads: the queue fills
    assert time.monotonic() - started < 30  # bounded: a blocking send would never return
    assert results[0] is True and False in results
    sock.close()
    Path(path).unlink()
    assert notifier.stopping() is False
    notifier.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_seconds is None
    assert notifier.ready("x") is False
