"""The frozen settings: the interface every other module uses.

Field names are the lowercase key names of appsettings.json (the file's keys are
case-insensitive); a default here is the default of the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_METRICS_PORT = 9386
# Who may query the DNS service by default: loopback, RFC 1918, unique local and link-local
# (where a branch's phones live). Anyone else gets REFUSED: no open resolver.
DEFAULT_DNS_ALLOW = (
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
)
DEFAULT_DNS_RATELIMIT = 50.0  # forwarded queries per second per client; 0 = no limit
# Serve-stale (synch.dns.stale): good upstream answers kept for a WAN outage, and how long
# past their TTL they may still be served (RFC 8767 suggests one to three days).
DEFAULT_DNS_STALE_ENTRIES = 4096
DEFAULT_DNS_STALE_MAXAGE = 3 * 86400.0


@dataclass(frozen=True)
class Endpoint:
    """A host and port, e.g. a DNS forwarder."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class LogLevel:
    default: str = "information"  # trace|debug|information|warning|error|critical


DEFAULT_UPLINK_PORT = 53  # uplinkcheck targets without a port: a resolver's TCP port
# Seconds a phone may stay unreachable after a cut before synch warns (synch.budget); 0 = never.
DEFAULT_FAILOVER_BUDGET_TARGET = 120.0


@dataclass(frozen=True)
class ProbeMonitorSettings:
    failuretolerance: int = 5
    alivethreshold: int = 5
    errorpenaltypoints: int = 1
    interval: float = 5.0
    # SIP OPTIONS to dnsservice.targetnormal, beside the AMI Ping; () = AMI only (the original)
    siptransports: tuple[str, ...] = ("udp",)
    sipport: int = 5060  # udp and tcp
    siptlsport: int = 5061
    sipuser: str = ""  # the probe's From user; "" = the first synced account, else "synch"
    # TCP connects beyond the WAN that tell "our uplink is down" from "the central is down"
    uplinkcheck: tuple[Endpoint, ...] = ()
    # seconds a fallback may wait while the branch has calls up; 0 = falls back at once
    fallbackholdmax: float = 300.0
    # The worst case synch.budget computes is compared with it: warned about when larger; 0 = off
    failoverbudgettarget: float = DEFAULT_FAILOVER_BUDGET_TARGET


@dataclass(frozen=True)
class AmiSettings:
    hostname: str = "127.0.0.1"
    port: int = 5038
    username: str = "synch"
    password: str = ""
    timeout: float = 4.0  # effective value is min(timeout, probemonitor.interval) for amiremote
    tls: bool = False
    cafile: str | None = None
    maxreplymb: int = 32  # a larger AMI reply is refused (a 10k-extension GetConfig: ~8 MB)


@dataclass(frozen=True)
class SyncManagerSettings:
    remotefilename: str = "sip_additional.conf"
    interval: float = 300.0
    filterkey: str = "accountcode"
    filtervalue: str = ".*"
    localconfigspath: str = "/etc/asterisk/"
    mode: str = "sip"  # sip | pjsip
    localfilename: str = "sip_synch.conf"  # by mode: sip_synch.conf / pjsip_synch.conf
    maxremovepercent: float = 50.0
    # a full GetConfig at least every N cycles even if CoreStatus is unchanged
    fullcheckevery: int = 12
    # the sync after the central comes back waits a random 0..jitter s (hundreds of branches
    # must not all fetch at the moment it returns: a full fetch costs the central ~0.5 CPU s,
    # 500 branches within 300 s are under one core); 0: at once
    jitter: float = 300.0


@dataclass(frozen=True)
class DnsSettings:
    listenaddress: str = "0.0.0.0"
    port: int = 53
    domain: str = "example.local"
    record: str = "sip"
    recordttl: int = 300
    srvbackup: bool = True  # the SIP SRV names also list the other side (priority 10)
    targetnormal: str = "127.0.0.1"
    targetfailover: str = "127.0.0.1"
    forwarders: tuple[Endpoint, ...] = ()
    forwardtimeout: float = 2.0
    refreshinterval: int = 300
    retryinterval: int = 300
    expireinterval: int = 300
    minttl: int = 300
    ttl: int = 300
    defaultstate: str = "Failover"  # Normal | Failover
    allow: tuple[str, ...] = DEFAULT_DNS_ALLOW  # networks, normalised ("10.0.0.0/8")
    ratelimit: float = DEFAULT_DNS_RATELIMIT
    stalecachesize: int = DEFAULT_DNS_STALE_ENTRIES  # 0 = no serve-stale
    stalemaxage: float = DEFAULT_DNS_STALE_MAXAGE  # seconds past the answer's TTL

    @property
    def fqdn(self) -> str:
        """The SIP record's full name, lowercase, no trailing dot."""
        return f"{self.record}.{self.domain}".lower().rstrip(".")


@dataclass(frozen=True)
class ServiceControlSettings:
    token: str = ""
    listenaddress: str = "127.0.0.1"
    port: int = 65038
    admintoken: str | None = None


@dataclass(frozen=True)
class MetricsSettings:
    listenaddress: str = "0.0.0.0"
    port: int = DEFAULT_METRICS_PORT


@dataclass(frozen=True)
class DialplanSettings:
    """Survivable calling (synch.dialplan). Off by default: an existing site's files and
    reloads stay exactly as they were until the operator turns it on."""

    enabled: bool = False
    trunk: str = ""  # the branch's own PSTN endpoint (pjsip) or peer (sip); required if enabled
    outbound: tuple[str, ...] = ()  # `_0XXXXXXXXX`, `00X.`-style patterns, or `9|_0X.`
    emergency: tuple[str, ...] = ("112", "911", "999", "000")
    ringtimeout: int = 20  # seconds a local phone rings before voicemail
    centralfallback: str = ""  # dial prefix for central-only extensions via the trunk
    voicemailaccess: str = "*97"  # a user's own mailbox; "" = none
    # The only contexts synch writes: Asterisk merges same-named sections, so an account with
    # context=from-pstn must never add routes to the trunk's inbound context of the branch.
    contexts: tuple[str, ...] = ("from-internal",)


# Where phones can be that the branch reaches: the private ranges (RFC 1918, RFC 4193).
DEFAULT_CONTACT_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


@dataclass(frozen=True)
class FailoverSettings:
    """What the branch adds to the synced AORs (PJSIP) while it serves the phones
    (synch.sync.mirror)."""

    mirrorcontacts: bool = True  # learn the phones' contacts from the central, use them
    contactsinterval: float = 120.0  # seconds between two looks at the central's contacts
    contactnetworks: tuple[str, ...] = DEFAULT_CONTACT_NETWORKS
    expiration: int = 60  # registrations granted at the branch: 60-90 s; 0 = the central's


@dataclass(frozen=True)
class Settings:
    loglevel: LogLevel = field(default_factory=LogLevel)
    probemonitor: ProbeMonitorSettings = field(default_factory=ProbeMonitorSettings)
    amiremote: AmiSettings = field(default_factory=AmiSettings)
    amilocal: AmiSettings = field(default_factory=AmiSettings)
    syncmanager: SyncManagerSettings = field(default_factory=SyncManagerSettings)
    dnsservice: DnsSettings = field(default_factory=DnsSettings)
    servicecontrol: ServiceControlSettings = field(default_factory=ServiceControlSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    dialplan: DialplanSettings = field(default_factory=DialplanSettings)
    failover: FailoverSettings = field(default_factory=FailoverSettings)
    source: str = ""  # path the settings were read from
    # What was accepted but looked wrong (already logged once by parse_settings).
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def probe_timeout(self) -> float:
        """amiremote.timeout, capped at the probe interval (capped, not an error)."""
        return min(self.amiremote.timeout, self.probemonitor.interval)
