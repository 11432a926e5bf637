"""The trio driver (``zonda.io.trio``) under ``trio.run``: its waiter, timers, app tasks and runtime. Serving real
clients: test_trio_serving.py."""

from __future__ import annotations

import contextvars
import threading
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import sniffio
import trio

from zonda.io.trio import TrioLoop, TrioRuntime, open_runtime

seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="outside")


def run_trio(main: Callable[[TrioLoop], Any]) -> None:
    async def entry() -> None:
        async with open_runtime() as runtime:
            with trio.fail_after(10):
                await main(runtime.loop)

    trio.run(entry)


# ------------------------------------------------------------------ the waiter


def test_a_waiter_set_before_it_is_awaited_does_not_yield() -> None:
    async def main(loop: TrioLoop) -> None:
        waiter = loop.create_waiter()
        waiter.set_result(None)
        assert waiter.done()
        with trio.CancelScope() as scope:
            scope.cancel()
            await waiter  # no checkpoint: a cancelled scope does not interrupt it
        assert not scope.cancelled_caught

    run_trio(main)


def test_a_waiter_wakes_the_task_that_awaits_it() -> None:
    async def main(loop: TrioLoop) -> None:
        waiter = loop.create_waiter()
        woke: list[float] = []

        async def sleeper() -> None:
            await waiter
            woke.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            await trio.sleep(0.05)
            assert not woke and not waiter.done()
            waiter.set_result(None)
        assert len(woke) == 1

    run_trio(main)


def test_a_waiter_set_after_its_task_was_cancelled_is_harmless() -> None:
    async def main(loop: TrioLoop) -> None:
        waiter = loop.create_waiter()
        with trio.move_on_after(0.02) as scope:
            await waiter
        assert scope.cancelled_caught and not waiter.done()
        waiter.set_result(None)  # nobody to wake: must not reschedule the (running) task
        assert waiter.done()
        await trio.sleep(0.01)
        await waiter  # set: returns at once

    run_trio(main)


# ------------------------------------------------------------------ timers


def test_timers_fire_in_time_order_and_cancelled_ones_never() -> None:
    async def main(loop: TrioLoop) -> None:
        fired: list[str] = []
        now = loop.time()
        loop.call_at(now + 0.06, lambda: fired.append("c"))
        late = loop.call_at(now + 0.04, lambda: fired.append("cancelled"))
        loop.call_at(now + 0.02, lambda: fired.append("a"))
        loop.call_at(now + 0.02, lambda: fired.append("b"))  # a tie: call order
        late.cancel()
        late.cancel()  # twice: still once
        await trio.sleep(0.1)
        assert fired == ["a", "b", "c"]

    run_trio(main)


def test_an_earlier_timer_wakes_the_sleeping_timer_task() -> None:
    async def main(loop: TrioLoop) -> None:
        fired: list[float] = []
        start = loop.time()
        loop.call_at(start + 5, lambda: fired.append(-1))  # the timer task sleeps until then ...
        await trio.sleep(0.01)
        loop.call_at(start + 0.03, lambda: fired.append(loop.time()))  # ... and is woken for this
        await trio.sleep(0.2)
        assert len(fired) == 1 and start + 0.03 <= fired[0] < start + 0.15

    run_trio(main)


def test_a_timer_armed_from_a_timer_callback_fires_and_a_failing_one_is_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main(loop: TrioLoop) -> None:
        fired: list[str] = []

        def first() -> None:
            fired.append("first")
            loop.call_at(loop.time() + 0.01, lambda: fired.append("second"))
            raise RuntimeError("boom")

        loop.call_at(loop.time() + 0.01, first)
        await trio.sleep(0.1)
        assert fired == ["first", "second"]

    run_trio(main)
    assert "boom" in caplog.text


def test_cancelled_timers_are_compacted_away() -> None:
    async def main(loop: TrioLoop) -> None:
        timers = loop._timers
        fired: list[int] = []
        kept = loop.call_at(loop.time() + 0.05, lambda: fired.append(1))
        for _ in range(1000):
            loop.call_at(loop.time() + 60, lambda: fired.append(0)).cancel()  # re-armed connection timers
        assert len(timers._heap) < 600 and len(timers) == 1
        await trio.sleep(0.1)
        assert fired == [1]
        kept.cancel()  # after firing: a no-op

    run_trio(main)


def test_a_cancelled_timer_lets_go_of_its_callback_at_once() -> None:
    """A cancelled entry waits in the heap for its time (or a compaction): what its callback holds, a closed
    connection with its state, must not wait with it."""

    class Owner:
        def on_due(self) -> None:
            raise AssertionError("a cancelled timer fired")

    async def main(loop: TrioLoop) -> None:
        owner = Owner()
        gone = weakref.ref(owner)
        loop.call_at(loop.time() + 60, owner.on_due).cancel()
        del owner
        assert len(loop._timers._heap) == 1  # still in the heap ...
        assert gone() is None  # ... but the owner is freed

    run_trio(main)


def test_call_soon_and_call_soon_threadsafe_run_on_the_loop() -> None:
    async def main(loop: TrioLoop) -> None:
        ran: list[str] = []
        done = trio.Event()
        loop.call_soon(lambda: ran.append("soon"))

        def from_thread() -> None:
            loop.call_soon_threadsafe(lambda: (ran.append(threading.current_thread().name), done.set()))

        await trio.to_thread.run_sync(from_thread)
        await done.wait()
        assert ran == ["soon", threading.main_thread().name]

    run_trio(main)


# ------------------------------------------------------------------ app tasks


def test_spawn_runs_a_trio_task_in_a_copy_of_the_context() -> None:
    async def main(loop: TrioLoop) -> None:
        found: dict[str, Any] = {}
        finished = trio.Event()

        async def app() -> None:
            found["task"] = trio.lowlevel.current_task()
            found["library"] = sniffio.current_async_library()
            found["inherited"] = seen.get()
            seen.set("app")
            async with trio.open_nursery() as nursery:  # trio-native structure inside the app
                nursery.start_soon(trio.sleep, 0.01)
            found["after"] = seen.get()
            finished.set()

        seen.set("caller")
        loop.spawn(app())
        await finished.wait()
        assert found["task"] is not trio.lowlevel.current_task()
        assert found["library"] == "trio"
        assert found["inherited"] == "caller" and found["after"] == "app"
        assert seen.get() == "caller"  # the app's change stayed in its copy
        assert loop.app_calls == 0

    run_trio(main)


def test_app_tasks_are_counted_cancelled_and_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        async with open_runtime() as runtime:
            loop = runtime.loop
            cancelled: list[str] = []
            ran: list[str] = []

            async def hangs(name: str) -> None:
                try:
                    await trio.sleep_forever()
                except trio.Cancelled:
                    cancelled.append(name)
                    raise

            async def fails() -> None:
                raise RuntimeError("a bug above the seam")

            async def quick() -> None:
                ran.append(seen.get())

            loop.spawn(hangs("a"))
            loop.spawn(hangs("b"))
            loop.spawn(fails())
            await trio.sleep(0.01)
            assert loop.app_calls == 2
            tasks = runtime.app_tasks()
            assert len(tasks) == 1 and not tasks[0].done()
            with trio.move_on_after(0.02) as scope:
                await runtime.join(tasks, 5)  # bounded by the caller's scope too
            assert scope.cancelled_caught
            for task in tasks:
                task.cancel()
            seen.set("after the cancel")
            loop.spawn(quick())  # app calls spawned after the cancel run, in a new generation
            await runtime.join(tasks, 1.0)
            assert tasks[0].done() and sorted(cancelled) == ["a", "b"]
            await trio.sleep(0.01)
            assert ran == ["after the cancel"] and not runtime.app_tasks()

    trio.run(main)
    assert "a bug above the seam" in caplog.text


def test_an_app_tasks_error_grouped_with_its_cancellation_stays_in_the_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A nursery inside an app call, cancelled from outside while a child fails: the group of the Cancelled and
    the error leaves the call. The Cancelled ends the task; the error is logged and must not reach the runtime's
    nurseries (it would end the whole run)."""

    async def main() -> None:
        async with open_runtime() as runtime:
            loop = runtime.loop

            async def fails_when_cancelled() -> None:
                try:
                    await trio.sleep_forever()
                except trio.Cancelled:
                    raise RuntimeError("cleanup failed on cancel") from None

            async def app_call() -> None:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(fails_when_cancelled)
                    await trio.sleep_forever()

            loop.spawn(app_call())
            await trio.sleep(0.01)
            tasks = runtime.app_tasks()
            for task in tasks:
                task.cancel()
            await runtime.join(tasks, 1.0)
            assert tasks[0].done() and loop.app_calls == 0
            await trio.sleep(0.01)  # the runtime still runs

    trio.run(main)
    assert "Error in an app task" in caplog.text
    assert "cleanup failed on cancel" in caplog.text


def test_runtime_tasks_wait_for_and_join() -> None:
    async def main() -> None:
        async with open_runtime() as runtime:
            steps: list[str] = []

            async def slow() -> None:
                try:
                    await trio.sleep(10)
                except trio.Cancelled:
                    steps.append("cancelled")
                    raise

            async def quick() -> int:
                await trio.sleep(0.01)
                return 7

            assert await runtime.wait_for(quick(), 1) == 7
            with pytest.raises(TimeoutError):
                await runtime.wait_for(trio.sleep(1), 0.02)
            task = runtime.start(slow())
            await runtime.join([task], 0.02)
            assert not task.done()
            task.cancel()
            await runtime.join([task], 1)
            assert task.done() and steps == ["cancelled"]

    trio.run(main)


def test_open_runtime_lets_an_exception_out_as_it_is() -> None:
    async def main() -> None:
        async with open_runtime() as runtime:
            runtime.loop.spawn(trio.sleep_forever())
            raise KeyError("mine")

    with pytest.raises(KeyError, match="mine"):
        trio.run(main)


def test_running_finds_the_runtime_of_the_block() -> None:
    from zonda.io import running

    async def main() -> None:
        with pytest.raises(RuntimeError, match="open_runtime"):
            running()
        async with open_runtime() as runtime:
            assert running() is runtime and isinstance(runtime, TrioRuntime) and runtime.name == "trio"

    trio.run(main)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ({"type": "lifespan.startup.failed", "message": "no database"}, "no database"),
        (None, "returned without answering"),
    ],
    ids=["failed", "returned"],
)
def test_lifespan_failures_reach_the_server_on_trio(answer: dict[str, Any] | None, error: str) -> None:
    # trio's waiter wakes without a value: the lifespan's answer must not travel through it
    from zonda.asgi.lifespan import Lifespan
    from zonda.errors import LifespanFailure

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        if answer is not None:
            await send(answer)

    async def main() -> None:
        async with open_runtime() as runtime:
            lifespan = Lifespan(app, "on", runtime.loop.create_waiter)
            task = runtime.start(lifespan.run())
            with pytest.raises(LifespanFailure, match=error):
                await lifespan.startup()
            await runtime.join([task], 1.0)

    trio.run(main)
