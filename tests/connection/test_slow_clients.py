"""Slow clients on the fake driver, with explicit time: a client that takes none of the response for
``--timeout-write`` seconds is cut (its app gets ``http.disconnect``), one that reads slowly is not; a request body
under ``--limit-request-body-rate`` gets 408; rejection lines are rate-limited per cause, counters exact."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from fakeio import FakeServer, H2Peer, h2_response, responses
from h2wire import RST_STREAM
from wire import get
from zonda.errors import ClientDisconnected

Serve = Callable[..., FakeServer]
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"test")]


class Streamer:
    """Streams 64 KiB parts until send() fails, then notes what receive() says."""

    def __init__(self) -> None:
        self.parts = 0
        self.ending: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while self.parts < 1000:
                await send({"type": "http.response.body", "body": b"z" * 65536, "more_body": True})
                self.parts += 1
            await send({"type": "http.response.body", "body": b""})
        except ClientDisconnected:
            self.ending.append("ClientDisconnected")
        self.ending.append((await receive())["type"])


def slow_reader_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "zonda.error" and "--timeout-write" in record.getMessage()
    ]


def test_http1_a_client_that_reads_nothing_is_cut_after_timeout_write(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "zonda.error")
    app = Streamer()
    server = serve(app, timeout_write=30)
    stream = server.connect()
    stream.unsent = 200_000
    stream.pause_writing()  # past its high-water mark: the app's first part makes its send() wait
    stream.feed(get("/download"))  # the buffer passed its high-water mark: send() waits
    assert app.parts == 0  # the first part went to the stream; its send() waits
    server.loop.advance(29.9)
    assert not stream.aborted and app.ending == []
    server.loop.advance(0.1)
    assert stream.aborted and stream.lost
    assert app.ending == ["ClientDisconnected", "http.disconnect"]
    assert app.parts == 0  # memory: one part past the high-water mark, never more
    assert server.shared.rejections == {"WriteTimeout": 1}
    [line] = slow_reader_lines(caplog)
    assert line == (
        "Closing connection from 192.0.2.10:40000: it took no response bytes for 30s (--timeout-write), "
        "200000 left unsent"
    )
    assert not server.connections


def test_http1_a_client_that_reads_slowly_is_not_cut(serve: Serve) -> None:
    app = Streamer()
    server = serve(app, timeout_write=30)
    stream = server.connect()
    stream.unsent = 200_000
    stream.pause_writing()  # past its high-water mark: the app's first part makes its send() wait
    stream.feed(get("/download"))
    for _ in range(5):  # a few bytes taken in each 30 s: progress, however slow
        server.loop.advance(25)
        stream.drain(stream.unsent - 100)
    assert not stream.aborted and app.ending == []
    server.loop.advance(60)  # ... until it stops: cut within two looks (one every timeout_write)
    assert stream.aborted
    assert app.ending == ["ClientDisconnected", "http.disconnect"]


def test_http1_resumed_writing_ends_the_watch(serve: Serve) -> None:
    app = Streamer()
    server = serve(app, timeout_write=30)
    stream = server.connect()
    stream.unsent = 200_000
    stream.pause_writing()  # past its high-water mark: the app's first part makes its send() wait
    stream.feed(get("/download"))
    server.loop.advance(10)
    stream.unsent = 0
    stream.resume_writing()  # the app sends on, all of it taken
    assert app.parts == 1000 and app.ending == ["http.disconnect"]
    server.loop.advance(120)
    assert not stream.aborted


def test_http1_timeout_write_zero_never_cuts(serve: Serve) -> None:
    app = Streamer()
    server = serve(app, timeout_write=0)
    stream = server.connect()
    stream.unsent = 200_000
    stream.pause_writing()  # past its high-water mark: the app's first part makes its send() wait
    stream.feed(get("/download"))
    server.loop.advance(3600)
    assert not stream.aborted and app.ending == []
    assert server.loop.next_timer() is None  # nothing armed for a paused connection


def test_http1_a_closing_connection_is_not_held_open_by_a_client_that_reads_nothing(serve: Serve) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"connection", b"close")]})
        await send({"type": "http.response.body", "body": b"z" * 1000})

    server = serve(app, timeout_write=30)
    stream = server.connect()
    stream.unsent = 50_000  # what the stream holds when it is asked to close
    stream.feed(get("/"))
    assert stream.closed and not stream.lost  # flushing before it closes
    server.loop.advance(29)
    assert not stream.aborted
    server.loop.advance(1)
    assert stream.aborted and stream.lost
    assert server.shared.rejections == {"WriteTimeout": 1}


def test_http2_a_connection_that_reads_nothing_is_cut_with_all_its_streams(serve: Serve) -> None:
    app = Streamer()
    server = serve(app, timeout_write=30)
    peer = H2Peer(server.connect())
    peer.send(peer.preface())
    peer.read()
    peer.send(peer.headers(1, GET), peer.headers(3, GET))
    peer.stream.unsent = 500_000
    peer.stream.pause_writing()
    server.loop.advance(29.9)
    assert not peer.stream.aborted
    server.loop.advance(0.1)
    assert peer.stream.aborted
    assert app.ending == ["ClientDisconnected", "http.disconnect"] * 2


def test_http2_a_window_that_stays_closed_resets_the_stream_after_timeout_write(serve: Serve) -> None:
    """The per-stream slow read: the client reads the socket but never opens the stream's window."""
    app = Streamer()
    server = serve(app, timeout_write=10, timeout_request_body=60)
    peer = H2Peer(server.connect())
    peer.send(peer.preface(settings=b"\x00\x04\x00\x00\x00\x00"))  # SETTINGS_INITIAL_WINDOW_SIZE 0
    peer.read()
    peer.send(peer.headers(1, GET))
    assert h2_response(peer.read(), 1).status == 200
    server.loop.advance(9)
    assert peer.read() == []
    server.loop.advance(6)  # the sweep comes every timeout_write / 2
    [reset] = [found for found in peer.read() if found.kind == RST_STREAM]
    assert reset.stream_id == 1 and reset.payload == b"\x00\x00\x00\x08"  # CANCEL
    assert app.ending == ["ClientDisconnected", "http.disconnect"]
    assert server.shared.h2_counters["send_stall"] == 1
    assert not peer.stream.is_closing()  # the connection goes on


# ---------------------------------------------------------------------------------------------- request body rate


def test_http1_a_trickling_body_gets_408_and_a_line(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "zonda.error")
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            seen.append(message["type"])
            if not message.get("more_body"):
                return

    server = serve(app, limit_request_body_rate=100, limit_request_body_rate_grace=5)
    stream = server.connect()
    stream.feed(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\nxxxxx")
    for _ in range(4):
        server.loop.advance(1)
        stream.feed(b"x" * 5)  # a few bytes a second: every stall timer would start again
    server.loop.advance(1)
    [response] = responses(stream.take())
    assert response.status == 408
    assert b"request body too slow: 25 bytes in 5.0s" in response.body
    assert stream.closed
    assert seen[-1] == "http.disconnect"
    assert server.shared.rejections == {"RequestBodyTooSlow": 1}
    lines = [r.getMessage() for r in caplog.records if r.name == "zonda.error"]
    assert lines == [
        "408 response to 192.0.2.10:40000: request body too slow: 25 bytes in 5.0s, under the minimum of "
        "100 bytes/s"
    ]


def test_rejection_lines_are_one_per_cause_per_second_counters_exact(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "zonda.error")
    server = serve(lambda scope, receive, send: None)
    for _ in range(20):
        stream = server.connect()
        stream.feed(b"GARBAGE\r\n\r\n")
        assert responses(stream.take())[0].status == 400
    assert server.shared.rejections == {"BadRequest": 20}
    server.loop.advance(1)
    server.shared.rejection_log.flush(server.loop.time())  # the server's once-a-second tick
    lines = [r.getMessage() for r in caplog.records if r.name == "zonda.error"]
    assert len(lines) == 2
    assert lines[0].startswith("400 response to 192.0.2.10:40000: ")
    assert lines[1] == "400 response (BadRequest): 19 more suppressed (at most one line per 1s)"
