"""First boot against a directory tree standing for /etc, /var/log and the boot partition."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from synch.jsonc import loads

TOP = Path(__file__).resolve().parents[2]
SCRIPT = TOP / "appliance/first-boot/synch_first_boot.py"
MANAGER_CONF = TOP / "appliance/asterisk/manager.conf"
SERVICE_UID, SERVICE_GID = 4242, 4343


def load_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("synch_first_boot", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fb = load_module()

# Stands for `synch check-config`: refuses a file that mentions "bogus", like synch's strict
# key check would, and reports it the way synch does (exit 2, problems on stderr).
FAKE_SYNCH = """#!/bin/sh
[ "$1" = check-config ] || exit 64
if grep -q bogus "$3"; then
    echo "$3: 1 problem(s):" >&2
    echo "  dnsservice.bogus: unknown key" >&2
    exit 2
fi
echo "$3: OK"
"""

SITE = """{
  // the site's settings, with a comment and a URL-like string
  "AmiRemote": { "Hostname": "10.1.2.3", "Password": "central-secret" },
  "dnsservice": { "domain": "branch.example", "note": "http://x//y" } /* block */
}
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc/synch").mkdir(parents=True)
    (root / "etc/asterisk").mkdir(parents=True)
    (root / "boot/firmware").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        f"root:x:0:0:root:/root:/bin/sh\nasterisk:x:{SERVICE_UID}:{SERVICE_GID}::/:/bin/false\n"
    )
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    (root / "etc/asterisk/manager.conf").write_text(MANAGER_CONF.read_text())
    (root / "etc/synch/appsettings.json").write_text('{ // default\n "amilocal": {} }\n')
    synch = tmp_path / "synch"
    synch.write_text(FAKE_SYNCH)
    synch.chmod(0o755)
    return root


def run_first_boot(root: Path, synch: Path | None = None) -> subprocess.CompletedProcess[str]:
    synch = synch or root.parent / "synch"
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), "--synch", str(synch)],
        capture_output=True,
        text=True,
        check=True,
    )


def manager_secret(root: Path) -> str:
    text = (root / "etc/asterisk/manager.conf").read_text()
    section = text.split("[synch]", 1)[1]
    return next(
        ln.split("=", 1)[1].strip() for ln in section.splitlines() if ln.startswith("secret")
    )


def settings(root: Path) -> dict[str, object]:
    doc = loads((root / "etc/synch/appsettings.json").read_text())
    assert isinstance(doc, dict)
    return doc


def test_valid_site_settings_installed_and_removed_from_boot(tree: Path) -> None:
    (tree / "boot/firmware/synch.json").write_text(SITE)
    out = run_first_boot(tree).stdout

    assert not (tree / "boot/firmware/synch.json").exists()
    installed = tree / "etc/synch/appsettings.json"
    st = installed.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (SERVICE_UID, SERVICE_GID)
    doc = settings(tree)
    assert doc["AmiRemote"] == {"Hostname": "10.1.2.3", "Password": "central-secret"}
    secret = manager_secret(tree)
    assert secret != fb.SECRET_PLACEHOLDER and len(secret) >= 24
    assert doc["amilocal"] == {"password": secret}
    assert "removed" in out and "installed" in out
    assert "installed" in (tree / "var/log/synch-first-boot.log").read_text()


def test_refused_site_settings_kept_aside_and_not_applied(tree: Path) -> None:
    (tree / "boot/firmware/synch.json").write_text('{ "dnsservice": { "bogus": 1 } }')
    run_first_boot(tree)

    boot = tree / "boot/firmware"
    assert not (boot / "synch.json").exists()
    assert "bogus" in (boot / "synch.json.rejected").read_text()
    errors = (boot / "synch.json.errors.txt").read_text()
    assert "dnsservice.bogus: unknown key" in errors and "NOT applied" in errors
    # The default settings stay, with the branch secret only.
    assert settings(tree) == {"amilocal": {"password": manager_secret(tree)}}
    assert "REJECTED" in (tree / "var/log/synch-first-boot.log").read_text()


def test_validator_that_cannot_run_rejects(tree: Path) -> None:
    (tree / "boot/firmware/synch.json").write_text(SITE)
    run_first_boot(tree, synch=tree / "no-such-synch")
    assert (tree / "boot/firmware/synch.json.rejected").exists()
    assert "could not run" in (tree / "boot/firmware/synch.json.errors.txt").read_text()


def test_no_site_settings_keeps_default_with_secret(tree: Path) -> None:
    run_first_boot(tree)
    assert settings(tree) == {"amilocal": {"password": manager_secret(tree)}}
    assert list((tree / "boot/firmware").iterdir()) == []


def test_second_run_keeps_the_secret(tree: Path) -> None:
    run_first_boot(tree)
    first = manager_secret(tree)
    (tree / "boot/firmware/synch.json").write_text(SITE)
    run_first_boot(tree)
    assert manager_secret(tree) == first
    assert settings(tree)["amilocal"] == {"password": first}


def test_secrets_differ_between_devices(tree: Path, tmp_path: Path) -> None:
    run_first_boot(tree)
    other = tmp_path / "other"
    (other / "etc/asterisk").mkdir(parents=True)
    (other / "etc/asterisk/manager.conf").write_text(MANAGER_CONF.read_text())
    (other / "boot").mkdir()
    run_first_boot(other, synch=tree.parent / "synch")
    assert manager_secret(tree) != manager_secret(other)


def test_hostname_from_boot_partition(tree: Path) -> None:
    (tree / "boot/firmware/hostname").write_text("Branch-07\n")
    run_first_boot(tree)
    assert (tree / "etc/hostname").read_text() == "branch-07\n"
    hosts = (tree / "etc/hosts").read_text()
    assert "127.0.1.1\tbranch-07" in hosts and "raspberrypi" not in hosts
    assert not (tree / "boot/firmware/hostname").exists()


def test_bad_hostname_rejected(tree: Path) -> None:
    (tree / "boot/firmware/hostname").write_text("not a host;name\n")
    run_first_boot(tree)
    assert not (tree / "etc/hostname").exists()
    assert (tree / "boot/firmware/hostname.rejected").exists()
    assert "not a hostname" in (tree / "boot/firmware/hostname.errors.txt").read_text()


def test_ssh_host_keys_generated(tree: Path) -> None:
    if not any(Path(p, "ssh-keygen").exists() for p in os.environ["PATH"].split(":")):
        pytest.fail("ssh-keygen not found: apt-get install openssh-client (`make deps` does)")
    (tree / "etc/ssh").mkdir()
    run_first_boot(tree)
    assert (tree / "etc/ssh/ssh_host_ed25519_key").exists()


def test_with_ami_password_is_case_insensitive() -> None:
    text = fb.with_ami_password('{"AmiLocal": {"PASSWORD": "old"}}', "new", "t")
    assert loads(text) == {"AmiLocal": {"PASSWORD": "new"}}
    with pytest.raises(ValueError):
        fb.with_ami_password("[1]", "new", "t")
    with pytest.raises(ValueError, match="amilocal is not an object"):
        fb.with_ami_password('{"amilocal": "x"}', "new", "t")


def test_with_ami_password_keeps_everything_else_as_written() -> None:
    text = '{ // site\n "a": "x//y /* z */", "r": "^10\\.1", /* c */ "amilocal": {},\n}\n'
    once = fb.with_ami_password(text, "s1", "t")
    assert once.endswith('{ // site\n "a": "x//y /* z */", "r": "^10\\.1", /* c */ '
                         '"amilocal": { "password": "s1" },\n}\n')
    twice = fb.with_ami_password(once, "s2", "t")
    assert twice.count(fb.INSTALLED_HEADER) == 1  # a retried boot adds no second header
    assert loads(twice) == {"a": "x//y /* z */", "r": "^10\\.1", "amilocal": {"password": "s2"}}


def test_real_check_config_refuses_unknown_key(tree: Path) -> None:
    """With the project's own `synch check-config`, once it validates."""
    synch = TOP / ".venv/bin/synch"
    probe = subprocess.run(
        [str(synch), "check-config", "-c", "/dev/null"], capture_output=True, check=False
    ) if synch.exists() else None
    if probe is None or probe.returncode not in (0, 2):
        pytest.fail(f"{synch} check-config does not run: `make setup` installs it")
    (tree / "boot/firmware/synch.json").write_text('{ "dnsservice": { "bogus": 1 } }')
    run_first_boot(tree, synch=synch)
    assert (tree / "boot/firmware/synch.json.rejected").exists()
    assert "bogus" in (tree / "boot/firmware/synch.json.errors.txt").read_text()
