"""A heap of timers that knows no event loop: whoever owns it says when it is time (``run_due``).

Two owners: the trio driver's timer task (``io.trio.TimerQueue``: every ``call_at`` of a trio loop), and
``connection.timer.DeadlineQueue`` (every connection timer of a loop, on one timer of that loop's own: a uvloop
``TimerHandle`` with its libuv timer is ~580 bytes, an entry here ~140).

``push`` is a heap push. ``cancel()`` marks the entry and drops its callback at once (a connection's timer
callback holds the connection: a closed one must not wait in the heap until its time comes); the entry itself
stays until its time or until most of the heap is cancelled, when it is compacted. Ties fire in push order.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable

error_log = logging.getLogger("zonda.error")


class HeapTimer:
    """An ``io.base.Timer``: an entry in its ``TimerHeap`` until it fires or is cancelled."""

    __slots__ = ("_heap", "callback")

    def __init__(self, heap: TimerHeap, callback: Callable[[], object]) -> None:
        self._heap = heap
        self.callback: Callable[[], object] | None = callback  # None once cancelled or fired

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self._heap.note_cancelled()


class TimerHeap:
    """Timers ordered by when they are due (see the module docstring)."""

    COMPACT_AFTER = 256  # cancelled entries tolerated before compaction is considered

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, HeapTimer]] = []
        self._order = itertools.count()  # ties fire in push order
        self._cancelled = 0  # cancelled entries still in the heap

    def push(self, when: float, callback: Callable[[], object]) -> HeapTimer:
        timer = HeapTimer(self, callback)
        heapq.heappush(self._heap, (when, next(self._order), timer))
        return timer

    def note_cancelled(self) -> None:
        self._cancelled += 1
        heap = self._heap
        if self._cancelled > self.COMPACT_AFTER and self._cancelled * 2 > len(heap):
            heap[:] = [entry for entry in heap if entry[2].callback is not None]
            heapq.heapify(heap)
            self._cancelled = 0

    def __len__(self) -> int:
        """The timers still to fire (cancelled ones left out)."""
        return len(self._heap) - self._cancelled

    def earliest(self) -> float | None:
        """When the next timer still to fire is due; None if there is none."""
        heap = self._heap
        while heap and heap[0][2].callback is None:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> None:
        """Fire every timer due at ``now``, in order, timers pushed meanwhile included. An exception from a
        callback is logged, and the others run."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            callback = timer.callback
            if callback is None:
                self._cancelled -= 1
                continue
            timer.callback = None  # fired: a late cancel() is a no-op
            try:
                callback()
            except Exception:
                error_log.exception("Error in a timer callback")
