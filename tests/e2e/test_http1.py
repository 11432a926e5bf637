"""HTTP/1.1 end to end: a real zonda on loopback, driven by raw sockets, httpx and curl."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx
import pytest

from helpers import assert_still_serving, require_tool, rst_close, run_server
from wire import Wire, get

Scope = dict[str, Any]


async def reply(
    send: Any, body: bytes, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    all_headers = [(b"content-type", b"text/plain"), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        body += bytes(message["body"])
        if not message.get("more_body"):
            return body


async def app(scope: Scope, receive: Any, send: Any) -> None:
    """Routes: /echo, /stream, /delay, /status, /close, /client, /slow-echo; anything else: 'METHOD path'."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    query = {key: values[0] for key, values in parse_qs(scope["query_string"].decode()).items()}
    if path == "/echo":
        await reply(send, await read_body(receive))
    elif path == "/slow-echo":
        await anyio.sleep(float(query.get("wait", "0.3")))
        await reply(send, await read_body(receive))
    elif path == "/stream":
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        for i in range(int(query.get("n", "3"))):
            await send({"type": "http.response.body", "body": b"piece%d;" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/delay":
        await anyio.sleep(float(query["ms"]) / 1000)
        await reply(send, f"delay {query['ms']}".encode())
    elif path == "/status":
        await send({"type": "http.response.start", "status": int(query["code"]), "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/close":
        await reply(send, b"closing", headers=[(b"connection", b"close")])
    elif path == "/client":
        await reply(send, str(scope["client"][1]).encode())
    else:
        await reply(send, f"{scope['method']} {path}".encode())


def serve(loop: str | None = None, **options: Any) -> Any:
    options.setdefault("lifespan", "off")
    if loop is not None:
        options["loop"] = loop
    return run_server(app, **options)


# ------------------------------------------------------------------ keep-alive and connection management


def test_keep_alive_then_idle_timeout_closes(loop: str) -> None:
    with serve(loop, timeout_keep_alive=0.3) as server, Wire(server.port) as wire:
        for i in range(3):
            wire.send(get(f"/k{i}"))
            response = wire.read_response()
            assert response.status == 200
            assert response.body == f"GET /k{i}".encode()
            assert response.header("connection") is None
        start = time.monotonic()
        assert wire.is_closed(3.0)
        assert 0.15 < time.monotonic() - start < 2.0


def test_idle_connection_without_any_request_is_closed(loop: str) -> None:
    with serve(loop, timeout_keep_alive=0.3) as server, Wire(server.port) as wire:
        assert wire.is_closed(3.0)


def test_httpx_reuses_the_connection(loop: str) -> None:
    with serve(loop) as server, httpx.Client(base_url=server.url) as client:
        ports = {client.get("/client").text for _ in range(3)}
        assert len(ports) == 1


def test_http10_closes_by_default(loop: str) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(get("/", version="1.0"))
        response = wire.read_response()
        assert response.status == 200
        assert response.header("connection") == "close"
        assert response.raw.startswith(b"HTTP/1.1 200 OK\r\n")
        assert wire.is_closed(1.0)  # well before the 5 s keep-alive timeout


def test_http10_keep_alive_when_requested(loop: str) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        for _ in range(2):
            wire.send(get("/", "Connection: keep-alive", version="1.0"))
            response = wire.read_response()
            assert response.status == 200
            assert response.header("connection") == "keep-alive"
            assert response.body == b"GET /"
        wire.send(get("/last", version="1.0"))
        assert wire.read_response().header("connection") == "close"
        assert wire.is_closed(1.0)


def test_client_connection_close_is_honoured(loop: str) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(get("/", "Connection: close"))
        response = wire.read_response()
        assert response.header("connection") == "close"
        assert wire.is_closed(1.0)


def test_app_connection_close_header_is_honoured(loop: str) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(get("/close"))
        response = wire.read_response()
        assert response.body == b"closing"
        assert response.header("connection") == "close"
        assert wire.is_closed(1.0)
        assert_still_serving(server.port)


def test_pipelined_requests_answered_strictly_in_order(loop: str) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(
            get("/delay?ms=200")
            + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
            + get("/delay?ms=0")
            + get("/delay?ms=50")
        )
        bodies = [wire.read_response().body for _ in range(4)]
        assert bodies == [b"delay 200", b"hello", b"delay 0", b"delay 50"]
        wire.send(get("/after"))
        assert wire.read_response().body == b"GET /after"


def test_many_pipelined_requests_whose_apps_never_suspend(loop: str) -> None:
    """Apps that answer without suspending start one after another in a loop, not nested ever deeper."""
    expected: list[bytes] = []
    data = b""
    for i in range(600):
        if i % 3 == 0:
            body = b"%d" % i
            data += b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            expected.append(body)
        elif i % 3 == 1:
            data += get("/stream?n=2")
            expected.append(b"piece0;piece1;")
        else:
            data += get(f"/p{i}")
            expected.append(b"GET /p%d" % i)
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(data)
        assert [wire.read_response().body for _ in expected] == expected
        wire.send(get("/after"))
        assert wire.read_response().body == b"GET /after"


def test_pipelined_request_after_connection_close_is_not_served(loop: str) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(get("/first", "Connection: close") + get("/second"))
        assert wire.read_response().body == b"GET /first"
        assert wire.is_closed(1.0)


# ------------------------------------------------------------------ request bodies


def test_content_length_body(loop: str) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello")
        time.sleep(0.02)
        wire.send(b" world")
        assert wire.read_response().body == b"hello world"


def test_chunked_body_in_awkward_pieces(loop: str) -> None:
    body = b"5\r\nhello\r\n1;ext=x\r\n \r\n6\r\nworld!\r\n0\r\nX-Trailer: t\r\n\r\n"
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(body), 3):
            wire.send(body[start : start + 3])
            time.sleep(0.002)
        assert wire.read_response().body == b"hello world!"
        wire.send(get("/next"))
        assert wire.read_response().body == b"GET /next"


def test_httpx_chunked_upload(loop: str) -> None:
    def pieces() -> Iterator[bytes]:
        for i in range(50):
            yield b"%04d" % i

    with serve(loop) as server:
        response = httpx.post(server.url + "/echo", content=pieces())
        assert response.content == b"".join(b"%04d" % i for i in range(50))


# ------------------------------------------------------------------ response framing


def test_response_framing(loop: str) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        response = wire.read_response()
        assert response.header("content-length") == "3"
        assert response.header("transfer-encoding") is None

        wire.send(get("/stream?n=3"))
        response = wire.read_response()
        assert response.header("transfer-encoding") == "chunked"
        assert response.header("content-length") is None
        assert response.body == b"piece0;piece1;piece2;"

        wire.send(get("/stream?n=0"))  # nothing but the final empty body: still chunked, zero chunks
        assert wire.read_response().body == b""

        wire.send(get("/stream?n=2", version="1.0"))
        response = wire.read_response()
        assert response.header("content-length") is None
        assert response.header("transfer-encoding") is None
        assert response.header("connection") == "close"
        assert response.body == b"piece0;piece1;"  # read until the server closed


def test_httpx_streaming_response(loop: str) -> None:
    with serve(loop) as server, httpx.stream("GET", server.url + "/stream?n=100") as response:
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.read() == b"".join(b"piece%d;" % i for i in range(100))


@pytest.mark.parametrize("path", ["/", "/stream", "/status?code=404"])
def test_head_has_no_body(loop: str, path: str) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(get(path, method="HEAD"))
        response = wire.read_response(head_request=True)
        assert response.status in (200, 404)
        wire.send(get("/after"))  # a stray body byte would corrupt this response
        assert wire.read_response().body == b"GET /after"


@pytest.mark.parametrize("code", [204, 304])
def test_no_body_statuses(loop: str, code: int) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(get(f"/status?code={code}") + get("/after"))
        response = wire.read_response()
        assert response.status == code
        assert response.header("content-length") is None
        assert response.header("transfer-encoding") is None
        assert wire.read_response().body == b"GET /after"


# ------------------------------------------------------------------ Expect: 100-continue


def test_100_continue_sent_only_when_the_app_reads(loop: str) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(
            b"POST /slow-echo?wait=0.3 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        assert wire.nothing_arrives(0.15)  # the app has not called receive() yet
        interim = wire.read_response()
        assert interim.status == 100
        assert interim.raw == b"HTTP/1.1 100 Continue\r\n\r\n"
        wire.send(b"hello")
        response = wire.read_response()
        assert response.status == 200
        assert response.body == b"hello"
        wire.send(get("/after"))
        assert wire.read_response().body == b"GET /after"


def test_a_slow_app_does_not_time_out_a_client_waiting_for_100_continue(loop: str) -> None:
    with serve(loop, timeout_request_body=0.3) as server, Wire(server.port) as wire:
        wire.send(
            b"POST /slow-echo?wait=0.6 HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        )
        assert wire.read_response().status == 100
        wire.send(b"hello")
        assert wire.read_response().body == b"hello"


def test_no_100_continue_when_the_app_answers_without_reading(loop: str) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(b"POST /nothing HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        response = wire.read_response()
        assert response.status == 200
        assert response.body == b"POST /nothing"
        assert wire.nothing_arrives(0.1)
        # No "connection: close": the server goes on reading the content, then serves the next request.
        assert response.header("connection") is None
        wire.send(b"hello" + get("/after"))
        assert wire.read_response().body == b"GET /after"


def test_no_100_continue_for_http10(loop: str) -> None:
    with serve(loop) as server, Wire(server.port) as wire:
        wire.send(b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        assert wire.nothing_arrives(0.1)
        wire.send(b"hello")
        response = wire.read_response()
        assert response.status == 200
        assert response.body == b"hello"


def test_100_continue_with_curl(loop: str, tmp_path: Any) -> None:
    curl = require_tool("curl")
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(300_000))
    with serve(loop) as server:
        result = subprocess.run(
            [
                curl,
                "-sv",
                "--expect100-timeout",
                "5",
                "-H",
                "Expect: 100-continue",
                "--data-binary",
                f"@{payload}",
                "-o",
                str(tmp_path / "out"),
                server.url + "/echo",
            ],
            capture_output=True,
            timeout=20,
        )
        assert result.returncode == 0, result.stderr
        assert b"HTTP/1.1 100 Continue" in result.stderr
        assert (tmp_path / "out").read_bytes() == payload.read_bytes()


# ------------------------------------------------------------------ curl


def test_curl_keep_alive_chunked_upload_head_and_http10(loop: str) -> None:
    curl = require_tool("curl")

    def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run([curl, "-sS", *args], capture_output=True, timeout=20, input=stdin)
        assert result.returncode == 0, result.stderr
        return result

    with serve(loop) as server:
        result = run("-v", server.url + "/a", server.url + "/b")
        assert result.stdout == b"GET /aGET /b"
        assert b"Re-using existing connection" in result.stderr or b"Reusing existing" in result.stderr
        result = run(
            "-H", "Transfer-Encoding: chunked", "--data-binary", "@-", server.url + "/echo", stdin=b"x" * 5000
        )
        assert result.stdout == b"x" * 5000
        result = run("-I", server.url + "/stream")
        assert result.stdout.startswith(b"HTTP/1.1 200 OK\r\n")
        assert result.stdout.endswith(b"\r\n\r\n")
        result = run("--http1.0", "-i", server.url + "/stream?n=2")
        assert b"connection: close" in result.stdout.lower()
        assert result.stdout.endswith(b"\r\n\r\npiece0;piece1;")


# ------------------------------------------------------------------ Date, Server and default headers


def test_date_and_server_headers(loop: str) -> None:
    with serve(loop) as server:
        response = httpx.get(server.url)
        assert response.headers["server"] == "zonda"
        date = parsedate_to_datetime(response.headers["date"])
        assert abs(date.timestamp() - time.time()) < 5


def test_server_and_date_headers_switched_off_and_extra_headers(loop: str) -> None:
    with serve(
        loop, server_header=False, date_header=False, headers=("x-a:b", "X-Other: two words")
    ) as server:
        response = httpx.get(server.url)
        assert "server" not in response.headers
        assert "date" not in response.headers
        assert response.headers["x-a"] == "b"
        assert response.headers["x-other"] == "two words"


# ------------------------------------------------------------------ flow control


def test_large_upload_to_a_slow_reader_is_not_buffered_unbounded(loop: str) -> None:
    release = threading.Event()
    first_chunk: list[int] = []

    async def slow_reader(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while not release.is_set():
            await anyio.sleep(0.01)
        total = 0
        while True:
            message = await receive()
            if not first_chunk:
                first_chunk.append(len(message["body"]))
            total += len(message["body"])
            if not message.get("more_body"):
                break
        await reply(send, str(total).encode())

    size = 32 * 1024 * 1024
    with (
        run_server(slow_reader, loop=loop, lifespan="off") as server,
        Wire(server.port, sndbuf=65536) as wire,
    ):
        wire.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        wire.sock.setblocking(False)
        chunk = b"x" * 65536
        sent = 0
        stalled_since = time.monotonic()
        while time.monotonic() - stalled_since < 0.3 and sent < size:
            try:
                sent += wire.sock.send(chunk[: size - sent])
                stalled_since = time.monotonic()
            except BlockingIOError:
                time.sleep(0.005)
        assert sent < size // 2, f"the server took {sent} bytes without the app reading"
        release.set()
        wire.sock.setblocking(True)
        wire.sock.settimeout(10)
        while sent < size:
            sent += wire.sock.send(chunk[: size - sent])
        response = wire.read_response()
        assert response.body == str(size).encode()
        assert first_chunk[0] <= 2 * 1024 * 1024, "the first receive() got a huge buffered body"


def test_large_response_to_a_slow_reader_makes_send_wait(loop: str) -> None:
    progress: list[int] = [0]
    chunk = b"y" * 65536
    count = 256  # 16 MiB

    async def fast_writer(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(count):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            progress[0] += len(chunk)
        await send({"type": "http.response.body", "body": b""})

    with (
        run_server(fast_writer, loop=loop, lifespan="off") as server,
        Wire(server.port, rcvbuf=65536) as wire,
    ):
        wire.send(get("/big"))
        time.sleep(0.4)
        assert progress[0] < 8 * 1024 * 1024, f"send() never waited: {progress[0]} bytes accepted"
        response = wire.read_response()
        assert len(response.body) == count * len(chunk)
        assert progress[0] == count * len(chunk)


def test_app_answering_without_reading_a_large_body_does_not_stall_the_connection(loop: str) -> None:
    """The server paused reading for the buffered body; once the app is done, it reads on (and discards)."""

    async def early_answer(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "POST":
            await anyio.sleep(0.2)  # the body piles up meanwhile, past the high-water mark
        await reply(send, scope["path"].encode())

    size = 8 * 1024 * 1024
    with run_server(early_answer, loop=loop, lifespan="off") as server, Wire(server.port) as wire:
        wire.send(
            b"POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size + b"x" * 1024 * 1024
        )
        assert wire.read_response().body == b"/early"
        wire.send(b"x" * (size - 1024 * 1024) + get("/next"))
        assert wire.read_response().body == b"/next"


# ------------------------------------------------------------------ disconnects


class Recorder:
    """What an app saw, shared with the test thread."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.send_error: BaseException | None = None
        self.got_body = threading.Event()
        self.done = threading.Event()


def disconnect_app(recorder: Recorder, send_after: bool) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/alive":
            return await reply(send, b"alive")
        try:
            while True:
                message = await receive()
                recorder.messages.append(dict(message))
                if message["type"] == "http.disconnect":
                    break
                recorder.got_body.set()
            if send_after:
                try:
                    await send({"type": "http.response.start", "status": 200, "headers": []})
                    await send({"type": "http.response.body", "body": b"too late"})
                except BaseException as exc:
                    recorder.send_error = exc
                    raise
        finally:
            recorder.done.set()

    return app


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /mid HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        b"GET /whole HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["mid-body", "after-body"],
)
def test_http_disconnect_when_the_client_goes_away(loop: str, request_bytes: bytes) -> None:
    recorder = Recorder()
    with run_server(disconnect_app(recorder, False), loop=loop, lifespan="off") as server:
        with Wire(server.port) as wire:
            wire.send(request_bytes)
            assert recorder.got_body.wait(5)
        assert recorder.done.wait(5)
    assert recorder.messages[-1] == {"type": "http.disconnect"}
    assert [m["type"] for m in recorder.messages] == ["http.request", "http.disconnect"]


def test_send_after_disconnect_raises_oserror_and_is_not_logged(
    loop: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="zonda")
    recorder = Recorder()
    with run_server(disconnect_app(recorder, True), loop=loop, lifespan="off") as server:
        with Wire(server.port) as wire:
            wire.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            assert recorder.got_body.wait(5)
        assert recorder.done.wait(5)
        assert_still_serving(server.port)
    assert isinstance(recorder.send_error, OSError)
    assert not [r for r in caplog.records if r.name == "zonda.error" and r.levelno >= logging.WARNING]


def test_streaming_send_after_disconnect_raises_oserror(loop: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="zonda")
    errors: list[BaseException] = []
    finished = threading.Event()

    async def streamer(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/alive":
            return await reply(send, b"alive")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            for _ in range(10_000):
                await send({"type": "http.response.body", "body": b"z" * 65536, "more_body": True})
        except BaseException as exc:
            errors.append(exc)
            raise
        finally:
            finished.set()

    with run_server(streamer, loop=loop, lifespan="off") as server:
        with Wire(server.port, rcvbuf=65536) as wire:
            wire.send(get("/"))
            wire.read_head()
        assert finished.wait(10)
        assert_still_serving(server.port)
    assert len(errors) == 1
    assert isinstance(errors[0], OSError)
    assert not [r for r in caplog.records if r.name == "zonda.error" and r.levelno >= logging.WARNING]


def test_a_reset_mid_request_does_not_disturb_the_server(loop: str) -> None:
    with serve(loop) as server:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
        rst_close(sock)
        assert_still_serving(server.port)
