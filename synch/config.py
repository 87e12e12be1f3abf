"""appsettings.json → frozen Settings.

The dataclasses below are the interface every other module uses. Field names are the lowercase
key names of the file (the file's keys are case-insensitive).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_CONFIG_PATH = "/etc/synch/appsettings.json"
DEFAULT_METRICS_PORT = 9386


class ConfigError(Exception):
    """Raised with every problem found; `problems` holds ("section.key", message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{key}: {msg}" for key, msg in problems))


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


@dataclass(frozen=True)
class ProbeMonitorSettings:
    failuretolerance: int = 5
    alivethreshold: int = 5
    errorpenaltypoints: int = 1
    interval: float = 5.0


@dataclass(frozen=True)
class AmiSettings:
    hostname: str = "127.0.0.1"
    port: int = 5038
    username: str = "synch"
    password: str = ""
    timeout: float = 4.0  # effective value is min(timeout, probemonitor.interval) for amiremote
    tls: bool = False
    cafile: str | None = None


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
    fullcheckevery: int = 12  # a full GetConfig at least every N cycles even if CoreStatus is unchanged


@dataclass(frozen=True)
class DnsSettings:
    listenaddress: str = "0.0.0.0"
    port: int = 53
    domain: str = "example.local"
    record: str = "sip"
    recordttl: int = 300
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
class Settings:
    loglevel: LogLevel = field(default_factory=LogLevel)
    probemonitor: ProbeMonitorSettings = field(default_factory=ProbeMonitorSettings)
    amiremote: AmiSettings = field(default_factory=AmiSettings)
    amilocal: AmiSettings = field(default_factory=AmiSettings)
    syncmanager: SyncManagerSettings = field(default_factory=SyncManagerSettings)
    dnsservice: DnsSettings = field(default_factory=DnsSettings)
    servicecontrol: ServiceControlSettings = field(default_factory=ServiceControlSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    source: str = ""  # path the settings were read from

    @property
    def probe_timeout(self) -> float:
        """amiremote.timeout, capped at the probe interval (capped, not an error)."""
        return min(self.amiremote.timeout, self.probemonitor.interval)


def load_settings(path: str) -> Settings:
    """Read and validate a file; raises ConfigError listing every problem."""
    raise NotImplementedError


def parse_settings(text: str, source: str = "<string>") -> Settings:
    """Validate JSON-with-comments text; raises ConfigError listing every problem."""
    raise NotImplementedError
