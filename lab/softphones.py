"""Real SIP phones for the test bed: Debian's `baresip` and `linphonec`, at their default timers.

sipp (lab.sipp, lab.phones) plays scripted scenarios; the phones here are user agents whose
own registration, retry and DNS logic is what a test measures. Each one:

- runs in the phones' namespace (`ip netns exec`), so it resolves the SIP name through the
  namespace's /etc/netns/NAME/resolv.conf, i.e. synch's DNS, and registers
  `sip:EXT@<server>` by name;
- is configured with the server, its credentials and auto-answer only, plus what a headless
  run needs (its own address, no sound card, a control channel). Registration interval,
  refresh point, retry timers, DNS and transport choices are the phone's defaults;
- runs as a uid of its own (60000 + extension), and an nftables rule of the namespace makes its
  DNS queries leave from its own address, so lab.capture puts every query down to its phone
  (phones on one LAN share the resolver configuration, not their addresses);
- writes everything it prints, each line stamped with the seconds since it started, to
  `<workdir>/<kind>.log` (`log_offset()` / `log_since()` cut a test's part out).

Driving: `dial(number)`, `hangup()`, `call(number, ...)` (dial, wait for the answer, hang
up), and the events it reports (`events()`): registered / register_failed (baresip only),
incoming, ringing, established, closed.

Defaults of the Debian packages, read from their sources and seen on the wire in this bed
(README "Real phones" has the figures):

baresip 1.0.0 (libre 1.1.0): registration interval 3600 s plus a random 0–255 s
(`regint`), refreshed at 90 % of the expiry the registrar granted; every request (REGISTER,
its authenticated repeat, INVITE) resolves the server afresh, RFC 3263 style: NAPTR of the
domain, SRV `_sips._tcp`, `_sip._tcp`, `_sip._udp` under the domain, then A; no DNS cache
of its own. After a failed REGISTER (timeout after 32 s, 403, 500, 503, any error) it
waits 30–60 s, doubling per failure up to 900–1800 s; Retry-After is ignored.

linphonec 5.1 (liblinphone, belle-sip): registration interval 3600 s (`reg_expires`),
refreshed at 90 % of the granted expiry. It resolves the server once (SRV `_sip._udp`, then
A; with mDNS built in, as Debian builds it, SRV for names ending in `.local` goes to mDNS,
never to the unicast resolver) and keeps the address: no DNS query on refresh, on retry or
for a call. Its refresher retries a REGISTER that timed out (32 s) after 2 s, one answered
403 (or another code below 600 not named here) after 60 s, 500/404/480 only with Retry-After,
and 503 after Retry-After, without it after 60,000 s (belle-sip multiplies its 60,000 ms
default by 1000 again): no retry was seen within 82 s of a 500 or a 503.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ClassVar

from lab.netns import Netns, ns_socket
from lab.wait import wait_until

NFT_TABLE = "synch_lab_phone_dns"
UID_BASE = 60000


@dataclass(frozen=True)
class PhoneEvent:
    at: float  # time.monotonic()
    kind: str  # registered, register_failed, incoming, ringing, established, closed, status
    detail: str = ""
    call: str = ""  # the phone's own id of the call
    peer: str = ""  # the far end's URI


@dataclass(frozen=True)
class CallResult:
    """One call the phone placed: `established` is when the far end answered (None: never)."""

    number: str
    started: float
    established: float | None
    ended: float
    detail: str

    def __bool__(self) -> bool:
        return self.established is not None


def own_dns_source(netns: Netns, uid: int, address: str) -> None:
    """DNS queries of processes running as `uid` in `netns` leave from `address` (nftables
    source NAT inside the namespace), so a capture tells the phones' queries apart."""
    rule = f"meta skuid {uid} udp dport 53 snat ip to {address}"
    out = netns.run(["nft", "list", "table", "ip", NFT_TABLE], check=False)
    if out.returncode == 0 and f"meta skuid {uid} " in out.stdout:
        return  # a phone started again
    if out.returncode != 0:
        netns.run(
            ["nft", "-f", "-"],
            input=(
                f"table ip {NFT_TABLE} {{\n  chain post {{ type nat hook postrouting "
                "priority srcnat; }\n}\n"
            ),
        )
    netns.run(["nft", "add", "rule", "ip", NFT_TABLE, "post", *rule.split()])


class Softphone:
    """One real phone (extension `ext`) on `address` of namespace `netns`; `server` is the
    SIP server's name (the domain of its address of record)."""

    kind: ClassVar[str] = ""
    binary: ClassVar[str] = ""
    package: ClassVar[str] = ""  # the Debian package that has it (Makefile DEB_PACKAGES)

    def __init__(
        self,
        ext: int,
        password: str,
        *,
        netns: Netns,
        address: str,
        server: str,
        workdir: Path,
        uid: int | None = None,
    ) -> None:
        self.ext, self.password = ext, password
        self.netns, self.address, self.server = netns, address, server
        self.workdir = workdir  # its log and a copy of its configuration
        self.home = Path()  # its HOME and configuration, readable by its uid (made by start())
        self.uid = uid if uid is not None else UID_BASE + ext
        self.log_path = workdir / f"{self.kind}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._lock = threading.Lock()
        self._events: list[PhoneEvent] = []
        self._active: set[str] = set()
        self._pump: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ext}@{self.address} {self.state}>"

    @property
    def name(self) -> str:
        return f"{self.kind} {self.ext}"

    @property
    def state(self) -> str:
        if self.proc is None:
            return "not started"
        return "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------

    def argv(self) -> list[str]:
        raise NotImplementedError

    def write_config(self) -> None:
        raise NotImplementedError

    def start(self) -> Softphone:
        """Write the configuration and power the phone on (it registers by itself)."""
        if self.running:
            raise RuntimeError(f"{self.name} already running")
        if shutil.which(self.binary) is None:
            raise RuntimeError(f"{self.binary} is not installed (Debian package {self.package}: "
                               "`make deps`)")  # fmt: skip
        self.workdir.mkdir(parents=True, exist_ok=True)
        # A test's own tmp dir is not reachable for another uid: the phone gets a home of its
        # own, and the test keeps a copy of what it was configured with.
        self.home = Path(tempfile.mkdtemp(prefix=f"synch-{self.kind}-{self.ext}-"))
        self.write_config()
        for path in (self.home, *self.home.rglob("*")):
            os.chown(path, self.uid, self.uid)
            if path.is_file():
                shutil.copy(path, self.workdir / path.name)
        own_dns_source(self.netns, self.uid, self.address)
        argv = [
            "setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
            "--pdeathsig", "KILL", "env", f"HOME={self.home}", *self.argv(),
        ]  # fmt: skip
        self.started_at = time.monotonic()
        self.proc = self.netns.popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.home,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self._pump = threading.Thread(
            target=self._read_output, args=(self.proc.stdout,), name=self.name, daemon=True
        )
        self._pump.start()
        try:
            self.after_start()
        except BaseException:
            self.stop()
            raise
        return self

    def after_start(self) -> None:
        """Anything to do once the process runs (connect the control channel)."""

    def quit(self) -> None:
        """Ask the phone to exit (it unregisters on the way out)."""

    def stop(self, timeout: float = 3) -> None:
        """Quit (unregistering when it can; `timeout` s for that), then SIGTERM, then
        SIGKILL (linphonec ignores SIGTERM). Idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.quit()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(2)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
        if self._pump is not None:
            self._pump.join(2)
        self.closed()
        shutil.rmtree(self.home, ignore_errors=True)

    def closed(self) -> None:
        """Release what after_start() took."""

    # -- output and events --------------------------------------------------------------------

    def _read_output(self, stream: IO[bytes]) -> None:
        with open(self.log_path, "a", encoding="utf-8", errors="replace") as log:
            log.write(f"=== {self.name} started, {' '.join(self.argv())}\n")
            for raw in stream:
                now = time.monotonic()
                line = raw.decode(errors="replace").rstrip("\r\n")
                line = re.sub(r"\x1b\[[0-9;]*m", "", line)  # baresip colours its SIP trace
                log.write(f"[{now - self.started_at:9.3f}] {line}\n")
                log.flush()
                self.on_line(now, line)

    def on_line(self, at: float, line: str) -> None:
        """One line the phone printed (events are recorded from here or from a control
        channel)."""

    def record(
        self, kind: str, detail: str = "", at: float | None = None, call: str = "", peer: str = ""
    ) -> None:
        event = PhoneEvent(time.monotonic() if at is None else at, kind, detail, call, peer)
        with self._lock:
            self._events.append(event)
            if kind in ("incoming", "progress", "ringing", "established") and call:
                self._active.add(call)
            elif kind == "closed":
                self._active.discard(call)

    def active_calls(self) -> set[str]:
        """The calls the phone has reported and not yet reported closed."""
        with self._lock:
            return set(self._active)

    def wait_idle(self, timeout: float = 5) -> bool:
        """Until the phone has no call (a test's previous call has ended)."""
        deadline = time.monotonic() + timeout
        while self.active_calls() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.active_calls()

    def events(self, kind: str | None = None, since: float = 0.0) -> list[PhoneEvent]:
        with self._lock:
            found = list(self._events)
        return [e for e in found if (kind is None or e.kind == kind) and e.at >= since]

    def wait_event(
        self, kinds: tuple[str, ...], since: float, timeout: float, peer: str = ""
    ) -> PhoneEvent | None:
        """The first event of one of `kinds` at or after `since` (with `peer` in its far end's
        URI, if given), waiting up to `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events(since=since):
                if event.kind in kinds and peer in event.peer:
                    return event
            if time.monotonic() >= deadline or not self.running:
                return None
            time.sleep(0.05)

    def log_offset(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    # -- driving ------------------------------------------------------------------------------

    def dial(self, number: str) -> None:
        raise NotImplementedError

    def hangup(self) -> None:
        raise NotImplementedError

    def call(self, number: str, answer_within: float = 8.0, hold: float = 1.0) -> CallResult:
        """Dial `number` (the phone completes it with its server's domain, as a user typing an
        extension), wait up to `answer_within` s for the answer, hold `hold` s, hang up and
        wait for the call to end (a call never answered is cancelled)."""
        self.wait_idle()
        started = time.monotonic()
        peer = f"sip:{number}@"
        self.dial(number)
        outcome = self.wait_event(("established", "closed"), started, answer_within, peer)
        established = outcome.at if outcome is not None and outcome.kind == "established" else None
        if established is not None:
            time.sleep(hold)
        closed = self.wait_event(("closed",), started, 0, peer)
        if closed is None:
            self.hangup()
            closed = self.wait_event(("closed",), started, 10, peer)
            if closed is None:
                self.hangup()  # a second try: a phone may ignore a hangup while resolving
                closed = self.wait_event(("closed",), started, 5, peer)
        detail = closed.detail if closed is not None else "never closed"
        if outcome is None:
            detail = f"no answer within {answer_within:g} s; {detail}"
        return CallResult(number, started, established, time.monotonic(), detail)


# -- baresip ---------------------------------------------------------------------------------------


def netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


class NetstringReader:
    """Splits a byte stream into netstrings (baresip's ctrl_tcp framing)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while True:
            head, colon, rest = self._buf.partition(b":")
            if not colon or not head.isdigit():
                if len(head) > 10:
                    raise ValueError(f"not a netstring: {self._buf[:40]!r}")
                return out
            size = int(head)
            if len(rest) < size + 1:
                return out
            out.append(rest[:size])
            self._buf = rest[size + 1 :]


class Baresip(Softphone):
    """Debian's baresip (package baresip-core), driven over its `ctrl_tcp` module (JSON in
    netstrings on a loopback port of the phones' namespace), audio through `aubridge` (no
    sound card; ausine only runs at 48 kHz), SIP trace on (`-s`) in its log.

    Configuration: `accounts` has `<sip:EXT@SERVER>;auth_pass=...;answermode=auto` and
    nothing else, so regint (3600 s + 0–255 s), rwait (90 %), transport and DNS are the
    defaults; `config` sets the listening address, the modules a headless phone needs
    (g711, aubridge, account, ctrl_tcp) and the control port."""

    kind = "baresip"
    binary = "baresip"
    package = "baresip-core"

    def __init__(self, *args: object, ctrl_port: int = 4444, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.ctrl_port = ctrl_port
        self._ctrl: socket.socket | None = None
        self._ctrl_lock = threading.Lock()
        self._ctrl_thread: threading.Thread | None = None
        self._responses: dict[str, dict[str, object]] = {}
        self._token = 0

    def write_config(self) -> None:
        device = f"aubridge,phone{self.ext}"
        config = {
            "poll_method": "epoll",
            "sip_listen": f"{self.address}:5060",
            "audio_player": device,
            "audio_source": device,
            "audio_alert": device,
            "module_path": "/usr/lib/baresip/modules",
            "ctrl_tcp_listen": f"127.0.0.1:{self.ctrl_port}",
        }
        modules = [("module", "g711.so"), ("module", "aubridge.so"),
                   ("module_tmp", "account.so"), ("module_app", "menu.so"),
                   ("module_app", "ctrl_tcp.so")]  # fmt: skip
        text = "".join(f"{k}\t\t{v}\n" for k, v in config.items())
        text += "".join(f"{k}\t\t{v}\n" for k, v in modules)
        (self.home / "config").write_text(text)
        (self.home / "accounts").write_text(
            f"<sip:{self.ext}@{self.server}>;auth_pass={self.password};answermode=auto\n"
        )

    def argv(self) -> list[str]:
        return ["baresip", "-f", str(self.home), "-s"]

    def after_start(self) -> None:
        def connect() -> socket.socket | None:
            sock = ns_socket(self.netns.name, socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(1)
                sock.connect(("127.0.0.1", self.ctrl_port))
            except OSError as exc:
                sock.close()
                if not self.running:
                    log = self.log_since(0)[-3000:]
                    raise RuntimeError(f"{self.name} exited:\n{log}") from exc
                return None
            return sock

        self._ctrl = wait_until(connect, 10, interval=0.05, message=f"{self.name} ctrl_tcp")
        self._ctrl.settimeout(None)
        self._ctrl_thread = threading.Thread(
            target=self._read_ctrl, args=(self._ctrl,), name=f"{self.name} ctrl", daemon=True
        )
        self._ctrl_thread.start()

    def _read_ctrl(self, sock: socket.socket) -> None:
        reader = NetstringReader()
        kinds = {"REGISTER_OK": "registered", "REGISTER_FAIL": "register_failed",
                 "CALL_INCOMING": "incoming", "CALL_OUTGOING": "progress",
                 "CALL_RINGING": "ringing",
                 "CALL_ESTABLISHED": "established", "CALL_CLOSED": "closed"}  # fmt: skip
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            now = time.monotonic()
            for message in reader.feed(data):
                try:
                    parsed = json.loads(message)
                except ValueError:
                    continue
                if parsed.get("event"):
                    kind = kinds.get(str(parsed.get("type")))
                    if kind is not None:
                        param, call = str(parsed.get("param", "")), str(parsed.get("id", ""))
                        self.record(kind, param, now, call, str(parsed.get("peeruri", "")))
                elif parsed.get("response"):
                    with self._ctrl_lock:
                        self._responses[str(parsed.get("token", ""))] = parsed

    def command(self, command: str, params: str = "", timeout: float = 5) -> dict[str, object]:
        """One ctrl_tcp command; baresip's response ({"ok": ..., "data": ...})."""
        if self._ctrl is None:
            raise RuntimeError(f"{self.name} is not running")
        with self._ctrl_lock:
            self._token += 1
            token = f"t{self._token}"
        message = {"command": command, "params": params, "token": token}
        self._ctrl.sendall(netstring(json.dumps(message).encode()))

        def answered() -> dict[str, object] | None:
            with self._ctrl_lock:
                return self._responses.pop(token, None)

        return wait_until(answered, timeout, interval=0.02, message=f"{self.name} {command}")

    def dial(self, number: str) -> None:
        self.command("dial", number)

    def hangup(self) -> None:
        self.command("hangup")

    def quit(self) -> None:
        self.command("quit")

    def closed(self) -> None:
        if self._ctrl is not None:
            with contextlib.suppress(OSError):
                self._ctrl.close()
            self._ctrl = None


# -- linphonec ------------------------------------------------------------------------------------


class Linphone(Softphone):
    """Debian's linphonec (package linphone-cli), driven by its stdin commands (`call`,
    `terminate`, `status register`); `--pipe` makes it read stdin from a thread and keep its
    core iterating (with readline on a pipe it never does), `-a` answers calls, `-d 6`
    prints belle-sip's log (SIP messages included) into its output. Video stays off (the
    default of linphonec); with no sound card it uses no audio device and still answers.

    Configuration (`linphonerc`, with HOME in the work dir for its database): the proxy
    `<sip:SERVER>`, the identity `sip:EXT@SERVER`, registration on, the credentials, and the
    address to listen on; expiry (3600 s), transports and DNS settings are the defaults."""

    kind = "linphone"
    binary = "linphonec"
    package = "linphone-cli"

    # linphonec's call lines: (kind, pattern with the call id and the far end's URI)
    _CALL_LINES = (
        ("established", re.compile(r"^Call (\d+) with (.+?) connected\.")),
        ("closed", re.compile(r"^Call (\d+) with (.+?) (?:ended \(.*\)|error)\.")),
        ("incoming", re.compile(r"^Receiving new incoming call from (.+), assigned id (\d+)")),
        ("progress", re.compile(r"^Call (\d+) to (.+?) in progress\.")),
        ("ringing", re.compile(r"^Call (\d+) to (.+?) ringing\.")),
    )

    def write_config(self) -> None:
        (self.home / ".local/share/linphone").mkdir(parents=True, exist_ok=True)
        (self.home / "linphonerc").write_text(
            f"[sip]\nbind_address={self.address}\ndefault_proxy=0\n\n"
            f"[proxy_0]\nreg_proxy=<sip:{self.server}>\n"
            f"reg_identity=sip:{self.ext}@{self.server}\nreg_sendregister=1\n\n"
            f"[auth_info_0]\nusername={self.ext}\npasswd={self.password}\n"
            f"domain={self.server}\n"
        )

    def argv(self) -> list[str]:
        rc = self.home / "linphonerc"
        return ["linphonec", "-c", str(rc), "-a", "--pipe", "-d", "6"]

    def on_line(self, at: float, line: str) -> None:
        text = line.removeprefix("linphonec> ").strip()
        for kind, pattern in self._CALL_LINES:
            found = pattern.match(text)
            if found:
                call, peer = found.groups() if kind != "incoming" else found.groups()[::-1]
                self.record(kind, text, at, call, peer)
                return
        if text.startswith(("registered, identity=", "registered=")):
            self.record("status", text, at)

    def send(self, line: str) -> None:
        if self.proc is None or self.proc.stdin is None:
            raise RuntimeError(f"{self.name} is not running")
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def dial(self, number: str) -> None:
        self.send(f"call {number}")

    def hangup(self) -> None:
        self.send("terminate")

    def quit(self) -> None:
        self.send("quit")
        # Its stdin reader thread would keep it alive until stdin closes.
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()

    def own_registration(self, timeout: float = 5) -> str:
        """What `status register` says: 'registered, identity=... duration=3600' or
        'registered=-1' (registering or failed)."""
        asked = time.monotonic()
        self.send("status register")
        event = self.wait_event(("status",), asked, timeout)
        return event.detail if event else "no answer"


PHONE_KINDS: dict[str, type[Softphone]] = {"baresip": Baresip, "linphone": Linphone}

