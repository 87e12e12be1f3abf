"""appsettings.json → frozen Settings.

`from synch.config import ...` is how every other module reads the settings:

- settings: the frozen dataclasses (Settings and its sections), the interface of the others;
- reader: the reading rules of the file and the typed reader of one section's values;
- addresses: IP literals, host and DNS names, `ADDRESS:PORT` endpoints;
- sections, dnsservice, dialplan: one reader per section;
- load: the file → Settings, the checks across sections, ConfigError, where the file is.

Names with a leading underscore are the package's own, shared between its modules only.
"""

from synch.config.addresses import parse_endpoint
from synch.config.dnsservice import MAX_DNS_TIME, STATES
from synch.config.load import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    ConfigError,
    config_path,
    describe_problems,
    file_mode_warning,
    load_settings,
    parse_settings,
)
from synch.config.reader import MAX_COUNT, MAX_SECONDS, SECRET_KEYS
from synch.config.sections import (
    DEFAULT_TLS_AMI_PORT,
    LOCAL_FILENAMES,
    LOG_LEVELS,
    MAX_TOKEN_BYTES,
    MODES,
)
from synch.config.settings import (
    DEFAULT_DNS_ALLOW,
    DEFAULT_DNS_RATELIMIT,
    DEFAULT_FAILOVER_BUDGET_TARGET,
    DEFAULT_METRICS_PORT,
    AmiSettings,
    DialplanSettings,
    DnsSettings,
    Endpoint,
    FailoverSettings,
    LogLevel,
    MetricsSettings,
    ProbeMonitorSettings,
    ServiceControlSettings,
    Settings,
    SyncManagerSettings,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_DNS_ALLOW",
    "DEFAULT_DNS_RATELIMIT",
    "DEFAULT_FAILOVER_BUDGET_TARGET",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_TLS_AMI_PORT",
    "LOCAL_FILENAMES",
    "LOG_LEVELS",
    "MAX_COUNT",
    "MAX_DNS_TIME",
    "MAX_SECONDS",
    "MAX_TOKEN_BYTES",
    "MODES",
    "SECRET_KEYS",
    "STATES",
    "AmiSettings",
    "ConfigError",
    "DialplanSettings",
    "DnsSettings",
    "Endpoint",
    "FailoverSettings",
    "LogLevel",
    "MetricsSettings",
    "ProbeMonitorSettings",
    "ServiceControlSettings",
    "Settings",
    "SyncManagerSettings",
    "config_path",
    "describe_problems",
    "file_mode_warning",
    "load_settings",
    "parse_endpoint",
    "parse_settings",
]
