"""The connection timers' queue: every connection timer of a loop in one heap, on one timer of the loop's."""

from __future__ import annotations

import gc
import weakref

from fakeio import FakeLoop
from zonda.connection.timer import DeadlineTimer, deadline_queue


def test_timers_fire_in_deadline_order_from_one_loop_timer() -> None:
    loop = FakeLoop()
    fired: list[str] = []
    for name, delay in (("c", 3.0), ("a", 1.0), ("b", 2.0), ("a2", 1.0)):  # a tie fires in arming order
        DeadlineTimer(loop, lambda name=name: fired.append(name)).arm(loop.now + delay)  # type: ignore[misc]
    assert len([timer for timer in loop.timers if not timer.cancelled]) == 1  # one loop timer for them all
    assert loop.next_timer() == loop.now + 1.0
    loop.advance(1.5)
    assert fired == ["a", "a2"]
    assert loop.next_timer() == loop.now + 0.5  # re-armed for the next entry
    loop.advance(2.0)
    assert fired == ["a", "a2", "b", "c"]
    assert loop.next_timer() is None


def test_an_earlier_deadline_rearms_the_loop_timer_and_a_later_one_waits_for_the_owner() -> None:
    loop = FakeLoop()
    fired: list[float] = []
    timer = DeadlineTimer(loop, lambda: fired.append(loop.now))
    timer.arm(loop.now + 10)
    timer.arm(loop.now + 20)  # later: not moved (the owner finds it when this fires)
    assert timer.at == loop.now + 10
    timer.arm(loop.now + 2)  # earlier: moved, and the loop's timer with it
    assert loop.next_timer() == loop.now + 2
    start = loop.now
    loop.advance(30)
    assert fired == [start + 2]  # once: the entry for +10 was cancelled when it moved


def test_a_timer_armed_while_the_queue_fires_is_kept() -> None:
    loop = FakeLoop()
    fired: list[str] = []
    timer = DeadlineTimer(loop, lambda: (fired.append("again"), timer.arm(loop.now + 5)))
    DeadlineTimer(loop, lambda: (fired.append("first"), timer.arm(loop.now + 1))).arm(loop.now + 1)
    loop.advance(1)
    assert fired == ["first"]
    assert loop.next_timer() == loop.now + 1
    loop.advance(1)
    assert fired == ["first", "again"]
    assert loop.next_timer() == loop.now + 5


def test_a_cancelled_timer_lets_go_of_its_owner_at_once_and_never_fires() -> None:
    class Owner:
        def __init__(self, loop: FakeLoop) -> None:
            self.timer = DeadlineTimer(loop, self.on_due)

        def on_due(self) -> None:
            raise AssertionError("a cancelled timer fired")

    loop = FakeLoop()
    keep = DeadlineTimer(loop, lambda: None)
    keep.arm(loop.now + 100)
    owner = Owner(loop)
    owner.timer.arm(loop.now + 60)
    owner.timer.cancel()
    gone = weakref.ref(owner)
    del owner
    gc.collect()
    assert gone() is None  # its entry may wait in the heap: it holds nothing of the owner's
    loop.advance(61)


def test_cancelling_the_last_timer_disarms_the_loops_timer() -> None:
    loop = FakeLoop()
    timer = DeadlineTimer(loop, lambda: None)
    timer.arm(loop.now + 5)
    timer.cancel()
    assert loop.next_timer() is None
    timer.arm(loop.now + 3)  # armed again later: the queue arms the loop again
    assert loop.next_timer() == loop.now + 3


def test_one_queue_per_loop() -> None:
    first, second = FakeLoop(), FakeLoop()
    assert deadline_queue(first) is deadline_queue(first)
    assert deadline_queue(first) is not deadline_queue(second)
    queue = weakref.ref(deadline_queue(second))
    del second
    gc.collect()
    assert queue() is None  # a loop's queue goes with the loop
