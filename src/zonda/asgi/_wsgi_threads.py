"""Threads and the event loop for WSGI apps: the per-process job pool, the per-request channel, wsgi.input.

``JobPool`` runs jobs in up to ``size`` threads of its own. Jobs wait in a deque; the loop hands them over once
per loop iteration, so a burst of requests wakes one pool thread rather than one per request (each wake-up of
a thread that then waits for the GIL costs the loop two context switches). A pool thread (a "drainer") runs
queued jobs until none is left, then parks. More drainers, up to ``size``, start only once every running one
has been inside its current job for ``STALL`` seconds, i.e. is blocked in the app: a fast app runs on one
thread per burst, a blocking one gets all ``size`` threads within a few milliseconds. (A drainer that has not
picked up a job yet is waiting for the GIL while the loop works; more threads would only wait with it.)

``Channel`` is the mailbox between one request's app thread (producer) and its pump on the loop (consumer).
Neither side holds the channel lock while it waits: the loop awaits a future that the thread resolves through
the loop's ``Waker`` (one ``call_soon_threadsafe`` per burst of finished requests, through ``io.base.Loop``);
the thread blocks on a plain lock the loop releases. See ``zonda.asgi.wsgi`` for the invariants (bounded
buffering, back-pressure, unwinding on disconnect).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from zonda.asgi.types import Message, Receive, Send
from zonda.errors import ClientDisconnected
from zonda.io.base import Loop, Timer, Waiter

error_log = logging.getLogger("zonda.error")

HIGH_WATER = 512 * 1024  # response body bytes queued between the app thread and the loop before it blocks
STALL = 0.001  # seconds in which no queued job started: the running ones block, so start more threads
_COALESCE = 64 * 1024  # small chunks waiting together are joined into one write up to this size
ZEROCOPY = "http.response.zerocopysend"
DISCONNECT: Message = {"type": "http.disconnect"}
BODY_END = object()  # the response body is complete (close() may still be running)
_NEED_INPUT = object()  # the app thread waits for the next request body message


class _Worker:
    """One pool thread: ``wake`` is held while it is parked; ``since`` says when the job in hand started."""

    __slots__ = ("exit", "since", "wake")

    def __init__(self) -> None:
        self.since = 0.0  # time.monotonic() when the job in hand started; 0.0 between jobs
        self.exit = False  # set with a wake-up: leave instead of draining (shutdown)
        self.wake = threading.Lock()
        self.wake.acquire()


class JobPool:
    """Runs ``run(*job)`` for each submitted job in at most ``size`` threads of this process.

    The pool keeps its own threads rather than a ``ThreadPoolExecutor``: waking a parked thread is one lock
    release, where ``executor.submit()`` made a future, a condition and a semaphore round for every burst.
    Threads are daemons (a thread stuck in the app never holds up the exit), started on demand and parked
    while the queue is empty; ``shutdown()`` lets them finish the queued jobs and stop.
    """

    def __init__(self, size: int, run: Callable[..., None], name: str = "zonda-wsgi") -> None:
        self.size = size
        self._run = run
        self._name = name
        self._reset()
        _pools.add(self)

    def _reset(self) -> None:
        """No threads and no jobs (at start, and in a forked child, which inherits neither)."""
        self._jobs: deque[tuple[Any, ...]] = deque()
        self._lock = threading.Lock()
        self._busy: list[_Worker] = []  # awake threads, running jobs from _jobs
        self._idle: list[_Worker] = []  # parked threads, the most recently parked last
        self._threads: set[threading.Thread] = set()
        self._closed = False
        self._dispatching = False
        self._recheck: tuple[Loop, Timer] | None = None

    @property
    def threads(self) -> int:
        """Threads alive in this process, busy or parked."""
        return len(self._threads)

    def submit(self, loop: Loop, *job: Any) -> None:
        """Queue a job (on the loop); it starts once a pool thread is free."""
        self._jobs.append(job)  # atomic; the dispatcher counts under the lock
        if not self._dispatching:
            self._dispatching = True
            loop.call_soon(partial(self._dispatch, loop))

    def _dispatch(self, loop: Loop) -> None:
        self._dispatching = False
        wake: list[_Worker] = []
        new: list[_Worker] = []
        with self._lock:
            queued = len(self._jobs)
            busy = self._busy
            spare = self.size - len(busy)
            if not queued or spare <= 0:
                return
            self._closed = False
            wanted = min(queued, spare)
            if not busy:
                wanted = 1
            else:
                # More threads only once every awake one is inside a job that started STALL ago, i.e. blocked
                # in the app. One yet to pick up a job is waiting for the GIL, as a new thread would.
                now = time.monotonic()
                for worker in busy:
                    if not worker.since or now - worker.since < STALL:
                        wanted = 0
                        break
            idle = self._idle
            for _ in range(wanted):
                if idle:
                    wake.append(idle.pop())
                else:
                    new.append(_Worker())
            busy += wake
            busy += new
            recheck = queued > wanted and len(busy) < self.size
        for worker in wake:
            worker.wake.release()
        for worker in new:
            thread = threading.Thread(target=self._work, args=(worker,), name=self._name, daemon=True)
            self._threads.add(thread)
            thread.start()
        if recheck and (self._recheck is None or self._recheck[0] is not loop):
            self._recheck = (loop, loop.call_at(loop.time() + STALL, partial(self._recheck_now, loop)))

    def _recheck_now(self, loop: Loop) -> None:
        self._recheck = None
        self._dispatch(loop)

    def _work(self, worker: _Worker) -> None:
        """A pool thread: run queued jobs until none is left, park, repeat until told to exit."""
        jobs = self._jobs
        run = self._run
        monotonic = time.monotonic
        while True:
            try:
                job = jobs.popleft()
            except IndexError:
                with self._lock:
                    if jobs:
                        continue  # queued meanwhile, as the dispatcher saw this thread still busy
                    self._busy.remove(worker)
                    if self._closed:
                        self._threads.discard(threading.current_thread())
                        return
                    self._idle.append(worker)
                worker.wake.acquire()  # parked until dispatched (or shut down)
                if worker.exit:
                    with self._lock:
                        self._threads.discard(threading.current_thread())
                    return
                continue
            worker.since = monotonic()
            try:
                run(*job)
            except BaseException:  # run() reports its own outcome: this is a bug, and the thread carries on
                error_log.exception("A WSGI job failed outside the app")
            worker.since = 0.0

    def shutdown(self, wait: bool = False) -> None:
        """Stop the threads once the jobs already queued are done (``wait``: until they have stopped)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for worker in idle:
            worker.exit = True
            worker.wake.release()
        if self._recheck is not None:
            self._recheck[1].cancel()
            self._recheck = None
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()


class ContextJobPool(JobPool):
    """A ``JobPool`` whose jobs run in a copy of the submitting task's context (``contextvars``), so what was
    current there is current in the app's thread: the request's span with ``--otel``. A plain ``JobPool``
    serves without it, copying nothing per request."""

    def __init__(self, size: int, run: Callable[..., None], name: str = "zonda-wsgi") -> None:
        super().__init__(size, partial(_run_in_context, run), name)

    def submit(self, loop: Loop, *job: Any) -> None:
        JobPool.submit(self, loop, contextvars.copy_context(), *job)


def _run_in_context(run: Callable[..., None], context: contextvars.Context, *job: Any) -> None:
    context.run(run, *job)


_pools: weakref.WeakSet[JobPool] = weakref.WeakSet()


def _after_fork() -> None:
    for pool in _pools:
        pool._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


class _End:
    """The app thread's job ended; ``error`` is what it raised."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


_DONE = _End(None)  # the end of every job that raised nothing


class Waker:
    """Resolves one loop's futures from other threads: one ``call_soon_threadsafe`` per burst, not per future.

    No lock: ``deque`` appends and pops are atomic, and ``_run`` clears ``_scheduled`` before it drains, so a
    waiter added after the drain began sees the flag down and schedules another run (at worst a spare one).
    """

    __slots__ = ("_pending", "_scheduled", "loop")

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self._pending: deque[Waiter] = deque()
        self._scheduled = False

    def wake(self, waiter: Waiter) -> None:
        """From any thread: resolve ``waiter`` on the loop soon."""
        self._pending.append(waiter)
        if not self._scheduled:
            self._scheduled = True
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody left to wake
                self.loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        self._scheduled = False
        pending = self._pending
        while pending:
            waiter = pending.popleft()
            if not waiter.done():
                waiter.set_result(None)


class Channel:
    """The mailbox between one request's app thread (producer) and its pump on the loop (consumer)."""

    __slots__ = ("_input", "_input_waiter", "_items", "_lock", "_parked", "_pending", "_waiter", "_waker",
                 "buffered", "closed")  # fmt: skip

    def __init__(self, waker: Waker) -> None:
        self._waker = waker
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._pending = 0  # items put and not yet fully handled by the loop
        # The pump waits for items; the first waiter exists before the job is queued, so the app thread cannot
        # finish before there is something to wake (and the pump needs no lock to start waiting).
        self._waiter: Waiter | None = waker.loop.create_waiter()
        self._parked: Any = None  # a lock the app thread blocks on until the pump makes progress
        self._input_waiter: Any = None  # a lock the app thread blocks on until _input is set
        self._input: Message | None = None
        self.buffered = 0  # response body bytes put and not yet sent
        self.closed = False  # the client is gone or the pump stopped: the app thread must unwind

    # ------------------------------------------------------------ app thread side

    def _park(self) -> None:
        """Block until the pump makes progress; called and returns with ``_lock`` held."""
        parked = threading.Lock()
        parked.acquire()
        self._parked = parked
        self._lock.release()
        try:
            parked.acquire()
        finally:
            self._lock.acquire()

    def put(self, items: list[Any], size: int = 0) -> None:
        """Queue response items (``size`` body bytes); block while too much body is queued.

        Raises ClientDisconnected once the channel is closed.
        """
        with self._lock:
            while self.buffered >= HIGH_WATER and not self.closed:
                self._park()
            if self.closed:
                raise ClientDisconnected("the client disconnected before the response was sent")
            self._items += items
            self._pending += len(items)
            self.buffered += size
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._waker.wake(waiter)

    def receive(self) -> Message:
        """Ask the loop for the next request message and block until it comes."""
        with self._lock:
            if self.closed:
                return DISCONNECT
            answered = self._input_waiter = threading.Lock()
            answered.acquire()
            self._items.append(_NEED_INPUT)
            self._pending += 1
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._waker.wake(waiter)
        answered.acquire()
        with self._lock:
            message, self._input = self._input, None
        return message if message is not None else DISCONNECT

    def drain(self) -> None:
        """Block until the loop has handled everything queued so far (or the channel closed)."""
        with self._lock:
            while self._pending and not self.closed:
                self._park()

    def finish(self, error: BaseException | None, items: list[Any] | None = None, size: int = 0) -> None:
        """The job is over, after ``items`` (the last response items, if any). Never blocks or raises."""
        end = _DONE if error is None else _End(error)
        with self._lock:
            if items and not self.closed:
                items.append(end)
                self._items += items
                self._pending += len(items)
                self.buffered += size
            else:
                self._items.append(end)
                self._pending += 1
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._waker.wake(waiter)

    def finish_whole(self, whole: tuple[Message, bytes]) -> None:
        """The job is over with the usual response, whole: ``(start message, body)``, one item to hand over."""
        with self._lock:
            self._items.append(whole)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._waker.wake(waiter)

    # ------------------------------------------------------------ loop side

    async def pump(self, receive: Receive, send: Send) -> None:
        """Forward the app thread's items until its job ends; raise what the app raised."""
        lock = self._lock
        waiter = self._waiter
        end = None
        try:
            while True:
                if waiter is not None:
                    await waiter
                with lock:
                    batch = self._items
                    if not batch:
                        waiter = self._waiter = self._waker.loop.create_waiter()
                        continue
                    self._items = []
                    waiter = None
                whole = batch[0]
                if type(whole) is tuple:
                    # The usual response, whole (finish_whole): the thread is done with the channel.
                    end = _DONE
                    await send(whole[0])
                    await send({"type": "http.response.body", "body": whole[1], "more_body": False})
                    return
                size = 0
                try:
                    size, end = await self._forward(batch, receive, send)
                finally:
                    with lock:
                        self.buffered -= size
                        self._pending -= len(batch)
                        self._unpark()
                if end is not None:
                    break
        finally:
            if end is None:
                self.close()
        error = end.error
        if error is None or (self.closed and isinstance(error, ClientDisconnected)):
            return
        if isinstance(error, Exception):
            raise error
        raise RuntimeError(f"the WSGI app raised {type(error).__name__}") from error

    async def _forward(self, batch: list[Any], receive: Receive, send: Send) -> tuple[int, _End | None]:
        """Send one batch of items; return the body bytes it held and the job's end, if it came."""
        size = 0
        count = len(batch)
        i = 0
        while i < count:
            item = batch[i]
            i += 1
            message: Message
            if type(item) is bytes:
                size += len(item)
                if i < count and type(batch[i]) is bytes and len(item) < _COALESCE:
                    parts = [item]
                    total = len(item)
                    while i < count and type(batch[i]) is bytes and total < _COALESCE:
                        parts.append(batch[i])
                        total += len(batch[i])
                        i += 1
                    size += total - len(item)
                    item = b"".join(parts)
                last = i < count and batch[i] is BODY_END
                i += last
                message = {"type": "http.response.body", "body": item, "more_body": not last}
            elif type(item) is dict:
                message = item
                if item["type"] == ZEROCOPY and i < count and batch[i] is BODY_END:
                    item["more_body"] = False
                    i += 1
            elif item is BODY_END:
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            elif item is _NEED_INPUT:
                await self._fetch_input(receive)
                continue
            else:
                return size, item  # an _End, always the last item
            if not self.closed:
                try:
                    await send(message)
                except ClientDisconnected:
                    self.close()
        return size, None

    async def _fetch_input(self, receive: Receive) -> None:
        if self.closed:
            return
        message = await receive()
        if message.get("type") != "http.request":
            self.close()
            return
        with self._lock:
            answered, self._input_waiter = self._input_waiter, None
            self._input = message
        if answered is not None:
            answered.release()

    def _unpark(self) -> None:
        parked, self._parked = self._parked, None
        if parked is not None:
            parked.release()

    def close(self) -> None:
        """The client is gone or the pump stopped: release the app thread from any wait."""
        with self._lock:
            self.closed = True
            self._waiter = None
            self._unpark()
            answered, self._input_waiter = self._input_waiter, None
            if answered is not None:
                self._input = DISCONNECT
                answered.release()


class WSGIInput:
    """``wsgi.input``: the request body as it arrives; a read blocks the app thread until the loop delivers.

    ``read(n)`` returns ``n`` bytes unless the body ends first. At most one body message is held besides what
    the caller asked for. A client that disconnects mid-body makes reads raise ``ClientDisconnected``.
    """

    __slots__ = ("_buf", "_channel", "_more", "_pos")

    def __init__(self, channel: Channel | None, first: Message | None = None, more: bool = True) -> None:
        self._channel = channel
        self._buf = b""
        self._pos = 0
        self._more = more and channel is not None
        if first is not None:
            self._buf = first.get("body", b"")
            self._more = bool(first.get("more_body", False))

    def _next_chunk(self) -> bytes | None:
        """The next non-empty piece of body, or None at its end. Raises ClientDisconnected."""
        while self._more:
            assert self._channel is not None
            message = self._channel.receive()
            if message["type"] != "http.request":
                self._more = False
                raise ClientDisconnected("the client disconnected before the request body was complete")
            self._more = bool(message.get("more_body", False))
            body: bytes = message.get("body", b"")
            if body:
                return body
        return None

    def _take_rest(self) -> list[bytes]:
        rest = self._buf[self._pos :]
        self._buf = b""
        self._pos = 0
        return [rest] if rest else []

    def read(self, size: int | None = -1) -> bytes:
        buf, pos = self._buf, self._pos
        if size is not None and size >= 0 and pos + size <= len(buf):
            self._pos = pos + size
            return buf[pos : pos + size]
        parts = self._take_rest()
        need = -1 if size is None or size < 0 else size - (len(buf) - pos)
        while need != 0:
            chunk = self._next_chunk()
            if chunk is None:
                break
            if 0 <= need < len(chunk):
                parts.append(chunk[:need])
                self._buf, self._pos = chunk, need
                break
            parts.append(chunk)
            if need > 0:
                need -= len(chunk)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        buf, pos = self._buf, self._pos
        limit = -1 if size is None or size < 0 else size
        end = len(buf) if limit < 0 else min(len(buf), pos + limit)
        newline = buf.find(b"\n", pos, end)
        if newline >= 0 or end < len(buf):
            self._pos = newline + 1 if newline >= 0 else end
            return buf[pos : self._pos]
        parts = self._take_rest()
        got = len(buf) - pos
        while limit < 0 or got < limit:
            chunk = self._next_chunk()
            if chunk is None:
                break
            room = len(chunk) if limit < 0 else min(len(chunk), limit - got)
            newline = chunk.find(b"\n", 0, room)
            take = newline + 1 if newline >= 0 else room
            parts.append(chunk[:take] if take < len(chunk) else chunk)
            got += take
            if take < len(chunk):
                self._buf, self._pos = chunk, take
            if newline >= 0:
                break
        return b"".join(parts)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class NoBody:
    """``wsgi.input`` for a request without a body."""

    __slots__ = ()

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


NO_BODY = NoBody()
