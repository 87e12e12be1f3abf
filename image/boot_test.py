"""Boot the synch image in qemu (aarch64, TCG) against a lab central and check the appliance.

    python image/boot_test.py --image image/out/synch-arm64.img

A copy of the image gets a site `synch.json` (and a `hostname`) on its FAT partition; the
central is a lab Asterisk on this host, which the guest reaches as 10.0.2.2 through qemu's
user network. With `--upgrade DEB` (a later synch package), the package goes on the FAT
partition too and, after the first boot's checks, is installed in the guest as a box is
updated (`apt install ./synch_*.deb`): the settings, their owner and mode, and the
/etc/asterisk history must stay, and synch must come back Stable and Synced on it.
The guest's DNS (udp+tcp 53), status (65038) and metrics (9386) ports are
forwarded to host loopback. systemctl-level checks go through systemd's debug shell on a
virtio console (a unix socket here), enabled on the kernel command line of this test only:
the image itself has no such shell.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TOP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TOP))

from dnslib import QTYPE, DNSRecord  # noqa: E402

from lab.asterisk import new_instance  # noqa: E402
from lab.ports import free_port  # noqa: E402
from lab.samples import central_configs  # noqa: E402
from lab.wait import wait_until  # noqa: E402

TOKEN = "image-test-token"
DOMAIN = "branch.test"
HOSTNAME = "branch-qemu"
CENTRAL_IN_GUEST, GUEST = "10.0.2.2", "10.0.2.15"
ANSI = re.compile(r"\x1b(\[[0-9;?!]*[A-Za-z]|\][^\x07]*\x07)")


def say(message: str) -> None:
    print(f"[image-test] {message}", flush=True)


def site_settings(ami_port: int, ami_secret: str) -> dict[str, Any]:
    return {
        "amiremote": {"hostname": CENTRAL_IN_GUEST, "port": ami_port, "password": ami_secret},
        "amilocal": {"password": "set-at-first-boot"},
        # The lab central's SIP listens on a port of its own on the host, not at targetnormal's
        # 5060 where the SIP probe asks: probe it over AMI only, or it would never be Stable.
        "probemonitor": {"siptransports": []},
        "syncmanager": {"mode": "pjsip", "filtervalue": "^HeadOffice$", "interval": 60},
        "dnsservice": {
            "domain": DOMAIN,
            "targetnormal": CENTRAL_IN_GUEST,
            "targetfailover": GUEST,
            # Nothing listens there: forwarded names get SERVFAIL, nothing leaves the lab.
            "forwarders": ["127.0.0.1:5353"],
            "defaultstate": "Failover",
        },
        "servicecontrol": {"token": TOKEN, "listenaddress": "0.0.0.0"},
        "metrics": {"listenaddress": "0.0.0.0", "port": 9386},
    }


def partition_offsets(image: Path) -> list[int]:
    out = subprocess.run(["sfdisk", "-J", str(image)], capture_output=True, check=True).stdout
    return [p["start"] * 512 for p in json.loads(out)["partitiontable"]["partitions"]]


class Guest:
    """The qemu process, its serial log and the debug shell on its virtio console."""

    def __init__(self, work: Path, disk: Path, ports: dict[str, int]):
        self.work, self.disk, self.ports = work, disk, ports
        self.console = work / "console.log"
        self.shell_path = work / "shell.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.shell: socket.socket | None = None
        self.counter = 0

    def start(self) -> None:
        boot = partition_offsets(self.disk)[0]
        for name in ("vmlinuz", "initrd.img"):
            subprocess.run(
                ["mcopy", "-o", "-i", f"{self.disk}@@{boot}", f"::{name}", str(self.work / name)],
                check=True,
            )
        p = self.ports
        fwd = ",".join([
            f"hostfwd=udp:127.0.0.1:{p['dns']}-:53", f"hostfwd=tcp:127.0.0.1:{p['dns']}-:53",
            f"hostfwd=tcp:127.0.0.1:{p['status']}-:65038",
            f"hostfwd=tcp:127.0.0.1:{p['metrics']}-:9386",
        ])
        argv = [
            "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024",
            "-display", "none", "-monitor", "none", "-serial", f"file:{self.console}",
            "-kernel", str(self.work / "vmlinuz"), "-initrd", str(self.work / "initrd.img"),
            "-append", "root=/dev/vda2 rootwait console=ttyAMA0 systemd.debug_shell=/dev/hvc0"
            " systemd.mask=serial-getty@hvc0.service",
            "-drive", f"if=none,id=hd,file={self.disk},format=raw",
            "-device", "virtio-blk-pci,drive=hd",
            "-netdev", f"user,id=net0,{fwd}", "-device", "virtio-net-pci,netdev=net0,romfile=",
            "-device", "virtio-serial-pci",
            "-chardev", f"socket,id=sh,path={self.shell_path},server=on,wait=off",
            "-device", "virtconsole,chardev=sh",
        ]
        self.proc = subprocess.Popen(["nice", "-n", "10", *argv], stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def connect_shell(self, timeout: float = 60) -> None:
        """Attach to the debug shell and make it plain: no echo, prompt or escape codes."""
        self.shell = socket.socket(socket.AF_UNIX)
        self.shell.connect(str(self.shell_path))
        setup = (
            "stty -echo; export TERM=dumb PS1='' PROMPT_COMMAND='';"
            " bind 'set enable-bracketed-paste off'"
        )
        deadline = time.monotonic() + timeout
        while True:  # the shell may still be starting: retry until it answers
            try:
                self._exchange(setup, 3)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise AssertionError("guest debug shell does not answer") from None

    def sh(self, command: str, timeout: float = 60) -> tuple[int, str]:
        """Run a command in the guest's debug shell; (exit status, output)."""
        if self.shell is None:
            self.connect_shell()
        try:
            return self._exchange(command, timeout)
        except TimeoutError:
            raise AssertionError(f"guest shell: no answer to {command!r}") from None

    def _exchange(self, command: str, timeout: float) -> tuple[int, str]:
        assert self.shell is not None
        self.counter += 1
        marker = f"__RC{self.counter}__"
        # An echoed line would show `$?` unexpanded: only the real output has digits there.
        self.shell.sendall(f"{command}; echo {marker}$?{marker}\n".encode())
        pattern = re.compile(rf"{marker}(\d+){marker}")
        buf = b""
        deadline = time.monotonic() + timeout
        while not (m := pattern.search(buf.decode(errors="replace"))):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.shell.settimeout(left)
            try:
                chunk = self.shell.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError("guest shell closed")
            buf += chunk
        text = ANSI.sub("", buf.decode(errors="replace")[: m.start()]).replace("\r", "")
        output = "\n".join(ln for ln in text.split("\n") if marker not in ln).strip()
        return int(m.group(1)), output

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def get_status(port: int) -> dict[str, str] | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"GetStatus({TOKEN})\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return None
    if not data.startswith(b"[{"):
        return None
    status: list[dict[str, str]] = json.loads(data)
    return status[0]


def dns_a(port: int, name: str, tcp: bool = False) -> list[str]:
    query = DNSRecord.question(name, "A")
    reply = DNSRecord.parse(query.send("127.0.0.1", port, tcp=tcp, timeout=5))
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def check(self, name: str, fn: Callable[[], object]) -> None:
        try:
            result = fn()
            if not result and result is not None:
                raise AssertionError("false")
            say(f"ok    {name}")
        except Exception as err:
            self.failed.append(name)
            say(f"FAIL  {name}: {err}")


@contextmanager
def lab_central() -> Iterator[Any]:
    central = new_instance("imgcentral", configs=central_configs())
    central.start()
    try:
        yield central
    finally:
        central.stop()
        central.remove()


def wait_ready(guest: Guest, ports: dict[str, int], timeout: float) -> float:
    start = time.monotonic()

    def ready() -> bool:
        if not guest.alive():
            raise SystemExit(f"qemu exited; see {guest.console}")
        return get_status(ports["status"]) is not None

    wait_until(ready, timeout, interval=1, message="synch status socket through hostfwd")
    return time.monotonic() - start


def appliance_checks(guest: Guest, ports: dict[str, int], c: Checks, secret: list[str]) -> None:
    c.check("first boot consumed synch.json", lambda: guest.sh(
        "test ! -e /boot/firmware/synch.json && test ! -e /boot/firmware/synch.json.rejected"
    )[0] == 0)
    c.check("first boot disabled itself",
            lambda: guest.sh("systemctl is-enabled synch-first-boot")[1] == "disabled")
    c.check("hostname from the boot partition", lambda: guest.sh("hostname")[1] == HOSTNAME)
    c.check("settings 0600 owned by asterisk",
            lambda: guest.sh("stat -c %a:%U /etc/synch/appsettings.json")[1] == "600:asterisk")
    c.check("synch.service active", lambda: guest.sh("systemctl is-active synch")[1] == "active")
    c.check("asterisk.service active",
            lambda: guest.sh("systemctl is-active asterisk")[1] == "active")

    def ami_user() -> bool:
        rc, out = guest.sh("asterisk -rx 'manager show user synch'", timeout=30)
        if rc != 0 or "username: synch" not in out:
            raise AssertionError(out[-300:])
        listening = guest.sh("ss -Hltn 'sport = :5038'")[1].split()
        if "127.0.0.1:5038" not in listening:
            raise AssertionError(f"AMI listens on {listening}")
        return True

    c.check("branch Asterisk has synch's AMI user", ami_user)

    def branch_secret() -> bool:
        out = guest.sh("sed -n 's/^secret *= *//p' /etc/asterisk/manager.conf")[1]
        if not out or "SYNCH_FIRST_BOOT_SECRET" in out:
            return False
        if secret and secret[0] != out:
            raise AssertionError("the branch AMI secret changed across the reboot")
        secret[:] = [out]
        return True

    c.check("branch AMI secret generated (and kept)", branch_secret)
    status: dict[str, str] = {}

    def stable_and_synced() -> bool:
        status.update(get_status(ports["status"]) or {})
        return status.get("Monitor") == "Stable" and status.get("Sync") == "Synced"

    c.check("GetStatus: central Stable and Synced", lambda: wait_until(
        stable_and_synced, 180, interval=2, message=f"status {status}"))
    c.check("DNS (udp) answers the SIP name with the central",
            lambda: dns_a(ports["dns"], f"sip.{DOMAIN}") == [CENTRAL_IN_GUEST])
    c.check("DNS (tcp) answers the SIP name",
            lambda: dns_a(ports["dns"], f"sip.{DOMAIN}", tcp=True) == [CENTRAL_IN_GUEST])
    c.check("/metrics served", lambda: "synch_build_info" in metrics(ports["metrics"]))
    c.check("synced users in pjsip_synch.conf",
            lambda: "[1001]" in guest.sh("cat /etc/asterisk/pjsip_synch.conf")[1])


UPGRADE_NAME = "synch-upgrade.deb"


def deb_version(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True,
                          text=True, check=True).stdout.strip()


def upgrade_checks(guest: Guest, ports: dict[str, int], c: Checks, version: str) -> None:
    """Update synch the README's way and check what the update keeps."""
    git_log = "runuser -u asterisk -- env HOME=/tmp git --no-pager -C /etc/asterisk log --format=%H"
    settings = "sha256sum /etc/synch/appsettings.json; stat -c %a:%U /etc/synch/appsettings.json"
    old_settings = guest.sh(settings)[1]
    old_history = guest.sh(git_log)[1]
    old_pid = guest.sh("systemctl show -p MainPID --value synch")[1]

    def install() -> bool:
        rc, out = guest.sh(
            "cd /boot/firmware && DEBIAN_FRONTEND=noninteractive apt-get install -y -q"
            f" -o Dpkg::Options::=--force-confold ./{UPGRADE_NAME} </dev/null", timeout=1200)
        if rc != 0:
            raise AssertionError(out[-1500:])
        return True

    c.check("apt install of the later package", install)
    c.check("package version after the update",
            lambda: guest.sh("dpkg-query -W -f='${Version}' synch")[1] == version)
    c.check("synch-appliance kept by the update of synch alone", lambda: guest.sh(
        "dpkg-query -W -f='${Status}' synch-appliance")[1] == "install ok installed")
    c.check("settings, owner and mode kept by the update",
            lambda: guest.sh(settings)[1] == old_settings)

    def history_kept() -> bool:
        new = guest.sh(git_log)[1]
        if not old_history or not new.endswith(old_history):
            raise AssertionError(f"history was {old_history!r}, now {new!r}")
        return True

    c.check("/etc/asterisk history kept by the update", history_kept)
    c.check("synch.service restarted by the update", lambda: wait_until(
        lambda: guest.sh("systemctl is-active synch")[1] == "active"
        and guest.sh("systemctl show -p MainPID --value synch")[1] not in ("0", old_pid),
        120, interval=2, message="synch to run again after the update"))
    status: dict[str, str] = {}

    def stable_and_synced() -> bool:
        status.update(get_status(ports["status"]) or {})
        return status.get("Monitor") == "Stable" and status.get("Sync") == "Synced"

    c.check("GetStatus after the update: Stable and Synced", lambda: wait_until(
        stable_and_synced, 180, interval=2, message=f"status {status}"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for a boot")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--upgrade", type=Path, default=None,
                    help="a later synch package to update the booted image to")
    args = ap.parse_args()
    if args.upgrade and not args.upgrade.is_file():
        raise SystemExit(f"no package {args.upgrade}")
    for tool in ("qemu-system-aarch64", "mcopy", "sfdisk"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: make image-deps")
    work = Path(tempfile.mkdtemp(prefix="synch-image-test."))
    ports = {k: free_port("tcp") for k in ("dns", "status", "metrics")}
    checks, secret = Checks(), list[str]()
    guest = None
    try:
        with lab_central() as central:
            say(f"central: lab AMI 127.0.0.1:{central.ami_port} ({CENTRAL_IN_GUEST} in the guest)")
            disk = work / "disk.img"
            subprocess.run(["cp", "--sparse=always", str(args.image.resolve()), str(disk)],
                           check=True)
            boot = partition_offsets(disk)[0]
            (work / "synch.json").write_text(json.dumps(
                site_settings(central.ami_port, central.ami_secret), indent=2))
            (work / "hostname").write_text(HOSTNAME + "\n")
            for name in ("synch.json", "hostname"):
                subprocess.run(["mcopy", "-o", "-i", f"{disk}@@{boot}", str(work / name),
                                f"::{name}"], check=True)
            if args.upgrade:
                subprocess.run(["mcopy", "-o", "-i", f"{disk}@@{boot}", str(args.upgrade),
                                f"::{UPGRADE_NAME}"], check=True)
            guest = Guest(work, disk, ports)
            say(f"booting; serial console in {guest.console}")
            guest.start()
            first = wait_ready(guest, ports, args.timeout)
            say(f"boot-to-ready (first boot): {first:.0f} s")
            appliance_checks(guest, ports, checks, secret)
            if args.upgrade:
                version = deb_version(args.upgrade)
                say(f"updating synch to {version}")
                upgrade_checks(guest, ports, checks, version)

            say("rebooting")
            guest.sh("systemctl reboot", timeout=10)
            wait_until(lambda: get_status(ports["status"]) is None, 120, interval=0.5,
                       message="synch to go down for the reboot")
            guest.shell = None  # the shell on the next boot is a new one
            again = wait_ready(guest, ports, args.timeout)
            say(f"boot-to-ready (reboot): {again:.0f} s")
            appliance_checks(guest, ports, checks, secret)
    finally:
        if guest:
            guest.stop()
        if args.keep or checks.failed:
            say(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    total = len(checks.failed)
    say("all checks passed" if not total else f"{total} check(s) failed: {checks.failed}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
