"""The appliance's first boot with the settings an operator really writes, and with garbage.

The real first-boot script (appliance/first-boot/synch_first_boot.py) against a directory
tree standing for the card, with the project's real `synch check-config`:

- a synch.json that check-config accepts (comments, trailing commas, the original README's
  `\\.` escapes) is installed, read exactly as synch reads it, with the generated branch AMI
  secret, and its comments kept;
- a synch.json that is not UTF-8, or is not JSON at all, is kept aside with the problems, and
  the hostname and the SSH host keys (without which nobody can log in to fix it) are still made;
- a step that fails for any reason is logged, and the next steps are still done.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synch.config import load_settings

TOP = Path(__file__).resolve().parents[2]
SCRIPT = TOP / "appliance/first-boot/synch_first_boot.py"
MANAGER_CONF = TOP / "appliance/asterisk/manager.conf"
SYNCH = TOP / ".venv/bin/synch"

# What check-config accepts: comments, trailing commas, invalid escapes kept as written.
LENIENT_SITE = r"""{
  // Lyon branch
  "AmiRemote": { "Hostname": "10.1.2.3", "Password": "central-secret", },
  "amilocal": { "password": "replaced-at-first-boot" },  /* made on the device */
  "syncmanager": { "mode": "pjsip", "filtervalue": "^10\.1\.2\.", },
  "dnsservice": {
    "targetnormal": "10.1.2.3",
    "targetfailover": "10.1.2.4",
    "forwarders": ["10.1.2.53",],
  },
  "servicecontrol": { "token": "status-token" },
}
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    for sub in ("etc/synch", "etc/asterisk", "etc/ssh", "boot/firmware"):
        (root / sub).mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\traspberrypi\n")
    (root / "etc/asterisk/manager.conf").write_text(MANAGER_CONF.read_text())
    (root / "etc/synch/appsettings.json").write_text('{ // default\n "amilocal": {} }\n')
    (root / "boot/firmware/hostname").write_text("lyon-01\n")
    return root


def first_boot(root: Path, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, str(SCRIPT), "--root", str(root), "--synch", str(SYNCH)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def manager_secret(root: Path) -> str:
    section = (root / "etc/asterisk/manager.conf").read_text().split("[synch]", 1)[1]
    return next(ln.split("=", 1)[1].strip() for ln in section.splitlines()
                if ln.startswith("secret"))


def assert_hostname_and_ssh_done(root: Path, result: subprocess.CompletedProcess[str]) -> None:
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    assert (root / "etc/hostname").read_text() == "lyon-01\n", out
    assert (root / "etc/ssh/ssh_host_ed25519_key").exists(), out
    log = (root / "var/log/synch-first-boot.log").read_text()
    assert "hostname set to lyon-01" in log and "generated SSH host keys" in log, log


def test_settings_check_config_accepts_are_installed_as_synch_reads_them(tree: Path) -> None:
    site = tree / "boot/firmware/synch.json"
    site.write_text(LENIENT_SITE)
    meant = load_settings(str(site))  # what check-config read

    result = first_boot(tree)

    assert not site.exists(), result.stdout + result.stderr
    assert not (tree / "boot/firmware/synch.json.rejected").exists(), (
        (tree / "boot/firmware/synch.json.errors.txt").read_text()
    )
    installed = tree / "etc/synch/appsettings.json"
    got = load_settings(str(installed))
    assert got.syncmanager.filtervalue == meant.syncmanager.filtervalue == r"^10\.1\.2\."
    assert got.amiremote == meant.amiremote
    assert got.dnsservice == meant.dnsservice
    assert got.amilocal.password == manager_secret(tree) != meant.amilocal.password
    assert "// Lyon branch" in installed.read_text()  # the operator's comments are kept
    assert_hostname_and_ssh_done(tree, result)


@pytest.mark.parametrize(
    "content",
    [b'{ "amiremote": { "password": "caf\xe9" } }\n', b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe"],
    ids=["latin-1", "binary"],
)
def test_settings_that_are_not_utf8_are_kept_aside_and_the_boot_goes_on(
    tree: Path, content: bytes
) -> None:
    site = tree / "boot/firmware/synch.json"
    site.write_bytes(content)

    result = first_boot(tree)

    assert not site.exists()
    assert (tree / "boot/firmware/synch.json.rejected").read_bytes() == content
    errors = (tree / "boot/firmware/synch.json.errors.txt").read_text()
    assert "NOT applied" in errors and "UTF-8" in errors, errors
    assert "REJECTED" in (tree / "var/log/synch-first-boot.log").read_text()
    assert_hostname_and_ssh_done(tree, result)


def test_settings_that_are_not_json_are_kept_aside_and_the_boot_goes_on(tree: Path) -> None:
    site = tree / "boot/firmware/synch.json"
    site.write_text("amiremote.password = central-secret\n[general]\n")

    result = first_boot(tree)

    errors = (tree / "boot/firmware/synch.json.errors.txt").read_text()
    assert "invalid JSON" in errors, errors
    assert "central-secret" not in errors + result.stdout + result.stderr
    assert_hostname_and_ssh_done(tree, result)


def test_a_failing_step_is_logged_and_the_next_steps_still_run(tree: Path) -> None:
    # manager.conf unreadable as text: the AMI secret step fails, nothing else may.
    (tree / "etc/asterisk/manager.conf").write_bytes(b"[synch]\nsecret = \xff\xfe\n")
    (tree / "boot/firmware/hostname").write_bytes(b"lyon-01\n")

    result = first_boot(tree)

    assert result.returncode != 0  # the unit stays enabled: the next boot tries again
    log = (tree / "var/log/synch-first-boot.log").read_text()
    assert "manager.conf" in log and "failed" in log, log
    assert_hostname_and_ssh_done(tree, result)


def test_a_hostname_file_that_is_not_utf8_is_rejected_and_ssh_still_done(tree: Path) -> None:
    (tree / "boot/firmware/hostname").write_bytes(b"lyon-\xe9\n")
    result = first_boot(tree)
    assert (tree / "boot/firmware/hostname.rejected").exists()
    assert (tree / "etc/ssh/ssh_host_ed25519_key").exists(), result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_the_system_python_uses_the_parser_of_the_synch_it_runs(tree: Path) -> None:
    """On the image the script runs with the system python3 and synch lives in /opt/synch,
    a virtualenv of that same python: the script reads the settings with the synch of
    `--synch`, not with a parser of its own. Here the project's .venv stands for /opt/synch."""
    system_python = "/usr/bin/python3"
    version = subprocess.run(
        [system_python, "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    if version != str(tuple(sys.version_info[:2])):
        pytest.skip(f"/usr/bin/python3 is {version}, the test's virtualenv another version")
    (tree / "boot/firmware/synch.json").write_text(LENIENT_SITE)
    result = subprocess.run(
        [system_python, "-I", str(SCRIPT), "--root", str(tree), "--synch", str(SYNCH)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    installed = load_settings(str(tree / "etc/synch/appsettings.json"))
    assert installed.amilocal.password == manager_secret(tree), result.stdout + result.stderr
    assert installed.syncmanager.filtervalue == r"^10\.1\.2\."
