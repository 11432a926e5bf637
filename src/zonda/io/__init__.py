"""I/O drivers: the only code that imports an event loop. ``base`` is the seam everything else uses."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

from zonda.errors import ConfigError
from zonda.io.base import Runtime, Waiter

LOOPS = ("auto", "asyncio", "uvloop", "trio")


def running() -> Runtime:
    """The runtime of the event loop the caller runs on."""
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        from zonda.io.trio import running as running_trio

        return running_trio()
    from zonda.io.asyncio import running as running_asyncio

    return running_asyncio()


def cross_thread_waiter() -> tuple[Waiter, Callable[[Callable[[], object]], object]]:
    """A waiter on the caller's loop, and how to run a callback on that loop from any thread: for a task that
    waits on what another loop settles (``Server.wait_started``). Needs no zonda runtime around the caller."""
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        from zonda.io._trio_waiter import TrioWaiter

        return TrioWaiter(), trio.lowlevel.current_trio_token().run_sync_soon
    import asyncio

    loop = asyncio.get_running_loop()
    return loop.create_future(), loop.call_soon_threadsafe


def serving_runtime() -> AbstractAsyncContextManager[Runtime]:
    """Around a server's whole life: the runtime of the loop the caller runs on. On trio it opens one when the
    caller is not inside ``zonda.io.trio.open_runtime()`` already; asyncio's needs nothing opened."""
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        from zonda.io.trio import serving_runtime as serving_trio

        return serving_trio()
    return nullcontext(running())


def run(loop: str, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to its end on a new event loop of the kind ``--loop`` names (``auto``: uvloop if installed)."""
    if loop == "trio":
        try:
            from zonda.io.trio import run as run_trio
        except ModuleNotFoundError as exc:
            if exc.name != "trio":
                raise
            raise ConfigError("loop: trio is not installed (pip install 'zonda[trio]')") from None
        run_trio(main)
        return
    from zonda.io.asyncio import run as run_asyncio

    run_asyncio(loop, main)
