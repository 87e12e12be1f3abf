"""The /metrics HTTP layer without sockets: head parsing, replies, caps."""

from __future__ import annotations

import gzip

import pytest

from synch.metrics import Metrics
from synch.metrics_http import (
    MAX_HEAD,
    BadRequest,
    WsgiApp,
    head_end,
    parse_head,
    reply_to,
)

SERVER = ("127.0.0.1", 9386)


@pytest.fixture
def app() -> WsgiApp:
    from prometheus_client import make_wsgi_app

    app: WsgiApp = make_wsgi_app(Metrics().registry)
    return app


def split(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


def test_a_scrape_gets_the_metrics_and_the_connection_closes(app: WsgiApp) -> None:
    raw = reply_to(app, b"GET /metrics HTTP/1.1\r\nHost: branch\r\nAccept: */*\r\n\r\n", SERVER)
    status, headers, body = split(raw)
    assert status == "HTTP/1.1 200 OK"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    assert b"synch_build_info{" in body
    assert b"synch_connections_rejected_total" in body


def test_negotiation_and_gzip_are_prometheus_clients(app: WsgiApp) -> None:
    head = (
        b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n"
        b"Accept-Encoding: gzip\r\n\r\n"
    )
    status, headers, body = split(reply_to(app, head, SERVER))
    assert status.endswith("200 OK") and headers["content-encoding"] == "gzip"
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert gzip.decompress(body).endswith(b"# EOF\n")


def test_name_filter_in_the_query_string(app: WsgiApp) -> None:
    raw = reply_to(app, b"GET /metrics?name[]=synch_build_info HTTP/1.0\n\n", SERVER)
    _, _, body = split(raw)
    assert b"synch_build_info{" in body and b"synch_probes_total" not in body


@pytest.mark.parametrize(
    "head, status",
    [
        (b"GARBAGE\r\n\r\n", "400"),
        (b"GET /metrics\r\n\r\n", "400"),
        (b"GET metrics HTTP/1.1\r\n\r\n", "400"),
        (b"GET /metrics HTTP/2.0\r\n\r\n", "505"),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", "400"),
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", "400"),  # the client stopped mid-head
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * MAX_HEAD, "431"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", "405"),
        (b"\xff\xfe\x00\x01\r\n\r\n", "400"),
    ],
)
def test_bad_requests_get_a_status_never_an_exception(
    app: WsgiApp, head: bytes, status: str
) -> None:
    raw = reply_to(app, head, SERVER)
    assert raw.split(b" ")[1].decode() == status
    assert b"Connection: close" in raw


def test_head_end_finds_either_line_ending() -> None:
    assert head_end(b"GET / HTTP/1.0\r\n\r\nrest") == len(b"GET / HTTP/1.0\r\n\r\n")
    assert head_end(b"GET / HTTP/1.0\n\n") == len(b"GET / HTTP/1.0\n\n")
    assert head_end(b"GET / HTTP/1.0\r\nHost: x\r\n") is None


def test_parse_head_lowercases_names_and_splits_the_query() -> None:
    request = parse_head(b"GET /a%20b?x=1 HTTP/1.1\r\nAccept-Encoding: gzip \r\n\r\n")
    assert (request.method, request.path, request.query) == ("GET", "/a b", "x=1")
    assert request.headers == {"accept-encoding": "gzip"}
    with pytest.raises(BadRequest):
        parse_head(b"GET / HTTP/1.1\r\n Folded: header\r\n\r\n")
