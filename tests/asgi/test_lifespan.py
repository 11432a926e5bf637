"""The lifespan protocol (ASGI lifespan 2.0 with state): zonda's ``Lifespan`` on a real event loop, and a real
server in a thread for what a request sees. The CLI exit paths are in tests/e2e/test_lifespan.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import anyio
import httpx
import pytest

from helpers import run_server
from zonda.asgi.lifespan import Lifespan
from zonda.errors import LifespanFailure

Scope = dict[str, Any]


def make_app(
    startup: str = "complete",
    shutdown: str = "complete",
    events: list[str] | None = None,
) -> Any:
    """A lifespan app whose startup/shutdown answer is chosen by name; http requests echo their state."""
    events = events if events is not None else []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                if message["type"] == "lifespan.startup":
                    scope["state"]["greeting"] = "hello"
                    scope["state"]["counter"] = {"n": 0}
                    if startup == "failed":
                        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
                        return
                    if startup == "raise":
                        raise RuntimeError("startup exploded")
                    if startup == "wrong-message":
                        await send({"type": "lifespan.shutdown.complete"})
                    if startup == "hang":
                        await asyncio.sleep(30)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if shutdown == "failed":
                        await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})
                        return
                    if shutdown == "raise":
                        raise RuntimeError("shutdown exploded")
                    if shutdown == "hang":
                        await asyncio.sleep(30)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "http":
            state = scope["state"]
            body = repr((state.get("greeting"), state.get("counter"), sorted(state))).encode()
            state["greeting"] = "changed by a request"  # a copy: the next request must not see this
            if "counter" in state:
                state["counter"]["n"] += 1  # a shallow copy: the next request sees this
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})

    return app


async def raises_on_lifespan(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        raise ValueError("lifespan is not for me")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def returns_on_lifespan(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def drive(app: Any, mode: str = "on") -> tuple[Lifespan, asyncio.Task[None]]:
    """Start a Lifespan the way the server does; return it once startup is answered."""
    lifespan = Lifespan(app, mode, asyncio.get_running_loop().create_future)
    task = asyncio.ensure_future(lifespan.run())
    try:
        await asyncio.wait_for(lifespan.startup(), 2)
    except BaseException:
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 2)
        raise
    return lifespan, task


# ------------------------------------------------------------------ Lifespan on a real loop


def test_startup_and_shutdown_complete() -> None:
    events: list[str] = []

    async def main() -> None:
        lifespan, task = await drive(make_app(events=events))
        assert lifespan.supported
        assert lifespan.state["greeting"] == "hello"
        await asyncio.wait_for(lifespan.shutdown(), 2)
        await asyncio.wait_for(task, 2)

    asyncio.run(main())
    assert events == ["lifespan.startup", "lifespan.shutdown"]


def test_lifespan_scope() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope)
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    async def main() -> None:
        lifespan, task = await drive(app)
        await lifespan.shutdown()
        await task

    asyncio.run(main())
    (scope,) = seen
    assert scope["type"] == "lifespan"
    assert scope["asgi"]["version"] == "3.0"
    assert scope["state"] == {}


@pytest.mark.parametrize("mode", ["on", "auto"])
def test_startup_failed_message(mode: str) -> None:
    async def main() -> None:
        with pytest.raises(LifespanFailure, match="database unreachable"):
            await drive(make_app(startup="failed"), mode)

    asyncio.run(main())


def test_startup_exception_in_on_mode_is_a_failure() -> None:
    async def main() -> None:
        with pytest.raises(LifespanFailure, match="startup exploded"):
            await drive(make_app(startup="raise"), "on")

    asyncio.run(main())


def test_startup_exception_in_auto_mode_means_unsupported() -> None:
    async def main() -> None:
        lifespan, _ = await drive(make_app(startup="raise"), "auto")
        assert not lifespan.supported

    asyncio.run(main())


def test_app_that_sends_the_wrong_message_fails_startup() -> None:
    async def main() -> None:
        with pytest.raises(LifespanFailure, match=r"Expected 'lifespan.startup.complete'"):
            await drive(make_app(startup="wrong-message"), "on")

    asyncio.run(main())


def test_raises_on_lifespan_scope_auto_mode_is_unsupported_and_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        lifespan, _ = await drive(raises_on_lifespan, "auto")
        assert not lifespan.supported
        await lifespan.shutdown()  # nothing to do, and no error

    with caplog.at_level(logging.INFO, logger="zonda"):
        asyncio.run(main())
    assert "unsupported" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_raises_on_lifespan_scope_on_mode_fails_with_the_apps_message() -> None:
    async def main() -> None:
        with pytest.raises(LifespanFailure, match="lifespan is not for me"):
            await drive(raises_on_lifespan, "on")

    asyncio.run(main())


def test_returns_on_lifespan_scope() -> None:
    async def main() -> None:
        lifespan, _ = await drive(returns_on_lifespan, "auto")
        assert not lifespan.supported
        with pytest.raises(LifespanFailure, match="returned"):
            await drive(returns_on_lifespan, "on")

    asyncio.run(main())


@pytest.mark.parametrize(("shutdown", "text"), [("failed", "flush failed"), ("raise", "shutdown exploded")])
def test_shutdown_failure(shutdown: str, text: str) -> None:
    async def main() -> None:
        lifespan, task = await drive(make_app(shutdown=shutdown))
        with pytest.raises(LifespanFailure, match=text):
            await asyncio.wait_for(lifespan.shutdown(), 2)
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 2)

    asyncio.run(main())


# ------------------------------------------------------------------ a real server


def test_state_is_a_shallow_copy_per_request() -> None:
    with run_server(make_app(), lifespan="on") as server:
        first = httpx.get(server.url + "/").text
        second = httpx.get(server.url + "/").text
    assert first == repr(("hello", {"n": 0}, ["counter", "greeting"]))
    # the request's own key change did not leak, its change inside a shared object did
    assert second == repr(("hello", {"n": 1}, ["counter", "greeting"]))


def test_lifespan_off_sends_no_lifespan_events() -> None:
    events: list[str] = []
    with run_server(make_app(events=events), lifespan="off") as server:
        assert httpx.get(server.url + "/").text == repr((None, None, []))
    assert events == []


def test_shutdown_runs_when_the_server_stops() -> None:
    events: list[str] = []
    with run_server(make_app(events=events), lifespan="auto") as server:
        assert httpx.get(server.url + "/").status_code == 200
        assert events == ["lifespan.startup"]
    assert events == ["lifespan.startup", "lifespan.shutdown"]


@pytest.mark.parametrize("app", [raises_on_lifespan, returns_on_lifespan])
def test_auto_mode_serves_an_app_without_lifespan(app: Any) -> None:
    with run_server(app, lifespan="auto") as server:
        assert httpx.get(server.url + "/").text == "ok"


def test_startup_failure_stops_the_server_from_starting() -> None:
    with pytest.raises(LifespanFailure, match="database unreachable"), run_server(make_app(startup="failed")):
        pass


def test_startup_timeout() -> None:
    with (
        pytest.raises(LifespanFailure, match=r"within 0\.2s"),
        run_server(make_app(startup="hang"), lifespan="on", timeout_lifespan_startup=0.2),
    ):
        pass


def test_shutdown_timeout_does_not_hang_the_server(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="zonda"),
        run_server(make_app(shutdown="hang"), lifespan="on", timeout_lifespan_shutdown=0.2) as server,
    ):
        assert httpx.get(server.url + "/").status_code == 200
    assert "did not complete within 0.2s" in caplog.text


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_a_task_groups_error_at_the_shutdown_timeout_is_logged(
    caplog: pytest.LogCaptureFixture, loop: str
) -> None:
    """Cancelled after its shutdown timeout inside a task group whose child fails on the way out: the child's
    error is logged as the app's. On trio it arrives grouped with the cancellation (a BaseExceptionGroup), on
    asyncio anyio's group holds the error alone; either way the server stops cleanly."""

    async def fail_when_cancelled() -> None:
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            raise RuntimeError("cleanup failed on cancel") from None

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            async with anyio.create_task_group() as group:
                group.start_soon(fail_when_cancelled)
                await anyio.sleep(30)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    with (
        caplog.at_level(logging.INFO, logger="zonda"),
        run_server(app, lifespan="on", timeout_lifespan_shutdown=0.2, loop=loop) as server,
    ):
        assert httpx.get(server.url + "/").status_code == 204
    assert "did not complete within 0.2s" in caplog.text
    assert "Exception in ASGI lifespan" in caplog.text
    assert "cleanup failed on cancel" in caplog.text
