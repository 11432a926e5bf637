"""``start_task``: every app call is a real Task from its first line, in its own copy of the context; on
Python 3.12+ its first step runs at once (``eager_start``); a task that suspends is tracked until it ends."""

from __future__ import annotations

import asyncio
import contextvars
import sys
from typing import Any

import pytest

from zonda.io.asyncio import start_task

seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="outside")
EAGER = sys.version_info >= (3, 12)


def test_the_first_step_runs_in_a_task() -> None:
    found: list[asyncio.Task[Any] | None] = []

    async def app() -> None:
        found.append(asyncio.current_task())

    async def main() -> None:
        start_task(asyncio.get_running_loop(), set(), app())
        if not EAGER:
            await asyncio.sleep(0)
        assert len(found) == 1 and found[0] is not None and found[0] is not asyncio.current_task()

    asyncio.run(main())


@pytest.mark.skipif(not EAGER, reason="eager task start needs Python 3.12+")
def test_the_first_step_runs_at_once_on_312() -> None:
    steps: list[str] = []

    async def app() -> None:
        steps.append("first")

    async def main() -> None:
        tasks: set[asyncio.Task[Any]] = set()
        start_task(asyncio.get_running_loop(), tasks, app())
        assert steps == ["first"] and not tasks  # finished within the call: nothing to track

    asyncio.run(main())


def test_a_task_that_suspends_is_tracked_and_keeps_its_context() -> None:
    steps: list[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate = loop.create_future()

        async def app() -> None:
            token = seen.set("app")
            steps.append("first")
            steps.append(await gate)
            steps.append(seen.get())
            seen.reset(token)  # a token made before an await resets after it (asgiref does this)
            steps.append(seen.get())

        tasks: set[asyncio.Task[Any]] = set()
        start_task(loop, tasks, app())
        await asyncio.sleep(0)
        assert steps == ["first"] and len(tasks) == 1
        gate.set_result("resumed")
        await asyncio.gather(*tasks)
        await asyncio.sleep(0)
        assert steps == ["first", "resumed", "app", "outside"] and not tasks  # done: no longer tracked
        assert seen.get() == "outside"  # nothing the app set leaked into the caller's context

    asyncio.run(main())


def test_task_groups_and_timeouts_work_before_the_first_await() -> None:
    if sys.version_info < (3, 11):
        pytest.skip("TaskGroup and asyncio.timeout are Python 3.11+")
    results: list[str] = []

    async def app() -> None:
        async with asyncio.timeout(5), asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
            group.create_task(asyncio.sleep(0))
        results.append(await asyncio.wait_for(asyncio.sleep(0, "waited"), 5))

    async def main() -> None:
        tasks: set[asyncio.Task[Any]] = set()
        start_task(asyncio.get_running_loop(), tasks, app())
        await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert results == ["waited"]

    asyncio.run(main())


def test_an_error_stays_in_the_task() -> None:
    async def app() -> None:
        raise LookupError("first step")

    async def main() -> None:
        tasks: set[asyncio.Task[Any]] = set()
        start_task(asyncio.get_running_loop(), tasks, app())  # does not raise into the driver
        for task in list(tasks):
            with pytest.raises(LookupError, match="first step"):
                await task

    asyncio.run(main())
