"""``--http 2`` means HTTP/2 only, ``--http auto`` serves HTTP/1.1 and HTTP/2 on one port, over real sockets.

Under ``--http 2`` every connection is read by the HTTP/2 core from its first byte: an HTTP/1.1 request, an
``Upgrade: h2c`` request or a bad preface gets GOAWAY PROTOCOL_ERROR and the connection is closed (on TLS too,
whatever ALPN said), and a client with prior knowledge is served. Under ``auto`` plaintext bytes are HTTP/1.1
until they make up the whole preface, so a bad preface gets an HTTP/1.1 400."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from h2socket import GOAWAY, SETTINGS, WINDOW_UPDATE, ErrorCodes, RawH2, settings_frame
from h2wire import parse
from helpers import (
    assert_still_serving,
    echo_scope,
    raw_request,
    read_until_closed,
    run_server,
    simple_app,
    status_of,
    wait_for,
)
from tlsutil import TLSFiles, make_tls_files
from zonda.protocols.http2 import PREFACE

HTTP1_GET = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
H2C_UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
)
BAD_PREFACE = b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"
NOT_HTTP2 = {
    "HTTP/1.1 request": HTTP1_GET,
    "h2c upgrade": H2C_UPGRADE,
    "bad preface": BAD_PREFACE,
    "preface of HTTP/1.1": b"PRI * HTTP/1.1\r\n\r\n",
}


@pytest.fixture(scope="module")
def only(driver: str) -> Iterator[Any]:
    with run_server(simple_app, loop=driver, http="2") as server:
        yield server


def assert_h2_serves(port: int) -> None:
    with RawH2(port) as raw:
        raw.send(raw.headers(1, "/alive"))
        assert raw.response(1)[::2] == (200, b"GET /alive")


@pytest.mark.parametrize("payload", NOT_HTTP2.values(), ids=NOT_HTTP2.keys())
def test_http_2_answers_anything_but_http2_with_goaway(only: Any, payload: bytes) -> None:
    with RawH2(only.port, preface=False) as raw:
        raw.send(payload)
        goaway = raw.goaway()
        assert (goaway.error_code, goaway.last_stream_id) == (ErrorCodes.PROTOCOL_ERROR, 0)
        assert raw.wait_closed()
        # only frames came back: our SETTINGS (and the connection window) first, then GOAWAY; no HTTP/1.1 bytes
        assert [f.kind for f in raw.frames] in ([SETTINGS, WINDOW_UPDATE, GOAWAY], [SETTINGS, GOAWAY])
    assert_h2_serves(only.port)


def test_http_2_logs_the_refusal(only: Any, logs: pytest.LogCaptureFixture) -> None:
    with RawH2(only.port, preface=False) as raw:
        raw.send(HTTP1_GET)
        raw.goaway()
    wanted = ("GOAWAY PROTOCOL_ERROR to 127.0.0.1:", "invalid connection preface")
    wait_for(
        lambda: any(
            r.name == "zonda.http2" and r.levelno == logging.INFO and all(w in r.getMessage() for w in wanted)
            for r in list(logs.records)
        ),
        what="the GOAWAY log line",
    )


def test_http_2_serves_prior_knowledge_sent_in_pieces(only: Any) -> None:
    with RawH2(only.port, preface=False) as raw:
        for piece in (PREFACE[:3], PREFACE[3:20], PREFACE[20:] + settings_frame()):
            raw.send(piece)
            raw.read(0.02)
        raw.send(raw.headers(1, "/pieces"))
        assert raw.response(1)[::2] == (200, b"GET /pieces")


def test_http_auto_serves_http1_h2c_and_prior_knowledge_and_answers_a_bad_preface_as_http1(
    driver: str,
) -> None:
    with run_server(simple_app, loop=driver) as server:
        answer = raw_request(server.port, BAD_PREFACE)
        assert status_of(answer) == 400, answer  # not yet a preface: an HTTP/1.1 request that is malformed
        assert b"connection: close" in answer.lower()
        assert_still_serving(server.port)
        assert raw_request(server.port, H2C_UPGRADE, timeout=1).startswith(b"HTTP/1.1 101 ")
        assert_h2_serves(server.port)


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path)


def test_http_2_on_tls_is_http2_whatever_alpn_said(driver: str, files: TLSFiles) -> None:
    with run_server(simple_app, loop=driver, http="2", **files.server_options()) as server:
        context = files.client_context(alpn=["http/1.1"])  # nothing in common: no protocol negotiated
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as plain,
            context.wrap_socket(plain, server_hostname="localhost") as sock,
        ):
            assert sock.selected_alpn_protocol() is None
            sock.sendall(HTTP1_GET)
            frames = parse(read_until_closed(sock))
        assert [(f.kind, f.code) for f in frames if f.kind == GOAWAY] == [(GOAWAY, ErrorCodes.PROTOCOL_ERROR)]
        with RawH2(server.port, context=files.client_context(alpn=["h2"])) as raw:
            raw.send(raw.headers(1, "/tls"))
            assert raw.response(1)[::2] == (200, b"GET /tls")


def test_http_2_behind_the_proxy_protocol(driver: str) -> None:
    """The PROXY header comes before the preface: HTTP/2 takes the connection right after it."""
    header = b"PROXY TCP4 203.0.113.7 198.51.100.2 56324 443\r\n"
    with (
        run_server(echo_scope, loop=driver, http="2", proxy_protocol="v1") as server,
        RawH2(server.port, preface=False) as raw,
    ):
        raw.send(header + PREFACE + settings_frame())
        raw.send(raw.headers(1, "/proxied"))
        status, _, body = raw.response(1)
        assert status == 200
        assert json.loads(body)["client"] == ["203.0.113.7", 56324]


def test_http_2_behind_the_proxy_protocol_refuses_http1_after_the_header(driver: str) -> None:
    header = b"PROXY TCP4 203.0.113.7 198.51.100.2 56324 443\r\n"
    with run_server(echo_scope, loop=driver, http="2", proxy_protocol="v1") as server:
        frames = parse(raw_request(server.port, header + HTTP1_GET))
        assert [(f.kind, f.code) for f in frames if f.kind == GOAWAY] == [(GOAWAY, ErrorCodes.PROTOCOL_ERROR)]


def test_startup_line_names_http2_only(driver: str, logs: pytest.LogCaptureFixture) -> None:
    with run_server(simple_app, loop=driver, http="2"):
        pass
    lines = [r.getMessage() for r in logs.records if r.levelno == logging.INFO]
    assert any("HTTP/2 (prior knowledge only)" in line and "HTTP/1.1" not in line for line in lines), lines
