"""Real Asterisk 22 instances for tests, any number at once, all sharing the lab chroot.

Each instance lives in <chroot>/srv/synch-lab/<name>-<pid>-<random>/ with its own
asterisk.conf (`-C`), config dir (etc/), run dir (its own asterisk.ctl), log, spool, lib and
cache dirs, AMI port and PJSIP UDP port. Asterisk runs with `-f` as the chroot's `asterisk`
user, so the Python object owns the process; files are chowned to that user because Asterisk
run as root refuses its own 0640 files.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab.chroot import LabError, lab_root, owner_alive, owner_tag
from lab.netns import ns_socket
from lab.ports import free_port

INSTANCES = "srv/synch-lab"
AMI_USER = "synch"

# Modules that need databases, hardware, other servers or their own config files, or that
# listen on fixed ports (iax2 4569, unistim 5000, dundi 4520): never wanted in the lab.
NOLOAD_PREFIXES = (
    "app_voicemail_", "res_config_", "res_odbc", "func_odbc", "cdr_", "cel_", "res_cdrel_",
    "res_snmp", "res_statsd", "res_hep", "res_prometheus", "res_calendar", "res_xmpp",
    "chan_motif", "chan_iax2", "chan_unistim", "chan_console", "chan_websocket",
    "res_websocket_client", "pbx_dundi", "pbx_lua", "pbx_ael", "res_ael_share", "pbx_realtime",
    "res_stir_shaken", "res_pjsip_stir_shaken", "res_phoneprov", "res_pjsip_phoneprov",
    "res_smdi", "res_stun_monitor", "res_resolver_unbound", "res_geolocation",
    "res_pjsip_geolocation", "res_aeap", "res_speech_aeap", "res_ari", "res_http_media_cache",
    "res_pjsip_config_wizard", "res_pjsip_notify", "res_fax_spandsp", "res_parking",
    "app_festival", "app_alarmreceiver", "app_amd", "app_followme", "app_queue",
    "app_confbridge", "app_page", "app_agent_pool", "app_jack", "app_minivm", "res_curl",
    "func_curl", "app_stasis", "res_stasis_broadcast", "res_adsi", "app_adsiprog",
    "app_getcpeid",
)
# Asterisk exits at start if one of these does not load: a broken lab fails loudly.
REQUIRED_MODULES = (
    "pbx_config", "app_voicemail", "res_pjsip", "chan_pjsip", "res_pjsip_session",
    "res_pjsip_registrar", "res_pjsip_authenticator_digest",
    "res_pjsip_outbound_authenticator_digest", "res_pjsip_endpoint_identifier_user",
)
# Core configs whose absence only fills the log with errors.
QUIET_CONFIGS = {
    "cdr.conf": "[general]\nenable = no\n",
    "cel.conf": "[general]\nenable = no\n",
    "features.conf": "", "ccss.conf": "", "acl.conf": "", "udptl.conf": "", "stasis.conf": "",
    "pjproject.conf": "", "res_fax.conf": "", "cli_aliases.conf": "",
    "musiconhold.conf": "", "voicemail.conf": "[general]\nformat = wav\n\n[default]\n",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$")
# Rows of `pjsip show endpoints` / `pjsip show contacts` (not their <Header> lines).
_ENDPOINT_ROW = re.compile(r"^\s*Endpoint:\s+([^\s/<]+)", re.MULTILINE)
_CONTACT_ROW = re.compile(r"^\s*Contact:\s+([^\s/<]+)/sip:", re.MULTILINE)
# AOR, contact URI and status of each row of `pjsip show contacts`.
_CONTACT_DETAIL = re.compile(
    r"^\s*Contact:\s+([^\s/<]+)/(sip:\S+)\s+\S+\s+(\S+)", re.MULTILINE
)


class AsteriskInstance:
    """One Asterisk process and its private directories inside the shared chroot."""

    def __init__(
        self, name: str, root: Path, host_dir: Path, *, ami_host: str, ami_port: int,
        sip_host: str, sip_port: int, ami_secret: str, netns: str | None,
    ) -> None:
        self.name = name
        self.root = root
        self.host_dir = host_dir
        self.config_dir = host_dir / "etc"
        self.ami_host, self.ami_port = ami_host, ami_port
        self.sip_host, self.sip_port = sip_host, sip_port
        self.ami_user, self.ami_secret = AMI_USER, ami_secret
        self.netns = netns
        self.boot_seconds: float | None = None  # start() to fully booted, last start
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<AsteriskInstance {self.name} ami={self.ami_host}:{self.ami_port} {state}>"

    # paths -------------------------------------------------------------------------------
    def inside(self, host_path: Path) -> str:
        """The path that Asterisk (inside the chroot) sees for `host_path`."""
        return "/" + str(host_path.relative_to(self.root))

    @property
    def conf(self) -> str:
        return self.inside(self.config_dir / "asterisk.conf")

    @property
    def console_log(self) -> Path:
        """Asterisk's stdout/stderr (console logger channel)."""
        return self.host_dir / "console.log"

    @property
    def messages_log(self) -> Path:
        return self.host_dir / "log" / "messages"

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.console_log.read_text(errors="replace").splitlines()[-lines:])
        return "(no console log)"

    # config files ------------------------------------------------------------------------
    def _config_path(self, filename: str) -> Path:
        path = (self.config_dir / filename).resolve()
        if not path.is_relative_to(self.config_dir.resolve()) or filename.startswith("/"):
            raise ValueError(f"config file name {filename!r} must stay inside {self.config_dir}")
        return path

    def write_config(self, filename: str, text: str) -> None:
        """Write a file in the config dir atomically (a reload never sees half of it)."""
        path = self._config_path(filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_text(text)
        uid, gid = _asterisk_ids(self.root)
        os.chown(tmp, uid, gid)
        os.chown(path.parent, uid, gid)
        tmp.chmod(0o640)
        tmp.replace(path)

    def read_config(self, filename: str) -> str:
        return self._config_path(filename).read_text()

    # process -----------------------------------------------------------------------------
    def _chroot_argv(self, *argv: str) -> list[str]:
        return ["chroot", "--userspec=asterisk:asterisk", str(self.root), *argv]

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc else None

    def start(self, timeout: float = 60) -> None:
        """Start Asterisk and return once `core waitfullybooted` says it has fully booted."""
        if self.running:
            raise LabError(f"{self.name}: already running (pid {self.pid})")
        argv = self._chroot_argv("/usr/sbin/asterisk", "-C", self.conf, "-f", "-n")
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        started = time.monotonic()
        with open(self.console_log, "ab") as log:
            # Own session: a Ctrl-C aimed at pytest does not kill Asterisk behind our back.
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + timeout
        while True:
            if not self.running:
                code = self._proc.returncode
                raise LabError(f"{self.name}: Asterisk exited ({code}) while starting:\n"
                               f"{self.log_tail()}")
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise LabError(f"{self.name}: not fully booted after {timeout}s:\n"
                               f"{self.log_tail()}")
            if self._fully_booted(min(left, 10)):
                self.boot_seconds = time.monotonic() - started
                return
            time.sleep(0.05)  # the ctl socket is not there yet; poll again

    def _fully_booted(self, timeout: float) -> bool:
        try:
            return "fully booted" in self.cli("core waitfullybooted", timeout=timeout)
        except (LabError, subprocess.TimeoutExpired):
            return False

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM (Asterisk shuts down cleanly), then SIGKILL after `timeout` s. Idempotent."""
        if self._proc is None:
            return
        if self.running:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._proc.wait()

    def kill(self) -> None:
        """SIGKILL now, as in a crash: no shutdown, sockets vanish with the process."""
        if self._proc is None:
            return
        if self.running:
            self._proc.kill()
        self._proc.wait()

    def cli(self, command: str, timeout: float = 10) -> str:
        """`asterisk -rx COMMAND` over this instance's ctl socket; its output."""
        argv = self._chroot_argv("/usr/sbin/asterisk", "-C", self.conf, "-rx", command)
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise LabError(f"{self.name}: `asterisk -rx {command!r}` exited {out.returncode}: "
                           f"{(out.stdout + out.stderr).strip()}")
        return out.stdout

    def endpoints(self) -> set[str]:
        """The names of the PJSIP endpoints loaded (`pjsip show endpoints`)."""
        return set(_ENDPOINT_ROW.findall(self.cli("pjsip show endpoints")))

    def contacts(self) -> set[str]:
        """The AORs with a registered contact (`pjsip show contacts`)."""
        return set(_CONTACT_ROW.findall(self.cli("pjsip show contacts")))

    def contact_details(self) -> dict[str, list[tuple[str, str]]]:
        """{AOR: [(contact URI, status)]} of `pjsip show contacts`; status is Asterisk's
        (Avail, Unavail, Unknown, NonQual, Created...)."""
        found: dict[str, list[tuple[str, str]]] = {}
        for aor, uri, status in _CONTACT_DETAIL.findall(self.cli("pjsip show contacts")):
            found.setdefault(aor, []).append((uri, status))
        return found

    def ami(self, fields: dict[str, str], timeout: float = 10) -> dict[str, str]:
        """One AMI action (logged in with Events: off, as synch does) over a fresh connection
        from the instance's namespace; the reply's headers. LabError when the login fails;
        OSError when AMI cannot be reached or does not answer in `timeout` s."""
        if self.netns:
            sock = ns_socket(self.netns, socket.AF_INET, socket.SOCK_STREAM)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.settimeout(timeout)
            sock.connect((self.ami_host, self.ami_port))
            reader = sock.makefile("rb")
            reader.readline()  # the banner
            login = {"Action": "Login", "Username": self.ami_user, "Secret": self.ami_secret,
                     "Events": "off"}  # fmt: skip
            for action in (login, fields):
                sock.sendall(
                    "".join(f"{k}: {v}\r\n" for k, v in action.items()).encode() + b"\r\n"
                )
                reply: dict[str, str] = {}
                while (line := reader.readline().decode(errors="replace").strip()) != "":
                    key, _, value = line.partition(":")
                    reply.setdefault(key.strip(), value.strip())
                if action is login and reply.get("Response") != "Success":
                    raise LabError(f"{self.name}: AMI login refused: {reply}")
            return reply

    def originate(self, channel: str, ring_seconds: float = 6) -> tuple[bool, str]:
        """Call `channel` (e.g. PJSIP/2011) and wait until it answers or `ring_seconds` pass
        (a synchronous AMI Originate into Wait(1)); (answered, Asterisk's message). A channel
        with no usable contact fails at once."""
        reply = self.ami(
            {"Action": "Originate", "Channel": channel, "Application": "Wait", "Data": "1",
             "Timeout": str(int(ring_seconds * 1000)), "Async": "false",
             "CallerID": f"{self.name} <{self.name}>"},
            timeout=ring_seconds + 10,
        )  # fmt: skip
        return reply.get("Response") == "Success", reply.get("Message", str(reply))

    def channels(self) -> list[list[str]]:
        """`core show channels concise`: channel!context!exten!prio!state!app!data!... split."""
        out = self.cli("core show channels concise")
        return [line.split("!") for line in out.splitlines() if "!" in line]

    def app_running(self, app: str, data_part: str) -> bool:
        """A channel is in dialplan application `app` with `data_part` in its arguments."""
        return any(f[5] == app and data_part in f[6] for f in self.channels() if len(f) > 6)

    def reload(self, module: str | None = None) -> None:
        """`module reload MODULE`, or `core reload` for everything; LabError if refused."""
        if module is None:
            self.cli("core reload")
            return
        out = self.cli(f"module reload {module}")
        if "reloaded successfully" not in out and "queued" not in out:
            raise LabError(f"{self.name}: module reload {module}: {out.strip()}")

    def remove(self) -> None:
        """Stop, then delete the instance directory."""
        self.stop()
        shutil.rmtree(self.host_dir, ignore_errors=True)


# building instances --------------------------------------------------------------------------
def _asterisk_ids(root: Path) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "asterisk":
            return int(fields[2]), int(fields[3])
    raise LabError(f"no asterisk user in {root}/etc/passwd: rebuild the lab chroot")


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for parent, dirs, files in os.walk(path):
        for entry in (*dirs, *files):
            os.chown(os.path.join(parent, entry), uid, gid, follow_symlinks=False)


def _module_dir(root: Path) -> str:
    found = sorted(root.glob("usr/lib/*/asterisk/modules"))
    if not found:
        raise LabError(f"no Asterisk modules under {root}/usr/lib: rebuild the lab chroot")
    return "/" + str(found[0].relative_to(root))


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def base_configs(
    inside_dir: str, root: Path, *, ami_host: str, ami_port: int, sip_host: str, sip_port: int,
    ami_secret: str, manager_users: str,
) -> dict[str, str]:
    """The files every instance starts with; `configs=` of new_instance overrides any."""
    moddir = _module_dir(root)
    d = inside_dir
    modules = sorted(p.name for p in (root / moddir.lstrip("/")).glob("*.so"))
    noload = [m for m in modules if m.startswith(NOLOAD_PREFIXES)]
    files = {
        "asterisk.conf": (
            "[directories]\n"
            f"astetcdir => {d}/etc\nastmoddir => {moddir}\nastvarlibdir => {d}/lib\n"
            f"astdbdir => {d}/lib\nastkeydir => {d}/lib\nastdatadir => /usr/share/asterisk\n"
            "astagidir => /usr/share/asterisk/agi-bin\n"
            f"astspooldir => {d}/spool\nastrundir => {d}/run\nastlogdir => {d}/log\n"
            f"astcachedir => {d}/cache\nastsbindir => /usr/sbin\n\n[options]\n"
        ),
        "modules.conf": "[modules]\nautoload = yes\n"
        + "".join(f"require = {m}.so\n" for m in REQUIRED_MODULES)
        + "".join(f"noload = {m}\n" for m in noload),
        "logger.conf": "[general]\n\n[logfiles]\nconsole => notice,warning,error\n"
        "messages => notice,warning,error\n",
        "manager.conf": (
            f"[general]\nenabled = yes\nport = {ami_port}\nbindaddr = {ami_host}\n\n"
            f"[{AMI_USER}]\nsecret = {ami_secret}\nread = all\nwrite = all\n\n{manager_users}\n"
        ),
        "pjsip.conf": (
            "[transport-udp]\ntype = transport\nprotocol = udp\n"
            f"bind = {_bind(sip_host, sip_port)}\n"
            "\n#tryinclude pjsip_lab.conf\n#tryinclude pjsip_synch.conf\n"
        ),
        "extensions.conf": "; dialplan: none needed by the lab\n",
        **QUIET_CONFIGS,
    }
    with contextlib.suppress(OSError):  # tones for calls, from Debian's sample
        files["indications.conf"] = (root / "etc/asterisk/indications.conf").read_text()
    return files


def prune_stale(root: Path) -> None:
    """Delete instance dirs whose test process is gone, killing any Asterisk they left."""
    base = root / INSTANCES
    if not base.is_dir():
        return
    for inst in base.iterdir():
        try:
            owner = (inst / "owner").read_text().strip()
        except OSError:
            continue  # being created right now, or not ours
        if owner_alive(owner):
            continue
        with contextlib.suppress(OSError, ValueError):
            pid = int((inst / "run/asterisk.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if f"/{INSTANCES}/{inst.name}/".encode() in cmdline:
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(inst, ignore_errors=True)


def new_instance(
    name: str, *, ami_host: str = "127.0.0.1", ami_port: int | None = None,
    sip_port: int | None = None, sip_host: str = "127.0.0.1",
    configs: dict[str, str] | None = None, netns: str | None = None, manager_users: str = "",
) -> AsteriskInstance:
    """Create (not start) an instance. Ports default to free ones on the host; inside a
    namespace pass them explicitly if you want standard ones (5038, 5060)."""
    if not _NAME.match(name):
        raise ValueError(f"instance name {name!r}: letters, digits, '-' and '_' only, ≤31 chars")
    root = lab_root()
    prune_stale(root)
    probe_host = "127.0.0.1" if netns else ami_host
    ami_port = ami_port or free_port("tcp", probe_host)
    sip_port = sip_port or free_port("udp", "127.0.0.1" if netns else sip_host)
    host_dir = root / INSTANCES / f"{name}-{os.getpid()}-{secrets.token_hex(3)}"
    host_dir.mkdir(parents=True)
    owner = owner_tag(os.getpid())
    assert owner is not None
    (host_dir / "owner").write_text(owner + "\n")
    for sub in ("etc", "run", "log", "spool", "lib/keys", "cache"):
        (host_dir / sub).mkdir(parents=True)
    uid, gid = _asterisk_ids(root)
    _chown_tree(host_dir, uid, gid)
    inst = AsteriskInstance(
        name, root, host_dir, ami_host=ami_host, ami_port=ami_port, sip_host=sip_host,
        sip_port=sip_port, ami_secret=secrets.token_hex(12), netns=netns,
    )
    files = base_configs(
        inst.inside(host_dir), root, ami_host=ami_host, ami_port=ami_port, sip_host=sip_host,
        sip_port=sip_port, ami_secret=inst.ami_secret, manager_users=manager_users,
    )
    files.update(configs or {})
    for filename, text in files.items():
        inst.write_config(filename, text)
    return inst


@contextmanager
def running_instance(name: str, **kwargs: Any) -> Iterator[AsteriskInstance]:
    """A started instance for a `with` block (module-scoped fixtures); removed afterwards."""
    inst = new_instance(name, **kwargs)
    try:
        inst.start()
        yield inst
    finally:
        inst.remove()
