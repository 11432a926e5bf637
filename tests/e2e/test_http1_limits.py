"""HTTP/1.1 bad input and limits end to end: each sent over a raw socket, the exact status checked, the log line
checked, and the server still serving afterwards."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any

import anyio
import pytest

from helpers import assert_still_serving, raw_request, run_server, status_of
from wire import Closed, Wire, get

Scope = dict[str, Any]
ERROR_LINE = re.compile(r"^(\d{3}) response to 127\.0\.0\.1:\d+: ")


class Calls:
    """What the app saw, for the test thread."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.messages: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()


def make_app(calls: Calls) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        calls.paths.append(scope["path"])
        body = b""
        if scope["path"] == "/slow":
            calls.entered.set()
            while not calls.release.is_set():
                await anyio.sleep(0.01)
        elif scope["method"] == "POST":
            while True:
                message = await receive()
                calls.messages.append(message["type"])
                if message["type"] == "http.disconnect":
                    return
                body += message["body"]
                if not message.get("more_body"):
                    break
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": body or b"ok"})

    return app


def serve(loop: str, calls: Calls | None = None, **options: Any) -> Any:
    options.setdefault("lifespan", "off")
    options.setdefault("limit_request_line", 64)
    options.setdefault("limit_request_headers", 5)
    options.setdefault("limit_request_header_size", 1024)
    return run_server(make_app(calls or Calls()), loop=loop, **options)


def error_lines(logs: pytest.LogCaptureFixture) -> list[tuple[int, int]]:
    """(status, level) of each protocol-error line zonda logged."""
    found = []
    for record in logs.records:
        match = ERROR_LINE.match(record.getMessage())
        if record.name == "zonda.error" and match:
            found.append((int(match.group(1)), record.levelno))
    return found


def big_header(size: int) -> bytes:
    return b"X-Big: " + b"v" * size + b"\r\n"


BAD_INPUTS = {
    "http09-request-line": (b"GET /\r\n\r\n", 505),
    "malformed-request-line": (b"GET/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "request-line-extra-token": (b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
    "garbage-method": (b"GARBAGE / HTTP/1.1\r\n\r\n", 400),
    "bad-version": (b"GET / HTTX/1.1\r\nHost: x\r\n\r\n", 400),
    "spaces-in-target": (b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "bare-lf": (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    "request-line-too-long": (b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "too-many-headers": (get("/", *[f"X-H{i}: v" for i in range(6)]), 431),
    "headers-too-large": (b"GET / HTTP/1.1\r\nHost: x\r\n" + big_header(2000) + b"\r\n", 431),
    "unknown-transfer-encoding": (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nxx", 501),
    "content-length-and-chunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "duplicate-content-length": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    "conflicting-content-length": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        400,
    ),
    "invalid-content-length": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2x\r\n\r\nab", 400),
    "negative-content-length": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -2\r\n\r\nab", 400),
    "control-byte-in-header-name": (b"GET / HTTP/1.1\r\nHost: x\r\nX-\x01Bad: v\r\n\r\n", 400),
    "non-ascii-header-name": (b"GET / HTTP/1.1\r\nHost: x\r\nX-\xc3\xa9: v\r\n\r\n", 400),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    "nul-in-header-value": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400),
    # RFC 9112 §3.2: Host is mandatory in HTTP/1.1 and never repeated
    "no-host": (b"GET / HTTP/1.1\r\nX-Host: x\r\n\r\n", 400),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n", 400),
    "two-hosts-http10": (b"GET / HTTP/1.0\r\nHost: x\r\nhost: y\r\n\r\n", 400),
    "absolute-form-without-host": (b"GET http://x/ HTTP/1.1\r\n\r\n", 400),
    "absolute-form-with-userinfo": (b"GET http://u:p@x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
}


@pytest.mark.parametrize(("data", "status"), BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_gets_its_status_and_one_warning(
    loop: str, logs: pytest.LogCaptureFixture, data: bytes, status: int
) -> None:
    calls = Calls()
    with serve(loop, calls) as server:
        started = time.monotonic()
        response = raw_request(server.port, data)
        assert time.monotonic() - started < 2.0, "the server did not close after its error response"
        assert status_of(response) == status, response
        head, _, body = response.partition(b"\r\n\r\n")
        assert b"\r\nconnection: close\r\n" in head + b"\r\n"
        assert int(re.search(rb"content-length: (\d+)", head).group(1)) == len(body)  # type: ignore[union-attr]
        assert_still_serving(server.port)
    assert calls.paths == ["/alive"], "the app must never see a bad request"
    assert error_lines(logs) == [(status, logging.WARNING)]


def test_bad_request_after_a_good_pipelined_one(loop: str, logs: pytest.LogCaptureFixture) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(get("/good") + b"GARBAGE\r\n\r\n")
        assert wire.read_response().status == 200
        assert wire.read_response().status == 400
        assert wire.is_closed(2.0)
    assert error_lines(logs) == [(400, logging.WARNING)]


def test_slowloris_header_trickle_gets_408(loop: str, logs: pytest.LogCaptureFixture) -> None:
    with serve(loop, timeout_request_header=0.5) as server, Wire(server.port) as wire:
        started = time.monotonic()
        wire.send(b"GET / HTTP/1.1\r\n")
        for i in range(40):
            if not wire.nothing_arrives(0.1):
                break
            wire.send(b"X-%d: v\r\n" % i)
        response = wire.read_response()
        elapsed = time.monotonic() - started
        assert response.status == 408
        assert 0.4 < elapsed < 2.0
        assert wire.is_closed(2.0)
        assert_still_serving(server.port)
    assert error_lines(logs) == [(408, logging.INFO)]


def test_header_trickle_to_the_size_limit_gets_431(loop: str, logs: pytest.LogCaptureFixture) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        for _ in range(40):
            if not wire.nothing_arrives(0.01):
                break
            wire.send(b"v" * 64)
        assert wire.read_response().status == 431
        assert_still_serving(server.port)
    assert error_lines(logs) == [(431, logging.WARNING)]


def test_body_stall_gets_408(loop: str, logs: pytest.LogCaptureFixture) -> None:
    calls = Calls()
    with serve(loop, calls, timeout_request_body=0.5) as server, Wire(server.port) as wire:
        started = time.monotonic()
        wire.send(b"POST /stall HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        response = wire.read_response()
        assert response.status == 408
        assert 0.4 < time.monotonic() - started < 2.0
        assert wire.is_closed(2.0)
        assert_still_serving(server.port)
    assert calls.messages == ["http.request", "http.disconnect"]
    assert error_lines(logs) == [(408, logging.INFO)]


def test_body_too_large_by_content_length_is_answered_before_the_body(
    loop: str, logs: pytest.LogCaptureFixture
) -> None:
    calls = Calls()
    with serve(loop, calls, limit_request_body=1000) as server, Wire(server.port) as wire:
        wire.send(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
        response = wire.read_response()  # no body byte was sent
        assert response.status == 413
        assert response.header("connection") == "close"
        assert wire.is_closed(2.0)
        assert_still_serving(server.port)
    assert calls.paths == ["/alive"]
    assert error_lines(logs) == [(413, logging.WARNING)]


def test_chunked_body_too_large_gets_413(loop: str, logs: pytest.LogCaptureFixture) -> None:
    calls = Calls()
    with serve(loop, calls, limit_request_body=1000) as server, Wire(server.port) as wire:
        wire.send(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        response = None
        for _ in range(10):
            try:
                wire.send(b"100\r\n" + b"x" * 256 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            if not wire.nothing_arrives(0.05):
                break
        response = wire.read_response()
        assert response.status == 413
        assert_still_serving(server.port)
    assert calls.messages[-1] == "http.disconnect"
    assert error_lines(logs) == [(413, logging.WARNING)]


def early_answer(calls: Calls) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        calls.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"early"})

    return app


@pytest.mark.parametrize("kind", ["stall", "too-large"])
def test_body_error_after_the_app_answered_early_just_closes(
    loop: str, logs: pytest.LogCaptureFixture, kind: str
) -> None:
    calls = Calls()
    with (
        run_server(
            early_answer(calls), loop=loop, lifespan="off", timeout_request_body=0.3, limit_request_body=1000
        ) as server,
        Wire(server.port) as wire,
    ):
        if kind == "stall":
            wire.send(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        else:
            wire.send(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert wire.read_response().body == b"early"
        if kind == "too-large":
            wire.send(b"800\r\n" + b"x" * 2048 + b"\r\n")
        assert wire.is_closed(2.0)  # nothing more: no unsolicited error response
        assert_still_serving(server.port)
    assert [r for r in logs.records if r.levelno >= logging.ERROR] == []
    assert error_lines(logs) == [(408, logging.INFO)] if kind == "stall" else [(413, logging.WARNING)]


def test_body_at_the_limit_is_served(loop: str) -> None:
    with serve(loop, limit_request_body=1000) as server, Wire(server.port) as wire:
        wire.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"x" * 1000)
        assert wire.read_response().body == b"x" * 1000


def test_limit_concurrency_answers_503_with_retry_after(loop: str) -> None:
    calls = Calls()
    with serve(loop, calls, limit_concurrency=1) as server, Wire(server.port) as first:
        first.send(get("/slow"))
        assert calls.entered.wait(5)
        with Wire(server.port) as second:
            second.send(get("/other"))
            response = second.read_response()
            assert response.status == 503
            assert response.header("retry-after") == "1"
        calls.release.set()
        assert first.read_response().status == 200
        assert_still_serving(server.port)
    assert "/other" not in calls.paths


def test_limit_connections_answers_503_and_closes(loop: str, logs: pytest.LogCaptureFixture) -> None:
    with serve(loop, limit_connections=1) as server:
        with Wire(server.port) as first:
            first.send(get("/one"))
            assert first.read_response().status == 200
            with Wire(server.port) as second:
                response = second.read_response()
                assert response.status == 503
                assert response.header("connection") == "close"
                assert response.header("retry-after") == "1"
                assert second.is_closed(2.0)
            first.send(get("/still"))  # the connection that was in keeps working
            assert first.read_response().status == 200
        deadline = time.monotonic() + 5
        while True:  # the server notices the first connection's close asynchronously
            try:
                assert_still_serving(server.port)
                break
            except (AssertionError, IndexError, Closed):
                assert time.monotonic() < deadline
                time.sleep(0.05)
    refused = [r for r in logs.records if "limit-connections" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.WARNING]
