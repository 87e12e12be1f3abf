"""Build synch's Debian packages.

    python packaging/deb/build.py [--arch ARCH] [--revision N] [--out DIR]

* `synch_VERSION_ARCH.deb`: synch and its Python dependencies as wheels for this architecture
  and CPython 3.11 to 3.13, the systemd unit, the settings template as a conffile, a manual
  page. Its postinst makes the virtualenv /opt/synch from those wheels, offline, with the
  machine's own python3, and creates the service user (`asterisk`) if there is none.
* `synch-appliance_VERSION_all.deb`: the SD-card image's first boot (service and script),
  for the image only.

VERSION is synch's version (Debian spelling: 0.2.0rc1 -> 0.2.0~rc1) and `-REVISION`.
Needs dpkg-deb and a python with pip, which builds the synch wheel and downloads the
dependencies' wheels (`--wheels DIR` reuses, or keeps, a directory of them).
"""

from __future__ import annotations

import argparse
import email.parser
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOP = HERE.parents[1]

# Debian architecture -> the machine name in manylinux wheel tags.
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}
# The CPython versions of the Debian releases the package installs on: 12 (3.11), 13 (3.13),
# and Ubuntu 24.04 (3.12). Their wheels are all carried: the postinst picks its python's.
PYTHONS = ("3.11", "3.12", "3.13")
# Wheels must run with the C library of the oldest of them (Debian 12: glibc 2.36).
GLIBC_MINOR = 36

VENV = "/opt/synch"
WHEELS = "usr/lib/synch/wheels"
SETTINGS = "etc/synch/appsettings.json"


class BuildError(RuntimeError):
    pass


def debian_version(python_version: str, revision: str) -> str:
    """PEP 440 -> Debian: pre-releases sort before the release (`~`), the rest is kept."""
    public, plus, local = python_version.lower().partition("+")
    public = re.sub(r"[.-]?(a|b|rc|dev)(\d*)", r"~\1\2", public)
    return f"{public}{plus}{local}-{revision}"


def python_bounds(pythons: tuple[str, ...]) -> str:
    """`python3 (>= 3.11~), python3 (<< 3.14~)` for 3.11..3.13."""
    minors = sorted(tuple(int(x) for x in p.split(".")) for p in pythons)
    low, high = minors[0], minors[-1]
    return f"python3 (>= {low[0]}.{low[1]}~), python3 (<< {high[0]}.{high[1] + 1}~)"


def platforms(arch: str) -> list[str]:
    try:
        machine = MACHINES[arch]
    except KeyError:
        raise BuildError(f"no wheels for architecture {arch}: one of {', '.join(MACHINES)}") \
            from None
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 16, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(argv)} failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}{proc.stderr[-3000:]}")
    return proc


@dataclass(frozen=True)
class Wheel:
    path: Path
    name: str
    version: str
    license: str


def read_wheel(path: Path) -> Wheel:
    """Name, version and a one-line license of a wheel, from its METADATA."""
    with zipfile.ZipFile(path) as z:
        meta_name = next(n for n in z.namelist()
                         if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(meta_name).decode("utf-8", "replace"))
    license_ = meta.get("License-Expression") or ""
    if not license_:
        classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                       if c.startswith("License ::")]
        license_ = " / ".join(classifiers)
    if not license_:
        first = (meta.get("License") or "").strip().splitlines()
        license_ = first[0][:60] if first else "see the wheel's .dist-info"
    return Wheel(path, str(meta["Name"]), str(meta["Version"]), license_)


def build_synch_wheel(python: str, source: Path, into: Path) -> Path:
    run([python, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
         "-w", str(into), str(source)])
    found = sorted(into.glob("synch-*.whl"))
    if len(found) != 1:
        raise BuildError(f"expected one synch wheel in {into}, found {found}")
    return found[0]


def dependency_wheels(python: str, synch_wheel: Path, arch: str, pythons: tuple[str, ...],
                      into: Path) -> list[Path]:
    """The dependencies' wheels for ARCH and each python, downloaded into INTO unless it
    already holds wheels (then those are used as they are)."""
    into.mkdir(parents=True, exist_ok=True)
    if not any(into.glob("*.whl")):
        for version in pythons:
            argv = [python, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                    "-d", str(into), "--only-binary=:all:", "--implementation", "cp",
                    "--python-version", version]
            for platform in platforms(arch):
                argv += ["--platform", platform]
            run([*argv, str(synch_wheel)])
    for stale in into.glob("synch-*.whl"):
        stale.unlink()
    wheels = sorted(into.glob("*.whl"))
    for version in pythons:
        tag = "cp" + version.replace(".", "")
        if not any(w.name.startswith("gevent-") and f"-{tag}-" in w.name for w in wheels):
            raise BuildError(f"no gevent wheel for CPython {version} on {arch} in {into}")
    machine = MACHINES[arch]
    foreign = [w.name for w in wheels if "linux" in w.name and machine not in w.name]
    if foreign:
        raise BuildError(f"wheels for another architecture in {into}: {foreign}")
    return wheels


def source_date(source: Path) -> int:
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    proc = subprocess.run(["git", "-C", str(source), "log", "-1", "--format=%ct"],
                          capture_output=True, text=True, check=False)
    return int(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() \
        else int(time.time())


def maintainer(source: Path, given: str | None) -> str:
    if given:
        return given
    if os.environ.get("DEB_MAINTAINER"):
        return os.environ["DEB_MAINTAINER"]
    proc = subprocess.run(["git", "-C", str(source), "log", "-1", "--format=%an <%ae>"],
                          capture_output=True, text=True, check=False)
    if proc.returncode == 0 and "@" in proc.stdout:
        return proc.stdout.strip()
    raise BuildError("no maintainer: pass --maintainer 'Name <address>' (or DEB_MAINTAINER)")


def gzip_to(data: bytes, path: Path) -> None:
    """gzip -9n: no name, no timestamp, so the same input gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                compresslevel=9, mtime=0) as gz:
        gz.write(data)


def write(path: Path, text: str | bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    path.chmod(mode)


MIT = """\
Permission is hereby granted, free of charge, to any person obtaining a copy of this
software and associated documentation files (the "Software"), to deal in the Software
without restriction, including without limitation the rights to use, copy, modify, merge,
publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons
to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
DEALINGS IN THE SOFTWARE.
"""


def copyright_text(bundled: list[Wheel], year: int) -> str:
    lines = [
        "synch: branch-site survivability for Asterisk/FreePBX",
        "",
        f"Copyright (c) {year} the synch authors",
        "License: MIT (below)",
        "",
    ]
    if bundled:
        lines += [
            f"Bundled Python packages, as wheels in /{WHEELS}; each wheel's .dist-info",
            "holds its own license text and notices, also in the virtualenv it is installed",
            f"into ({VENV}/lib/python3.*/site-packages/*.dist-info):",
            "",
        ]
        seen: set[tuple[str, str]] = set()
        for w in bundled:
            if (w.name, w.version) not in seen:
                seen.add((w.name, w.version))
                lines.append(f"  {w.name} {w.version}: {w.license}")
        lines.append("")
        if any("apache" in w.license.lower() for w in bundled):
            lines += ["The Apache License 2.0 is in /usr/share/common-licenses/Apache-2.0.", ""]
    lines += ["MIT License", "", f"Copyright (c) {year} the synch authors", "", MIT]
    return "\n".join(lines)


def changelog(package: str, version: str, maint: str, epoch: int, summary: str) -> bytes:
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(epoch))
    entry = textwrap.fill(summary, width=78, initial_indent="  * ", subsequent_indent="    ")
    return (f"{package} ({version}) unstable; urgency=medium\n\n{entry}\n\n"
            f" -- {maint}  {date}\n").encode()


def finish_tree(root: Path, epoch: int, conffiles: list[str]) -> int:
    """md5sums (conffiles are tracked by dpkg apart), mtimes; returns Installed-Size (KiB)."""
    sums, size = [], 0
    for path in sorted(p for p in root.rglob("*") if "DEBIAN" not in p.relative_to(root).parts):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            size += 1
        elif path.is_file():
            size += (path.stat().st_size + 1023) // 1024
            if "/" + rel not in conffiles:
                sums.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {rel}\n")
        else:
            size += 1
    write(root / "DEBIAN/md5sums", "".join(sums))
    if conffiles:
        write(root / "DEBIAN/conffiles", "".join(f"{c}\n" for c in conffiles))
    for path in [root, *root.rglob("*")]:
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    return size


def dpkg_deb(root: Path, out: Path) -> Path:
    run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(out)],
        env={**os.environ, "SOURCE_DATE_EPOCH": str(int(root.stat().st_mtime))})
    return out


def control(fields: dict[str, str], description: str) -> str:
    """The control file; the description's paragraphs are wrapped to 79 columns."""
    head = "".join(f"{k}: {v}\n" for k, v in fields.items() if v)
    summary, _, body = description.strip().partition("\n")
    paragraphs = [textwrap.fill(" ".join(par.split()), width=78, initial_indent=" ",
                                subsequent_indent=" ") for par in body.strip().split("\n\n")]
    return f"{head}Description: {summary}\n" + "\n .\n".join(paragraphs) + "\n"


SYNCH_DESCRIPTION = """\
branch-site survivability for Asterisk/FreePBX
synch keeps a branch office's phones working when the head office PBX, or the
WAN to it, goes down. It runs on the branch's own Asterisk host and probes the
central over AMI, syncs the branch's user accounts (a filtered subset of the
central's) into /etc/asterisk, which it keeps as a git repository, and serves
DNS for the phones: their SIP server name resolves to the central while it is
healthy and to the branch while it is not.

This package carries synch and its Python dependencies as wheels for CPython
{pythons}; when it is configured it makes the virtualenv /opt/synch from them,
offline, with this machine's python3. The service runs as the asterisk user.
"""

APPLIANCE_DESCRIPTION = """\
first boot of the synch branch appliance (SD-card image)
At the next boot, and once: installs the site's synch settings from synch.json
on the FAT boot partition, generates the branch AMI secret and the SSH host
keys, and sets the host name. It also keeps a systemd-resolved stub listener
off port 53, where synch serves the phones.

Only for the SD-card image: on a running host it would replace the branch
AMI secret and the host name at the next boot.
"""


def build_synch(args: argparse.Namespace, synch_wheel: Path, deps: list[Path], work: Path,
                version: str, maint: str, epoch: int) -> Path:
    source: Path = args.source
    root = work / "synch"
    wheels = [read_wheel(w) for w in deps]
    for w in [synch_wheel, *deps]:
        write(root / WHEELS / w.name, w.read_bytes())
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/synch").symlink_to(f"{VENV}/bin/synch")
    write(root / "usr/lib/systemd/system/synch.service",
          (source / "appliance/synch.service").read_text())
    template = (source / "appliance/appsettings.json").read_text()
    write(root / SETTINGS, template, 0o600)
    (root / "etc/synch").chmod(0o750)
    doc = root / "usr/share/doc/synch"
    write(doc / "copyright", copyright_text(wheels, time.gmtime(epoch).tm_year))
    summary = (f"synch {synch_wheel.name.split('-')[1]} with its dependencies as wheels for "
               f"CPython {', '.join(args.pythons)} on {args.arch}.")
    gzip_to(changelog("synch", version, maint, epoch, summary), doc / "changelog.Debian.gz")
    gzip_to((source / "README.md").read_bytes(), doc / "README.md.gz")
    write(doc / "appsettings.sample.json", template)
    gzip_to((HERE / "synch.1").read_bytes(), root / "usr/share/man/man1/synch.1.gz")
    overrides = HERE / "synch/lintian-overrides"
    if overrides.is_file():
        write(root / "usr/share/lintian/overrides/synch", overrides.read_text())
    debian = root / "DEBIAN"
    python_version = synch_wheel.name.split("-")[1]
    for script in ("preinst", "postinst", "prerm", "postrm"):
        text = (HERE / "synch" / script).read_text()
        text = text.replace("@SYNCH_VERSION@", python_version)
        text = text.replace("@PYTHONS@", ", ".join(args.pythons))
        write(debian / script, text, 0o755)
    write(debian / "triggers", (HERE / "synch/triggers").read_text())
    size = finish_tree(root, epoch, ["/" + SETTINGS])
    write(debian / "control", control({
        "Package": "synch",
        "Version": version,
        "Architecture": args.arch,
        "Maintainer": maint,
        "Installed-Size": str(size),
        # deb-systemd-helper and deb-systemd-invoke: init-system-helpers is essential.
        "Depends": f"{python_bounds(args.pythons)}, python3-venv, git, adduser",
        "Recommends": "ca-certificates",
        "Suggests": "asterisk",
        "Section": "net",
        "Priority": "optional",
    }, SYNCH_DESCRIPTION.format(pythons=", ".join(args.pythons))))
    os.utime(debian / "control", (epoch, epoch))
    return dpkg_deb(root, args.out / f"synch_{version}_{args.arch}.deb")


def build_appliance(args: argparse.Namespace, work: Path, version: str, maint: str,
                    epoch: int) -> Path:
    source: Path = args.source
    root = work / "synch-appliance"
    first_boot = source / "appliance/first-boot"
    write(root / "usr/lib/synch/synch-first-boot",
          (first_boot / "synch_first_boot.py").read_text(), 0o755)
    write(root / "usr/lib/systemd/system/synch-first-boot.service",
          (first_boot / "synch-first-boot.service").read_text())
    # A resolver's stub on 127.0.0.53:53 would keep synch from serving port 53.
    write(root / "usr/lib/systemd/resolved.conf.d/synch.conf",
          "# synch serves DNS for the phones on port 53.\n[Resolve]\nDNSStubListener=no\n")
    doc = root / "usr/share/doc/synch-appliance"
    write(doc / "copyright", copyright_text([], time.gmtime(epoch).tm_year))
    write(doc / "README-boot.txt", (first_boot / "README-boot.txt").read_text())
    gzip_to(changelog("synch-appliance", version, maint, epoch,
                      "The first boot of the synch SD-card image."),
            doc / "changelog.Debian.gz")
    overrides = HERE / "synch-appliance/lintian-overrides"
    if overrides.is_file():
        write(root / "usr/share/lintian/overrides/synch-appliance", overrides.read_text())
    for script in ("postinst", "postrm"):
        write(root / "DEBIAN" / script, (HERE / "synch-appliance" / script).read_text(), 0o755)
    size = finish_tree(root, epoch, [])
    write(root / "DEBIAN/control", control({
        "Package": "synch-appliance",
        "Version": version,
        "Architecture": "all",
        "Maintainer": maint,
        "Installed-Size": str(size),
        "Depends": f"synch (>= {version}), python3",
        "Section": "net",
        "Priority": "optional",
    }, APPLIANCE_DESCRIPTION))
    os.utime(root / "DEBIAN/control", (epoch, epoch))
    return dpkg_deb(root, args.out / f"synch-appliance_{version}_all.deb")


def default_arch() -> str:
    return run(["dpkg", "--print-architecture"]).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=None, help="Debian architecture (default: this machine's)")
    ap.add_argument("--revision", default="1", help="Debian revision (default 1)")
    ap.add_argument("--out", type=Path, default=TOP / "dist", help="output directory")
    ap.add_argument("--source", type=Path, default=TOP,
                    help="source tree (pyproject.toml, synch/, appliance/)")
    ap.add_argument("--wheels", type=Path, default=None,
                    help="dependency wheels: used if the directory holds some, else "
                         "downloaded into it (default: a fresh download)")
    ap.add_argument("--pythons", default=" ".join(PYTHONS),
                    help=f"CPython versions to carry wheels for (default {' '.join(PYTHONS)})")
    ap.add_argument("--maintainer", default=None,
                    help="'Name <address>' (default $DEB_MAINTAINER, else the last commit's "
                         "author)")
    ap.add_argument("--python", default=sys.executable, help="a python with pip")
    args = ap.parse_args(argv)
    args.arch = args.arch or default_arch()
    args.pythons = tuple(args.pythons.split())
    args.source = args.source.resolve()
    args.out = args.out.resolve()
    os.umask(0o022)
    try:
        platforms(args.arch)
        if not shutil.which("dpkg-deb"):
            raise BuildError("dpkg-deb not found (it comes with dpkg)")
        args.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="synch-deb.") as tmp:
            work = Path(tmp)
            synch_wheel = build_synch_wheel(args.python, args.source, work / "wheel")
            deps = dependency_wheels(args.python, synch_wheel, args.arch, args.pythons,
                                     args.wheels or work / "deps")
            version = debian_version(synch_wheel.name.split("-")[1], args.revision)
            maint = maintainer(args.source, args.maintainer)
            epoch = source_date(args.source)
            built = [
                build_synch(args, synch_wheel, deps, work, version, maint, epoch),
                build_appliance(args, work, version, maint, epoch),
            ]
    except BuildError as err:
        print(f"deb: {err}", file=sys.stderr)
        return 1
    for path in built:
        print(f"deb: {path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
