"""The loop-neutral timer heap under the trio driver's timers and the connections' deadline queue."""

from __future__ import annotations

import logging

import pytest

from zonda.timers import TimerHeap


def test_due_timers_fire_in_order_ties_in_push_order_and_cancelled_ones_never() -> None:
    heap = TimerHeap()
    fired: list[str] = []
    heap.push(3.0, lambda: fired.append("c"))
    heap.push(1.0, lambda: fired.append("a"))
    heap.push(1.0, lambda: fired.append("a2"))
    cancelled = heap.push(2.0, lambda: fired.append("cancelled"))
    cancelled.cancel()
    cancelled.cancel()  # twice: counted once
    assert len(heap) == 3
    heap.run_due(2.5)
    assert fired == ["a", "a2"]
    assert heap.earliest() == 3.0
    heap.run_due(3.0)
    assert fired == ["a", "a2", "c"]
    assert heap.earliest() is None and len(heap) == 0


def test_a_failing_callback_is_logged_and_the_others_run(caplog: pytest.LogCaptureFixture) -> None:
    heap = TimerHeap()
    fired: list[str] = []

    def failing() -> None:
        heap.push(1.0, lambda: fired.append("pushed while firing"))  # due already: fired in the same run
        raise RuntimeError("boom")

    heap.push(1.0, failing)
    heap.push(2.0, lambda: fired.append("after"))
    with caplog.at_level(logging.ERROR, "zonda.error"):
        heap.run_due(2.0)
    assert fired == ["pushed while firing", "after"]
    assert "boom" in caplog.text


def test_a_fired_timers_cancel_is_a_no_op_and_cancelled_entries_are_compacted_away() -> None:
    heap = TimerHeap()
    fired = heap.push(1.0, lambda: None)
    heap.run_due(1.0)
    fired.cancel()
    assert len(heap) == 0
    for _ in range(1000):
        heap.push(60.0, lambda: None).cancel()
    assert len(heap._heap) < 600 and len(heap) == 0
