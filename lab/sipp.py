"""SIP phones for tests: `sipp` (Debian's sip-tester 3.6) registering, calling and answering.

- `register()` answers whether the registrar accepted the credentials: the scenario sends a
  REGISTER, expects the 401 challenge, answers it with `-au`/`-ap` (sipp's `[authentication]`
  keyword) and expects 200. Anything else (a second 401, 403, silence) fails the one call and
  sipp exits 1.
- `call()` places one call from an account (digest auth on the INVITE, as a phone does) and
  reports how it ended: answered (200) and hung up by us after `hold_ms`, or answered and hung
  up by the far end (`expect_bye=True`: an announcement that ends the call).
- `Uas` listens on a port and answers one call (`answer=True`), or rings until cancelled
  (`answer=False`); it records the user part of the INVITE's request URI (the number the
  gateway was asked for). `register_from()` registers an account with the Contact of that
  port, so that a call to the account reaches the Uas.
- `Subscriber` subscribes an account to an event package of a resource (`dialog` of an
  extension: its busy lamp; `message-summary` of a mailbox: its message light), digest auth
  as a phone does, and keeps every NOTIFY that comes back, for the test to wait for the one it
  expects.

Every sipp command line comes from `sipp_argv`. SIP and media ports come from free_port (sipp
would otherwise try 5060 and 6000 first), so parallel runs never collide; only loopback or
test namespace addresses are used, and each sipp runs in its own scratch directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from lab.ports import free_port

# sipp expands [service] (-s), [local_ip]/[local_port], [remote_ip]/[remote_port], [branch],
# [call_id], [pid], [call_number], [len] and [authentication] (from the last 401/407).
# {domain} is the registrar as the phone names it: the server's address by default, or a name.
_REGISTER_TEMPLATE = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="register with digest auth">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:{domain} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[service]@{domain}>;tag=[pid]reg[call_number]
      To: <sip:[service]@{domain}>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[service]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: {expires}
      User-Agent: {agent}
      Content-Length: 0

    ]]>
  </send>

  <recv response="401" auth="true"/>

  <send retrans="500">
    <![CDATA[

      REGISTER sip:{domain} SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[service]@{domain}>;tag=[pid]reg[call_number]
      To: <sip:[service]@{domain}>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:[service]@[local_ip]:[local_port]>
      [authentication]
      Max-Forwards: 70
      Expires: {expires}
      User-Agent: {agent}
      Content-Length: 0

    ]]>
  </send>

  <recv response="200"/>
</scenario>
"""

_SDP = """
      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 8
      a=rtpmap:0 PCMU/8000
      a=rtpmap:8 PCMA/8000
"""

_INVITE = (
    """
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
      From: <sip:{caller}@[remote_ip]:[remote_port]>;tag=[pid]call[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: {cseq} INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port]>
      {auth}
      Max-Forwards: 70
      User-Agent: synch-lab-sipp
      Content-Type: application/sdp
      Content-Length: [len]
"""
    + _SDP
)

# The ACK of a non-2xx answer belongs to the INVITE's transaction: same branch ([branch-N]
# is the branch of the message N places before this one in the scenario).
_UAC_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="call with digest auth">
  <send retrans="500"><![CDATA[
{invite1}
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="401" auth="true"/>
  <send><![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch-3]
      From: <sip:{caller}@[remote_ip]:[remote_port]>;tag=[pid]call[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <send retrans="500"><![CDATA[
{invite2}
  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <send><![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
      From: <sip:{caller}@[remote_ip]:[remote_port]>;tag=[pid]call[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
{ending}
</scenario>
"""

_HANGUP_BY_US = """
  <pause milliseconds="{hold}"/>
  <send retrans="500"><![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
      From: <sip:{caller}@[remote_ip]:[remote_port]>;tag=[pid]call[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      [routes]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="200"/>
"""

_HANGUP_BY_THEM = """
  <recv request="BYE"/>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
"""

# The INVITE's request-URI user is logged as `RURI <user>` (-trace_logs), for the test to read.
_UAS_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="answer one call">
  <recv request="INVITE">
    <action>
      <ereg regexp="^INVITE sip:([^@;> ]*)@" search_in="msg" check_it="true"
            assign_to="whole,ruser"/>
{cseq}      <log message="RURI [$ruser] from [$whole]"/>
    </action>
  </recv>
  <send><![CDATA[

      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]uas[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

  ]]></send>
{body}
</scenario>
"""

_CSEQ = """      <ereg regexp="([0-9]+)" search_in="hdr" header="CSeq:" check_it="true"
            assign_to="cseqall,cseq"/>
      <log message="CSeq [$cseqall]"/>
"""

_UAS_ANSWER = (
    """
  <send retrans="500"><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]uas[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]
"""
    + _SDP
    + """
  ]]></send>
  <recv request="ACK"/>
  <recv request="BYE"/>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
"""
)

# Rings until the caller gives up: 200 for the CANCEL, 487 for the INVITE, then its ACK.
_UAS_RING = """
  <recv request="CANCEL"/>
  <send><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]uas[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
  <send><![CDATA[

      SIP/2.0 487 Request Terminated
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]uas[call_number]
      [last_Call-ID:]
      CSeq: [$cseq] INVITE
      Content-Length: 0

  ]]></send>
  <recv request="ACK"/>
"""


class SippMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class SippResult:
    ok: bool
    returncode: int
    output: str  # sipp's output and logs, for assertion messages

    def __bool__(self) -> bool:
        return self.ok


def _sipp() -> str:
    found = shutil.which("sipp")
    if found is None:
        raise SippMissing("sipp is not installed (Debian package sip-tester)")
    return found


def _remote(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def sipp_argv(
    scenario: str | Path,
    *,
    local_ip: str,
    media_port: int,
    timeout: float,
    local_port: int | None = None,
    service: str | None = None,
    auth: tuple[str, str] | None = None,
    remote: tuple[str, int] | None = None,
    options: Sequence[str] = (),
    netns: str | None = None,
    max_calls: int | None = 1,
) -> list[str]:
    """sipp playing `scenario` for one call (`-m 1`; `max_calls=None`: any number, until
    `timeout`; no keyboard) from `local_ip`
    (`local_port`: its SIP port, default any) with media on `media_port`, failing after
    `timeout` s; `service`: the request URI's user (-s), `auth`: digest user and password,
    `remote`: the server (none for a uas), `options`: more of sipp's options (traces, -aa,
    retransmissions); inside namespace `netns` if given."""
    argv = [_sipp(), "-sf", str(scenario)]
    if service is not None:
        argv += ["-s", service]
    if auth is not None:
        argv += ["-au", auth[0], "-ap", auth[1]]
    argv += ["-i", local_ip]
    if local_port is not None:
        argv += ["-p", str(local_port)]
    argv += ["-mp", str(media_port), *(["-m", str(max_calls)] if max_calls else []), "-nostdin"]
    argv += ["-timeout", f"{timeout:g}s", "-timeout_error", *options]
    if remote is not None:
        argv.append(_remote(*remote))
    return ["ip", "netns", "exec", netns, *argv] if netns else argv


def _collect(scratch: Path, proc_out: str) -> str:
    logs = "".join(
        p.read_text(errors="replace")
        for pattern in ("*_errors.log", "*_messages.log")
        for p in sorted(scratch.glob(pattern))
    )
    return (proc_out[-2000:] + "\n" + logs[-6000:]).strip()


def _run_once(argv: list[str], scratch: Path, timeout: float) -> SippResult:
    """Run one sipp to its end in `scratch`; ok when it exited 0."""
    proc = subprocess.run(
        argv,
        cwd=scratch,
        capture_output=True,
        text=True,
        timeout=timeout + 10,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return SippResult(proc.returncode == 0, proc.returncode,
                      _collect(scratch, proc.stdout + proc.stderr))  # fmt: skip


def register_xml(
    expires: int, domain: str = "[remote_ip]:[remote_port]", agent: str = "synch-lab-sipp"
) -> str:
    """A sipp scenario: REGISTER, answer the digest challenge, expect 200."""
    return _REGISTER_TEMPLATE.format(expires=int(expires), domain=domain, agent=agent)


def uac_scenario(caller: str, *, hold_ms: int = 500, expect_bye: bool = False) -> str:
    invite1 = _INVITE.format(caller=caller, cseq=1, auth="")
    invite2 = _INVITE.format(caller=caller, cseq=2, auth="[authentication]")
    ending = _HANGUP_BY_THEM if expect_bye else _HANGUP_BY_US.format(hold=hold_ms, caller=caller)
    return _UAC_XML.format(caller=caller, invite1=invite1, invite2=invite2, ending=ending)


def uas_scenario(*, answer: bool = True) -> str:
    # sipp refuses a variable that is set but never used: capture the CSeq only to ring.
    cseq = "" if answer else _CSEQ
    return _UAS_XML.format(body=_UAS_ANSWER if answer else _UAS_RING, cseq=cseq)


def register(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    local_ip: str = "127.0.0.1",
    local_port: int | None = None,
    expires: int = 60,
    timeout: float = 10,
    netns: str | None = None,
) -> SippResult:
    """One REGISTER of `user` to `host:port` over UDP; ok when the registrar answered 200.
    `local_port`: the address to register as the contact (default: any free port)."""
    with tempfile.TemporaryDirectory(prefix="synch-sipp-") as tmp:
        scratch = Path(tmp)
        scenario = scratch / "register.xml"
        scenario.write_text(register_xml(expires))
        argv = sipp_argv(
            scenario,
            service=user,
            auth=(user, password),
            local_ip=local_ip,
            local_port=local_port or free_port("udp", local_ip),
            media_port=free_port("udp", local_ip),
            timeout=timeout,
            options=("-recv_timeout", "3000", "-max_retrans", "3", "-trace_err"),
            remote=(host, port),
            netns=netns,
        )
        return _run_once(argv, scratch, timeout)


def call(
    host: str,
    port: int,
    caller: str,
    password: str,
    number: str,
    *,
    hold_ms: int = 500,
    expect_bye: bool = False,
    local_ip: str = "127.0.0.1",
    timeout: float = 30,
    netns: str | None = None,
) -> SippResult:
    """One call from account `caller` to `number` at `host:port`; ok when it was answered
    and ended as expected (we hang up after `hold_ms`, or the far end does if `expect_bye`)."""
    with tempfile.TemporaryDirectory(prefix="synch-sipp-uac-") as tmp:
        scratch = Path(tmp)
        scenario = scratch / "uac.xml"
        scenario.write_text(uac_scenario(caller, hold_ms=hold_ms, expect_bye=expect_bye))
        argv = sipp_argv(
            scenario,
            service=number,
            auth=(caller, password),
            local_ip=local_ip,
            media_port=free_port("udp", local_ip),
            timeout=timeout,
            options=("-max_retrans", "3", "-trace_err", "-trace_msg"),
            remote=(host, port),
            netns=netns,
        )
        return _run_once(argv, scratch, timeout)


class _Background:
    """A sipp running in the background in a scratch dir of its own; closing stops it."""

    _proc: subprocess.Popen[str]
    _scratch: Path

    def close(self) -> None:
        """Stop sipp (if still running) and remove its scratch dir."""
        if self._proc.returncode is None:  # not reaped yet (by wait(), say)
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.communicate()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Uas(_Background):
    """A sipp answering one call on `local_ip:port` (a phone, or the PSTN gateway); with
    `max_calls=None` it answers every call until `timeout` (an answering phone for a whole
    test module; `-aa` answers the registrar's OPTIONS meanwhile)."""

    def __init__(
        self,
        *,
        answer: bool = True,
        local_ip: str = "127.0.0.1",
        port: int | None = None,
        timeout: float = 30,
        netns: str | None = None,
        max_calls: int | None = 1,
    ):
        self.local_ip = local_ip
        self.port = port or free_port("udp", local_ip)
        self._scratch = Path(tempfile.mkdtemp(prefix="synch-sipp-uas-"))
        scenario = self._scratch / "uas.xml"
        scenario.write_text(uas_scenario(answer=answer))
        argv = sipp_argv(
            scenario,
            local_ip=local_ip,
            local_port=self.port,
            media_port=free_port("udp", local_ip),
            timeout=timeout,
            options=("-aa", "-trace_err", "-trace_msg", "-trace_logs"),
            netns=netns,
            max_calls=max_calls,
        )
        self._proc = subprocess.Popen(
            argv,
            cwd=self._scratch,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._timeout = timeout
        self._numbers: list[str] | None = None

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def wait(self) -> SippResult:
        """Wait for the one call to end (or sipp's own timeout) and report it."""
        try:
            out, _ = self._proc.communicate(timeout=self._timeout + 10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, _ = self._proc.communicate()
        self._numbers = self._read_numbers()
        return SippResult(
            self._proc.returncode == 0, self._proc.returncode, _collect(self._scratch, out or "")
        )

    def numbers(self) -> list[str]:
        """The request-URI users of the INVITEs received (the numbers dialled); kept by
        wait(), so they can be read after the Uas is closed."""
        return self._numbers if self._numbers is not None else self._read_numbers()

    def _read_numbers(self) -> list[str]:
        text = "".join(p.read_text(errors="replace") for p in self._scratch.glob("*_logs.log"))
        return re.findall(r"RURI (\S+)", text)



def register_from(
    host: str,
    port: int,
    user: str,
    password: str,
    *,
    local_port: int,
    local_ip: str = "127.0.0.1",
    expires: int = 300,
    timeout: float = 10,
    netns: str | None = None,
) -> SippResult:
    """Register `user` from `local_ip:local_port` (the port a Uas will answer on): the
    registrar records that address as the contact, so calls to `user` reach the Uas."""
    return register(
        host, port, user, password, local_ip=local_ip, local_port=local_port,
        expires=expires, timeout=timeout, netns=netns,
    )


# A SUBSCRIBE with digest auth, then every NOTIFY answered 200, until the test stops it (or
# sipp's -timeout). Requests are addressed to the server by its address; {target} is the
# resource (an extension for `dialog`, an AOR for `message-summary`).
_SUBSCRIBE = """
      SUBSCRIBE sip:{target}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
      From: <sip:[service]@[remote_ip]:[remote_port]>;tag=[pid]sub[call_number]
      To: <sip:{target}@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: {cseq} SUBSCRIBE
      Contact: <sip:[service]@[local_ip]:[local_port]>
      Event: {event}
      Accept: {accept}
      Expires: {expires}
      {auth}
      Max-Forwards: 70
      User-Agent: synch-lab-sipp
      Content-Length: 0
"""

_SUBSCRIBER_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="subscribe and take every NOTIFY">
  <send retrans="500"><![CDATA[
{subscribe1}
  ]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
{subscribe2}
  ]]></send>
  <recv response="202" optional="true" next="1"/>
  <recv response="200"/>
  <label id="1"/>
  <recv request="NOTIFY"/>
  <send next="1"><![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

  ]]></send>
</scenario>
"""

# The packages a phone subscribes to, and the body type it accepts for each.
EVENT_ACCEPT = {
    "dialog": "application/dialog-info+xml",
    "message-summary": "application/simple-message-summary",
    "presence": "application/pidf+xml",
}


def subscriber_scenario(target: str, event: str, *, expires: int = 600) -> str:
    accept = EVENT_ACCEPT[event]
    first, second = (
        _SUBSCRIBE.format(
            target=target, event=event, accept=accept, expires=int(expires), cseq=cseq, auth=auth
        )
        for cseq, auth in ((1, ""), (2, "[authentication]"))
    )
    return _SUBSCRIBER_XML.format(subscribe1=first, subscribe2=second)


class Subscriber(_Background):
    """A phone (account `user`) subscribed to `event` of `target` at `host:port`: a sipp that
    answers every NOTIFY 200 and keeps it. `notifies()` lists them (whole messages, in the
    order they came); `wait_for(text)` waits for one holding `text`."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        target: str,
        event: str,
        *,
        local_ip: str = "127.0.0.1",
        expires: int = 600,
        timeout: float = 120,
        netns: str | None = None,
    ):
        self._scratch = Path(tempfile.mkdtemp(prefix="synch-sipp-sub-"))
        scenario = self._scratch / "subscribe.xml"
        scenario.write_text(subscriber_scenario(target, event, expires=expires))
        argv = sipp_argv(
            scenario,
            service=user,
            auth=(user, password),
            local_ip=local_ip,
            local_port=free_port("udp", local_ip),
            media_port=free_port("udp", local_ip),
            timeout=timeout,
            options=("-max_retrans", "3", "-trace_err", "-trace_msg"),
            remote=(host, port),
            netns=netns,
        )
        self._proc = subprocess.Popen(
            argv,
            cwd=self._scratch,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def _messages(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self._scratch.glob("*_messages.log"))
        )

    def responses(self) -> list[str]:
        """The status lines of the responses to the SUBSCRIBEs ("SIP/2.0 200 OK", ...)."""
        return re.findall(r"^(SIP/2\.0 \d{3}[^\r\n]*)", self._messages(), re.MULTILINE)

    def notifies(self) -> list[str]:
        """Every NOTIFY received so far, whole (headers and body)."""
        parts = re.split(r"^-{10,}.*$", self._messages(), flags=re.MULTILINE)
        found = []
        for part in parts:
            if "message received" not in part:
                continue
            message = part.split("\n\n", 1)[-1].strip()
            if message.startswith("NOTIFY "):
                found.append(message)
        return found

    def wait_for(self, text: str, timeout: float = 30) -> str:
        """The first NOTIFY holding `text`; AssertionError with what came instead."""
        deadline = time.monotonic() + timeout
        while True:
            for notify in self.notifies():
                if text in notify:
                    return notify
            if time.monotonic() > deadline or not self.running:
                raise AssertionError(
                    f"no NOTIFY with {text!r} in {timeout:g} s; responses {self.responses()}, "
                    f"NOTIFYs:\n" + "\n---\n".join(self.notifies())
                    + f"\nsipp:\n{self.output()}"
                )
            time.sleep(0.1)

    def output(self) -> str:
        return _collect(self._scratch, "")

