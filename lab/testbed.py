"""The failover test bed: a central PBX, a branch and its phones, each a network namespace.

    phones ns ──lan0── branch ns ──wan0── central ns
    10.232.1.11-13     10.232.1.1          10.232.2.2
    sipp, resolver     10.232.2.1          Asterisk 22: AMI 5038, SIP 5060,
    = synch's DNS      Asterisk, synch     FreePBX PJSIP accounts
                       (DNS on :53)

The namespaces are joined to each other only (never to the host), so the addresses exist
nowhere else and parallel beds cannot collide. The branch forwards between its LAN and the
WAN (ip_forward inside the branch namespace only), so phones reach the central through it,
as they would through a branch router. The WAN is cut, silenced, made lossy or cut after a
byte budget by `Wan`, with nftables rules inside the branch namespace: the host's own
forwarding and firewall are never touched. The kernel here has no netem, so there is no
delay emulation; loss is `numgen random`, a silent link is `drop`, a cut is `link down`.

The test process talks to sockets inside the namespaces directly (`ns_socket`: a thread that
setns()es, makes the socket and ends), so sampling DNS or the status socket costs no process.

With `dialplan=` (survivable calling) synch also generates the branch's dialplan and voicemail;
the branch's base config then includes them and has the trunk `pstn-gw` to the PSTN gateway at
10.232.1.20 on the phones' LAN, where a test answers with a sipp uas; and the central has a
mailbox for every phone.

The namespaces come from lab.netns (`new_netns`): they record their owner, so a run that was
killed is cleaned up by the next one.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnslib import QTYPE, DNSRecord

from lab.asterisk import AsteriskInstance, new_instance
from lab.netns import Netns, link, new_netns, ns_socket
from lab.phones import Phone
from lab.samples import freepbx_pjsip, secret_for
from lab.synchproc import SynchProcess, lab_config_for
from lab.wait import wait_until

BRANCH_LAN = "10.232.1.1"
PHONE_ADDRS = ("10.232.1.11", "10.232.1.12", "10.232.1.13")
LAN_PREFIX = "10.232.1.0/24"
# The branch's PSTN gateway (a sipp uas started by a test) on the phones' LAN; only with dialplan.
GATEWAY_ADDR = "10.232.1.20"
TRUNK = "pstn-gw"
BRANCH_WAN = "10.232.2.1"
CENTRAL_WAN = "10.232.2.2"
DOMAIN = "example.local"
SIP_NAME = f"sip.{DOMAIN}"
BRANCH_SITE = "Branch"
PHONE_EXTS = (2001, 2002, 2003)
# HeadOffice accounts stay on the central (filtered out) but make the central's unfiltered
# aor/auth files a few tens of kB, so a sync's fetch is long enough to be cut in the middle.
HEADOFFICE_EXTS = tuple(range(1001, 1201))
TOKEN = "e2e-token"
ADMIN_TOKEN = "e2e-admin-token"
AMI_PORT = 5038
STATUS_PORT = 65038
METRICS_PORT = 9386
NFT_TABLE = "synch_e2e_wan"


@dataclass(frozen=True)
class Timers:
    """The short timers of the bed (printed beside every figure)."""

    interval: float = 1.0  # probemonitor.interval
    timeout: float = 0.5  # amiremote.timeout
    failure_tolerance: int = 5
    alive_threshold: int = 3
    error_penalty: int = 1
    recordttl: int = 2
    expires: int = 10  # phones' registration expiry; they refresh at half of it
    sync_interval: float = 30.0
    retry: float = 1.0  # a phone's retry after a failed registration
    register_timeout: float = 2.5  # one sipp REGISTER exchange at most
    contacts_interval: float = 5.0  # failover.contactsinterval: synch's look at the contacts

    @property
    def errors_to_fail(self) -> int:
        """Probe errors in a row that make the monitor Failed."""
        return math.ceil(self.failure_tolerance / (1 + self.error_penalty))

    @property
    def failover_bound(self) -> float:
        """SPEC: Failed (DNS flipped) within errors_to_fail probes plus one timeout. The margin
        absorbs scheduling on a loaded 2-core machine; it is a bound, not a speed test."""
        return self.errors_to_fail * self.interval + self.timeout + 3.0

    @property
    def phone_move_bound(self) -> float:
        """After the DNS flipped: the cached answer expires (TTL), the phone's next refresh or
        retry comes, and its REGISTER to the old server may have to time out first."""
        return self.recordttl + self.expires / 2 + 2 * (self.register_timeout + self.retry) + 3.0

    def describe(self) -> str:
        return (
            f"interval={self.interval:g}s timeout={self.timeout:g}s "
            f"failureTolerance={self.failure_tolerance} errorPenaltyPoints={self.error_penalty} "
            f"aliveThreshold={self.alive_threshold} recordttl={self.recordttl}s "
            f"contactsinterval={self.contacts_interval:g}s "
            f"phone_expires={self.expires}s phone_refresh={self.expires / 2:g}s "
            f"phone_retry={self.retry:g}s"
        )


class Wan:
    """The branch's WAN interface, as the test wants it: up, cut, silent, lossy or metered."""

    def __init__(self, branch: Netns, central: Netns, ifname: str = "wan0") -> None:
        self.branch, self.central, self.ifname = branch, central, ifname
        self.state = "up"

    def _rules(self, match: str) -> None:
        self.branch.nft_drop(NFT_TABLE, self.ifname, match, forward=True)

    def _clear_rules(self) -> None:
        self.branch.nft_delete(NFT_TABLE)

    def cut(self) -> None:
        """Pull the cable: the branch's WAN interface goes down."""
        self.branch.ip("link", "set", self.ifname, "down")
        self.state = "cut"

    def silent(self) -> None:
        """Everything over the WAN vanishes without a reply (no RST, no ICMP)."""
        self._rules("")
        self.state = "silent"

    def lossy(self, percent: int) -> None:
        """Each packet over the WAN (both ways) is dropped with probability `percent`%."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss percent must be 0..100, not {percent}")
        self._rules(f"numgen random mod 100 < {percent}")
        self.state = f"lossy {percent}%"

    def ami_dies_after(self, budget: int) -> None:
        """The central's AMI replies get through for `budget` more bytes, then vanish: the
        link dies in the middle of whatever AMI transfer is under way (a sync's GetConfig),
        wherever the transfer happens to be, without the test having to time it."""
        self._clear_rules()
        rules = (
            f"table inet {NFT_TABLE} {{\n  quota budget {{ over {budget} bytes }}\n"
            f"  chain wan_in {{ type filter hook input priority -300; "
            f'iifname "{self.ifname}" tcp sport {AMI_PORT} quota name "budget" drop; }}\n'
            "}\n"
        )
        self.branch.run(["nft", "-f", "-"], input=rules)
        self.state = f"AMI dies after {budget} bytes"

    def restore(self) -> None:
        self._clear_rules()
        self.branch.ip("link", "set", self.ifname, "up")
        # The central's route to the phones survives a carrier loss, but make sure of it.
        self.central.ip("route", "replace", LAN_PREFIX, "via", BRANCH_WAN)
        self.state = "up"


# -- synch inside the branch namespace --------------------------------------------------------


def synch_config(
    timers: Timers,
    central: AsteriskInstance,
    branch: AsteriskInstance,
    localconfigspath: Path,
    *,
    dialplan: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The bed's settings; `dialplan` (keys of the `dialplan` section) turns survivable calling
    on with the bed's trunk."""
    extra = {} if dialplan is None else {"dialplan": {"enabled": True, "trunk": TRUNK, **dialplan}}
    return lab_config_for(
        central,
        branch,
        localconfigspath,
        # Nothing listens there: names outside the zone get SERVFAIL, and no query leaves.
        ["127.0.0.1:5353"],
        central_host=CENTRAL_WAN,
        probemonitor={
            "failureTolerance": timers.failure_tolerance,
            "aliveThreshold": timers.alive_threshold,
            "errorPenaltyPoints": timers.error_penalty,
            "interval": timers.interval,
            # The central's SIP service where the phones go (targetnormal), as by default.
            "siptransports": ["udp"],
        },
        amiremote={"timeout": timers.timeout},
        amilocal={"hostname": "127.0.0.1"},
        syncmanager={"interval": timers.sync_interval, "filtervalue": f"^{BRANCH_SITE}$"},
        dnsservice={
            "listenaddress": BRANCH_LAN,
            "port": 53,
            "domain": DOMAIN,
            "recordttl": timers.recordttl,
            "targetnormal": CENTRAL_WAN,
            "targetfailover": BRANCH_LAN,
        },
        servicecontrol={"token": TOKEN, "admintoken": ADMIN_TOKEN, "port": STATUS_PORT},
        metrics={"port": METRICS_PORT},
        failover={"contactsinterval": timers.contacts_interval},
        **extra,
    )


# -- the bed ------------------------------------------------------------------------------------


def central_files(extra_exts: tuple[int, ...] = ()) -> dict[str, str]:
    """FreePBX PJSIP for HeadOffice and Branch (PHONE_EXTS and `extra_exts`), with
    registrations as short as the phones'."""
    branch = [*PHONE_EXTS, *extra_exts]
    files = freepbx_pjsip({"HeadOffice": list(HEADOFFICE_EXTS), BRANCH_SITE: branch})
    return {
        name: text.replace("minimum_expiration=60", "minimum_expiration=5")
        for name, text in files.items()
    }


def central_voicemail() -> str:
    """The central's voicemail.conf: a mailbox (and PIN) for every branch phone."""
    boxes = "".join(f"{ext} => {ext + 1000},Branch {ext}\n" for ext in PHONE_EXTS)
    return f"[general]\nformat=wav\n\n[default]\n{boxes}"


def branch_dialplan_files() -> dict[str, str]:
    """The branch's own part of survivable calling, set up once as the README says: the trunk
    to the PSTN gateway (with its own inbound context) and the includes of synch's files."""
    trunk = (
        f"[{TRUNK}]\ntype=endpoint\ncontext=from-{TRUNK}\ndisallow=all\nallow=ulaw\nallow=alaw\n"
        f"aors={TRUNK}\n\n[{TRUNK}]\ntype=aor\ncontact=sip:{GATEWAY_ADDR}:5060\n"
        "qualify_frequency=0\n"
    )
    return {
        "pjsip_lab.conf": trunk,
        "extensions.conf": "[general]\nstatic=yes\n\n#tryinclude extensions_synch.conf\n",
        "voicemail.conf": (
            "[general]\nformat=wav\n\n[default]\n\n#tryinclude voicemail_synch.conf\n"
        ),
    }


@dataclass
class Sample:
    """One look at the bed: status before and after a DNS query from the phones' LAN."""

    at: float
    before: dict[str, Any]
    dns: str | None
    after: dict[str, Any]


@dataclass
class TestBed:
    """Everything of one bed; `TestBed.build(workdir)` makes it, `close()` removes it."""

    __test__ = False  # not a pytest class

    workdir: Path
    timers: Timers
    central_host: Netns
    branch_host: Netns
    phones_host: Netns
    wan: Wan
    central: AsteriskInstance | None = None
    branch: AsteriskInstance | None = None
    synch: SynchProcess | None = None
    phones: list[Phone] = field(default_factory=list)
    started_at: float = field(default_factory=time.monotonic)
    dialplan: dict[str, Any] | None = None  # the settings' dialplan section (None: off)
    # More Branch accounts on the central (for phones a test brings itself, e.g. real
    # softphones), and whether the bed starts its own sipp phones on PHONE_EXTS.
    extra_exts: tuple[int, ...] = ()
    sipp_phones: bool = True

    # -- building -------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        workdir: Path,
        timers: Timers | None = None,
        dialplan: Mapping[str, Any] | None = None,
        *,
        extra_exts: tuple[int, ...] = (),
        sipp_phones: bool = True,
    ) -> TestBed:
        """`dialplan`: the `dialplan` section's keys besides `enabled` and `trunk` (which the
        bed sets), e.g. {"outbound": ["_0XXXXXXXXX"]}; None leaves survivable calling off.
        `extra_exts`: more Branch accounts (synced like PHONE_EXTS); `sipp_phones=False`: no
        sipp phones (the test brings its own)."""
        timers = timers or Timers()
        hosts: list[Netns] = []
        try:
            for role in ("central", "branch", "phones"):
                hosts.append(new_netns(role))
        except BaseException:
            for host in hosts:
                host.delete()
            raise
        central_host, branch_host, phones_host = hosts
        bed = cls(
            workdir,
            timers,
            central_host,
            branch_host,
            phones_host,
            Wan(branch_host, central_host),
            dialplan=None if dialplan is None else dict(dialplan),
            extra_exts=tuple(extra_exts),
            sipp_phones=sipp_phones,
        )
        try:
            bed._network()
            bed._asterisks()
            bed._synch()
            if sipp_phones:
                bed._phones()
        except BaseException:
            bed.close()
            raise
        return bed

    def _network(self) -> None:
        link(
            self.branch_host,
            "lan0",
            f"{BRANCH_LAN}/24",
            self.phones_host,
            "lan0",
            f"{PHONE_ADDRS[0]}/24",
        )
        for addr in PHONE_ADDRS[1:]:
            self.phones_host.ip("addr", "add", f"{addr}/24", "dev", "lan0")
        if self.dialplan is not None:
            self.phones_host.ip("addr", "add", f"{GATEWAY_ADDR}/24", "dev", "lan0")
        self.phones_host.ip("route", "add", "default", "via", BRANCH_LAN)
        link(
            self.branch_host,
            "wan0",
            f"{BRANCH_WAN}/30",
            self.central_host,
            "wan0",
            f"{CENTRAL_WAN}/30",
        )
        self.central_host.ip("route", "add", LAN_PREFIX, "via", BRANCH_WAN)
        # The branch routes for its phones; only inside its own namespace.
        self.branch_host.run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
        # The phones' resolver is synch's DNS on the branch.
        self.phones_host.set_resolv_conf(
            f"nameserver {BRANCH_LAN}\noptions timeout:1 attempts:1\n"
        )

    def _asterisks(self) -> None:
        calling = self.dialplan is not None
        self.central = new_instance(
            "e2e-central",
            netns=self.central_host.name,
            ami_host=CENTRAL_WAN,
            ami_port=AMI_PORT,
            sip_host=CENTRAL_WAN,
            sip_port=5060,
            configs={
                **central_files(self.extra_exts),
                **({"voicemail.conf": central_voicemail()} if calling else {}),
            },
        )
        self.branch = new_instance(
            "e2e-branch",
            netns=self.branch_host.name,
            ami_host="127.0.0.1",
            ami_port=AMI_PORT,
            sip_host=BRANCH_LAN,
            sip_port=5060,
            configs=branch_dialplan_files() if calling else None,
        )
        with ThreadPoolExecutor(2) as pool:  # two boots at once: a few seconds saved
            for future in [pool.submit(i.start) for i in (self.central, self.branch)]:
                future.result()

    def _synch(self) -> None:
        assert self.central is not None and self.branch is not None
        config = synch_config(
            self.timers, self.central, self.branch, self.branch.config_dir, dialplan=self.dialplan
        )
        self.synch = SynchProcess(config, self.workdir, netns=self.branch_host.name)
        self.synch.start()
        # defaultstate is Failover: the central must prove healthy, and the first sync must
        # have put the phones' accounts on the branch, before phones come up.
        self.wait_state(30, Monitor="Stable", Service="Normal", Sync="Synced")
        wait_until(
            lambda: {*PHONE_EXTS, *self.extra_exts} <= self.endpoints(self.branch),
            10,
            message="synced accounts loaded by the branch Asterisk",
        )

    def _phones(self) -> None:
        t = self.timers
        for i, ext in enumerate(PHONE_EXTS):
            # Spread over one refresh period, so the figures cover a phone that refreshed
            # just before the outage as well as one that refreshes just after it.
            delay = i * (t.expires / 2) / len(PHONE_EXTS)
            self.phones.append(
                Phone(
                    ext,
                    secret_for(ext),
                    netns=self.phones_host.name,
                    local_ip=PHONE_ADDRS[i],
                    local_port=5060,
                    media_port=6000,
                    server_name=SIP_NAME,
                    expires=t.expires,
                    workdir=self.workdir / f"phone-{ext}",
                    retry=t.retry,
                    register_timeout=t.register_timeout,
                ).start(delay)
            )

    def close(self) -> None:
        """Stop everything and delete the namespaces. Safe after a partial build."""
        for phone in self.phones:
            phone.stop()
        if self.synch is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):  # killed instead
                self.synch.stop()
        for inst in (self.central, self.branch):
            if inst is not None:
                with contextlib.suppress(Exception):
                    inst.stop()
                if not os.environ.get("SYNCH_LAB_KEEP"):
                    inst.remove()
        for host in (self.phones_host, self.branch_host, self.central_host):
            host.delete()

    # -- looking at it ------------------------------------------------------------------------

    @property
    def synch_proc(self) -> SynchProcess:
        assert self.synch is not None
        return self.synch

    def dns(self, timeout: float = 1.0) -> str | None:
        """The A answer for the SIP name, asked from the phones' LAN; None if no answer."""
        sock = ns_socket(self.phones_host.name)
        with sock:
            sock.settimeout(timeout)
            query = DNSRecord.question(SIP_NAME, "A")
            try:
                sock.sendto(query.pack(), (BRANCH_LAN, 53))
                reply = DNSRecord.parse(sock.recv(4096))
            except OSError:
                return None
        answers = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
        return answers[0] if answers else None

    def sample(self) -> Sample:
        synch = self.synch_proc
        before = synch.details()
        dns = self.dns()
        return Sample(time.monotonic(), before, dns, synch.details())

    def wait_state(self, timeout: float, **expected: str) -> dict[str, str]:
        def matches() -> dict[str, str] | None:
            status = self.synch_proc.status()
            return status if all(status[k] == v for k, v in expected.items()) else None

        return wait_until(
            matches, timeout, message=f"synch state {expected}; log:\n{self.synch_proc.log()}"
        )

    def wait_dns(self, target: str, timeout: float) -> float:
        """Poll the DNS from the phones' LAN until it answers `target`; when it did."""
        wait_until(
            lambda: self.dns() == target,
            timeout,
            interval=0.05,
            message=f"DNS answers {target}; log:\n{self.synch_proc.log()}",
        )
        return time.monotonic()

    def wait_phones(self, target: str, timeout: float, after: float = 0.0) -> float:
        """Until every phone's latest registration is at `target` and started after `after`;
        returns when the last of them got there (from the phones' own records)."""

        def all_there() -> bool:
            return all(
                p.registered_at(target) and p.first_ok_at(target, after) is not None
                for p in self.phones
            )

        wait_until(
            all_there,
            timeout,
            interval=0.1,
            message=f"all phones registered at {target}:\n{self.phones_timeline(after)}",
        )
        times = [p.first_ok_at(target, after) for p in self.phones]
        return max((t for t in times if t is not None), default=time.monotonic())

    def phones_timeline(self, since: float) -> str:
        return "\n".join(p.timeline(since) for p in self.phones)

    def endpoints(self, inst: AsteriskInstance | None) -> set[int]:
        """The extensions `inst` has an endpoint for."""
        assert inst is not None
        return {int(name) for name in inst.endpoints() if name.isdigit()}

    def contacts(self, inst: AsteriskInstance | None) -> set[int]:
        """Extensions with a registered contact on `inst` (its own view)."""
        assert inst is not None
        return {int(aor) for aor in inst.contacts() if aor.isdigit()}

    # -- putting it back --------------------------------------------------------------------------

    def heal(self, timeout: float = 60) -> None:
        """Back to healthy: WAN up, central running and answering, synch running in automatic
        control, Stable/Normal, and every phone registered at the central."""
        assert self.central is not None
        self.wan.restore()
        self.central_host.restore()
        if not self.central.running:
            self.central.start()
        if not self.synch_proc.running:
            self.synch_proc.start()
        if self.synch_proc.details().get("Forced"):
            self.synch_proc.admin("Auto")
        self.wait_state(timeout, Monitor="Stable", Service="Normal")
        self.wait_phones(CENTRAL_WAN, timeout)

    def central_silent(self) -> None:
        """The central's host stops answering anything (its Asterisk keeps running)."""
        self.central_host.drop_all("wan0")


# -- figures --------------------------------------------------------------------------------------


@dataclass
class CutFigures:
    """What one WAN cut and restore looked like, in seconds from the cut or the restore."""

    how: str
    failover_detect_seconds: float
    phones_at_branch_seconds: float
    registrations_lost: int
    fallback_seconds: float
    phones_back_seconds: float
    restore_samples: list[Sample]
    probes_at_restore: dict[str, int]

    def lines(self, timers: Timers) -> list[str]:
        return [
            f"wan_cut_mode={self.how}",
            f"failover_detect_seconds={self.failover_detect_seconds:.2f}",
            f"phones_at_branch_seconds={self.phones_at_branch_seconds:.2f}",
            f"registrations_lost={self.registrations_lost}",
            f"fallback_seconds={self.fallback_seconds:.2f}",
            f"phones_at_central_seconds={self.phones_back_seconds:.2f}",
            f"timers={timers.describe()}",
        ]


def measure_cut(
    bed: TestBed, how: str = "cut", on_failover: Callable[[], None] | None = None
) -> CutFigures:
    """Cut the WAN (`cut`: link down; `silent`: nft drop), wait for DNS and phones to move,
    hold for one registration expiry counting failed REGISTERs, restore, wait for the
    fallback and the phones' return. Raises AssertionError past the contract's bounds."""
    t = bed.timers
    synch = bed.synch_proc
    cut = time.monotonic()
    if how == "cut":
        bed.wan.cut()
    elif how == "silent":
        bed.wan.silent()
    else:
        raise ValueError(f"unknown WAN cut {how!r}: cut or silent")
    detected = bed.wait_dns(BRANCH_LAN, t.failover_bound)
    at_branch = bed.wait_phones(BRANCH_LAN, t.phone_move_bound, after=cut)
    if on_failover is not None:
        on_failover()
    # Settled: hold one registration expiry; no phone may fail to register meanwhile.
    settled = time.monotonic()
    wait_until(
        lambda: time.monotonic() - settled >= t.expires, t.expires + 5, interval=0.2, message="hold"
    )
    lost = sum(len(p.failures_between(settled, time.monotonic())) for p in bed.phones)
    probes = dict(synch.details()["Probes"])
    restored = time.monotonic()
    bed.wan.restore()
    samples = sample_until(bed, lambda s: s.dns == CENTRAL_WAN, 30)
    fallback = samples[-1].at
    back = bed.wait_phones(CENTRAL_WAN, t.phone_move_bound + 5, after=restored)
    return CutFigures(
        how,
        detected - cut,
        at_branch - cut,
        lost,
        fallback - restored,
        back - restored,
        samples,
        probes,
    )


def sample_until(bed: TestBed, done: Callable[[Sample], bool], timeout: float) -> list[Sample]:
    """Sample the bed back to back until `done(sample)`; every sample, the last one `done`."""
    samples: list[Sample] = []

    def step() -> bool:
        samples.append(bed.sample())
        return done(samples[-1])

    wait_until(
        step,
        timeout,
        interval=0.02,
        message=f"sampling; last {samples[-1:]}; log:\n{bed.synch_proc.log()}",
    )
    return samples
