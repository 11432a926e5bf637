"""I/O drivers: the only code that imports an event loop. ``base`` is the seam everything else uses."""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from typing import Any

from zonda.errors import ConfigError
from zonda.io.base import Runtime

LOOPS = ("auto", "asyncio", "uvloop", "trio")


def running() -> Runtime:
    """The runtime of the event loop the caller runs on."""
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        from zonda.io.trio import running as running_trio

        return running_trio()
    import asyncio

    from zonda.io.asyncio import AsyncioRuntime

    return AsyncioRuntime(asyncio.get_running_loop())


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
