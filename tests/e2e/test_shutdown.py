"""Graceful shutdown of a real ``python -m zonda`` on SIGTERM/SIGINT, and of an in-process Server.

Order under test: stop accepting, close idle keep-alive connections, let in-flight requests finish (within
``--timeout-graceful-shutdown``), cancel the rest, run lifespan shutdown, exit 0. A second SIGINT exits at once.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    ZondaProcess,
    raw_request,
    read_response,
    read_until_closed,
    run_server,
    status_of,
    wait_for,
    zonda_process,
)

SLOW_APP = """
import asyncio
import os
import sys

MARKER = os.environ.get("ZONDA_TEST_MARKER", "")


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
        await asyncio.sleep(1.0)
    elif path == "/stuck":
        await asyncio.sleep(3600)
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


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
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


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
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
            await asyncio.sleep(0.5)
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
