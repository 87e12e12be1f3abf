"""The Debian package, installed the way the README says, on a clean Debian root.

What is exercised, on a copy of a cached `debootstrap --variant=minbase` root of this
machine's suite (plus systemd, which any real host has):

* `make deb`'s build (packaging/deb/build.py) of this tree, and of a copy with a bumped
  version and a changed settings template (the next release); lintian on both packages,
  and on the arm64 package the image installs (built, not installed: no arm64 here);
* in a chroot: `apt install ./synch_*.deb` (Depends resolved from the Debian archive),
  files, owners and modes, the service user, the conffile, `synch --version` and
  `synch check-config`; an upgrade to the next release over edited settings
  (`--force-confold`, no prompt: settings kept, the new template beside them), the
  /etc/asterisk git history untouched; python3 reinstalled (the trigger a release upgrade
  fires) remakes a broken virtualenv; refused settings still let the package install, and
  say why; remove (settings kept), purge (settings and state gone, the asterisk user kept,
  nothing else left: a listing of the whole root before and after);
* over a hand-made install (the earlier README's, or the .NET synch's): settings kept
  without a question, a /opt/synch that is not a virtualenv moved aside, never deleted;
* booted under systemd in systemd-nspawn (own network namespace, loopback only): the
  README's steps (install: enabled, not started on the template; edit, `synch check-config`,
  `systemctl restart synch`: running as asterisk with the unit's whole sandbox, `synch
  status` answers); the unit as installed verifies; refused settings stop it with exit 2 and
  no restart, the reason in the journal; an upgrade while it runs restarts it on the new
  version; an upgrade over refused settings installs and leaves it stopped; it starts at the
  next boot; remove stops it;
* the image's install: the pi-gen stage's own 02-synch scripts install both packages
  (synch-appliance: the first-boot unit enabled, and left disabled across an update once the
  first boot disabled itself; its files gone at purge).

Not exercised here: a real Asterisk (Debian's bookworm has none; /etc/asterisk stands in
for it) and the package on arm64 (the image test installs it there).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import chroot
from tests.package.debroot import (
    APT,
    Booted,
    Root,
    apt_archives,
    base_root,
    difference,
    snapshot,
)

pytestmark = pytest.mark.slow

TOP = Path(__file__).resolve().parents[2]
BUILD = TOP / "packaging/deb/build.py"
SETTINGS = "etc/synch/appsettings.json"
MAINTAINER = "synch package test <synch-test@example.org>"
CONFOLD = "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
ASTERISK_GIT = "setpriv --reuid=asterisk --regid=asterisk --init-groups env HOME=/tmp git"


# The service user's entries: kept at purge (it is Asterisk's, and owns /etc/asterisk).
USER_FILES = {f"etc/{name}{suffix}" for name in ("passwd", "group", "shadow", "gshadow")
              for suffix in ("", "-")}


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@dataclass(frozen=True)
class Release:
    deb: Path
    appliance: Path
    version: str  # synch's own
    template: str  # the settings template it ships


@dataclass(frozen=True)
class Packages:
    v1: Release
    v2: Release
    wheels: Path


def copy_source(to: Path) -> Path:
    to.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(TOP / name, to / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("synch", "appliance"):
        shutil.copytree(TOP / name, to / name, ignore=ignore)
    return to


def build(source: Path, out: Path, wheels: Path, arch: str | None = None) -> None:
    argv = [sys.executable, str(BUILD), "--source", str(source), "--out", str(out),
            "--wheels", str(wheels), "--maintainer", MAINTAINER]
    if arch:
        argv += ["--arch", arch]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def release(out: Path, source: Path) -> Release:
    version = re.search(r'__version__ = "([^"]+)"', (source / "synch/__init__.py").read_text())
    assert version
    (deb,) = out.glob("synch_*.deb")
    (appliance,) = out.glob("synch-appliance_*.deb")
    return Release(deb, appliance, version[1], (source / "appliance/appsettings.json").read_text())


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> Packages:
    """This tree's packages, and the next release's: version +.post1, template changed."""
    work = tmp_path_factory.mktemp("debs")
    wheels = work / "wheels"
    src1 = copy_source(work / "src1")
    build(src1, work / "out1", wheels)
    src2 = copy_source(work / "src2")
    init = src2 / "synch/__init__.py"
    init.write_text(re.sub(r'__version__ = "([^"]+)"', r'__version__ = "\1.post1"',
                           init.read_text()))
    template = src2 / "appliance/appsettings.json"
    template.write_text(template.read_text().replace(
        "/*\n", "/*\n  (the next release's template)\n", 1))
    build(src2, work / "out2", wheels)
    return Packages(release(work / "out1", src1), release(work / "out2", src2), wheels)


@pytest.fixture(scope="module")
def deps_root(packages: Packages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the cached root with what synch depends on and recommends installed, as on
    a host where `apt install ./synch_*.deb` already ran once: the baseline of the
    before/after comparison. Each test copies it."""
    if os.geteuid() != 0:
        pytest.fail("the package test needs root (debootstrap, chroot, systemd-nspawn)")
    try:
        base, _ = base_root()
    except chroot.LabError as err:
        pytest.fail(str(err))
    root = Root.copy_of(base, tmp_path_factory.mktemp("deps") / "root")
    root.use_network()
    fields = subprocess.run(["dpkg-deb", "-f", str(packages.v1.deb), "Depends", "Recommends"],
                            capture_output=True, text=True, check=True).stdout
    wanted = ", ".join(line.split(":", 1)[1].strip() for line in fields.splitlines())
    with apt_archives(root, chroot.cache_dir() / f"{base.name}.archives"):
        root.sh(f"{APT} update")
        root.sh(f"{APT} satisfy '{wanted}'")
    yield root.path
    root.remove()


def stat_of(root: Root, rel: str) -> str:
    return root.sh(f"stat -c '%a %U:%G' /{rel}").stdout.strip()


def synch_version(root: Root) -> str:
    return root.sh("synch --version").stdout.strip()


def conffiles(root: Root) -> str:
    return root.sh("dpkg-query -W -f='${Conffiles}' synch").stdout.strip()


def site_edit(template: str) -> str:
    """An operator's edit of the template, comments kept: central, token, zone."""
    text = template.replace('"192.0.2.10"', '"10.99.0.1"')
    text = text.replace('"CHANGE-ME-status-token"', '"site-token"')
    return text.replace('"example.local"', '"branch.test"')


def refused(text: str) -> str:
    edited = text.replace('"admintoken": null', '"admintoken": null, "bogus": 1', 1)
    assert edited != text
    return edited


def write_settings(root: Root, text: str) -> None:
    """In place, as an editor run with sudoedit does: owner and mode stay."""
    with open(root / SETTINGS, "w") as f:
        f.write(text)


def asterisk_history(root: Root) -> str:
    """/etc/asterisk as synch keeps it: a git repository of the asterisk user."""
    return root.sh(f"cd /etc/asterisk && {ASTERISK_GIT} log --format='%H %s'").stdout


def make_asterisk_dir(root: Root) -> str:
    root.sh(
        "install -d -o asterisk -g asterisk -m 2750 /etc/asterisk && cd /etc/asterisk && "
        f"{ASTERISK_GIT} init -q && printf '[1001]\\ntype=endpoint\\n' > pjsip_synch.conf && "
        f"chown asterisk: pjsip_synch.conf && {ASTERISK_GIT} add -A && "
        f"{ASTERISK_GIT} -c user.name=synch -c user.email=synch@localhost "
        "commit -qm 'sync: +1001 from 10.99.0.1 (pjsip)'")
    return asterisk_history(root)


def put(root: Root, *debs: Path) -> str:
    names = []
    for deb in debs:
        shutil.copy(deb, root / f"var/tmp/{deb.name}")
        names.append(f"./{deb.name}")
    return " ".join(names)


def test_lintian_clean(packages: Packages) -> None:
    if not shutil.which("lintian"):
        pytest.fail("lintian not found: apt-get install lintian (`make deps` does)")
    for r in (packages.v1, packages.v2):
        proc = subprocess.run(["lintian", "-I", str(r.deb), str(r.appliance)],
                              capture_output=True, text=True, check=False)
        tags = [ln for ln in proc.stdout.splitlines() if re.match(r"[EWI]: ", ln)]
        assert proc.returncode == 0 and not tags, proc.stdout + proc.stderr


def test_arm64_package_for_the_image(packages: Packages, tmp_path: Path) -> None:
    """The image's package: arm64 wheels of gevent and greenlet for every carried python."""
    source = copy_source(tmp_path)
    build(source, tmp_path / "out", tmp_path / "wheels", arch="arm64")
    (deb,) = (tmp_path / "out").glob("synch_*_arm64.deb")
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Architecture", "Depends"],
                            capture_output=True, text=True, check=True).stdout
    assert "Architecture: arm64" in fields and "python3 (<< 3.14~)" in fields
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True,
                             check=True).stdout
    for tag in ("cp311", "cp312", "cp313"):
        for dist in ("gevent", "greenlet"):
            assert re.search(rf"wheels/{dist}-\S+-{tag}-{tag}-\S*aarch64\S*\.whl", listing), \
                (dist, tag)
    assert "x86_64" not in listing
    lint = subprocess.run(["lintian", str(deb)], capture_output=True, text=True, check=False)
    assert lint.returncode == 0 and not re.search(r"^[EW]: ", lint.stdout, re.M), lint.stdout


def test_install_upgrade_remove_purge(packages: Packages, deps_root: Path,
                                      tmp_path: Path) -> None:
    v1, v2 = packages.v1, packages.v2
    root = Root.copy_of(deps_root, tmp_path / "root")
    before = snapshot(root.path)

    # The README: apt install ./synch_VERSION_ARCH.deb
    out = root.sh(f"cd /var/tmp && apt install -y {put(root, v1.deb)}").stdout
    assert "is the default template, so synch was not started" in out, out
    assert stat_of(root, "etc/synch") == "750 root:asterisk"
    assert stat_of(root, SETTINGS) == "600 asterisk:asterisk"
    assert (root / SETTINGS).read_text() == v1.template
    assert conffiles(root) == f"/{SETTINGS} {md5(v1.template)}"
    user = root.sh("getent passwd asterisk").stdout.strip().split(":")
    assert int(user[2]) < 1000 and user[5:] == ["/var/lib/asterisk", "/usr/sbin/nologin"], user
    assert os.readlink(root / "usr/bin/synch") == "/opt/synch/bin/synch"
    unit = root / "usr/lib/systemd/system/synch.service"
    assert unit.read_text() == (TOP / "appliance/synch.service").read_text()
    assert (root / "etc/systemd/system/multi-user.target.wants/synch.service").is_symlink()
    assert stat_of(root, "opt/synch/bin/synch") == "755 root:root"
    assert root.sh("find /opt/synch ! -perm -o+r | head -1").stdout == ""  # asterisk reads it
    assert synch_version(root) == f"synch {v1.version}"
    assert "OK" in root.sh("synch check-config").stdout

    # Edit the settings, check them (README); /etc/asterisk holds the site's history.
    edited = site_edit(v1.template)
    write_settings(root, edited)
    assert "central 10.99.0.1:5038" in root.sh("synch check-config").stdout
    history = make_asterisk_dir(root)

    # The next release, whose template changed too: no prompt, the settings kept.
    out = root.sh(f"cd /var/tmp && {APT} {CONFOLD} install {put(root, v2.deb)}").stdout
    assert synch_version(root) == f"synch {v2.version}"
    assert (root / SETTINGS).read_text() == edited
    assert stat_of(root, SETTINGS) == "600 asterisk:asterisk"
    assert (root / f"{SETTINGS}.dpkg-dist").read_text() == v2.template
    assert conffiles(root) == f"/{SETTINGS} {md5(v2.template)}"
    assert "default template" not in out
    assert asterisk_history(root) == history
    assert root.sh(f"cd /etc/asterisk && {ASTERISK_GIT} status --porcelain").stdout == ""

    # A release upgrade moves python3: its package's trigger remakes the virtualenv.
    root.sh("rm -rf /opt/synch/lib/python3*/site-packages/synch")
    assert root.sh("synch --version", check=False).returncode != 0
    out = root.sh(f"{APT} install --reinstall python3-minimal").stdout
    assert "Processing triggers for synch" in out, out
    assert synch_version(root) == f"synch {v2.version}"

    # Refused settings never fail the package; it says why.
    write_settings(root, refused(edited))
    out = root.sh(f"cd /var/tmp && {APT} install --reinstall ./{v2.deb.name}").stdout
    assert "is refused; synch stays stopped" in out and "servicecontrol.bogus" in out, out
    write_settings(root, edited)

    # Remove: the program goes, the settings stay.
    root.sh(f"{APT} remove synch")
    status = root.sh("dpkg-query -W -f='${Status}' synch").stdout
    assert status == "deinstall ok config-files"
    assert (root / SETTINGS).read_text() == edited
    assert stat_of(root, SETTINGS) == "600 asterisk:asterisk"
    for gone in ("opt/synch", "usr/bin/synch", "usr/lib/systemd/system/synch.service"):
        assert not os.path.lexists(root / gone), gone
    assert asterisk_history(root) == history

    # Purge: settings and state go; the user stays (Asterisk's, owner of /etc/asterisk).
    root.sh("install -d -o asterisk -g asterisk -m 750 /var/lib/synch")  # StateDirectory=
    root.sh(f"{APT} purge synch")
    assert root.sh("dpkg-query -W -f='${Status}' synch", check=False).stdout \
        in ("", "unknown ok not-installed")
    assert root.sh("getent passwd asterisk").returncode == 0
    assert asterisk_history(root) == history
    left = {path: how for path, how in difference(before, snapshot(root.path)).items()
            if path not in USER_FILES and path != "etc/asterisk"
            and not path.startswith("etc/asterisk/")
            # python3-minimal's postinst recompiles its own modules (the reinstall above)
            and not (how == "changed" and path.startswith("usr/share/python3/")
                     and path.endswith(".pyc"))}
    assert not left, f"left behind or changed by install/purge: {left}"
    root.remove()


@pytest.mark.parametrize("before", ["venv", "dotnet"])
def test_over_a_hand_made_install(packages: Packages, deps_root: Path, tmp_path: Path,
                                  before: str) -> None:
    """A host set up by hand: with the earlier README's commands (a virtualenv in /opt/synch),
    or running the .NET synch (its files in /opt/synch), settings copied to /etc/synch as the
    README says, the old unit in /etc/systemd/system. The package takes over without a
    question, the settings kept; a /opt/synch that is not a virtualenv is moved aside."""
    v1 = packages.v1
    root = Root.copy_of(deps_root, tmp_path / "root")
    root.sh("adduser --system --group --quiet --home /var/lib/asterisk --no-create-home asterisk"
            " && install -d -m 0750 -o asterisk -g asterisk /etc/synch")
    if before == "venv":
        root.sh("python3 -m venv /opt/synch")
    else:
        (root / "opt/synch").mkdir(parents=True)
        (root / "opt/synch/Synch.dll").write_bytes(b"MZ")
        (root / "opt/synch/appsettings.json").write_text("{}\n")
    own = site_edit(v1.template)
    (root / SETTINGS).write_text(own)
    root.sh(f"chown asterisk: /{SETTINGS} && chmod 600 /{SETTINGS}")
    shutil.copy(TOP / "appliance/synch.service", root / "etc/systemd/system/synch.service")
    out = root.sh(f"cd /var/tmp && apt install -y {put(root, v1.deb)}").stdout
    assert f"kept your /{SETTINGS}" in out and "overrides the unit of this package" in out, out
    assert (root / SETTINGS).read_text() == own
    assert stat_of(root, SETTINGS) == "600 asterisk:asterisk"
    assert not (root / f"{SETTINGS}.synch-own").exists()
    assert conffiles(root) == f"/{SETTINGS} {md5(v1.template)}"  # yours count as edited
    assert synch_version(root) == f"synch {v1.version}"
    if before == "dotnet":
        assert "moved /opt/synch, which is not a Python virtualenv, to /opt/synch.old" in out
        assert (root / "opt/synch.old/Synch.dll").read_bytes() == b"MZ"
        assert (root / "opt/synch.old/appsettings.json").is_file()
        root.sh(f"{APT} purge synch")
        assert (root / "opt/synch.old/Synch.dll").is_file()  # never the package's to remove
    root.remove()


def test_service_under_systemd(packages: Packages, deps_root: Path, tmp_path: Path) -> None:
    v1, v2 = packages.v1, packages.v2
    root = Root.copy_of(deps_root, tmp_path / "root")
    put(root, v1.deb, v2.deb)
    edited = site_edit(v1.template)
    box = Booted(root, tmp_path / "console.log")
    try:
        box.start()
        # The README's steps, on a running system: install (the template: enabled, not
        # started), edit, check, restart.
        out = box.sh(f"cd /var/tmp && apt install -y ./{v1.deb.name} 2>&1").stdout
        assert "is the default template, so synch was not started" in out, out
        assert box.sh("systemctl is-enabled synch").stdout.strip() == "enabled"
        assert box.unit("synch")["ActiveState"] == "inactive"
        verify = box.sh("systemd-analyze verify --man=no synch.service 2>&1", check=False)
        assert verify.returncode == 0 and "synch" not in verify.stdout, verify.stdout
        make_asterisk_dir(root)  # an Asterisk host's
        write_settings(root, edited)
        assert "OK" in box.sh("synch check-config").stdout
        box.sh("systemctl restart synch")

        # Running as asterisk, sandbox and all; `synch status` reaches it.
        props = box.wait_unit("synch", ("active",))
        assert props["NRestarts"] == "0", props
        pid = props["MainPID"]
        uid = box.sh(f"sed -n 's/^Uid:\\s*\\([0-9]*\\).*/\\1/p' /proc/{pid}/status").stdout
        assert uid.strip() == box.sh("id -u asterisk").stdout.strip()
        assert f"synch {v1.version}, running" in box.sh("synch status").stdout

        # Refused settings: exit 2, no restart, the reason in the journal.
        write_settings(root, refused(edited))
        assert box.sh("systemctl restart synch", check=False).returncode != 0
        props = box.wait_unit("synch", ("failed",))
        assert props["ExecMainStatus"] == "2", props
        time.sleep(7)  # RestartSec=5: a restart would have come by now
        props = box.unit("synch")
        assert (props["ActiveState"], props["NRestarts"]) == ("failed", "0"), props
        journal = box.sh("journalctl -u synch --no-pager -o cat").stdout
        assert "servicecontrol.bogus" in journal, journal[-2000:]

        # An upgrade while it runs restarts it on the new version.
        write_settings(root, edited)
        box.sh("systemctl restart synch")
        pid = box.wait_unit("synch", ("active",))["MainPID"]
        box.sh(f"cd /var/tmp && {APT} {CONFOLD} install ./{v2.deb.name}")
        props = box.wait_unit("synch", ("active",))
        assert props["MainPID"] != pid, props
        journal = box.sh("journalctl -u synch --no-pager -o cat").stdout
        assert f"synch {v2.version} started" in journal, journal[-2000:]

        # An upgrade over refused settings installs, and leaves synch stopped, saying why.
        write_settings(root, refused(edited))
        out = box.sh(f"cd /var/tmp && {APT} install --reinstall ./{v2.deb.name} 2>&1").stdout
        assert "is refused; synch stays stopped" in out, out
        props = box.wait_unit("synch", ("failed",))
        assert props["ExecMainStatus"] == "2", props

        # Enabled: started at the next boot.
        write_settings(root, edited)
        box.stop()
        box.start()
        box.wait_unit("synch", ("active",))

        # Remove stops it.
        box.sh(f"{APT} remove synch")
        props = box.unit("synch")
        assert (props["ActiveState"], props["MainPID"]) == ("inactive", "0"), props
    finally:
        box.stop()
    root.remove()


def test_image_stage_install(packages: Packages, deps_root: Path, tmp_path: Path) -> None:
    """The pi-gen stage's 02-synch as pi-gen runs it (01-run.sh on the host, 02-run-chroot.sh
    fed to bash inside the root), with this machine's packages instead of arm64 ones; then
    an update of the box to the next release, and a purge."""
    v1, v2 = packages.v1, packages.v2
    root = Root.copy_of(deps_root, tmp_path / "root")
    before = snapshot(root.path)
    stage = tmp_path / "stage"
    shutil.copytree(TOP / "pi-gen-stage/02-synch", stage / "02-synch")
    (stage / "files").mkdir()
    for deb in (v1.deb, v1.appliance):
        shutil.copy(deb, stage / "files")
    (stage / "files/VERSION").write_text(f"synch {v1.version}\n")
    env = {**os.environ, "STAGE_DIR": str(stage), "ROOTFS_DIR": str(root.path)}
    subprocess.run(["./01-run.sh"], cwd=stage / "02-synch", env=env, check=True)
    script = (stage / "02-synch/02-run-chroot.sh").read_text()
    out = root.sh(f"bash -e <<'STAGE'\n{script}STAGE").stdout
    assert f"synch {v1.version}" in out
    wants = root / "etc/systemd/system/multi-user.target.wants"
    assert (wants / "synch-first-boot.service").is_symlink()
    assert (wants / "synch.service").is_symlink()
    assert stat_of(root, "usr/lib/synch/synch-first-boot") == "755 root:root"
    assert stat_of(root, SETTINGS) == "600 asterisk:asterisk"
    assert (root / "usr/lib/systemd/resolved.conf.d/synch.conf").is_file()
    assert not (root / "var/tmp/synch-debs").exists()
    # The first boot disables itself (its ExecStartPost): an update leaves it so, and an
    # update of synch alone (README: "Updating synch on a running box") keeps synch-appliance.
    root.sh("systemctl disable synch-first-boot.service")
    (root / "var/log/synch-first-boot.log").write_text("first boot done\n")
    root.sh(f"cd /var/tmp && {APT} {CONFOLD} install {put(root, v2.deb)}")
    status = root.sh("dpkg-query -W -f='${Status} ${Version}' synch-appliance").stdout
    kept = subprocess.run(["dpkg-deb", "-f", str(v1.appliance), "Version"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert status == f"install ok installed {kept}", status
    assert not (root / "opt/synch/bin/pip").exists()  # made without a pip of its own
    root.sh(f"cd /var/tmp && {APT} {CONFOLD} install {put(root, v2.appliance)}")
    assert not (wants / "synch-first-boot.service").exists()
    assert (wants / "synch.service").is_symlink()
    root.sh(f"{APT} purge synch-appliance synch")
    left = {p: how for p, how in difference(before, snapshot(root.path)).items()
            if p not in USER_FILES and p != "etc/synch-release"}  # the stage's, not a package's
    assert not left, f"left behind or changed by install/purge: {left}"
    root.remove()
