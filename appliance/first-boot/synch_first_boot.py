#!/usr/bin/python3
"""First boot of a synch branch appliance.

Runs once (synch-first-boot.service disables itself afterwards) and:

* generates the branch AMI secret of the `synch` user, written into both manager.conf and
  appsettings.json (`amilocal.password`), so no two cards share it;
* installs the site's settings from `synch.json` on the FAT boot partition, after
  `synch check-config` accepted it, as /etc/synch/appsettings.json (0600), and deletes it from
  the boot partition since it holds passwords. A refused file is renamed `synch.json.rejected`
  with the problems in `synch.json.errors.txt` beside it, and nothing of it is applied;
* sets the hostname from a `hostname` file on the boot partition (a separate file because
  synch refuses unknown keys in its own settings);
* generates the SSH host keys.

Each step runs whatever happened to the one before: a step that fails is logged and the next
ones are still done (a card must never boot without its SSH host keys because of a typo in
synch.json), and the script then exits non-zero so that the next boot tries again.

Everything it does is logged to stdout (the journal) and /var/log/synch-first-boot.log.
It runs with the system python3 and reads settings with synch's own parser (synch.jsonc), from
the virtualenv of the `--synch` command (/opt/synch): a file `synch check-config` accepts is
accepted here, read the same way, and edited without losing its comments.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import re
import secrets
import shutil
import site
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")

SITE_SETTINGS = "synch.json"
HOSTNAME_FILE = "hostname"
SECRET_PLACEHOLDER = "SYNCH_FIRST_BOOT_SECRET"
INSTALLED_HEADER = "// Installed by synch-first-boot"
SERVICE_USER = "asterisk"
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
MANAGER_SECRET_RE = re.compile(r"^(\s*secret\s*=>?\s*)(\S*)(.*)$")


@dataclass(frozen=True)
class Paths:
    """Where things are; `root` is "/" on the device and a directory tree in tests."""

    root: Path
    boot: Path
    synch: str

    @property
    def settings(self) -> Path:
        return self.root / "etc/synch/appsettings.json"

    @property
    def manager_conf(self) -> Path:
        return self.root / "etc/asterisk/manager.conf"

    @property
    def log_file(self) -> Path:
        return self.root / "var/log/synch-first-boot.log"

    @property
    def live(self) -> bool:
        return self.root == Path("/")


class Log:
    """One line per action, to stdout (the journal) and to the log file. A log file that
    cannot be written never stops the boot: the journal still has every line."""

    def __init__(self, path: Path):
        self.path = path
        self.file_ok = True

    def __call__(self, message: str) -> None:
        print(message, flush=True)
        if not self.file_ok:
            return
        stamp = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(f"{stamp} {message}\n")
        except OSError as err:
            self.file_ok = False
            print(f"warning: cannot write {self.path}: {err}", flush=True)


# --- settings, read by synch's own parser ------------------------------------------------


def use_synch_of(command: str) -> None:
    """Make the synch of `command` importable: its virtualenv's site-packages (the image's
    /opt/synch was made by this same python3, so the version matches). A python that already
    imports synch (a test's virtualenv) finds it anyway."""
    venv = Path(command).resolve().parent.parent
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    packages = venv / "lib" / version / "site-packages"
    if packages.is_dir():
        site.addsitedir(str(packages))


def jsonc() -> ModuleType:
    """synch.jsonc: the parser `synch check-config` uses (ImportError if synch is missing)."""
    return importlib.import_module("synch.jsonc")


def read_text(path: Path) -> str:
    """A text file as synch reads its settings: UTF-8, a leading BOM dropped."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text (byte {err.start})") from None


def with_ami_password(text: str, password: str, origin: str) -> str:
    """The settings text with amilocal.password set, read and edited by synch's own parser:
    everything else, comments included, stays as written. Raises ValueError."""
    edited: str = jsonc().set_member(text, "amilocal", "password", password)
    if edited.startswith(INSTALLED_HEADER):
        return edited
    return f"{INSTALLED_HEADER} from {origin}; amilocal.password generated.\n{edited}"


# --- files --------------------------------------------------------------------------------


def service_ids(root: Path, user: str = SERVICE_USER) -> tuple[int, int] | None:
    """uid/gid of `user` from root's own /etc/passwd (the tree may not be this system)."""
    try:
        for line in (root / "etc/passwd").read_text(encoding="utf-8").splitlines():
            fields = line.split(":")
            if len(fields) > 3 and fields[0] == user:
                return int(fields[2]), int(fields[3])
    except OSError:
        pass
    return None


def write_atomic(path: Path, text: str, mode: int, owner: tuple[int, int] | None) -> None:
    """Temp file, fsync, rename: the file is either the old one or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems (FAT on some kernels) refuse directory fsync
        pass
    finally:
        os.close(fd)


# --- the steps ----------------------------------------------------------------------------


def ami_secret(paths: Paths, log: Log) -> str | None:
    """Put a fresh secret in manager.conf in place of the placeholder; return the secret.

    Already replaced (a second run): the secret in place is returned unchanged.
    """
    if not paths.manager_conf.exists():
        log(f"warning: {paths.manager_conf} missing: no branch AMI secret generated")
        return None
    lines = read_text(paths.manager_conf).splitlines(keepends=True)
    section, found = "", None
    for n, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped[1 : stripped.index("]")] if "]" in stripped else ""
            continue
        m = MANAGER_SECRET_RE.match(line.rstrip("\n"))
        if section == "synch" and m:
            found = (n, m)
            break
    if found is None:
        log(f"warning: no [synch] secret in {paths.manager_conf}: left as it is")
        return None
    n, m = found
    if m.group(2) != SECRET_PLACEHOLDER:
        log("branch AMI secret already generated: kept")
        return m.group(2)
    secret = secrets.token_urlsafe(24)
    lines[n] = f"{m.group(1)}{secret}{m.group(3)}\n"
    owner = service_ids(paths.root)
    write_atomic(paths.manager_conf, "".join(lines), 0o640, owner)
    log(f"generated the branch AMI secret of user synch in {paths.manager_conf}")
    return secret


def check_config(paths: Paths, path: Path) -> tuple[bool, str]:
    """Run `synch check-config`; (accepted, its output)."""
    try:
        proc = subprocess.run(
            [paths.synch, "check-config", "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"could not run {paths.synch} check-config: {err}\n"
    output = proc.stdout + proc.stderr
    if proc.returncode not in (0, 2):
        output += f"(check-config exited with status {proc.returncode})\n"
    return proc.returncode == 0, output


def reject(site: Path, errors: str, log: Log, why: str = "synch check-config refused it") -> None:
    """Keep the refused file aside with its problems next to it; apply nothing of it."""
    rejected = site.with_name(site.name + ".rejected")
    report = site.with_name(site.name + ".errors.txt")
    report.write_text(
        f"{site.name} was NOT applied: {why}.\n"
        f"Fix it, rename it back to {site.name} and boot again.\n\n{errors}",
        encoding="utf-8",
    )
    os.replace(site, rejected)
    sync_dir(site.parent)
    log(f"REJECTED {site}: kept as {rejected}, problems in {report}")
    for line in errors.strip().splitlines():
        log(f"  {line}")


def install_site_settings(paths: Paths, secret: str | None, log: Log) -> None:
    site = paths.boot / SITE_SETTINGS
    if not site.exists():
        log(f"no {site}: keeping {paths.settings}")
        return
    ok, output = check_config(paths, site)
    if not ok:
        reject(site, output, log)
        return
    try:
        text = read_text(site)
        final = text if secret is None else with_ami_password(text, secret, str(site))
    except (ValueError, ImportError) as err:
        reject(site, f"{err}\n", log, why="it could not be read as synch settings")
        return
    staged = paths.settings.with_name(".appsettings.staged.json")
    write_atomic(staged, final, 0o600, None)
    try:
        ok, output = check_config(paths, staged)
        if not ok:
            reject(site, output.replace(str(staged), "synch.json with amilocal.password"), log)
            return
    finally:
        staged.unlink(missing_ok=True)
    write_atomic(paths.settings, final, 0o600, service_ids(paths.root))
    log(f"installed {site} as {paths.settings} (0600, owner {SERVICE_USER})")
    site.unlink()
    sync_dir(site.parent)
    log(f"removed {site} from the boot partition (it holds passwords)")


def default_settings_secret(paths: Paths, secret: str, log: Log) -> None:
    """Give the shipped default settings the branch AMI secret too."""
    if not paths.settings.exists():
        log(f"warning: {paths.settings} missing")
        return
    final = with_ami_password(read_text(paths.settings), secret, str(paths.settings))
    write_atomic(paths.settings, final, 0o600, service_ids(paths.root))
    log(f"set amilocal.password in {paths.settings}")


def set_hostname(paths: Paths, log: Log, apply: Callable[[str], None]) -> None:
    source = paths.boot / HOSTNAME_FILE
    if not source.exists():
        return
    try:
        name = read_text(source).strip().lower()
    except ValueError as err:
        reject(source, f"{err}\n", log, why="it is not a host name")
        return
    if not HOSTNAME_RE.match(name):
        problem = f"{name!r} is not a hostname (letters, digits, '-', 1-63 chars)\n"
        reject(source, problem, log, why="it is not a host name")
        return
    write_atomic(paths.root / "etc/hostname", name + "\n", 0o644, None)
    hosts = paths.root / "etc/hosts"
    lines = hosts.read_text(encoding="utf-8").splitlines() if hosts.exists() else []
    lines = [ln for ln in lines if not ln.startswith("127.0.1.1")] + [f"127.0.1.1\t{name}"]
    write_atomic(hosts, "\n".join(lines) + "\n", 0o644, None)
    apply(name)
    source.unlink()
    log(f"hostname set to {name}")


def ssh_host_keys(paths: Paths, log: Log) -> None:
    keygen = shutil.which("ssh-keygen")
    if keygen is None or not (paths.root / "etc/ssh").is_dir():
        log("no ssh: no host keys generated")
        return
    args = [keygen, "-A"] if paths.live else [keygen, "-A", "-f", str(paths.root)]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ssh-keygen -A exited {done.returncode}: {done.stderr.strip()}")
    log("generated SSH host keys")


class Steps:
    """Runs each step whatever happened before: a failure is logged, and remembered."""

    def __init__(self, log: Log):
        self.log = log
        self.failed: list[str] = []

    def __call__(self, name: str, action: Callable[[], T]) -> T | None:
        try:
            return action()
        except Exception as err:  # the next steps must run, whatever this was
            self.failed.append(name)
            self.log(f"error: {name} failed: {type(err).__name__}: {err}")
            return None


def run(paths: Paths, apply_hostname: Callable[[str], None]) -> int:
    log = Log(paths.log_file)
    log(f"first boot: boot partition {paths.boot}")
    step = Steps(log)
    step("finding synch", lambda: use_synch_of(paths.synch))
    secret = step(f"branch AMI secret ({paths.manager_conf})", lambda: ami_secret(paths, log))
    if secret is not None:
        step(
            f"amilocal.password in {paths.settings}",
            lambda: default_settings_secret(paths, secret, log),
        )
    step(f"site settings ({SITE_SETTINGS})", lambda: install_site_settings(paths, secret, log))
    step("hostname", lambda: set_hostname(paths, log, apply_hostname))
    step("SSH host keys", lambda: ssh_host_keys(paths, log))
    if step.failed:
        log(f"first boot done, with errors in: {'; '.join(step.failed)} (retried at next boot)")
        return 1
    log("first boot done")
    return 0


def parse_args(argv: list[str]) -> Paths:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="/", help="system root (a tree for tests)")
    p.add_argument("--boot", default=None, help="boot partition (default /boot/firmware)")
    p.add_argument("--synch", default="/opt/synch/bin/synch", help="the synch command")
    a = p.parse_args(argv)
    root = Path(a.root)
    if a.boot:
        boot = Path(a.boot)
    else:  # Raspberry Pi OS since bookworm mounts it at /boot/firmware, before at /boot
        boot = root / "boot/firmware"
        boot = boot if boot.is_dir() else root / "boot"
    return Paths(root=root, boot=boot, synch=a.synch)


def main(argv: list[str] | None = None) -> int:
    paths = parse_args(sys.argv[1:] if argv is None else argv)
    apply = socket.sethostname if paths.live else (lambda name: None)
    return run(paths, apply)


if __name__ == "__main__":
    sys.exit(main())
