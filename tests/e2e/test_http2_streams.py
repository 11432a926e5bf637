"""HTTP/2 streams end to end over real sockets, with the ``h2`` package or hand-built frames as the client.

Flow control both ways (a 10 MiB response to a client that opens its window slowly: the app's ``send()``
waits; a slow reader of an upload slows that upload only), a client's RST_STREAM reaching only its stream's
app, connection loss reaching every app, graceful shutdown with GOAWAY on SIGTERM, and the settings flags
(``h2_max_concurrent_streams`` -> REFUSED_STREAM, ``h2_max_header_list_size`` -> 431) seen on the wire.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from h2socket import (
    DATA,
    END_STREAM,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    RST_STREAM,
    WINDOW_UPDATE,
    ErrorCodes,
    H2Client,
    RawH2,
)
from helpers import assert_still_serving, read_body, respond, run_server, wait_for, zonda_process

MiB = 1024 * 1024
CHUNK = 64 * 1024
# 10 MiB in 160 messages of 64 KiB, each one different: bytes lost, doubled or reordered all show
BIG = b"".join(hashlib.sha256(b"%d" % i).digest() * (CHUNK // 32) for i in range(10 * MiB // CHUNK))


class Record:
    """Shared between the app (the server's thread) and the test."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.granted = 0  # response window the client has given (stream), updated before it is sent
        self.sends: list[tuple[int, int]] = []  # (bytes the app has sent, granted) after each send() returned
        self.received: dict[str, int] = {}  # upload bytes each app has read so far
        self.reads = 0  # receive() calls of the upload app
        self.events: dict[str, list[str]] = {}  # per request path: what its app saw
        self.waiting: set[str] = set()

    def note(self, key: str, what: str) -> None:
        with self.lock:
            self.events.setdefault(key, []).append(what)


def make_app(record: Record) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        query = scope["query_string"].decode()
        if path == "/big":  # 10 MiB in 64 KiB messages; note how far the client's window had opened each time
            await read_body(receive)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"%d" % len(BIG))],
                }
            )
            for offset in range(0, len(BIG), CHUNK):
                last = offset + CHUNK >= len(BIG)
                await send(
                    {
                        "type": "http.response.body",
                        "body": BIG[offset : offset + CHUNK],
                        "more_body": not last,
                    }
                )
                record.sends.append((offset + CHUNK, record.granted))
        elif path == "/upload":  # reads slowly
            digest = hashlib.sha256()
            total = 0
            while True:
                message = await receive()
                digest.update(message.get("body", b""))
                total += len(message.get("body", b""))
                record.received[query] = total
                record.reads += 1
                if not message.get("more_body"):
                    break
                await anyio.sleep(0.05)
            await respond(send, f"{total} {digest.hexdigest()}".encode())
        elif path == "/hold":  # waits (up to ?seconds) for http.disconnect after the request body
            await read_body(receive)
            record.note(query, "started")
            record.waiting.add(query)
            message = None
            with anyio.move_on_after(float(query.split("=")[1])):
                message = await receive()
            if message is not None:
                record.note(query, message["type"])
                return
            record.note(query, "answered")
            await respond(send, b"held " + query.encode())
        elif path == "/first-then-wait":  # one piece, then a pause of ?seconds before the rest
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            await anyio.sleep(float(query))
            await send({"type": "http.response.body", "body": b"last"})
        else:
            await respond(send, path.encode())

    return app


@pytest.fixture
def record() -> Record:
    return Record()


@pytest.fixture
def app(record: Record) -> Callable[..., Any]:
    return make_app(record)


# --------------------------------------------------------------------------------------------- flow control


def test_big_response_to_a_slow_window_waits_in_send(app: Any, record: Record, loop: str) -> None:
    """The client gives 64 KiB of window at a time, a little late each time: the app's send() waits for it,
    so the app is never more than the window plus the message in hand ahead of the client."""
    window = 65535  # the client's initial stream and connection windows (the protocol's defaults)
    with run_server(app, loop=loop) as server, H2Client(server.port, auto_ack=False) as client:
        record.granted = window
        stream_id = client.request("/big")
        state = client.streams[stream_id]
        consumed = 0  # bytes received and not yet given back
        deadline = time.monotonic() + 30
        while not state.done:
            assert time.monotonic() < deadline, f"stalled at {len(state.data)} bytes"
            client.pump(0.05)
            consumed = len(state.data) - (record.granted - window)
            if consumed >= 32 * 1024:  # a slow reader: returns window only now and then
                time.sleep(0.001)
                with record.lock:
                    record.granted += consumed  # counted before the WINDOW_UPDATE can reach the server
                client.conn.increment_flow_control_window(consumed, stream_id)
                client.conn.increment_flow_control_window(consumed)
                client.flush()
                wait_ahead = [sent - len(state.data) for sent, _ in record.sends[-1:]]
                assert all(ahead <= window + CHUNK for ahead in wait_ahead), wait_ahead
    assert state.status == 200
    assert state.reset_code is None
    assert hashlib.sha256(state.data).digest() == hashlib.sha256(BIG).digest()  # every byte, in order
    assert len(record.sends) == len(BIG) // CHUNK
    # send() returned only once the client had opened its window for everything sent so far
    overshoot = [(sent, granted) for sent, granted in record.sends[:-1] if sent > granted]
    assert not overshoot, overshoot[:5]
    # the first message is one byte bigger than the initial window: its send() waited for a WINDOW_UPDATE
    assert record.sends[0][0] == CHUNK > window
    assert record.sends[0][1] > window


def test_a_piece_sent_before_the_app_waits_is_not_held_back(app: Any, loop: str) -> None:
    """Output is written once per loop turn: a piece of a streamed body goes out when the app waits, not when
    its response ends (an SSE stream's events, say)."""
    with run_server(app, loop=loop) as server, RawH2(server.port) as raw:
        raw.send(raw.headers(1, "/first-then-wait?2"))
        sent = time.monotonic()
        first = raw.wait_for(lambda f: f.kind == DATA and f.stream_id == 1, 1.5, "the first piece")
        assert first.payload == b"first" and time.monotonic() - sent < 1.5
        raw.wait_for(
            lambda f: f.kind == DATA and f.stream_id == 1 and bool(f.flags & END_STREAM), 5, "the end"
        )


def test_slow_upload_reader_slows_that_upload_only(app: Any, record: Record) -> None:
    """An app that reads a 2 MiB upload slowly (50 ms between reads) holds the client's window on that stream
    closed (64 KiB stream windows here), while a second stream on the same connection is answered at once."""
    body = bytes(range(256)) * (2 * MiB // 256)
    with run_server(app, h2_initial_window_size=65535) as server, H2Client(server.port) as client:
        upload = client.request("/upload", "POST", body=b"", end_stream=False)
        sent = 0
        began = time.monotonic()
        sent += client.send_body(upload, body, end_stream=False)
        assert 0 < sent < len(body)  # the window closed well before the body's end
        client.wait(lambda: record.received.get("") is not None, what="the upload app to start reading")
        fast = client.request("/fast")
        fast_began = time.monotonic()
        answer = client.response(fast)
        fast_took = time.monotonic() - fast_began
        assert answer.status == 200 and bytes(answer.data) == b"/fast"
        assert fast_took < 0.5, fast_took  # not queued behind the slow upload
        assert sent < len(body) and record.received[""] < len(body)  # the upload was still going meanwhile
        while sent < len(body):
            client.pump(0.05)
            more = client.send_body(upload, body[sent:], end_stream=True)
            sent += more
            assert time.monotonic() - began < 20
        done = client.response(upload, 10)
        took = time.monotonic() - began
    assert done.status == 200
    assert bytes(done.data) == f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode()
    # the client went at the reader's pace, not at loopback speed: many reads, 50 ms apart
    assert record.reads >= 8, record.reads
    assert took >= 0.05 * (record.reads - 1), (took, record.reads)


# --------------------------------------------------------------------------------------------- resets


def test_client_reset_disconnects_only_that_stream(app: Any, record: Record) -> None:
    with run_server(app) as server, H2Client(server.port) as client:
        doomed = client.request("/hold?s=5")
        survivor = client.request("/hold?t=0.5")
        wait_for(lambda: record.waiting == {"s=5", "t=0.5"}, what="both apps waiting")
        reset_at = time.monotonic()
        client.reset(doomed, ErrorCodes.CANCEL)
        wait_for(
            lambda: "http.disconnect" in record.events.get("s=5", []), 2, "the reset stream's disconnect"
        )
        assert time.monotonic() - reset_at < 1
        state = client.response(survivor)
        assert state.status == 200 and bytes(state.data) == b"held t=0.5"
        assert_still_serving(server.port)
    assert record.events["s=5"] == ["started", "http.disconnect"]
    assert record.events["t=0.5"] == ["started", "answered"]  # never told of a disconnect


def test_connection_loss_disconnects_every_stream(app: Any, record: Record) -> None:
    with run_server(app) as server:
        client = H2Client(server.port)
        for name in ("a", "b", "c"):
            client.request(f"/hold?{name}=5")
        wait_for(lambda: len(record.waiting) == 3, what="three apps waiting")
        client.close()
        wait_for(
            lambda: all(record.events[f"{name}=5"][-1:] == ["http.disconnect"] for name in "abc"),
            2,
            "every app's disconnect",
        )
        assert_still_serving(server.port)


# --------------------------------------------------------------------------------------------- graceful shutdown

SLOW_APP = """
import anyio


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    print("app started " + scope["path"], flush=True)
    if scope["path"] == "/slow":
        await anyio.sleep(1.0)
    body = b"done " + scope["path"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
"""


def test_sigterm_sends_goaway_and_finishes_the_stream_in_flight(tmp_path: Path) -> None:
    (tmp_path / "slow_h2_app.py").write_text(SLOW_APP)
    args = ("slow_h2_app:app", "--port", "0", "--app-dir", str(tmp_path), "--timeout-graceful-shutdown", "5")
    with zonda_process(*args) as proc:
        proc.wait_listening()
        with RawH2(proc.port) as raw:
            raw.send(raw.headers(1, "/fast"))
            assert raw.response(1)[2] == b"done /fast"
            raw.send(raw.headers(3, "/slow"))
            wait_for(lambda: "app started /slow" in proc.output, what="the slow request in the app")
            signalled = time.monotonic()
            proc.signal(signal.SIGTERM)
            goaway = raw.goaway()
            assert goaway.error_code == ErrorCodes.NO_ERROR
            assert goaway.last_stream_id == 3  # the stream in flight will be answered
            raw.send(raw.headers(5, "/late"))  # after GOAWAY: not processed
            status, _, body = raw.response(3)
            assert (status, body) == (200, b"done /slow")
            assert raw.wait_closed(5)
            goaway_at = raw.frames.index(goaway)
            answered_at = max(i for i, f in enumerate(raw.frames) if f.stream_id == 3)
            assert goaway_at < answered_at  # GOAWAY first, then the response finished
            assert not [f for f in raw.frames if f.stream_id == 5]
        assert proc.wait(5) == 0
        assert time.monotonic() - signalled < 3
    assert "app started /late" not in proc.output
    assert "Received SIGTERM" in proc.output


# --------------------------------------------------------------------------------------------- settings flags


def test_settings_flags_and_max_concurrent_streams(record: Record) -> None:
    """The h2_* flags show up in the server's SETTINGS (and its connection WINDOW_UPDATE); with two streams
    allowed, a third is refused with REFUSED_STREAM before any app sees it, and the slots free up again."""
    release = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        record.note(scope["path"], "started")
        while scope["path"] == "/hold" and not release.is_set():
            await anyio.sleep(0.01)
        await respond(send, scope["path"].encode())

    options = {
        "h2_max_concurrent_streams": 2,
        "h2_initial_window_size": 100_000,
        "h2_max_frame_size": 32768,
        "h2_max_header_list_size": 20_000,
        "h2_connection_window_size": 1_000_000,
    }
    with run_server(app, **options) as server, RawH2(server.port) as raw:
        assert raw.server_settings[MAX_CONCURRENT_STREAMS] == 2
        assert raw.server_settings[INITIAL_WINDOW_SIZE] == 100_000
        assert raw.server_settings[MAX_FRAME_SIZE] == 32768
        assert raw.server_settings[MAX_HEADER_LIST_SIZE] == 20_000
        connection_window = raw.wait_for(lambda f: f.kind == WINDOW_UPDATE and f.stream_id == 0)
        assert connection_window.increment == 1_000_000 - 65535
        raw.send(raw.headers(1, "/hold"), raw.headers(3, "/hold"), raw.headers(5, "/five"))  # one write
        assert raw.reset_of(5).error_code == ErrorCodes.REFUSED_STREAM
        wait_for(lambda: len(record.events.get("/hold", [])) == 2, what="both held apps")
        raw.send(raw.headers(7, "/seven"))
        assert raw.reset_of(7).error_code == ErrorCodes.REFUSED_STREAM  # still two open
        release.set()
        assert raw.response(1)[0] == 200 and raw.response(3)[0] == 200
        raw.send(raw.headers(9, "/nine"))  # slots free again
        assert raw.response(9)[2] == b"/nine"
        assert not [f for f in raw.frames if f.kind == RST_STREAM and f.stream_id in (1, 3, 9)]
        assert not raw.closed
    assert "/five" not in record.events and "/seven" not in record.events


def test_max_header_list_size_answers_431_and_keeps_serving(app: Any) -> None:
    with run_server(app, h2_max_header_list_size=1024) as server, RawH2(server.port) as raw:
        assert raw.server_settings[MAX_HEADER_LIST_SIZE] == 1024
        raw.send(raw.headers(1, "/big-headers", extra=[("x-filler", "f" * 600), ("x-more", "m" * 600)]))
        status, _, body = raw.response(1)
        assert status == 431
        assert b"SETTINGS_MAX_HEADER_LIST_SIZE" in body
        raw.send(raw.headers(3, "/after"))  # the same connection carries on
        assert raw.response(3)[0] == 200
        assert not [f for f in raw.frames if f.kind == RST_STREAM]
        assert not raw.closed
        assert_still_serving(server.port)
