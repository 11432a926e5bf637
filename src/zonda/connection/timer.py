"""Connection timers: one re-armable timer per connection (or tunnelled stream) following its core's deadline,
and one queue per loop holding every such timer on a single timer of the loop's.

A loop timer per connection costs what the loop makes of it (on uvloop a ``TimerHandle`` and a libuv timer,
~580 bytes an idle keep-alive connection holds for its whole life); an entry in the queue's heap (``zonda.timers``)
costs ~140. The queue keeps one ``Loop.call_at`` armed at its earliest entry and moves it only when an entry
comes earlier; a connection's timer moves only when its deadline does (see ``DeadlineTimer``).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

from zonda.io.base import Loop, Timer
from zonda.timers import HeapTimer, TimerHeap


class DeadlineQueue(TimerHeap):
    """Every connection timer of one loop (``deadline_queue``), fired from one timer of that loop's."""

    def __init__(self, loop: Loop) -> None:
        super().__init__()
        # The loop keys ``_queues``, which would keep it (and its server) forever through a strong reference;
        # its connections hold it while they live.
        self._loop = weakref.ref(loop)
        self._handle: Timer | None = None  # the loop's timer, armed at ``_armed_at``
        self._armed_at = math.inf
        self._firing = False  # run_due is under way: the loop's timer is armed once it is over

    def call_at(self, when: float, callback: Callable[[], object]) -> HeapTimer:
        timer = self.push(when, callback)
        if when < self._armed_at and not self._firing:
            self._arm(when)
        return timer

    def note_cancelled(self) -> None:
        super().note_cancelled()
        if (
            not len(self) and self._handle is not None
        ):  # the last live entry: nothing for the loop to wake for
            self._handle.cancel()
            self._handle = None
            self._armed_at = math.inf
            self._heap.clear()
            self._cancelled = 0

    def _arm(self, when: float) -> None:
        loop = self._loop()
        if loop is None:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = when
        self._handle = loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_at = math.inf
        loop = self._loop()
        if loop is None:
            return
        self._firing = True
        try:
            self.run_due(loop.time())
        finally:  # even past a BaseException from a callback: the timers still due must fire
            self._firing = False
            earliest = self.earliest()
            if earliest is not None:
                self._arm(earliest)


_queues: weakref.WeakKeyDictionary[Loop, DeadlineQueue] = weakref.WeakKeyDictionary()


def deadline_queue(loop: Loop) -> DeadlineQueue:
    """The one ``DeadlineQueue`` of ``loop``, made on first use."""
    queue = _queues.get(loop)
    if queue is None:
        queue = _queues[loop] = DeadlineQueue(loop)
    return queue


class DeadlineTimer:
    """Calls ``on_due`` at the core's deadline. Armed only when the deadline moves earlier (a later one is
    found when this fires, and the owner re-arms then): one timer per connection, not one per request."""

    __slots__ = ("_handle", "_on_due", "_queue", "at")

    def __init__(self, loop: Loop, on_due: Callable[[], None]) -> None:
        self._queue = deadline_queue(loop)
        self._on_due = on_due
        self._handle: HeapTimer | None = None
        self.at: float | None = None  # when it fires; None: not armed

    def arm(self, deadline: float | None) -> None:
        if deadline is not None and (self.at is None or deadline < self.at):
            if self._handle is not None:
                self._handle.cancel()
            self.at = deadline
            self._handle = self._queue.call_at(deadline, self)  # called itself: no bound method per arm

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = self.at = None

    def __call__(self) -> None:
        """Due: the queue fires it."""
        self._handle = self.at = None
        self._on_due()
