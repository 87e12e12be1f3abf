"""The SIP OPTIONS probe's messages (synch.sip.message): the request as bytes, the answer read
back and matched to it, and what an answer counts as."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synch.probe import ProbeResult
from synch.sip.message import (
    OptionsRequest,
    SipResponseError,
    head_end,
    is_sip_user,
    options_request,
    parse_response,
    response_result,
    retransmit_times,
)

ASTERISK_401 = (
    b"SIP/2.0 401 Unauthorized\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:40000;rport=40000;received=10.0.0.1;branch=z9hG4bKabc123\r\n"
    b"Call-ID: abc123@10.0.0.1\r\n"
    b"From: <sip:2001@10.0.0.1>;tag=abc123\r\n"
    b"To: <sip:10.0.0.254>;tag=z9hG4bKabc123\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b'WWW-Authenticate: Digest realm="asterisk",nonce="1/2",algorithm=MD5,qop="auth"\r\n'
    b"Server: Asterisk PBX 22.10.1\r\n"
    b"Content-Length:  0\r\n\r\n"
)


def request(transport: str = "udp", token: str = "abc123") -> OptionsRequest:
    return options_request(
        transport, "10.0.0.254", 5060, "10.0.0.1", 40000,
        user="2001", token=token, user_agent="synch/test",
    )  # fmt: skip


def test_udp_request_is_a_complete_options_request() -> None:
    req = request()
    text = req.data.decode()
    lines = text.split("\r\n")
    assert lines[0] == "OPTIONS sip:10.0.0.254:5060 SIP/2.0"
    assert "Via: SIP/2.0/UDP 10.0.0.1:40000;branch=z9hG4bKabc123;rport" in lines
    assert "From: <sip:2001@10.0.0.1>;tag=abc123" in lines
    assert "To: <sip:10.0.0.254:5060>" in lines
    assert "CSeq: 1 OPTIONS" in lines and "Max-Forwards: 70" in lines
    assert "Call-ID: abc123@10.0.0.1" in lines
    assert text.endswith("Content-Length: 0\r\n\r\n")
    assert (req.branch, req.call_id) == ("z9hG4bKabc123", "abc123@10.0.0.1")


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_stream_requests_name_their_transport(transport: str) -> None:
    text = request(transport).data.decode()
    assert text.startswith(f"OPTIONS sip:10.0.0.254:5060;transport={transport} SIP/2.0\r\n")
    assert f"Via: SIP/2.0/{transport.upper()} 10.0.0.1:40000;" in text


def test_ipv6_addresses_are_bracketed() -> None:
    req = options_request("udp", "fd00::1", 5060, "fd00::2", 4000, user="synch", token="ab",
                          user_agent="x")  # fmt: skip
    text = req.data.decode()
    assert text.startswith("OPTIONS sip:[fd00::1]:5060 SIP/2.0")
    assert "Via: SIP/2.0/UDP [fd00::2]:4000;" in text


@pytest.mark.parametrize(
    ("field", "value"),
    [("transport", "sctp"), ("token", "ab;c"), ("user", "a b"), ("user", "a@b"), ("user", "")],
)
def test_request_refuses_what_would_corrupt_it(field: str, value: str) -> None:
    args = {"transport": "udp", "token": "abc", "user": "2001", **{field: value}}
    with pytest.raises(ValueError):
        options_request(args["transport"], "10.0.0.254", 5060, "10.0.0.1", 1,
                        user=args["user"], token=args["token"], user_agent="x")  # fmt: skip


def test_asterisk_401_is_the_answer_and_a_success() -> None:
    response = parse_response(ASTERISK_401)
    assert (response.status, response.reason) == (401, "Unauthorized")
    assert response.summary == "401 Unauthorized"
    assert response.answers(request())
    assert response_result(response) is ProbeResult.SUCCESS


@pytest.mark.parametrize("status", [100, 200, 401, 403, 404, 405, 481, 500, 502, 603])
def test_any_answer_but_503_means_the_sip_service_answers(status: int) -> None:
    response = parse_response(f"SIP/2.0 {status} Whatever\r\n\r\n".encode())
    assert response_result(response) is ProbeResult.SUCCESS


def test_503_is_a_failure_answer() -> None:
    response = parse_response(b"SIP/2.0 503 Service Unavailable\r\n\r\n")
    assert response_result(response) is ProbeResult.FAILURE


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("branch=z9hG4bKabc123", "branch=z9hG4bKother"),  # another transaction
        ("Call-ID: abc123@", "Call-ID: other@"),
        ("CSeq: 1 OPTIONS", "CSeq: 1 REGISTER"),
        ("CSeq: 1 OPTIONS", "CSeq: 2 OPTIONS"),
    ],
)
def test_an_answer_to_something_else_is_not_ours(old: str, new: str) -> None:
    response = parse_response(ASTERISK_401.replace(old.encode(), new.encode()))
    assert not response.answers(request())


def test_compact_headers_folding_and_a_second_via() -> None:
    data = (
        b"SIP/2.0 200 OK\r\n"
        b"v: SIP/2.0/UDP 10.0.0.1:40000;branch=z9hG4bKabc123, SIP/2.0/UDP 10.9.9.9;branch=x\r\n"
        b"i: abc123@10.0.0.1\r\n"
        b"CSeq: 1\r\n  OPTIONS\r\n"
        b"l: 0\r\n\r\n"
    )
    response = parse_response(data)
    assert response.header("Content-Length") == "0"
    assert response.header("cseq") == "1 OPTIONS"
    assert response.answers(request())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"OPTIONS sip:x SIP/2.0\r\n\r\n",  # a request, not a response
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"SIP/2.0 99 Low\r\n\r\n",
        b"SIP/2.0 200 OK\r\nno colon here\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\xff\xfe\r\n\r\n",
    ],
)
def test_what_is_not_a_sip_response_is_refused(data: bytes) -> None:
    with pytest.raises(SipResponseError):
        parse_response(data)


@given(st.binary(max_size=300))
def test_parsing_any_bytes_answers_or_refuses_cleanly(data: bytes) -> None:
    try:
        response = parse_response(data)
    except SipResponseError:
        return
    assert 100 <= response.status <= 699


def test_head_end_finds_the_blank_line() -> None:
    assert head_end(b"SIP/2.0 200 OK\r\nl: 0\r\n") is None
    assert head_end(b"SIP/2.0 200 OK\r\n\r\nbody") == len(b"SIP/2.0 200 OK\r\n\r\n")


def test_retransmissions_follow_timer_a_within_the_timeout() -> None:
    assert retransmit_times(0.4) == []
    assert retransmit_times(4.0) == [0.5, 1.5, 3.5]
    assert retransmit_times(0.51) == [0.5]


@pytest.mark.parametrize(
    ("user", "ok"),
    [("2001", True), ("synch", True), ("Dev_Trunk", True), ("a.b-c", True),
     ("", False), ("a b", False), ("a@b", False), ("a:b", False), ("x" * 65, False)],
)  # fmt: skip
def test_sip_user_names(user: str, ok: bool) -> None:
    assert is_sip_user(user) is ok
