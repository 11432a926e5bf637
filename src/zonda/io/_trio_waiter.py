"""The ``io.base.Waiter`` of the trio driver: a one-shot wake-up that one trio task awaits."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from trio.lowlevel import Abort, RaiseCancelT, Task, current_task, reschedule, wait_task_rescheduled


class TrioWaiter:
    """Set once with ``set_result(None)``; awaiting it parks the task until then (at once if it is set).

    Like an asyncio Future, awaiting a set waiter does not yield. If the awaiting task is cancelled, the
    waiter forgets it: a later ``set_result`` wakes nobody, and is safe.
    """

    __slots__ = ("_done", "_task")

    def __init__(self) -> None:
        self._done = False
        self._task: Task | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, result: None, /) -> None:
        self._done = True
        task = self._task
        if task is not None:
            self._task = None
            reschedule(task)

    def __await__(self) -> Generator[Any, None, None]:
        if not self._done:
            self._task = current_task()
            yield from wait_task_rescheduled(self._abort).__await__()

    def _abort(self, raise_cancel: RaiseCancelT) -> Abort:
        self._task = None  # cancelled while parked: trio wakes the task with Cancelled
        return Abort.SUCCEEDED
