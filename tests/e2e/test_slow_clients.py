"""Slow clients of every shape over real sockets, on every driver, with the limits made small: a request body that
trickles (HTTP/1.1: 408; HTTP/2: RST_STREAM CANCEL on its stream), a WebSocket handshake that trickles (408), a
client that reads nothing of a large response (cut after --timeout-write; HTTP/1.1 and HTTP/2), a TLS ClientHello
one byte at a time (dropped at the handshake timeout). Each checks the exact answer, the log line, what the app
saw, and that the server still serves afterwards."""

from __future__ import annotations

import socket
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from prometheus_client.parser import text_string_to_metric_families

from h2socket import DATA, RST_STREAM, RawH2, frame, window_update
from helpers import assert_still_serving, read_until_closed, run_server, simple_app, status_of, wait_for
from tlsutil import TLSFiles, make_tls_files
from wire import Wire

POST_HEAD = b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n"


class App:
    """/upload reads its body and answers with its size; /download streams 64 KiB parts until send() fails;
    both note how they ended. Anything else: ``simple_app``."""

    def __init__(self) -> None:
        self.ending: list[str] = []
        self.parts = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/upload":
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.ending.append("http.disconnect")
                    return
                size += len(message["body"])
                if not message.get("more_body"):
                    break
            body = b"%d" % size
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"%d" % len(body))],
                }
            )
            await send({"type": "http.response.body", "body": body})
        elif scope["path"] == "/download":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            try:
                for _ in range(4096):  # 256 MiB: far more than any socket buffer takes
                    await send({"type": "http.response.body", "body": b"z" * 65536, "more_body": True})
                    self.parts += 1
                await send({"type": "http.response.body", "body": b""})
            except OSError as exc:  # ClientDisconnected
                self.ending.append(type(exc).__name__)
            self.ending.append((await receive())["type"])
        else:
            await simple_app(scope, receive, send)


def lines(caplog: pytest.LogCaptureFixture, logger: str, *parts: str) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == logger and all(part in record.getMessage() for part in parts)
    ]


def wait_logged(caplog: pytest.LogCaptureFixture, logger: str, *parts: str) -> str:
    wait_for(lambda: bool(lines(caplog, logger, *parts)), 5.0, f"a line with {parts} on {logger}")
    return lines(caplog, logger, *parts)[0]


# --------------------------------------------------------------------------------------------- request bodies


def test_http1_a_trickling_body_gets_408(logs: pytest.LogCaptureFixture) -> None:
    app = App()
    options = {"limit_request_body_rate": 1000, "limit_request_body_rate_grace": 0.5, "lifespan": "off"}
    with run_server(app, **options) as server, Wire(server.port) as wire:
        began = time.monotonic()
        wire.send(POST_HEAD + b"x" * 10)
        for _ in range(50):  # 10 bytes each 0.1 s: 100 bytes/s, each read enough for a stall timer
            if not wire.nothing_arrives(0.1):
                break
            wire.send(b"x" * 10)
        response = wire.read_response()
        took = time.monotonic() - began
        assert response.status == 408
        assert b"request body too slow" in response.body
        assert response.header("connection") == "close"
        assert 0.4 < took < 3.0, took
        assert wire.is_closed(2.0)
        wait_for(lambda: app.ending == ["http.disconnect"], 3.0, "the app's http.disconnect")
        assert server.server.shared.rejections == {"RequestBodyTooSlow": 1}
        line = wait_logged(logs, "zonda.error", "408 response to 127.0.0.1:", "request body too slow: ")
        assert "under the minimum of 1000 bytes/s" in line
        assert_still_serving(server.port)


def test_http1_a_body_over_the_rate_is_not_cut() -> None:
    app = App()
    options = {"limit_request_body_rate": 1000, "limit_request_body_rate_grace": 0.3, "lifespan": "off"}
    with run_server(app, **options) as server, Wire(server.port) as wire:
        wire.send(POST_HEAD.replace(b"1000000", b"6000"))
        for _ in range(12):  # 500 bytes each 0.1 s: 5000 bytes/s, five times the minimum, over 1.2 s
            wire.send(b"x" * 500)
            time.sleep(0.1)
        response = wire.read_response()
        assert (response.status, response.body) == (200, b"6000")
    assert app.ending == []


def test_http2_a_trickling_body_resets_its_stream(logs: pytest.LogCaptureFixture) -> None:
    app = App()
    options = {"limit_request_body_rate": 1000, "limit_request_body_rate_grace": 0.5, "lifespan": "off"}
    with run_server(app, **options) as server:
        with RawH2(server.port) as client:
            began = time.monotonic()
            client.send(client.headers(1, "/upload", "POST", end_stream=False), frame(DATA, 0, 1, b"x" * 10))
            for _ in range(50):
                if any(f.kind == RST_STREAM for f in client.read(0.1)):
                    break
                client.send(frame(DATA, 0, 1, b"x" * 10))
            reset = client.reset_of(1)
            assert reset.error_code == ErrorCodes.CANCEL
            assert 0.4 < time.monotonic() - began < 3.0
            client.send(client.headers(3, "/alive"))  # the connection goes on
            assert client.response(3)[0] == 200
        wait_for(lambda: app.ending == ["http.disconnect"], 3.0, "the app's http.disconnect")
        assert server.server.shared.h2_counters["body_rate"] == 1
        line = wait_logged(logs, "zonda.http2", "ended after 1 stream reset(s) for slow clients")
        assert "1 with the request body under 1000 bytes/s" in line
        assert_still_serving(server.port)


def test_a_trickling_websocket_handshake_gets_408(logs: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        await simple_app(scope, receive, send)

    handshake = (
        b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    with run_server(app, timeout_request_header=0.5, lifespan="off") as server, Wire(server.port) as wire:
        began = time.monotonic()
        for byte in handshake[:-1]:  # one byte each 50 ms: 7 s for the whole, were it not cut
            if not wire.nothing_arrives(0.05):
                break
            wire.send(bytes([byte]))
        response = wire.read_response()
        assert response.status == 408
        assert 0.4 < time.monotonic() - began < 2.5
        wait_logged(
            logs, "zonda.error", "408 response to 127.0.0.1:", "request headers not received within 0.5s"
        )
        assert_still_serving(server.port)
    assert seen == ["http"]  # the /alive request; the handshake never reached the app


# --------------------------------------------------------------------------------------------- slow readers


def test_http1_a_client_that_reads_nothing_is_cut(logs: pytest.LogCaptureFixture) -> None:
    app = App()
    with run_server(app, timeout_write=0.5, lifespan="off") as server:
        with Wire(server.port, rcvbuf=64 * 1024) as wire:
            wire.send(b"GET /download HTTP/1.1\r\nHost: test\r\n\r\n")
            wait_for(lambda: len(app.ending) == 2, 5.0, "the app to be cut off")
            assert app.ending == ["ClientDisconnected", "http.disconnect"]
        # what the app got to send is bounded by the socket buffers and one write buffer, not the 256 MiB
        assert app.parts * 65536 < 32 * 1024 * 1024, app.parts
        assert server.server.shared.rejections == {"WriteTimeout": 1}
        line = wait_logged(logs, "zonda.error", "Closing connection from 127.0.0.1:", "--timeout-write")
        assert "took no response bytes for 0.5s" in line
        assert_still_serving(server.port)


def test_http1_a_slow_but_steady_reader_is_not_cut() -> None:
    app = App()
    with run_server(app, timeout_write=0.5, lifespan="off") as server:
        with Wire(server.port, rcvbuf=65536) as wire:
            wire.send(b"GET /download HTTP/1.1\r\nHost: test\r\n\r\n")
            for _ in range(15):  # 1.5 s of a read each 0.1 s: slow (under 640 KiB/s), never idle for 0.5 s
                wire.sock.recv(64 * 1024)
                time.sleep(0.1)
            assert app.ending == []
        wait_for(lambda: len(app.ending) == 2, 5.0, "the app to see the client go")
        assert not server.server.shared.rejections


def test_http2_a_connection_that_reads_nothing_is_cut(logs: pytest.LogCaptureFixture) -> None:
    """The windows wide open, the socket never read: the connection goes after --timeout-write."""
    app = App()
    with run_server(app, timeout_write=0.5, lifespan="off") as server:
        with RawH2(server.port, settings={SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1}) as client:
            client.send(window_update(0, (1 << 31) - 1 - 65535), client.headers(1, "/download"))
            wait_for(lambda: len(app.ending) == 2, 5.0, "the app to be cut off")
            assert app.ending == ["ClientDisconnected", "http.disconnect"]
        assert server.server.shared.rejections == {"WriteTimeout": 1}
        wait_logged(logs, "zonda.error", "Closing connection from 127.0.0.1:", "--timeout-write")
        assert_still_serving(server.port)


# --------------------------------------------------------------------------------------------- TLS


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path)


def client_hello(context: ssl.SSLContext) -> bytes:
    """The ClientHello a real TLS client would send first."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_a_trickling_tls_handshake_is_dropped_at_the_handshake_timeout(files: TLSFiles) -> None:
    context = files.client_context()
    hello = client_hello(context)
    assert len(hello) > 100  # a trickle of over 20 s at one byte per 200 ms
    with run_server(
        simple_app, timeout_tls_handshake=1.0, lifespan="off", **files.server_options()
    ) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            began = time.monotonic()
            sent = 0
            closed = False
            while sent < len(hello) and time.monotonic() - began < 5:
                try:
                    sock.sendall(hello[sent : sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                sent += 1
                sock.settimeout(0.2)
                try:
                    closed = sock.recv(4096) == b""
                except TimeoutError:
                    pass
                except ConnectionResetError:
                    closed = True
                if closed:
                    break
            took = time.monotonic() - began
        assert closed, f"still open after {took:.1f}s and {sent} bytes"
        assert 0.8 < took < 2.5, took
        assert sent < len(hello)
        assert not server.server.shared.connections  # it never reached the registry
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"GET /after HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert status_of(read_until_closed(tls, 5)) == 200


# --------------------------------------------------------------------------------------------- quiet under attack


def rejections_metric(metrics_port: int, reason: str) -> float:
    """``zonda_rejections_total{reason}`` as /metrics says it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "zonda_rejections_total" and sample.labels.get("reason") == reason:
                return float(sample.value)
    return 0.0


def test_a_burst_of_bad_requests_logs_a_few_lines_and_counts_them_all(logs: pytest.LogCaptureFixture) -> None:
    attacks = 40
    with run_server(simple_app, lifespan="off", metrics_bind="127.0.0.1:0") as server:
        began = time.monotonic()
        for _ in range(attacks):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(b"GARBAGE\r\n\r\n")
                assert status_of(read_until_closed(sock, 5)) == 400
        took = time.monotonic() - began
        assert server.server.shared.rejections == {"BadRequest": attacks}  # every one counted
        assert rejections_metric(server.server.metrics_port, "bad_request") == attacks
        summary = "400 response (BadRequest): "

        def accounted() -> int:
            told = len(lines(logs, "zonda.error", "400 response to 127.0.0.1:"))
            for line in lines(logs, "zonda.error", summary, "more suppressed"):
                told += int(line[len(summary) :].split()[0])
            return told

        wait_for(lambda: accounted() == attacks, 5.0, "the suppressed count")  # within a second of the last
        shown = lines(logs, "zonda.error", "400 response to 127.0.0.1:")
        assert 1 <= len(shown) <= took + 2, (len(shown), took)  # about one a second, not one per attack
        assert lines(logs, "zonda.error", summary, "more suppressed (at most one line per 1s)")
        assert_still_serving(server.port)
