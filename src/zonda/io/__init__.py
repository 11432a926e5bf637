"""I/O drivers: the only code that imports an event loop. ``base`` is the seam everything else uses."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from zonda.io.base import Runtime

LOOPS = ("auto", "asyncio", "uvloop")


def running() -> Runtime:
    """The runtime of the event loop the caller runs on."""
    import asyncio

    from zonda.io.asyncio import AsyncioRuntime

    return AsyncioRuntime(asyncio.get_running_loop())


def run(loop: str, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to its end on a new event loop of the kind ``--loop`` names (``auto``: uvloop if installed)."""
    from zonda.io.asyncio import run as run_asyncio

    run_asyncio(loop, main)
