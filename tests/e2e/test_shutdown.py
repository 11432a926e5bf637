"""Graceful shutdown of a real ``python -m zonda`` on SIGTERM/SIGINT, and of an in-process Server.

Order under test: stop accepting, close idle keep-alive connections, let in-flight requests finish (within
``--timeout-graceful-shutdown``), cancel the rest, run lifespan shutdown, exit 0. A second SIGINT exits at once.
Streams with no end of their own (sse-starlette, a raw app listening on ``receive()``) get ``http.disconnect``
``--shutdown-stream-notice`` seconds before the hard close and end cleanly, over HTTP/1.1 and HTTP/2.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

from h2socket import DATA, END_STREAM, RST_STREAM, RawH2
from helpers import (
    ZondaProcess,
    dechunk,
    raw_request,
    read_response,
    read_until_closed,
    run_server,
    status_of,
    wait_for,
    zonda_process,
)

SLOW_APP = """
import anyio
import os
import sys

MARKER = os.environ.get("ZONDA_TEST_MARKER", "")


async def fail_when_cancelled():
    try:
        await anyio.sleep(3600)
    except anyio.get_cancelled_exc_class():
        raise RuntimeError("cleanup failed on cancel")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                if MARKER:
                    with open(MARKER, "w") as file:
                        file.write("lifespan shutdown ran")
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    print("app started " + path, flush=True)
    if path == "/slow":
        await anyio.sleep(1.0)
    elif path == "/stuck":
        await anyio.sleep(3600)
    elif path == "/stuck-in-group":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        async with anyio.create_task_group() as group:
            group.start_soon(fail_when_cancelled)
            await anyio.sleep(3600)
    body = path.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
"""

SLOW_REQUEST = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
STUCK_REQUEST = b"GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def app_dir(tmp_path: Path) -> str:
    (tmp_path / "slow_app.py").write_text(SLOW_APP)
    return str(tmp_path)


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True
    except ConnectionResetError:
        return False  # caught in the listener's queue as it closed: the next attempt tells


def idle_keep_alive_connection(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(read_response(sock)) == 200
    return sock


def started(proc: ZondaProcess, path: str) -> int:
    return proc.output.count(f"app started {path}\n")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_in_flight_requests(
    app_dir: str, tmp_path: Path, sig: signal.Signals, loop: str
) -> None:
    marker = tmp_path / "marker"
    env = {"ZONDA_TEST_MARKER": str(marker)}
    with (
        zonda_process("slow_app:app", "--port", "0", "--app-dir", app_dir, "--loop", loop, env=env) as proc,
        ThreadPoolExecutor(4) as pool,
    ):
        proc.wait_listening()
        port = proc.port
        idle = idle_keep_alive_connection(port)
        slow = [pool.submit(raw_request, port, SLOW_REQUEST, 5.0) for _ in range(3)]
        wait_for(lambda: started(proc, "/slow") == 3, what="three slow requests in the app")

        signalled = time.monotonic()
        proc.signal(sig)
        wait_for(lambda: refused(port), timeout=1.0, what="new connections to be refused")
        idle.settimeout(1.0)
        assert idle.recv(1024) == b"", "the idle keep-alive connection is closed"
        idle.close()
        assert not any(f.done() for f in slow), "refusing and closing idle came before the drain ended"

        for future in slow:
            response = future.result(5)
            assert status_of(response) == 200, response
            assert response.endswith(b"/slow")
            assert b"connection: close" in response.lower()
        assert proc.wait(5) == 0
        assert time.monotonic() - signalled < 3
    assert marker.read_text() == "lifespan shutdown ran"
    assert f"Received {sig.name}" in proc.output
    assert "Application shutdown complete." in proc.output


def test_graceful_timeout_cancels_a_stuck_request(app_dir: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    env = {"ZONDA_TEST_MARKER": str(marker)}
    args = ("slow_app:app", "--port", "0", "--app-dir", app_dir, "--timeout-graceful-shutdown", "0.5")
    with zonda_process(*args, env=env) as proc:
        proc.wait_listening()
        stuck = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        stuck.sendall(STUCK_REQUEST)
        wait_for(lambda: started(proc, "/stuck") == 1, what="the stuck request in the app")
        signalled = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        elapsed = time.monotonic() - signalled
        assert 0.4 < elapsed < 2.5, elapsed
        assert read_until_closed(stuck, 2.0) == b"", "the stuck connection was closed without a response"
        stuck.close()
    assert marker.read_text() == "lifespan shutdown ran"
    assert "still open after the graceful timeout" in proc.output


def test_an_app_error_grouped_with_the_cancellation_is_not_fatal(app_dir: str, loop: str) -> None:
    """A task group cancelled at the hard close gathers its child's error with the cancellation (trio and anyio
    raise a BaseExceptionGroup of both): the error is the app's, reported as one raised after its connection
    closed, and the server still exits 0 (on trio it used to escape the app's nursery and end the process)."""
    args = ("slow_app:app", "--port", "0", "--app-dir", app_dir, "--log-level", "debug")
    with zonda_process(*args, "--loop", loop, "--timeout-graceful-shutdown", "0.5") as proc:
        proc.wait_listening()
        stuck = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        stuck.sendall(b"GET /stuck-in-group HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: started(proc, "/stuck-in-group") == 1, what="the request in the app")
        proc.signal(signal.SIGTERM)
        assert proc.wait(5) == 0, proc.output
        stuck.close()
    assert "ASGI app raised after the client disconnected (GET /stuck-in-group)" in proc.output
    assert "RuntimeError: cleanup failed on cancel" in proc.output
    assert "Finished server process" in proc.output


def test_second_sigint_exits_at_once(app_dir: str, tmp_path: Path, loop: str) -> None:
    marker = tmp_path / "marker"
    env = {"ZONDA_TEST_MARKER": str(marker)}
    with zonda_process("slow_app:app", "--port", "0", "--app-dir", app_dir, "--loop", loop, env=env) as proc:
        proc.wait_listening()
        stuck = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        stuck.sendall(STUCK_REQUEST)
        wait_for(lambda: started(proc, "/stuck") == 1, what="the stuck request in the app")
        proc.signal(signal.SIGINT)
        wait_for(lambda: "Waiting for 1 connection(s)" in proc.output, what="the drain to begin")
        assert proc.proc.poll() is None, "the first SIGINT waits for the stuck request"
        signalled = time.monotonic()
        proc.signal(signal.SIGINT)
        code = proc.wait(5)
        assert time.monotonic() - signalled < 2.0  # not the 30 s graceful timeout
        assert read_until_closed(stuck, 2.0) == b""
        stuck.close()
    assert code == 0
    assert "Second SIGINT" in proc.output
    assert not marker.exists(), "a forced exit skips lifespan shutdown"


def test_sigterm_with_nothing_in_flight_exits_quickly(app_dir: str) -> None:
    with zonda_process("slow_app:app", "--port", "0", "--app-dir", app_dir) as proc:
        proc.wait_listening()
        signalled = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        assert time.monotonic() - signalled < 2.0


# ------------------------------------------------------------------ in-process Server.shutdown()


def test_server_shutdown_from_another_thread() -> None:
    in_app = threading.Event()
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            events.append("lifespan.shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/slow":
            in_app.set()
            await anyio.sleep(0.5)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": b"done"})

    with run_server(app, lifespan="on") as server, ThreadPoolExecutor(2) as pool:
        port = server.port
        idle = idle_keep_alive_connection(port)
        slow: Future[bytes] = pool.submit(raw_request, port, SLOW_REQUEST, 5.0)
        assert in_app.wait(5)
        stopper = pool.submit(server.stop, 10.0)  # Server.shutdown() from a thread that is not the loop's
        wait_for(lambda: refused(port), timeout=1.0, what="new connections to be refused")
        idle.settimeout(1.0)
        assert idle.recv(1024) == b""
        idle.close()
        response = slow.result(5)
        assert status_of(response) == 200
        assert response.endswith(b"done")
        stopper.result(5)
        assert not server.thread.is_alive()
    assert events == ["lifespan.shutdown"]


# ------------------------------------------------------------------ streams told to end (--shutdown-stream-notice)

STREAMS_APP = """
import anyio

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.routing import Route


async def ticks():
    n = 0
    while True:
        yield {"event": "tick", "data": str(n)}
        n += 1
        await anyio.sleep(0.1)


async def sse(request):
    print("app started /sse", flush=True)
    return EventSourceResponse(ticks())


sse_app = Starlette(routes=[Route("/sse", sse)])


async def raw_stream(receive, send):
    # streams until receive() says http.disconnect, then ends its body with a last line
    assert (await receive())["type"] == "http.request"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    stop = anyio.Event()

    async def listen():
        while (await receive())["type"] != "http.disconnect":
            pass
        stop.set()

    async with anyio.create_task_group() as group:
        group.start_soon(listen)
        n = 0
        while not stop.is_set():
            await send({"type": "http.response.body", "body": b"tick %d\\n" % n, "more_body": True})
            n += 1
            with anyio.move_on_after(0.1):
                await stop.wait()
    await send({"type": "http.response.body", "body": b"bye\\n", "more_body": False})


async def app(scope, receive, send):
    if scope["type"] != "http" or scope["path"] == "/sse":
        await sse_app(scope, receive, send)
        return
    print("app started " + scope["path"], flush=True)
    if scope["path"] == "/raw":
        await raw_stream(receive, send)
        return
    await anyio.sleep(3.0)  # an ordinary request, in flight past the notice point
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"9")]})
    await send({"type": "http.response.body", "body": b"slow done"})
"""

GRACEFUL = 5.0
NOTICE = 3.0  # the streams are told 2 s into the shutdown; /slow ends at about 3 s by itself
STREAM_PATHS = ("/sse", "/raw", "/slow")


@pytest.fixture
def streams_dir(tmp_path: Path) -> str:
    (tmp_path / "streams_app.py").write_text(STREAMS_APP)
    return str(tmp_path)


def streams_server(streams_dir: str) -> Any:
    args = ("--timeout-graceful-shutdown", str(GRACEFUL), "--shutdown-stream-notice", str(NOTICE))
    return zonda_process("streams_app:app", "--port", "0", "--app-dir", streams_dir, *args)


def read_to_the_end(sock: socket.socket) -> tuple[bytes, float]:
    data = read_until_closed(sock, 3 * GRACEFUL)
    sock.close()
    return data, time.monotonic()


def test_streams_end_cleanly_before_the_hard_close_over_http1(streams_dir: str) -> None:
    with streams_server(streams_dir) as proc, ThreadPoolExecutor(len(STREAM_PATHS)) as pool:
        proc.wait_listening()
        readers = {}
        for path in STREAM_PATHS:
            sock = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            readers[path] = pool.submit(read_to_the_end, sock)
        wait_for(lambda: all(started(proc, path) for path in STREAM_PATHS), what="every request in the app")
        signalled = time.monotonic()
        proc.signal(signal.SIGTERM)
        results = {path: reader.result(3 * GRACEFUL) for path, reader in readers.items()}
        assert proc.wait(3 * GRACEFUL) == 0
        exited = time.monotonic() - signalled
    assert exited < GRACEFUL
    for path in ("/sse", "/raw"):
        response, ended_at = results[path]
        head, _, body = response.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower(), response
        payload, complete = dechunk(body)
        assert complete, f"{path} was cut: {response!r}"  # the last chunk came before the close
        # streamed on through the window until the notice point, ended well before the hard close
        assert GRACEFUL - NOTICE - 0.2 <= ended_at - signalled < GRACEFUL, (path, ended_at - signalled)
        if path == "/sse":
            assert payload.count(b"event: tick") > 5
        else:
            assert payload.startswith(b"tick 0\n") and payload.endswith(b"bye\n")
    response, _ = results["/slow"]
    assert status_of(response) == 200 and response.endswith(b"slow done")
    assert "streaming response(s) to end" in proc.output
    assert "still open after the graceful timeout" not in proc.output
    assert "Exception" not in proc.output


def test_streams_end_cleanly_before_the_hard_close_over_http2(streams_dir: str) -> None:
    with streams_server(streams_dir) as proc:
        proc.wait_listening()
        with RawH2(proc.port, timeout=3 * GRACEFUL) as raw:
            streams = dict(zip((1, 3, 5), STREAM_PATHS, strict=True))
            raw.send(*(raw.headers(stream_id, path) for stream_id, path in streams.items()))
            wait_for(
                lambda: all(started(proc, path) for path in STREAM_PATHS), what="every stream in the app"
            )
            signalled = time.monotonic()
            proc.signal(signal.SIGTERM)
            goaway = raw.goaway()
            assert raw.wait_closed(3 * GRACEFUL)
            closed = time.monotonic() - signalled
            assert proc.wait(3 * GRACEFUL) == 0
            exited = time.monotonic() - signalled
            assert raw.response(5)[::2] == (200, b"slow done")
            after_goaway = raw.frames[raw.frames.index(goaway) :]
            for stream_id in (1, 3):
                mine = [f for f in raw.frames if f.stream_id == stream_id]
                assert not [f for f in mine if f.kind == RST_STREAM], mine
                assert mine[-1].kind == DATA and mine[-1].flags & END_STREAM, mine[-1]  # ended, not reset
                # it streamed on after GOAWAY, within the window, until told to end
                assert len([f for f in after_goaway if f.stream_id == stream_id and f.kind == DATA]) > 5
            assert raw.response(1)[2].count(b"event: tick") > 5
            assert raw.response(3)[2].endswith(b"bye\n")
    assert closed < GRACEFUL and exited < GRACEFUL
    assert "streaming response(s) to end" in proc.output
    assert "still open after the graceful timeout" not in proc.output
    assert "Exception" not in proc.output
