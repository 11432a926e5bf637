"""Lifespan through the real ``zonda`` command: start-up failures exit non-zero with the app's message, apps
without lifespan are served in auto mode, state reaches requests, and shutdown runs when the process exits."""

from __future__ import annotations

import signal
import time
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from helpers import ZondaProcess, zonda_process

LIFESPAN_APPS = """
import anyio
import json
import os

MARKER = os.environ.get("ZONDA_TEST_MARKER", "")


async def http(scope, receive, send):
    body = json.dumps(scope.get("state", {})).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def lifespan_app(startup="complete", shutdown="complete"):
    async def app(scope, receive, send):
        if scope["type"] != "lifespan":
            return await http(scope, receive, send)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["db"] = "connected"
                if startup == "failed":
                    await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
                    return
                if startup == "raise":
                    raise RuntimeError("startup exploded")
                if startup == "hang":
                    await anyio.sleep(60)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if shutdown == "hang":
                    await anyio.sleep(60)
                if MARKER:
                    with open(MARKER, "w") as file:
                        file.write("shutdown ran")
                if shutdown == "failed":
                    await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return
    return app


ok = lifespan_app()
startup_failed = lifespan_app(startup="failed")
startup_raises = lifespan_app(startup="raise")
startup_hangs = lifespan_app(startup="hang")
shutdown_hangs = lifespan_app(shutdown="hang")
shutdown_failed = lifespan_app(shutdown="failed")


async def raises_on_lifespan(scope, receive, send):
    if scope["type"] == "lifespan":
        raise ValueError("lifespan is not for me")
    await http(scope, receive, send)


async def returns_on_lifespan(scope, receive, send):
    if scope["type"] == "lifespan":
        return
    await http(scope, receive, send)
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> str:
    (tmp_path / "lifespan_apps.py").write_text(LIFESPAN_APPS)
    return str(tmp_path)


def start(
    app_dir: str, app: str, *args: str, marker: Path | None = None
) -> AbstractContextManager[ZondaProcess]:
    env = {"ZONDA_TEST_MARKER": str(marker)} if marker else {}
    return zonda_process(f"lifespan_apps:{app}", "--port", "0", "--app-dir", app_dir, *args, env=env)


def test_state_and_shutdown_marker(app_dir: str, tmp_path: Path) -> None:
    marker = tmp_path / "shutdown.txt"
    with start(app_dir, "ok", "--lifespan", "on", marker=marker) as proc:
        url = proc.wait_listening()
        assert httpx.get(url + "/").json() == {"db": "connected"}
        assert not marker.exists()
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert marker.read_text() == "shutdown ran"
    assert "Application startup complete." in proc.output
    assert "Application shutdown complete." in proc.output


@pytest.mark.parametrize("mode", ["on", "auto"])
def test_startup_failed_message_exits_non_zero(app_dir: str, mode: str) -> None:
    with start(app_dir, "startup_failed", "--lifespan", mode) as proc:
        code = proc.wait(10)
    assert code != 0
    assert "database unreachable" in proc.output
    assert "Listening on" not in proc.output


def test_startup_exception_exits_non_zero(app_dir: str) -> None:
    with start(app_dir, "startup_raises", "--lifespan", "on") as proc:
        code = proc.wait(10)
    assert code != 0
    assert "Application startup failed" in proc.output
    assert "startup exploded" in proc.output
    assert "Listening on" not in proc.output


@pytest.mark.parametrize("app", ["raises_on_lifespan", "returns_on_lifespan", "startup_raises"])
def test_auto_mode_serves_anyway(app_dir: str, app: str) -> None:
    with start(app_dir, app) as proc:
        url = proc.wait_listening()
        assert httpx.get(url + "/").status_code == 200
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert "appears unsupported" in proc.output
    assert " ERROR " not in proc.output


def test_on_mode_refuses_an_app_without_lifespan(app_dir: str) -> None:
    with start(app_dir, "raises_on_lifespan", "--lifespan", "on") as proc:
        assert proc.wait(10) != 0
    assert "lifespan is not for me" in proc.output


def test_lifespan_off_never_calls_the_app_with_lifespan(app_dir: str, tmp_path: Path) -> None:
    marker = tmp_path / "shutdown.txt"
    with start(app_dir, "startup_failed", "--lifespan", "off", marker=marker) as proc:
        url = proc.wait_listening()
        assert httpx.get(url + "/").json() == {}
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    assert not marker.exists()
    assert "Application startup" not in proc.output


def test_startup_timeout_exits_non_zero(app_dir: str) -> None:
    began = time.monotonic()
    with start(app_dir, "startup_hangs", "--timeout-lifespan-startup", "0.3") as proc:
        code = proc.wait(10)
    assert code != 0
    assert time.monotonic() - began < 5
    assert "within 0.3s" in proc.output


def test_shutdown_timeout_still_exits(app_dir: str) -> None:
    with start(app_dir, "shutdown_hangs", "--timeout-lifespan-shutdown", "0.3") as proc:
        proc.wait_listening()
        began = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert time.monotonic() - began < 3
    assert "did not complete within 0.3s" in proc.output


def test_shutdown_failed_is_logged(app_dir: str, tmp_path: Path) -> None:
    marker = tmp_path / "shutdown.txt"
    with start(app_dir, "shutdown_failed", marker=marker) as proc:
        proc.wait_listening()
        proc.signal(signal.SIGTERM)
        proc.wait(10)
    assert marker.exists()
    assert "flush failed" in proc.output
