"""What an app may rely on from its first line, over real sockets, on every driver and both HTTP versions:
a real task of its loop (asyncio: ``current_task()``, TaskGroup, ``asyncio.timeout``, ``wait_for``; trio:
``current_task()``, a nursery under ``fail_after``; anyio task groups and ``fail_after`` on both, before the first
await), its own copy of the context (a ContextVar token resets after an await;
nothing leaks into the next request on the same connection), and response header names in any case."""

from __future__ import annotations

import asyncio
import contextvars
import json
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import sniffio
from websockets.sync.client import connect

from helpers import RunningServer, run_server

request_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_var", default=None)
lifespan_report: dict[str, Any] = {}


async def first_line_checks() -> dict[str, Any]:
    """Run as the app's very first statements: each fails outside a task or in a borrowed context."""
    if sniffio.current_async_library() == "trio":
        return await first_line_checks_on_trio()
    task = asyncio.current_task()
    report: dict[str, Any] = {"task": task is not None and not task.done(), "leaked": request_var.get()}
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(5), asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
            child = group.create_task(asyncio.sleep(0, "child"))
        report["task_group"] = child.result()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 0)
    report["anyio"] = True
    report["wait_for"] = await asyncio.wait_for(asyncio.sleep(0, "waited"), 5)
    return report


async def first_line_checks_on_trio() -> dict[str, Any]:
    """The same promises in trio's terms: the names of the report are the asyncio ones."""
    import trio

    task = trio.lowlevel.current_task()
    report: dict[str, Any] = {"task": task.coro is not None, "leaked": request_var.get()}
    results: list[str] = []

    async def child() -> None:
        await trio.sleep(0)
        results.append("child")

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)
    report["task_group"] = results[0]
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(anyio.sleep, 0)
    report["anyio"] = True
    with trio.fail_after(5):
        await trio.sleep(0)
        report["wait_for"] = "waited"
    return report


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        lifespan_report.update(await first_line_checks())
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    report = await first_line_checks()
    token = request_var.set(scope["path"])
    await anyio.sleep(0)
    request_var.reset(token)  # ValueError if the task switched contexts under the app (asgiref does this)
    report["reset"] = request_var.get() is None
    request_var.set(scope["path"])  # left set on purpose: the next request must not see it
    body = json.dumps(report).encode()
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": body.decode()})
        await send({"type": "websocket.close"})
        return
    headers = [
        (b"Content-Type", b"application/json"),
        (b"X-Mixed-Case", b"  padded value\t"),
        (b"CONTENT-LENGTH", b"%d" % len(body)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


EXPECTED = {"task": True, "leaked": None, "anyio": True, "wait_for": "waited"}


@pytest.fixture
def expected(driver: str) -> dict[str, Any]:
    if driver == "trio" or sys.version_info >= (3, 11):  # asyncio.TaskGroup is new in 3.11
        return {**EXPECTED, "task_group": "child"}
    return EXPECTED


@pytest.fixture
def server(loop: str) -> Iterator[RunningServer]:
    lifespan_report.clear()
    with run_server(app, loop=loop) as running:
        yield running


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_every_request_runs_in_its_own_task_and_context(
    server: RunningServer, http2: bool, expected: dict[str, Any]
) -> None:
    with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:  # one connection: keep-alive
        for path in ("/first", "/second", "/third"):
            response = client.get(server.url + path)
            assert response.status_code == 200
            assert response.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            assert response.json() == {**expected, "reset": True}, path


@pytest.mark.parametrize("http2", [False, True], ids=["http1", "http2"])
def test_header_names_in_any_case_are_sent_lowercase_and_values_trimmed(
    server: RunningServer, http2: bool
) -> None:
    with httpx.Client(http1=not http2, http2=http2, timeout=10) as client:
        response = client.get(server.url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-mixed-case"] == "padded value"
    assert int(response.headers["content-length"]) == len(response.content)
    assert all(name == name.lower() for name, _ in response.headers.raw)


def test_the_websocket_app_and_lifespan_run_in_tasks(server: RunningServer, expected: dict[str, Any]) -> None:
    with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=10) as websocket:
        report = json.loads(websocket.recv(timeout=10))
    assert report == {**expected, "reset": True}
    assert lifespan_report == expected
