"""HTTP/2 attack resistance over real sockets: each attack is made of hand-built frames (or the ``h2`` client),
and each test checks (a) the exact GOAWAY or RST_STREAM code, (b) the log line that names it (and the counter
behind it), and (c) that the server still serves afterwards.

Rapid reset (CVE-2023-44487), CONTINUATION flood, HPACK bomb, SETTINGS/PING/PRIORITY/empty-DATA floods,
zero-window stalls (stream and connection windows) and a stalled request body, the idle connection timeout,
and a slow preface or header block. Limits and timeouts are set small through the config options.
"""

from __future__ import annotations

import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import h2.settings
import pytest

from h2socket import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PING,
    PREFACE,
    SETTINGS,
    ErrorCodes,
    H2Client,
    RawH2,
    frame,
    ping,
    priority,
    rst_stream,
    settings_frame,
)
from helpers import (
    assert_still_serving,
    raw_request,
    read_until_closed,
    run_server,
    simple_app,
    status_of,
    wait_for,
)
from tlsutil import TLSFiles, make_tls_files


def logged(caplog: pytest.LogCaptureFixture, logger: str, level: int, *parts: str) -> logging.LogRecord:
    """The log record (from the server's thread, so it may take a moment) with all of ``parts`` in it."""
    deadline = time.monotonic() + 3
    while True:
        for record in list(caplog.records):
            message = record.getMessage()
            if record.name == logger and record.levelno == level and all(part in message for part in parts):
                return record
        if time.monotonic() > deadline:
            seen = [
                (r.name, r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("zonda")
            ]
            raise AssertionError(f"no {logging.getLevelName(level)} {parts} on {logger}; logged: {seen}")
        time.sleep(0.01)


def counted(server: Any, name: str, expected: int = 1) -> None:
    """The server-wide HTTP/2 counter (each connection's core adds to it as it counts) reaches ``expected``."""
    deadline = time.monotonic() + 3
    counters = server.server.shared.h2_counters
    while counters.get(name, 0) < expected:
        assert time.monotonic() < deadline, f"{name} not counted: {counters}"
        time.sleep(0.01)
    assert counters[name] == expected, counters


def assert_h2_still_serving(port: int, context: ssl.SSLContext | None = None) -> None:
    """A fresh HTTP/2 connection (and, on plaintext, an HTTP/1.1 one) is served after the attack."""
    with RawH2(port, context=context) as raw:
        raw.send(raw.headers(1, "/alive"))
        status, _, body = raw.response(1)
    assert (status, body) == (200, b"GET /alive")
    if context is None:
        assert_still_serving(port)


def assert_goaway(raw: RawH2, code: ErrorCodes, last_stream_id: int | None = None) -> bytes:
    """The connection's GOAWAY has ``code`` and it is then closed; returns its debug data."""
    goaway = raw.goaway()
    assert goaway.error_code == code, goaway
    if last_stream_id is not None:
        assert goaway.last_stream_id == last_stream_id, goaway
    assert raw.wait_closed(3), "the server closes after GOAWAY"
    assert len([f for f in raw.frames if f.kind == 0x7]) == 1, raw.frames
    return goaway.debug_data


# --------------------------------------------------------------------------------------------- rapid reset


def test_rapid_reset(logs: pytest.LogCaptureFixture) -> None:
    """CVE-2023-44487: streams opened and reset at once, in bulk. Up to h2_max_resets per 10 s are fine."""
    with run_server(simple_app, h2_max_resets=20) as server:
        with RawH2(server.port) as within:  # exactly the allowance: the connection lives on
            within.send(
                *[part for i in range(20) for part in (within.headers(1 + 2 * i), rst_stream(1 + 2 * i))]
            )
            within.send(within.headers(41, "/after"))
            assert within.response(41)[2] == b"GET /after"
            assert not [f for f in within.frames if f.kind == 0x7]
        with RawH2(server.port) as attacker:
            pairs = [part for i in range(30) for part in (attacker.headers(1 + 2 * i), rst_stream(1 + 2 * i))]
            attacker.send(*pairs)  # one write, as the attack does
            debug = assert_goaway(attacker, ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=41)  # the 21st pair
        assert b"rapid reset" in debug
        record = logged(logs, "zonda.http2", logging.WARNING, "GOAWAY ENHANCE_YOUR_CALM", "(rapid reset)")
        assert "more than 20 stream resets in 10s" in record.getMessage()
        counted(server, "rapid_reset")
        assert_h2_still_serving(server.port)


# --------------------------------------------------------------------------------------------- CONTINUATION flood


@pytest.mark.parametrize("shape", ["many small frames", "a few big frames"])
def test_continuation_flood(logs: pytest.LogCaptureFixture, shape: str) -> None:
    """A header block that never ends: capped by frame count (128) and by size (h2_max_header_list_size)."""
    with run_server(simple_app, h2_max_header_list_size=4096) as server, RawH2(server.port) as raw:
        first = frame(HEADERS, 0, 1, raw.block(raw.request_fields()))  # no END_HEADERS
        if shape == "many small frames":
            flood = [frame(CONTINUATION, 0, 1, b"\x40\x01a\x01b") for _ in range(1000)]
        else:
            flood = [frame(CONTINUATION, 0, 1, os.urandom(16000)) for _ in range(4)]
        raw.send(first, *flood)
        debug = assert_goaway(raw, ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=0)  # stream 1 never opened
        assert debug == b"header block too large or in too many CONTINUATION frames"
        logged(logs, "zonda.http2", logging.WARNING, "GOAWAY ENHANCE_YOUR_CALM", "CONTINUATION")
        counted(server, "continuation_flood")
        assert_h2_still_serving(server.port)


# --------------------------------------------------------------------------------------------- HPACK bomb


def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    """An HPACK integer (RFC 7541 §5.1) in a byte whose high bits are ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes([*out, value])


def hpack_literal(name: bytes, value: bytes, *, index: bool) -> bytes:
    """A literal field with a new name (RFC 7541 §6.2), added to the dynamic table or not; no Huffman."""
    first = b"\x40" if index else b"\x00"
    return first + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


# :method GET, :scheme http, :path / (static table), :authority localhost (not indexed)
REQUEST_BLOCK = b"\x82\x86\x84" + b"\x01" + hpack_int(9, 7) + b"localhost"


def test_hpack_bomb(logs: pytest.LogCaptureFixture) -> None:
    """A 4 KB header put in the dynamic table, then referenced by one-byte indexes 500 times: 2 MB decoded
    from a 520-byte block. The decoder stops at 4 x h2_max_header_list_size (at least 64 KiB)."""
    with run_server(simple_app, h2_max_header_list_size=8192) as server, RawH2(server.port) as raw:
        seed = REQUEST_BLOCK + hpack_literal(b"x-bomb", b"b" * 4000, index=True)  # dynamic index 62
        raw.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, seed))
        assert raw.response(1)[0] == 200  # 4 KB of headers: fine by itself
        bomb = REQUEST_BLOCK + bytes([0x80 | 62]) * 500
        raw.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, bomb))
        debug = assert_goaway(raw, ErrorCodes.ENHANCE_YOUR_CALM, last_stream_id=3)
        assert debug == b"decoded header list is far above the limit"
        logged(logs, "zonda.http2", logging.WARNING, "GOAWAY ENHANCE_YOUR_CALM", "decoded header list")
        counted(server, "hpack_bomb")
        assert_h2_still_serving(server.port)


# --------------------------------------------------------------------------------------------- control frame floods

FLOODS: dict[str, Callable[[RawH2], bytes]] = {
    "SETTINGS": lambda raw: settings_frame(),
    "PING": lambda raw: ping(),
    "PRIORITY": lambda raw: priority(3),
    "empty DATA frame": lambda raw: frame(DATA, 0, 1),
}


@pytest.mark.parametrize("kind", list(FLOODS))
def test_control_frame_flood(logs: pytest.LogCaptureFixture, kind: str) -> None:
    """h2_max_control_frames per 10 s (the client's first SETTINGS counts too); beyond it, GOAWAY. Frames that
    make the server answer (SETTINGS, PING) get at most that many answers."""
    limit = 50
    with run_server(simple_app, h2_max_control_frames=limit) as server:
        with RawH2(server.port) as calm:  # below the cap: served normally
            opener = (
                [calm.headers(1, "/upload", "POST", end_stream=False)] if kind == "empty DATA frame" else []
            )
            calm.send(*opener, *[FLOODS[kind](calm)] * (limit - 10))
            calm.send(calm.headers(3, "/calm"))
            assert calm.response(3)[2] == b"GET /calm"
            assert not [f for f in calm.frames if f.kind == 0x7]
        with RawH2(server.port) as raw:
            opener = (
                [raw.headers(1, "/upload", "POST", end_stream=False)] if kind == "empty DATA frame" else []
            )
            raw.send(*opener, *[FLOODS[kind](raw)] * (limit * 3))
            debug = assert_goaway(raw, ErrorCodes.ENHANCE_YOUR_CALM)
            answers = [f for f in raw.frames if f.kind in (SETTINGS, PING) and f.flags & ACK]
            assert len(answers) <= limit, len(answers)  # SETTINGS ACKs (ours included) or PING ACKs
        assert debug == f"more than {limit} control frames in 10s ({kind})".encode()
        logged(logs, "zonda.http2", logging.WARNING, "GOAWAY ENHANCE_YOUR_CALM", f"({kind})")
        counted(server, "control_flood")
        assert_h2_still_serving(server.port)


# --------------------------------------------------------------------------------------------- stalls


class StallApp:
    """Sends 1 MiB messages (up to 64 of them) and notes how far it got and how it ended."""

    def __init__(self) -> None:
        self.sent = 0
        self.ending: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/alive":
            await simple_app(scope, receive, send)
            return
        if scope["path"] == "/upload":
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.ending.append("http.disconnect")
                    return
                if not message.get("more_body"):
                    break
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"uploaded"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for _ in range(64):
                await send({"type": "http.response.body", "body": b"z" * (1 << 20), "more_body": True})
                self.sent += 1
        except Exception as exc:  # ClientDisconnected
            self.ending.append(type(exc).__name__)
        self.ending.append((await receive())["type"])


@pytest.mark.parametrize("window", ["stream window", "connection window"])
def test_zero_window_stall(logs: pytest.LogCaptureFixture, window: str) -> None:
    """A client that never opens its window: the stream is reset after timeout_write (idle timeout
    left at its 60 s default), the app's send() raises, and the app never got more than one message ahead."""
    app = StallApp()
    if window == "stream window":
        settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
    else:  # stream windows wide open, the connection's 64 KiB never returned
        settings = {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 16 << 20}
    with run_server(app, timeout_write=0.5) as server:
        with H2Client(server.port, settings=settings, auto_ack=False) as client:
            began = time.monotonic()
            state = client.get("/download", timeout=5)
            took = time.monotonic() - began
            assert state.status == 200
            assert state.reset_code == ErrorCodes.CANCEL
            assert 0.4 < took < 2.0, took
            assert len(state.data) <= 65535
            connection = next(iter(server.server.shared.connections))
            buffered = connection.raw_stream.get_write_buffer_size()  # type: ignore[attr-defined]  # asyncio's
            assert buffered < 65536  # nothing piled up in the transport
            wait_for(lambda: len(app.ending) == 2, 3.0, "the app to end")
        assert app.sent == 0  # the first 1 MiB message never fitted: send() waited from the start
        assert app.ending == ["ClientDisconnected", "http.disconnect"]
        counted(server, "send_stall")
        logged(logs, "zonda.http2", logging.DEBUG, "HTTP/2 connection counters", "'send_stall': 1")
        stalls = "1 stream reset(s) for slow clients: 1 with the client's window closed for 0.5s"
        logged(logs, "zonda.http2", logging.INFO, "HTTP/2 connection from 127.0.0.1:", "ended after", stalls)
        assert_h2_still_serving(server.port)


def test_stalled_request_body(logs: pytest.LogCaptureFixture) -> None:
    """A client that stops sending its request body: the stream is reset after timeout_request_body and the
    app gets http.disconnect."""
    app = StallApp()
    with run_server(app, timeout_request_body=0.5) as server:
        with H2Client(server.port) as client:
            began = time.monotonic()
            state = client.get("/upload", body=b"a little, then nothing", end_stream=False)
            took = time.monotonic() - began
            assert state.reset_code == ErrorCodes.CANCEL
            assert 0.4 < took < 2.0, took
            wait_for(lambda: bool(app.ending), 3.0, "the app's disconnect")
        assert app.ending == ["http.disconnect"]
        counted(server, "body_stall")
        logged(logs, "zonda.http2", logging.DEBUG, "HTTP/2 connection counters", "'body_stall': 1")
        stalls = "1 stream reset(s) for slow clients: 1 with the request body stalled for 0.5s"
        logged(logs, "zonda.http2", logging.INFO, "HTTP/2 connection from 127.0.0.1:", "ended after", stalls)
        assert_h2_still_serving(server.port)


# --------------------------------------------------------------------------------------------- idle and slow clients


def test_idle_connection_timeout(logs: pytest.LogCaptureFixture) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if scope["path"] == "/slow":
                await anyio.sleep(0.8)
            await simple_app(scope, receive, send)

    with run_server(app, timeout_h2_idle=0.4) as server:
        with RawH2(server.port) as idle:
            began = time.monotonic()
            assert_goaway(idle, ErrorCodes.NO_ERROR, last_stream_id=0)
            assert 0.3 < time.monotonic() - began < 1.5
        logged(logs, "zonda.http2", logging.DEBUG, "GOAWAY NO_ERROR", "idle timeout")
        with RawH2(server.port) as busy:  # a stream open longer than the idle timeout keeps the connection
            busy.send(busy.headers(1, "/slow"))
            assert busy.response(1, timeout=3)[2] == b"GET /slow"
            done = time.monotonic()
            assert_goaway(busy, ErrorCodes.NO_ERROR, last_stream_id=1)
            assert 0.3 < time.monotonic() - done < 1.5  # idle counts from the end of the last stream
        assert_h2_still_serving(server.port)


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path)


def test_slow_preface_on_tls(logs: pytest.LogCaptureFixture, files: TLSFiles) -> None:
    """ALPN chose h2, then nothing: GOAWAY PROTOCOL_ERROR after timeout_request_header."""
    context = files.client_context(alpn=["h2"])
    with run_server(simple_app, timeout_request_header=0.4, **files.server_options()) as server:
        with RawH2(server.port, context=context, preface=False) as silent:
            began = time.monotonic()
            debug = assert_goaway(silent, ErrorCodes.PROTOCOL_ERROR, last_stream_id=0)
            assert 0.3 < time.monotonic() - began < 1.5
        assert debug == b"client preface or header block timed out"
        logged(logs, "zonda.http2", logging.INFO, "GOAWAY PROTOCOL_ERROR", "timed out")
        counted(server, "header_timeout")
        assert_h2_still_serving(server.port, context)


def test_slow_preface_on_plaintext(logs: pytest.LogCaptureFixture) -> None:
    """On plaintext nothing says HTTP/2 until the preface is whole: half a preface is an HTTP/1.1 request head
    that times out (408 after timeout_request_header); silence is an idle HTTP/1.1 connection (closed after
    timeout_keep_alive)."""
    with run_server(simple_app, timeout_request_header=0.4, timeout_keep_alive=0.6) as server:
        began = time.monotonic()
        answer = raw_request(server.port, PREFACE[:16])
        assert 0.3 < time.monotonic() - began < 1.5
        assert status_of(answer) == 408, answer
        logged(
            logs, "zonda.error", logging.INFO, "408 response to", "request headers not received within 0.4s"
        )
        began = time.monotonic()
        assert raw_request(server.port, b"") == b""
        assert 0.5 < time.monotonic() - began < 2.0
        assert_h2_still_serving(server.port)


def test_slow_header_block(logs: pytest.LogCaptureFixture) -> None:
    """A HEADERS frame without END_HEADERS and then silence: GOAWAY PROTOCOL_ERROR after timeout_request_header."""
    with run_server(simple_app, timeout_request_header=0.4) as server, RawH2(server.port) as raw:
        raw.send(frame(HEADERS, 0, 1, raw.block(raw.request_fields())))
        began = time.monotonic()
        debug = assert_goaway(raw, ErrorCodes.PROTOCOL_ERROR, last_stream_id=0)
        assert 0.3 < time.monotonic() - began < 1.5
        assert debug == b"client preface or header block timed out"
        logged(logs, "zonda.http2", logging.INFO, "GOAWAY PROTOCOL_ERROR", "timed out")
        counted(server, "header_timeout")
        assert_h2_still_serving(server.port)


def test_silent_after_preface_hits_the_idle_timeout() -> None:
    """The whole preface and then nothing at all (not even SETTINGS): the idle timeout ends it."""
    with run_server(simple_app, timeout_h2_idle=0.4) as server, RawH2(server.port, preface=False) as raw:
        raw.send(PREFACE)
        began = time.monotonic()
        assert_goaway(raw, ErrorCodes.NO_ERROR, last_stream_id=0)
        assert time.monotonic() - began < 1.5
        assert read_until_closed(raw.sock, 0.5) == b""
