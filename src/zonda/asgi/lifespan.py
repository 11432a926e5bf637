"""The ASGI lifespan protocol (lifespan spec 2.0), with state.

The driver runs ``Lifespan.run()`` as a task and awaits ``startup()`` / ``shutdown()`` under its own timeouts.
Only waiters from the server's ``io.base.Loop`` are awaited, and only as wake-ups (the answer is kept here), so
the class serves any event loop.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from zonda.asgi.exchange import ASGI_VERSION
from zonda.asgi.types import ASGIApp, Message
from zonda.errors import AppProtocolError, LifespanFailure, split_cancellation
from zonda.io.base import Waiter

logger = logging.getLogger("zonda.error")

_EXPECTED = {
    "lifespan.startup": ("lifespan.startup.complete", "lifespan.startup.failed"),
    "lifespan.shutdown": ("lifespan.shutdown.complete", "lifespan.shutdown.failed"),
}


class Lifespan:
    """One lifespan conversation with the app. ``mode`` is ``"on"`` or ``"auto"``."""

    def __init__(self, app: ASGIApp, mode: str, create_waiter: Callable[[], Waiter]) -> None:
        self.app = app
        self.mode = mode
        self.state: dict[str, Any] = {}
        self.supported = True  # auto mode turns this off if the app refuses the lifespan scope
        self._create_waiter = create_waiter
        self._inbox: deque[Message] = deque()
        self._inbox_waiter: Waiter | None = None
        # lifespan.startup is queued before the app runs, so whatever the app does first (even raising on
        # the lifespan scope before calling receive()) is its answer to startup
        # set once the app answered the pending event; the answer itself is kept in _outcome (a waiter only
        # wakes: trio's carries no value)
        self._reply: Waiter = create_waiter()
        self._outcome: LifespanFailure | None = None
        self._pending: str | None = "lifespan.startup"
        self._inbox.append({"type": "lifespan.startup"})
        self._finished = create_waiter()

    async def run(self) -> None:
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as exc:
            if self._pending == "lifespan.startup" and self.mode == "auto" and isinstance(exc, Exception):
                self.supported = False
                logger.info(
                    "ASGI 'lifespan' protocol appears unsupported by the app (%s: %s)",
                    type(exc).__name__,
                    exc,
                )
                self._answer(None)
            elif isinstance(exc, Exception):
                logger.error(
                    "Exception in ASGI lifespan (%s)", self._pending or "after shutdown", exc_info=exc
                )
                self._answer(
                    LifespanFailure(f"{self._pending or 'lifespan'} raised {type(exc).__name__}: {exc}")
                )
            else:  # cancelled: a task group's errors may come with the cancellation, and are the app's
                failure, cancellation = split_cancellation(exc)
                if failure is not None:
                    logger.error("Exception in ASGI lifespan (cancelled)", exc_info=failure)
                self._answer(LifespanFailure("lifespan task cancelled"))
                if cancellation is not None:
                    raise cancellation  # noqa: B904  # passed on as it came, not chained to its own group
        else:
            if self._pending is not None:
                self._answer(self._returned_early(self._pending))
        finally:
            if not self._finished.done():
                self._finished.set_result(None)

    async def startup(self) -> None:
        """Send ``lifespan.startup``; return once the app completes it. Raises LifespanFailure."""
        await self._await_reply()  # queued in __init__

    async def shutdown(self) -> None:
        """Send ``lifespan.shutdown``; return once the app completes it. Raises LifespanFailure."""
        if self.supported and not self._finished.done():
            await self._ask("lifespan.shutdown")

    def _returned_early(self, event: str) -> LifespanFailure | None:
        """The app returned without answering ``event``: in auto mode it does not do lifespan."""
        if event == "lifespan.startup" and self.mode == "auto":
            self.supported = False
            logger.info("ASGI 'lifespan' protocol appears unsupported by the app (it returned)")
            return None
        if event == "lifespan.startup":
            return LifespanFailure("the app returned without answering lifespan.startup")
        return None

    async def _ask(self, event: str) -> None:
        if self._finished.done():
            outcome = self._returned_early(event)
            if outcome is not None:
                raise outcome
            return
        self._pending = event
        self._outcome = None
        self._reply = self._create_waiter()
        self._inbox.append({"type": event})
        waiter = self._inbox_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        await self._await_reply()

    async def _await_reply(self) -> None:
        await self._reply
        self._pending = None
        if self._outcome is not None:
            raise self._outcome

    def _answer(self, outcome: LifespanFailure | None) -> None:
        if not self._reply.done():
            self._outcome = outcome
            self._reply.set_result(None)

    async def receive(self) -> Message:
        while not self._inbox:
            waiter = self._inbox_waiter = self._create_waiter()
            await waiter
        return self._inbox.popleft()

    async def send(self, message: Message) -> None:
        message_type = message.get("type")
        if self._pending is None:
            raise AppProtocolError(f"Unexpected {message_type!r}: no lifespan event is pending")
        complete, failed = _EXPECTED[self._pending]
        if message_type == complete:
            self._answer(None)
        elif message_type == failed:
            text = message.get("message", "")
            self._answer(LifespanFailure(f"{failed}: {text}" if text else failed))
        else:
            raise AppProtocolError(f"Expected {complete!r} or {failed!r}, got {message_type!r}")
