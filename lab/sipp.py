"""A SIP phone for tests: `sipp` (Debian's sip-tester 3.6) sending one REGISTER with digest auth.

`register()` answers whether the registrar accepted the credentials: the scenario sends a
REGISTER, expects the 401 challenge, answers it with `-au`/`-ap` (sipp's `[authentication]`
keyword) and expects 200. Anything else (a second 401, 403, silence) fails the one call and
sipp exits 1. Its SIP and media ports come from free_port (sipp would otherwise try 5060
and 6000 first), so parallel runs never collide; sipp's own files stay in a scratch directory.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

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


def register_xml(
    expires: int, domain: str = "[remote_ip]:[remote_port]", agent: str = "synch-lab-sipp"
) -> str:
    """A sipp scenario: REGISTER, answer the digest challenge, expect 200."""
    return _REGISTER_TEMPLATE.format(expires=int(expires), domain=domain, agent=agent)


class SippMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class RegisterResult:
    ok: bool
    returncode: int
    output: str  # sipp's stdout/stderr and its error log, for assertion messages

    def __bool__(self) -> bool:
        return self.ok


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
) -> RegisterResult:
    """One REGISTER of `user` to `host:port` over UDP; ok when the registrar answered 200.
    `local_port`: the address to register as the contact (default: any free port)."""
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SippMissing("sipp is not installed (Debian package sip-tester)")
    with tempfile.TemporaryDirectory(prefix="synch-sipp-") as scratch:
        scenario = Path(scratch) / "register.xml"
        scenario.write_text(register_xml(expires))
        remote = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        argv = [
            sipp,
            "-sf",
            str(scenario),
            "-s",
            user,
            "-au",
            user,
            "-ap",
            password,
            "-i",
            local_ip,
            "-p",
            str(local_port or free_port("udp", local_ip)),
            "-mp",
            str(free_port("udp", local_ip)),
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            f"{timeout:g}s",
            "-timeout_error",
            "-recv_timeout",
            "3000",
            "-max_retrans",
            "3",
            "-trace_err",
            remote,
        ]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        proc = subprocess.run(
            argv,
            cwd=scratch,
            capture_output=True,
            text=True,
            timeout=timeout + 10,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        errors = "".join(p.read_text(errors="replace") for p in Path(scratch).glob("*_errors.log"))
    output = (proc.stdout[-2000:] + proc.stderr[-2000:] + errors[-3000:]).strip()
    return RegisterResult(proc.returncode == 0, proc.returncode, output)
