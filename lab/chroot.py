"""Debian roots made with debootstrap, built once and cached outside the tree.

The lab's is the Debian sid chroot holding Debian's Asterisk 22. Asterisk runs inside it
straight away: it needs neither /proc nor any bind mount (the device nodes debootstrap creates
in <root>/dev are enough), so nothing is mounted and parallel test runs cannot leave mounts
behind. `debian_root` makes others the same way (the package test's clean root).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
SUITE = "sid"
PACKAGES = ("asterisk", "asterisk-modules")
MARKER = ".synch-lab-ready"
ASTERISK_BIN = "usr/sbin/asterisk"


class LabError(RuntimeError):
    """The lab cannot be set up; the message says what is missing."""


def cache_dir() -> Path:
    return Path(os.environ.get("SYNCH_LAB_CACHE", "/var/cache/synch-lab"))


def chroot_dir() -> Path:
    return cache_dir() / "asterisk-sid"


def is_ready(root: Path) -> bool:
    return (root / MARKER).is_file() and (root / ASTERISK_BIN).is_file()


def asterisk_version(root: Path) -> str:
    """`asterisk -V` inside the chroot, e.g. 'Asterisk 22.10.1+dfsg+...'."""
    out = subprocess.run(
        ["chroot", str(root), "/" + ASTERISK_BIN, "-V"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    return out.stdout.strip()


def owner_tag(pid: int) -> str | None:
    """'PID STARTTIME' of a live process (None if gone): lab resources record their owner
    this way, so that a later run can reclaim them without mistaking a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{pid} {stat.rsplit(')', 1)[1].split()[19]}"


def owner_alive(tag: str) -> bool:
    try:
        return owner_tag(int(tag.split()[0])) == tag.strip()
    except (ValueError, IndexError):
        return False


def _require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the Asterisk lab needs root (chroot, chown, network namespaces)")


@contextlib.contextmanager
def _build_lock(cache: Path, name: str = "asterisk-sid") -> Iterator[None]:
    """Serialise builds between processes: the second one waits, then finds the chroot ready."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _progress(stop: threading.Event, started: float, log: Path, label: str) -> None:
    """Elapsed time and debootstrap's latest step on stderr: one self-overwriting line on a
    terminal, a line every 10 s otherwise (CI logs)."""
    tty = sys.stderr.isatty()
    ticks = 0
    while not stop.wait(1.0):
        ticks += 1
        if not tty and ticks % 10:
            continue
        last = ""
        with contextlib.suppress(OSError):
            lines = log.read_text(errors="replace").splitlines()
            last = lines[-1][:70] if lines else ""
        line = f"building {label}: {time.monotonic() - started:4.0f}s {last}"
        sys.stderr.write(f"\r{line:<110}" if tty else line + "\n")
        sys.stderr.flush()


def _debootstrap(
    target: Path, log: Path, suite: str = SUITE, include: Sequence[str] = PACKAGES,
    label: str = "Asterisk lab chroot",
) -> None:
    if not shutil.which("debootstrap"):
        raise LabError("debootstrap is not installed (apt-get install debootstrap)")
    argv = ["debootstrap", "--variant=minbase"]
    if include:
        argv.append("--include=" + ",".join(include))
    argv += [suite, str(target), MIRROR]
    started = time.monotonic()
    stop = threading.Event()
    ticker = threading.Thread(target=_progress, args=(stop, started, log, label), daemon=True)
    ticker.start()
    try:
        with open(log, "w") as out:
            result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
    finally:
        stop.set()
        ticker.join()
        if sys.stderr.isatty():
            sys.stderr.write("\n")
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise LabError(f"{' '.join(argv)} failed (exit {result.returncode}); log {log}:\n{tail}")
    sys.stderr.write(f"built {label} in {time.monotonic() - started:.0f}s\n")


def _unmount_under(path: Path) -> None:
    """Undo mounts an interrupted debootstrap left (its /proc, /sys) before deleting the tree."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


def _write_marker(root: Path) -> None:
    version = asterisk_version(root)
    (root / MARKER).write_text(f"{version}\nready {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")


def _write_if_changed(path: Path, text: str) -> None:
    """Atomic, so that parallel test processes never see half a file."""
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


def _isolate_names(root: Path) -> None:
    """Keep name lookups inside the chroot off the network.

    At start Asterisk (pjproject) resolves the machine's hostname; without an /etc/hosts entry
    that is a DNS query to the host's resolver, and inside a namespace a 20 s stall. The
    hostname goes to /etc/hosts, and any other lookup to a loopback resolver, which fails
    at once unless a test serves DNS there.
    """
    host = socket.gethostname()
    _write_if_changed(root / "etc/hosts",
                      f"127.0.0.1\tlocalhost {host}\n::1\tlocalhost ip6-localhost {host}\n")
    _write_if_changed(root / "etc/resolv.conf",
                      "# synch lab: no upstream resolver\nnameserver 127.0.0.1\n"
                      "options timeout:1 attempts:1\n")


def lab_root() -> Path:
    """The ready chroot, built on first use (about a minute) and reused afterwards."""
    root = chroot_dir()
    if is_ready(root):
        _isolate_names(root)
        return root
    _require_root()
    with _build_lock(cache_dir()):
        if is_ready(root):  # another process built it while we waited for the lock
            _isolate_names(root)
            return root
        if (root / ASTERISK_BIN).is_file():  # complete but made before markers existed
            _write_marker(root)
            _isolate_names(root)
            return root
        tmp = root.with_name(root.name + ".tmp")
        for half_built in (tmp, root):
            if half_built.exists():
                _unmount_under(half_built)
                shutil.rmtree(half_built)
        _debootstrap(tmp, cache_dir() / "asterisk-sid.build.log")
        _write_marker(tmp)
        tmp.rename(root)
        _isolate_names(root)
    return root


def host_suite() -> str:
    """The Debian suite of this machine (VERSION_CODENAME of /etc/os-release)."""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            if key == "VERSION_CODENAME" and value.strip('"'):
                return value.strip('"')
    raise LabError("no VERSION_CODENAME in /etc/os-release: cannot tell this machine's suite")


def debian_root(
    name: str, suite: str, include: Sequence[str] = (), *,
    prepare: Callable[[Path], None] | None = None,
) -> Path:
    """A minimal Debian root (debootstrap --variant=minbase SUITE, plus `include`) at
    cache_dir()/NAME, built once (about a minute) and reused: treat it as read-only and work
    on a copy. `prepare(root)` runs once on a fresh build, before the root is marked ready."""
    root = cache_dir() / name
    if (root / MARKER).is_file():
        return root
    _require_root()
    with _build_lock(cache_dir(), name):
        if (root / MARKER).is_file():
            return root
        tmp = root.with_name(root.name + ".tmp")
        for half_built in (tmp, root):
            if half_built.exists():
                _unmount_under(half_built)
                shutil.rmtree(half_built)
        _debootstrap(tmp, cache_dir() / f"{name}.build.log", suite, include, f"Debian {suite} root")
        if prepare is not None:
            prepare(tmp)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        (tmp / MARKER).write_text(f"debootstrap {suite}\nready {stamp}\n")
        tmp.rename(root)
    return root
