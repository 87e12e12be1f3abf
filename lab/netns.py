"""Network namespaces playing hosts: joined to the host by a veth pair, or to each other only.

`create_netns()` makes a namespace joined to the host: addresses come from 10.231.0.0/16, one
/30 per namespace (host side .1, namespace side .2), chosen under a file lock among those no
interface on the host uses yet, so parallel test runs never collide. `new_netns()` makes one
with loopback only, for beds of namespaces joined to each other with `link()` (no name or
address of theirs exists on the host). `drop_all` makes a namespace silent with nftables rules
inside the namespace itself (the kernel here has no netem), so it never touches the host's own
firewall.

Every namespace records its owner (the test process) under OWNERS before it exists, so that a
run that was killed is cleaned up by the next one (`prune_stale`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab.chroot import owner_alive, owner_tag

POOL = ipaddress.IPv4Network("10.231.0.0/16")
LOCK = Path("/run/synch-lab-netns.lock")
OWNERS = Path("/run/synch-lab-netns")  # OWNERS/NAME holds the owner_tag of its test process
PREFIX = "synl"  # namespace and interface names: synl<hex>, synl<hex>h / synl<hex>n (≤15)
NFT_TABLE = "synch_lab_drop"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*argv: str) -> str:
    out = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(argv)}` failed: {out.stderr.strip()}")
    return out.stdout


def drop_rules(table: str, ifname: str, match: str = "", forward: bool = False) -> str:
    """nftables rules dropping what passes interface `ifname` (and matches `match`) in and out,
    and with `forward` what is routed through it, before anything else sees it."""
    dev, cond = f'"{ifname}"', f"{match} " if match else ""
    fwd = (
        f"  chain drop_fwd {{ type filter hook forward priority -300; "
        f"iifname {dev} {cond}drop; oifname {dev} {cond}drop; }}\n"
        if forward
        else ""
    )
    return (
        f"table inet {table} {{\n"
        f"  chain drop_in {{ type filter hook input priority -300; iifname {dev} {cond}drop; }}\n"
        f"  chain drop_out {{ type filter hook output priority -300; oifname {dev} {cond}drop; }}\n"
        f"{fwd}}}\n"
    )


def ns_socket(
    netns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM
) -> socket.socket:
    """A socket that lives in namespace `netns` (made by a short-lived thread that joined it;
    a socket stays in the namespace it was made in), so talking to a server inside a namespace
    costs no process."""
    box: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box.append(socket.socket(family, kind))
        except BaseException as exc:
            box.append(exc)

    thread = threading.Thread(target=make, daemon=True)
    thread.start()
    thread.join()
    result = box[0]
    if isinstance(result, BaseException):
        raise result
    return result


@dataclass
class Netns:
    """Namespace `name`. Joined to the host (create_netns), its interface `ns_if` has `ns_addr`
    and the host reaches it through `host_if` with `host_addr` (the namespace's default route
    points back at it); made by new_netns these are empty."""

    name: str
    host_if: str = ""
    ns_if: str = ""
    host_addr: str = ""
    ns_addr: str = ""
    resolv_conf: Path | None = None

    def ip(self, *argv: str) -> None:
        """`ip -n NAME ARGV...`; RuntimeError with ip's message when it fails."""
        _ip("-n", self.name, *argv)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(
        self, argv: Sequence[str], check: bool = True, timeout: float = 30,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(argv), capture_output=True, text=True, check=check,
                              timeout=timeout, input=input)  # fmt: skip

    def popen(self, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(argv), **kwargs)  # type: ignore[call-overload,no-any-return]

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        return ns_socket(self.name, family, kind)

    def set_resolv_conf(self, text: str) -> None:
        """/etc/netns/NAME/resolv.conf, which `ip netns exec` shows processes inside as
        /etc/resolv.conf (phones pointed at a test DNS server)."""
        self.resolv_conf = Path("/etc/netns") / self.name / "resolv.conf"
        self.resolv_conf.parent.mkdir(parents=True, exist_ok=True)
        self.resolv_conf.write_text(text)

    def nft_drop(self, table: str, ifname: str, match: str = "", forward: bool = False) -> None:
        """Replace nftables table `table` inside the namespace by drop_rules(...)."""
        if not shutil.which("nft"):
            raise RuntimeError("nft is not installed (apt-get install nftables)")
        self.nft_delete(table)
        rules = drop_rules(table, ifname, match, forward)
        out = self.run(["nft", "-f", "-"], check=False, input=rules)
        if out.returncode != 0:
            raise RuntimeError(f"nft -f in {self.name} failed: {out.stderr.strip()}\n{rules}")

    def nft_delete(self, table: str) -> None:
        """Remove nftables table `table` inside the namespace (no-op if there is none)."""
        self.run(["nft", "delete", "table", "inet", table], check=False)

    def drop_all(self, ifname: str | None = None) -> None:
        """Make the namespace silent: everything in or out of `ifname` (default: its veth to
        the host) is dropped without a reply (no RST, no ICMP), as when a WAN link dies.
        Loopback inside keeps working."""
        self.nft_drop(NFT_TABLE, ifname or self.ns_if)

    def restore(self) -> None:
        """Undo `drop_all` (no-op if the namespace is not cut)."""
        self.nft_delete(NFT_TABLE)

    def link_down(self) -> None:
        """Cut the cable instead: the host side sees the link go down."""
        _ip("link", "set", self.host_if, "down")

    def link_up(self) -> None:
        _ip("link", "set", self.host_if, "up")

    def delete(self) -> None:
        """Remove the namespace (its processes keep running but lose the network), its veth
        pair and its resolv.conf. Safe to call twice."""
        if self.host_if:
            subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        if self.resolv_conf is not None:
            shutil.rmtree(self.resolv_conf.parent, ignore_errors=True)
        (OWNERS / self.name).unlink(missing_ok=True)


def link(a: Netns, a_if: str, a_addr: str, b: Netns, b_if: str, b_addr: str) -> None:
    """A veth pair between two namespaces (made inside `a`, so no name exists on the host)."""
    a.ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
    for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
        ns.ip("addr", "add", addr, "dev", ifname)
        ns.ip("link", "set", ifname, "up")


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


def _add(netns: Netns) -> None:
    """Under the lock: the owner record first, then the namespace, so that another run's
    pruning never takes a namespace being set up for an abandoned one."""
    OWNERS.mkdir(exist_ok=True)
    (OWNERS / netns.name).write_text(f"{owner_tag(os.getpid())}\n")
    _ip("netns", "add", netns.name)


def new_netns(role: str = "") -> Netns:
    """A new namespace with only loopback (up); `role`'s first letter goes into its name."""
    netns = Netns(f"{PREFIX}{role[:1]}{secrets.token_hex(4)}")
    try:
        with locked():
            prune_stale()  # namespaces of runs that were killed
            _add(netns)
        netns.ip("link", "set", "lo", "up")
    except BaseException:
        netns.delete()
        raise
    return netns


def create_netns(resolv_conf: str | None = None) -> Netns:
    """A new namespace with lo up, a veth pair to the host and a default route via the host.

    `resolv_conf`: text for its resolv.conf (see Netns.set_resolv_conf).
    """
    name = f"{PREFIX}{secrets.token_hex(4)}"
    with locked():
        prune_stale()
        subnet = _free_subnet()
        host_addr, ns_addr = (str(subnet.network_address + i) for i in (1, 2))
        netns = Netns(name, f"{name}h", f"{name}n", host_addr, ns_addr)
        try:
            _add(netns)
            _ip("link", "add", netns.host_if, "type", "veth", "peer", "name", netns.ns_if,
                "netns", name)  # fmt: skip
            _ip("addr", "add", f"{host_addr}/30", "dev", netns.host_if)
            _ip("link", "set", netns.host_if, "up")
        except BaseException:
            netns.delete()
            raise
    try:
        for argv in (
            ("link", "set", "lo", "up"),
            ("addr", "add", f"{ns_addr}/30", "dev", netns.ns_if),
            ("link", "set", netns.ns_if, "up"),
            ("route", "add", "default", "via", host_addr),
        ):
            netns.ip(*argv)
        if resolv_conf is not None:
            netns.set_resolv_conf(resolv_conf)
    except BaseException:
        netns.delete()
        raise
    return netns


def prune_stale() -> list[str]:
    """Delete lab namespaces whose test process is gone (a killed run); called under the lock
    by new_netns and create_netns, so a namespace being set up is never taken for a stale one."""
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
            Netns(name, f"{name}h", resolv_conf=Path("/etc/netns") / name / "x").delete()
            removed.append(name)
    return removed
