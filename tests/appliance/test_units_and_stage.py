"""systemd units, the branch Asterisk base config, the pi-gen stage layout, image assembly."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

TOP = Path(__file__).resolve().parents[2]
APPLIANCE = TOP / "appliance"
STAGE = TOP / "pi-gen-stage"
UNITS = {
    "synch.service": APPLIANCE / "synch.service",
    "synch-first-boot.service": APPLIANCE / "first-boot/synch-first-boot.service",
}


def directives(path: Path) -> dict[str, list[str]]:
    """Unit file key -> values in order (sections flattened: keys are unique enough here)."""
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_synch_unit_contract() -> None:
    d = directives(UNITS["synch.service"])
    assert d["Type"] == ["notify"]
    assert int(d["WatchdogSec"][0]) > 0
    assert d["Restart"] == ["on-failure"]
    assert d["User"] == ["asterisk"]
    assert d["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert d["ProtectSystem"] == ["strict"]
    assert "/etc/asterisk" in " ".join(d["ReadWritePaths"])
    assert d["StateDirectory"] == ["synch"]
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome"):
        assert d[key] == ["yes"], key
    assert "asterisk.service" in " ".join(d["After"])
    assert "asterisk.service" in " ".join(d["Wants"])
    assert d["ExecStart"] == ["/opt/synch/bin/synch run -c /etc/synch/appsettings.json"]


def test_first_boot_unit_disables_itself() -> None:
    d = directives(UNITS["synch-first-boot.service"])
    assert d["Type"] == ["oneshot"]
    assert d["ExecStartPost"] == ["/bin/systemctl disable synch-first-boot.service"]
    assert "synch.service" in " ".join(d["Before"])
    assert "asterisk.service" in " ".join(d["Before"])
    assert "/boot/firmware" in d["RequiresMountsFor"][0]


def test_units_verify(tmp_path: Path) -> None:
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze not found: apt-get install systemd (`make deps` does)")
    # verify wants the commands to exist: point them at stand-ins.
    stub = tmp_path / "stub"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    names = []
    for name, path in UNITS.items():
        text = re.sub(r"(ExecStart=)/\S+", rf"\1{stub}", path.read_text())
        (tmp_path / name).write_text(text)
        names.append(str(tmp_path / name))
    # Documentation=man:synch(1): the page the Debian package installs.
    man1 = tmp_path / "man/man1"
    man1.mkdir(parents=True)
    shutil.copy(TOP / "packaging/deb/synch.1", man1 / "synch.1")
    proc = subprocess.run(
        ["systemd-analyze", "verify", *names], capture_output=True, text=True, check=False,
        env={**os.environ, "MANPATH": str(tmp_path / "man")},
    )
    assert proc.returncode == 0, proc.stderr
    assert "synch" not in proc.stderr, proc.stderr


def test_asterisk_base_config() -> None:
    ast = APPLIANCE / "asterisk"
    manager = (ast / "manager.conf").read_text()
    assert re.search(r"^bindaddr\s*=\s*127\.0\.0\.1$", manager, re.M)
    assert re.search(r"^\[synch\]\nsecret\s*=\s*SYNCH_FIRST_BOOT_SECRET$", manager, re.M)
    assert re.search(r"^permit\s*=\s*127\.0\.0\.1/", manager, re.M)
    pjsip = (ast / "pjsip.conf").read_text()
    assert re.search(r"^#include pjsip_synch\.conf$", pjsip, re.M)
    assert re.search(r"^protocol\s*=\s*udp$", pjsip, re.M)
    assert re.search(r"^#include sip_synch\.conf$", (ast / "sip.conf").read_text(), re.M)
    for name in ("pjsip_synch.conf", "sip_synch.conf"):
        # Empty of settings so Asterisk starts before the first sync.
        lines = (ast / name).read_text().splitlines()
        assert all(ln.startswith(";") or not ln.strip() for ln in lines), name
    for name in ("modules.conf", "extensions.conf", "logger.conf"):
        assert (ast / name).read_text().strip()


def test_stage_layout() -> None:
    assert os.access(STAGE / "prerun.sh", os.X_OK)
    assert "copy_previous" in (STAGE / "prerun.sh").read_text()
    assert (STAGE / "EXPORT_IMAGE").is_file()
    subs = sorted(p.name for p in STAGE.iterdir() if p.is_dir() and p.name != "files")
    assert subs and all(re.fullmatch(r"\d\d-[a-z0-9-]+", s) for s in subs), subs
    known = re.compile(r"\d\d-(debconf|packages|packages-nr|run\.sh|run-chroot\.sh)")
    for sub in subs:
        for f in (STAGE / sub).iterdir():
            if f.name == "files":
                continue
            assert known.fullmatch(f.name), f"{sub}/{f.name} is not a pi-gen sub-stage file"
            if f.name.endswith("-run.sh"):
                assert os.access(f, os.X_OK), f"{f} must be executable (pi-gen skips it)"
                assert f.read_text().startswith("#!/bin/bash -e\n"), f
            if "packages" in f.name:
                assert any(
                    ln.split("#")[0].strip() for ln in f.read_text().splitlines()
                ), f"{f} lists no package"


def test_stage_scripts_parse() -> None:
    scripts = [*STAGE.rglob("*.sh"), *(TOP / "image").glob("*.sh")]
    for script in scripts:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


def test_sid_pinning_limited() -> None:
    pref = (STAGE / "00-asterisk-from-sid/files/synch-asterisk.pref").read_text()
    blocks = [b for b in pref.split("\n\n") if "Package:" in b]
    everything = [b for b in blocks if re.search(r"^Package:\s*\*\s*$", b, re.M)]
    assert everything, "sid must be pinned below every package by default"
    assert all(int(re.search(r"Pin-Priority:\s*(-?\d+)", b)[1]) < 0 for b in everything)  # type: ignore[index]
    allowed = " ".join(b for b in blocks if b not in everything)
    assert "asterisk" in allowed


def test_stage_refuses_to_run_without_packages(tmp_path: Path) -> None:
    env = {**os.environ, "STAGE_DIR": str(tmp_path), "ROOTFS_DIR": str(tmp_path / "rootfs")}
    proc = subprocess.run(
        ["bash", str(STAGE / "02-synch/01-run.sh")],
        cwd=STAGE / "02-synch",
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "make stage-files" in proc.stderr


def test_stage_installs_the_packages() -> None:
    """The image installs synch the way an existing host does: its Debian packages, with apt."""
    script = (STAGE / "02-synch/02-run-chroot.sh").read_text()
    assert re.search(r"^apt-get .*install .*/var/tmp/synch-debs/\*\.deb$", script, re.M)
    assert "pip" not in script and "venv" not in script.replace("virtualenv", "")


# The image assembly's tools and their Debian packages (`make deps` installs them).
IMAGE_TOOLS = {
    "mkfs.ext4": "e2fsprogs", "mkfs.vfat": "dosfstools", "mcopy": "mtools", "mdir": "mtools",
    "sfdisk": "fdisk",
}


def test_assemble_small_tree(tmp_path: Path) -> None:
    missing = sorted({pkg for tool, pkg in IMAGE_TOOLS.items() if not shutil.which(tool)})
    if missing:
        pytest.fail(f"image assembly tools not found: apt-get install {' '.join(missing)} "
                    "(`make deps` does)")
    root = tmp_path / "rootfs"
    (root / "boot/firmware").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("raspberrypi\n")
    (root / "boot/vmlinuz-6.1-arm64").write_bytes(b"kernel")
    (root / "boot/initrd.img-6.1-arm64").write_bytes(b"initrd")
    img = tmp_path / "disk.img"
    env = {**os.environ, "BOOT_MIB": "64"}
    subprocess.run(
        ["bash", str(TOP / "image/assemble.sh"), str(root), str(img)], check=True, env=env
    )
    table = json.loads(
        subprocess.run(["sfdisk", "-J", str(img)], capture_output=True, check=True).stdout
    )["partitiontable"]
    boot, rootp = table["partitions"]
    assert boot["type"] == "c" and rootp["type"] == "83"
    listing = subprocess.run(
        ["mdir", "-b", "-i", f"{img}@@{boot['start'] * 512}", "::"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "VMLINUZ" in listing.upper() and "INITRD.IMG" in listing.upper()
    # The ext4 root holds the tree.
    with img.open("rb") as f:
        f.seek(rootp["start"] * 512 + 1024 + 0x38)
        assert f.read(2) == b"\x53\xef"  # ext4 superblock magic
