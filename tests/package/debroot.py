"""Working copies of a cached minimal Debian root, and commands inside them: with chroot, or
booted under systemd in systemd-nspawn (its own network namespace, loopback only).

The cached root (lab.chroot.debian_root) is never changed: each test works on a copy. apt's
downloads are kept beside it (NAME.archives) and copied into each working root, so that
only the first run fetches the packages synch depends on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from lab import chroot

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APT = "apt-get -q -y -o Acquire::Retries=3 -o Acquire::Check-Valid-Until=false"


def base_root() -> tuple[Path, str]:
    """The host's Debian suite, minbase plus systemd (so the service can boot); cached."""
    suite = chroot.host_suite()
    return chroot.debian_root(f"debian-{suite}-systemd", suite, include=("systemd",)), suite


class CommandFailed(AssertionError):
    pass


def _result(argv: list[str], proc: subprocess.CompletedProcess[str], check: bool
            ) -> subprocess.CompletedProcess[str]:
    if check and proc.returncode != 0:
        raise CommandFailed(f"{argv[-1]!r} exited {proc.returncode}\n--- stdout\n"
                            f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return proc


class Root:
    """A working copy of a root; `sh` runs a shell command in it with chroot."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def copy_of(cls, source: Path, path: Path) -> Root:
        subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(path)], check=True)
        return cls(path)

    def __truediv__(self, rel: str) -> Path:
        return self.path / rel.lstrip("/")

    def sh(self, command: str, *, check: bool = True, timeout: float = 600,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        variables = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8",
                     "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
        argv = ["chroot", str(self.path), "/usr/bin/env", "-i",
                *(f"{k}={v}" for k, v in variables.items()), "/bin/sh", "-ec", command]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        return _result(argv, proc, check)

    def use_network(self) -> None:
        """The host's resolver, for apt."""
        shutil.copy("/etc/resolv.conf", self / "etc/resolv.conf")

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


@contextlib.contextmanager
def apt_archives(root: Root, cache: Path) -> Iterator[None]:
    """apt's downloads: from CACHE into the root before, new ones back to CACHE after."""
    archives = root / "var/cache/apt/archives"
    archives.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    for deb in cache.glob("*.deb"):
        if not (archives / deb.name).exists():
            shutil.copy2(deb, archives / deb.name)
    try:
        yield
    finally:
        for deb in archives.glob("*.deb"):
            if not (cache / deb.name).exists():
                tmp = cache / f".{deb.name}.{os.getpid()}"
                shutil.copy2(deb, tmp)
                tmp.replace(cache / deb.name)


# Left out of the before/after comparison: the package manager's own records and caches,
# logs, and what exists only while something runs.
VOLATILE = (
    "proc", "sys", "dev", "run", "tmp", "var/tmp", "var/log", "var/lib/dpkg", "var/lib/apt",
    "var/cache/apt", "var/cache/debconf", "var/cache/ldconfig", "etc/ld.so.cache",
)

Entry = tuple[str, int, int, int, int, int, str]


def snapshot(root: Path) -> dict[str, Entry]:
    """Every path of the root (but VOLATILE) -> (kind, mode, uid, gid, size, mtime, link)."""
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir
        dirnames[:] = [d for d in dirnames if os.path.join(rel_dir, d) not in VOLATILE]
        for name in [*dirnames, *filenames]:
            rel = os.path.join(rel_dir, name)
            if rel in VOLATILE:
                continue
            st = os.lstat(os.path.join(dirpath, name))
            kind = ("l" if os.path.islink(os.path.join(dirpath, name))
                    else "d" if name in dirnames else "f")
            link = os.readlink(os.path.join(dirpath, name)) if kind == "l" else ""
            size = st.st_size if kind == "f" else 0
            mtime = st.st_mtime_ns if kind == "f" else 0
            out[rel] = (kind, st.st_mode, st.st_uid, st.st_gid, size, mtime, link)
    return out


def difference(before: dict[str, Entry], after: dict[str, Entry]) -> dict[str, str]:
    """path -> 'added' | 'removed' | 'changed'."""
    diff = {p: "added" for p in after.keys() - before.keys()}
    diff |= {p: "removed" for p in before.keys() - after.keys()}
    diff |= {p: "changed" for p in before.keys() & after.keys() if before[p] != after[p]}
    return dict(sorted(diff.items()))


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


class Booted:
    """The root booted under systemd in systemd-nspawn: its own network namespace with only
    loopback (nothing of it reaches the host's ports), no machined registration (no D-Bus on
    the host needed). Commands run inside with nsenter."""

    def __init__(self, root: Root, log: Path) -> None:
        self.root, self.log = root, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    def start(self, timeout: float = 120) -> None:
        machine = f"synch-deb-{os.getpid()}-{int(time.monotonic() * 1000) % 100000}"
        self.init_pid = 0
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
                 "--private-network", f"--machine={machine}", "-D", str(self.root.path),
                 "-b", "--console=passive"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self.init_pid:
            self._alive()
            kids = _children(self.proc.pid)
            if kids:
                self.init_pid = kids[0]
            elif time.monotonic() > deadline:
                raise AssertionError(f"systemd-nspawn started no init; log {self.log}")
            else:
                time.sleep(0.2)
        state = ""
        while state not in ("running", "degraded"):
            self._alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"the container's systemd is {state!r} after {timeout} s; "
                                     f"log {self.log}")
            time.sleep(0.5)
            state = self.sh("systemctl is-system-running || true", check=False).stdout.strip()

    def _alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self.proc.returncode}: "
                                 f"{self.log.read_text(errors='replace')[-3000:]}")

    def sh(self, command: str, *, check: bool = True, timeout: float = 300
           ) -> subprocess.CompletedProcess[str]:
        argv = ["nsenter", "-t", str(self.init_pid), "-a", "/usr/bin/env", "-i",
                f"PATH={PATH}", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive",
                "/bin/sh", "-ec", command]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        return _result(argv, proc, check)

    def unit(self, name: str) -> dict[str, str]:
        props = "ActiveState,SubState,Result,ExecMainStatus,NRestarts,MainPID"
        out = self.sh(f"systemctl show -p {props} {name}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_unit(self, name: str, states: tuple[str, ...], timeout: float = 60
                  ) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            props = self.unit(name)
            if props.get("ActiveState") in states:
                return props
            if time.monotonic() > deadline:
                journal = self.sh(f"journalctl -u {name} --no-pager -n 30 -o cat",
                                  check=False).stdout
                raise AssertionError(f"{name} is {props}, not {states}:\n{journal}")
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM makes systemd-nspawn halt the container cleanly."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
