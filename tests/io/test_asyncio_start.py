"""``start_eagerly`` and ``H1Protocol.spawn`` (its copy, inlined for the per-request path) behave the same:
the first step runs at once in a copied context, a coroutine that suspends goes on in a tracked task."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import pytest

from zonda.io.asyncio import H1Protocol, start_eagerly

seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="outside")
Starter = Callable[[asyncio.AbstractEventLoop, Coroutine[Any, Any, Any], set[asyncio.Task[Any]]], None]


def via_spawn(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], tasks: set[asyncio.Task[Any]]
) -> None:
    connection = SimpleNamespace(loop=loop, shared=SimpleNamespace(tasks=tasks))
    H1Protocol.spawn(connection, coro)  # type: ignore[arg-type]


STARTERS = pytest.mark.parametrize("start", [start_eagerly, via_spawn], ids=["start_eagerly", "spawn"])


@STARTERS
def test_a_coroutine_that_finishes_at_once_needs_no_task(start: Starter) -> None:
    steps: list[str] = []

    async def app() -> Any:
        seen.set("app")
        steps.append(seen.get())
        return "something"  # not None: still no task, no error

    async def main() -> None:
        tasks: set[asyncio.Task[Any]] = set()
        start(asyncio.get_running_loop(), app(), tasks)
        assert steps == ["app"] and not tasks
        assert seen.get() == "outside"  # the app's context did not leak into the caller's

    asyncio.run(main())


@STARTERS
def test_a_coroutine_that_suspends_goes_on_in_a_tracked_task(start: Starter) -> None:
    steps: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate = loop.create_future()

        async def app() -> None:
            seen.set("app")
            steps.append("first")
            steps.append(await gate)
            steps.append(seen.get())  # the task kept the context of the first step

        tasks: set[asyncio.Task[Any]] = set()
        start(loop, app(), tasks)
        assert steps == ["first"] and len(tasks) == 1
        gate.set_result("resumed")
        await asyncio.gather(*tasks)
        await asyncio.sleep(0)
        assert steps == ["first", "resumed", "app"] and not tasks  # done: no longer tracked
        assert seen.get() == "outside"

    asyncio.run(main())


@STARTERS
def test_an_error_in_the_first_step_reaches_the_caller(start: Starter) -> None:
    async def app() -> None:
        raise LookupError("first step")

    async def main() -> None:
        tasks: set[asyncio.Task[Any]] = set()
        with pytest.raises(LookupError, match="first step"):
            start(asyncio.get_running_loop(), app(), tasks)
        assert not tasks

    asyncio.run(main())
