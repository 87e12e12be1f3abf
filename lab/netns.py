"""Network namespaces joined to the host by a veth pair, to play remote hosts and cut them off.

Addresses come from 10.231.0.0/16, one /30 per namespace (host side .1, namespace side .2),
chosen under a file lock among those no interface on the host uses yet, so parallel test runs
never collide. `drop_all` makes the namespace silent with nftables rules inside the namespace
itself (the kernel here has no netem), so it never touches the host's own firewall.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.chroot import owner_alive, owner_tag

POOL = ipaddress.IPv4Network("10.231.0.0/16")
LOCK = Path("/run/synch-lab-netns.lock")
OWNERS = Path("/run/synch-lab-netns")  # OWNERS/NAME holds the owner_tag of its test process
PREFIX = "synl"  # namespace and interface names: synl<hex>, synl<hex>h / synl<hex>n (≤15)
NFT_TABLE = "synch_lab_drop"


def _ip(*argv: str) -> str:
    out = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(argv)}` failed: {out.stderr.strip()}")
    return out.stdout


@dataclass
class Netns:
    """A namespace `name` whose interface `ns_if` has `ns_addr`; the host reaches it through
    `host_if` with `host_addr` (and the namespace's default route points back at it)."""

    name: str
    host_if: str
    ns_if: str
    host_addr: str
    ns_addr: str
    resolv_conf: Path | None = None

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], check: bool = True, timeout: float = 30,
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(argv), capture_output=True, text=True, check=check,
                              timeout=timeout)

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(argv), **kwargs)  # type: ignore[call-overload,no-any-return]

    def drop_all(self) -> None:
        """Make the namespace silent: everything in or out of its veth is dropped without a
        reply (no RST, no ICMP), as when a WAN link dies. Loopback inside keeps working."""
        if not shutil.which("nft"):
            raise RuntimeError("nft is not installed (apt-get install nftables)")
        dev = f'"{self.ns_if}"'
        rules = (
            f"table inet {NFT_TABLE} {{\n"
            f"  chain in {{ type filter hook input priority -300; iifname {dev} drop; }}\n"
            f"  chain out {{ type filter hook output priority -300; oifname {dev} drop; }}\n"
            "}\n"
        )
        self.restore()
        subprocess.run(self.argv(["nft", "-f", "-"]), input=rules, text=True, check=True,
                       capture_output=True)

    def restore(self) -> None:
        """Undo `drop_all` (no-op if the namespace is not cut)."""
        subprocess.run(self.argv(["nft", "delete", "table", "inet", NFT_TABLE]),
                       capture_output=True, check=False)

    def link_down(self) -> None:
        """Cut the cable instead: the host side sees the link go down."""
        _ip("link", "set", self.host_if, "down")

    def link_up(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def delete(self) -> None:
        """Remove the namespace (its processes keep running but lose the network), the veth
        pair and the resolv.conf. Safe to call twice."""
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        if self.resolv_conf is not None:
            shutil.rmtree(self.resolv_conf.parent, ignore_errors=True)
        (OWNERS / self.name).unlink(missing_ok=True)


def run_in(netns: Netns | str, argv: Sequence[str], check: bool = True,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run `argv` inside the namespace; its completed process (text output)."""
    name = netns.name if isinstance(netns, Netns) else netns
    return subprocess.run(["ip", "netns", "exec", name, *argv], capture_output=True, text=True,
                          check=check, timeout=timeout)


def drop_all(netns: Netns) -> None:
    netns.drop_all()


def restore(netns: Netns) -> None:
    netns.restore()


@contextlib.contextmanager
def locked() -> Iterator[None]:
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _used_subnets() -> set[ipaddress.IPv4Network]:
    used: set[ipaddress.IPv4Network] = set()
    for line in _ip("-o", "-4", "addr", "show").splitlines():
        addr = ipaddress.ip_interface(line.split()[3])
        if addr.ip in POOL:
            used.add(ipaddress.IPv4Network(f"{addr.ip}/30", strict=False))
    return used


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_subnets()
    for _ in range(1000):
        candidate = ipaddress.IPv4Network(
            f"{POOL.network_address + 4 * secrets.randbelow(POOL.num_addresses // 4)}/30")
        if candidate not in used:
            return candidate
    raise RuntimeError(f"no free /30 left in {POOL}: stale namespaces? (`ip netns list`)")


def create_netns(resolv_conf: str | None = None) -> Netns:
    """A new namespace with lo up, a veth pair to the host and a default route via the host.

    `resolv_conf`: text for /etc/netns/NAME/resolv.conf, which `ip netns exec` shows processes
    inside as /etc/resolv.conf (phones pointed at a test DNS server).
    """
    token = secrets.token_hex(4)
    name, host_if, ns_if = f"{PREFIX}{token}", f"{PREFIX}{token}h", f"{PREFIX}{token}n"
    with locked():
        prune_stale()
        subnet = _free_subnet()
        host_addr, ns_addr = (str(subnet.network_address + i) for i in (1, 2))
        netns = Netns(name, host_if, ns_if, host_addr, ns_addr)
        OWNERS.mkdir(exist_ok=True)
        (OWNERS / name).write_text(f"{owner_tag(os.getpid())}\n")
        try:
            _ip("netns", "add", name)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name)
            _ip("addr", "add", f"{host_addr}/30", "dev", host_if)
            _ip("link", "set", host_if, "up")
        except BaseException:
            netns.delete()
            raise
    try:
        for argv in (
            ("link", "set", "lo", "up"),
            ("addr", "add", f"{ns_addr}/30", "dev", ns_if),
            ("link", "set", ns_if, "up"),
            ("route", "add", "default", "via", host_addr),
        ):
            _ip("-n", name, *argv)
        if resolv_conf is not None:
            netns.resolv_conf = Path("/etc/netns") / name / "resolv.conf"
            netns.resolv_conf.parent.mkdir(parents=True, exist_ok=True)
            netns.resolv_conf.write_text(resolv_conf)
    except BaseException:
        netns.delete()
        raise
    return netns


def prune_stale() -> list[str]:
    """Delete lab namespaces whose test process is gone (a killed run); called under the lock
    by create_netns, so a namespace being set up is never taken for a stale one."""
    removed = []
    for line in _ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name.startswith(PREFIX):
            continue
        try:
            tag = (OWNERS / name).read_text()
        except OSError:
            tag = ""
        if not owner_alive(tag):
            Netns(name, f"{name}h", f"{name}n", "", "", Path("/etc/netns") / name / "x").delete()
            removed.append(name)
    return removed
