"""The SIP OPTIONS probe on the wire: one request over UDP, TCP or TLS, one answer awaited, all
within one deadline. The messages are synch.sip.message's; this module only moves bytes.

- UDP: a connected socket, so that an ICMP port unreachable (nothing listens: res_pjsip
  unloaded, Asterisk gone) ends the probe at once as an error; the request is sent again after
  0.5, 1.5, 3.5 s ... (RFC 3261 timer A) while the deadline allows, so one lost datagram on a
  lossy WAN does not fail a probe. Datagrams that are not the answer (another transaction's,
  garbage) are ignored; each read takes at most one datagram (65,535 bytes).
- TCP and TLS: connect, send, read the answer's head (at most 65,535 bytes; a body is skipped
  by its Content-Length). TLS checks that the central's SIP answers over TLS, not its
  certificate: the probe sends no secret, and phones check the certificate themselves.

Needs gevent's monkey patching (the daemon's first statement) to wait cooperatively.
"""

from __future__ import annotations

import errno
import secrets
import socket
import ssl
import time

import gevent

from synch import __version__
from synch.probe import Check, ProbeResult
from synch.sip.message import (
    MAX_MESSAGE_BYTES,
    OptionsRequest,
    SipResponse,
    SipResponseError,
    head_end,
    options_request,
    parse_response,
    response_result,
    retransmit_times,
)

USER_AGENT = f"synch/{__version__}"
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN}


class _NoAnswer(Exception):
    """The probe ends without an answer; the message says why."""


def _where(transport: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"central SIP {transport.upper()} {shown}:{port}"


def options_probe(transport: str, host: str, port: int, *, timeout: float, user: str) -> Check:
    """Send OPTIONS to host:port over `transport` and wait up to `timeout` s for the answer.

    Success: any SIP answer but 503 (its status line in `Check.answer`); failure: 503; error:
    no answer in time, refused, unreachable, or not SIP. Never raises for the network's sake.
    """
    where = _where(transport, host, port)
    start = time.monotonic()
    deadline = start + timeout
    timer = gevent.Timeout(timeout + 0.5)  # a safety net: every wait below has the deadline
    timer.start()
    try:
        if transport == "udp":
            response = _udp(host, port, deadline, user)
        else:
            response = _stream(transport, host, port, deadline, user)
    except _NoAnswer as exc:
        return Check(ProbeResult.ERROR, time.monotonic() - start, f"{where}: {exc}")
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        return Check(ProbeResult.ERROR, time.monotonic() - start,
                     f"{where}: no answer within {timeout:g} s")  # fmt: skip
    except TimeoutError:
        return Check(ProbeResult.ERROR, time.monotonic() - start,
                     f"{where}: no answer within {timeout:g} s")  # fmt: skip
    except ConnectionRefusedError:
        why = "ICMP port unreachable" if transport == "udp" else "connection refused"
        return Check(ProbeResult.ERROR, time.monotonic() - start,
                     f"{where}: refused ({why}): nothing listens there")  # fmt: skip
    except ssl.SSLError as exc:
        return Check(ProbeResult.ERROR, time.monotonic() - start, f"{where}: TLS failed: {exc}")
    except OSError as exc:
        kind = "unreachable" if exc.errno in _UNREACHABLE else "failed"
        return Check(ProbeResult.ERROR, time.monotonic() - start,
                     f"{where}: {kind}: {exc.strerror or exc}")  # fmt: skip
    finally:
        timer.close()
    seconds = time.monotonic() - start
    result = response_result(response)
    error = "" if result is ProbeResult.SUCCESS else f"{where}: answered {response.summary}"
    return Check(result, seconds, error, answer=response.summary)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError()
    return left


def _request(
    transport: str, sock: socket.socket, host: str, port: int, user: str
) -> OptionsRequest:
    local_host, local_port = sock.getsockname()[:2]
    return options_request(
        transport, host, port, local_host, local_port,
        user=user, token=secrets.token_hex(8), user_agent=USER_AGENT,
    )  # fmt: skip


def _udp(host: str, port: int, deadline: float, user: str) -> SipResponse:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))  # connected: ICMP errors come back as recv errors
        request = _request("udp", sock, host, port, user)
        sent_at = time.monotonic()
        sock.send(request.data)
        resends = [sent_at + t for t in retransmit_times(deadline - sent_at)]
        while True:
            left = _left(deadline)
            if resends:
                left = min(left, max(0.001, resends[0] - time.monotonic()))
            sock.settimeout(left)
            try:
                data = sock.recv(MAX_MESSAGE_BYTES)
            except TimeoutError:
                if resends and time.monotonic() >= resends[0]:
                    resends.pop(0)
                    sock.send(request.data)
                continue
            try:
                response = parse_response(data)
            except SipResponseError:
                continue  # not for us: keep waiting for the answer until the deadline
            if response.answers(request):
                return response


def _stream(transport: str, host: str, port: int, deadline: float, user: str) -> SipResponse:
    raw = socket.create_connection((host, port), timeout=_left(deadline))
    sock: socket.socket = raw
    try:
        if transport == "tls":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            raw.settimeout(_left(deadline))
            sock = context.wrap_socket(raw)
        request = _request(transport, sock, host, port, user)
        sock.settimeout(_left(deadline))
        sock.sendall(request.data)
        buffer = b""
        while True:
            end = head_end(buffer)
            if end is None:
                if len(buffer) > MAX_MESSAGE_BYTES:
                    raise _NoAnswer(f"answer head longer than {MAX_MESSAGE_BYTES} bytes")
                buffer += _recv(sock, deadline)
                continue
            try:
                response = parse_response(buffer[:end])
            except SipResponseError as exc:
                raise _NoAnswer(f"not a SIP answer: {exc}") from None
            if response.answers(request):
                return response
            buffer = _skip_body(sock, buffer[end:], response, deadline)
    finally:
        sock.close()


def _recv(sock: socket.socket, deadline: float) -> bytes:
    sock.settimeout(_left(deadline))
    chunk = sock.recv(MAX_MESSAGE_BYTES)
    if not chunk:
        raise _NoAnswer("connection closed without an answer")
    return chunk


def _skip_body(sock: socket.socket, rest: bytes, response: SipResponse, deadline: float) -> bytes:
    """What follows the body of a message that is not the answer (another one's head)."""
    try:
        length = int(response.header("content-length") or 0)
    except ValueError:
        raise _NoAnswer("a message with a bad Content-Length") from None
    if not 0 <= length <= MAX_MESSAGE_BYTES:
        raise _NoAnswer(f"a message body of {length} bytes")
    while len(rest) < length:
        rest += _recv(sock, deadline)
    return rest[length:]
