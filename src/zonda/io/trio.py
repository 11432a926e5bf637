"""The trio driver: the ``io.base`` seam on trio, and accepting connections on already-bound sockets.

Use it inside ``trio.run``::

    async with open_loop() as loop:                      # timers, app tasks
        listeners = serve_trio(loop, sockets, shared, HTTP1Connection)
        ...                                              # serve until told to stop
        listeners.close()                                # stop accepting
        ...                                              # drain connections (loop-neutral)
        loop.cancel_app_tasks()
        await loop.wait_app_tasks(1.0)

or ``run(main)`` for the same without an enclosing ``trio.run``. Everything a connection does lives in
``zonda.connection``; this module only accepts (the TLS handshake done before ``open()``), keeps the time
and the timers, starts app tasks, and wakes the loop from threads. A connection's bytes are
``zonda.io._trio_stream``'s.

Timers: one timer task per loop with a heap (as asyncio keeps its ``TimerHandle`` s), sleeping in a cancel scope
whose deadline is the earliest timer. ``call_at`` is a heap push, plus moving that deadline when the new timer
is the earliest; ``cancel()`` marks the entry, and the heap is compacted when most of it is cancelled. A cancel
scope or a task per ``call_at`` would cost a task switch or a deadline-heap entry in trio's runner for each
re-arm of each connection's timer.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import math
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol, cast

import trio

from zonda.io._addresses import local_address, peer_address
from zonda.io._trio_stream import TrioFileSender, TrioStream
from zonda.io._trio_waiter import TrioWaiter

if TYPE_CHECKING:
    from zonda.connection.http1 import Address
    from zonda.io.base import ByteStream, FileDrain, StreamProtocol
    from zonda.server import ServerShared

error_log = logging.getLogger("zonda.error")

APP_TASK = "zonda.app"  # the name of app tasks (a string: trio would otherwise derive one per task)
# accept() failures that a moment's wait may cure (out of descriptors or memory): log, wait, accept again
ACCEPT_RETRY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_RETRY_DELAY = 0.1


def _run_logged(callback: Callable[[], object]) -> None:
    """A callback from ``call_soon``: an exception in it is logged (in trio it would end the run)."""
    try:
        callback()
    except Exception:
        error_log.exception("Error in a callback scheduled on the trio loop")


class TrioTimer:
    """An ``io.base.Timer``: an entry in its ``TimerQueue``'s heap until it fires or is cancelled."""

    __slots__ = ("_queue", "callback", "cancelled")

    def __init__(self, queue: TimerQueue, callback: Callable[[], object]) -> None:
        self._queue = queue
        self.callback = callback
        self.cancelled = False  # also set once fired: a late cancel() is then a no-op

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._queue.note_cancelled()


class TimerQueue:
    """Every timer of one loop, fired by one task (see the module docstring)."""

    COMPACT_AFTER = 256  # cancelled entries tolerated before compaction is considered

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, TrioTimer]] = []
        self._order = itertools.count()  # ties fire in call order
        self._cancelled = 0  # cancelled entries still in the heap
        self._scope: trio.CancelScope | None = None  # the task's sleep, while it sleeps

    def call_at(self, when: float, callback: Callable[[], object], /) -> TrioTimer:
        timer = TrioTimer(self, callback)
        heapq.heappush(self._heap, (when, next(self._order), timer))
        scope = self._scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when
        return timer

    def note_cancelled(self) -> None:
        self._cancelled += 1
        heap = self._heap
        if self._cancelled > self.COMPACT_AFTER and self._cancelled * 2 > len(heap):
            heap[:] = [entry for entry in heap if not entry[2].cancelled]
            heapq.heapify(heap)
            self._cancelled = 0

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled

    async def run(self) -> None:
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                timer = heapq.heappop(heap)[2]
                if timer.cancelled:
                    self._cancelled -= 1
                    continue
                timer.cancelled = True
                try:
                    timer.callback()
                except Exception:
                    error_log.exception("Error in a timer callback on the trio loop")
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None


class TrioLoop:
    """The ``io.base.Loop`` of trio; made by ``open_loop()``.

    App calls (``spawn``) run in a nursery of their own, so that ``cancel_app_tasks()`` ends them and nothing
    else; other long-lived tasks (lifespan) go to ``start_task``. Both are cancelled when the loop closes.
    """

    def __init__(self, system: trio.Nursery, apps: trio.Nursery, timers: TimerQueue) -> None:
        self._system = system
        self._apps = apps
        self._timers = timers
        self._token = trio.lowlevel.current_trio_token()
        self.time: Callable[[], float] = trio.current_time
        self.call_at: Callable[[float, Callable[[], object]], TrioTimer] = timers.call_at
        self.create_waiter: Callable[[], TrioWaiter] = TrioWaiter
        self.app_tasks = 0  # app calls still running
        self._idle: TrioWaiter | None = None  # wait_app_tasks(), until app_tasks is 0

    def call_soon(self, callback: Callable[[], object], /) -> None:
        self._token.run_sync_soon(_run_logged, callback)

    def call_soon_threadsafe(self, callback: Callable[[], object], /) -> None:
        """From any thread. Raises ``trio.RunFinishedError`` (a RuntimeError) once the run has ended."""
        self._token.run_sync_soon(_run_logged, callback)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run an app call as a trio task (in a copy of the calling task's context), from the next batch of
        the scheduler: trio has no eager start."""
        self._apps.start_soon(self._run_app, coro, name=APP_TASK)

    async def _run_app(self, coro: Coroutine[Any, Any, None]) -> None:
        self.app_tasks += 1
        try:
            await coro
        except Exception:  # the bridge answers for the app's errors: this is a bug of zonda's own
            error_log.exception("Error in an app task")
        finally:
            self.app_tasks -= 1
            idle = self._idle
            if not self.app_tasks and idle is not None:
                self._idle = None
                idle.set_result(None)

    def start_task(self, coro: Coroutine[Any, Any, None], name: str = "zonda.task") -> None:
        """Run ``coro`` as a task that ``cancel_app_tasks`` leaves alone (the lifespan); its errors propagate."""

        async def run() -> None:
            await coro

        self._system.start_soon(run, name=name)

    def cancel_app_tasks(self) -> None:
        """Cancel every app call, now and from now on (the graceful shutdown's end)."""
        self._apps.cancel_scope.cancel()

    async def wait_app_tasks(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the app calls to end; return whether they all did."""
        with trio.move_on_after(timeout):
            while self.app_tasks:
                waiter = self._idle = TrioWaiter()
                await waiter
        return not self.app_tasks

    def file_sender(self, stream: ByteStream, plaintext: bool, conn: FileDrain) -> TrioFileSender:
        return TrioFileSender(stream, conn)


@asynccontextmanager
async def open_loop() -> AsyncIterator[TrioLoop]:
    """A ``TrioLoop`` for the block; on leaving it, every task the loop started is cancelled (connections
    included). An exception from the block comes out as it is, not in an ExceptionGroup."""
    failure: Exception | None = None
    async with trio.open_nursery() as system:
        timers = TimerQueue()
        system.start_soon(timers.run, name="zonda.timers")
        async with trio.open_nursery() as apps:
            try:
                yield TrioLoop(system, apps, timers)
            except Exception as exc:
                failure = exc
            finally:
                apps.cancel_scope.cancel()
                system.cancel_scope.cancel()
    if failure is not None:
        raise failure


def run(main: Callable[[TrioLoop], Awaitable[None]]) -> None:
    """``trio.run`` of ``main(loop)`` inside ``open_loop()``."""

    async def entry() -> None:
        async with open_loop() as loop:
            await main(loop)

    trio.run(entry)


class AcceptedConnection(Protocol):
    """What ``serve_trio`` makes per connection (``zonda.connection``'s ``HTTP1Connection`` and subclasses)."""

    def open(
        self,
        stream: ByteStream,
        client: Address | None,
        server: tuple[str, int | None] | None,
        ssl_object: ssl.SSLObject | None,
    ) -> None: ...


class _SSLObjectKeeper:
    """Given to ``trio.SSLStream`` as its context: it makes the connection's ``SSLObject`` with the real context
    and keeps it. ``SSLStream`` forwards a few of the object's methods but never gives the object itself, which
    ``zonda.tls`` needs whole (``SSLObject.get_verified_chain`` on Python 3.13+)."""

    __slots__ = ("context", "ssl_object")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.ssl_object: ssl.SSLObject | None = None

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        self.ssl_object = self.context.wrap_bio(
            incoming, outgoing, server_side=server_side, server_hostname=server_hostname, session=session
        )
        return self.ssl_object


class TrioListeners:
    """The accept loops of ``serve_trio``: ``close()`` stops accepting (and closes the listening sockets);
    connections already accepted go on."""

    def __init__(
        self,
        loop: TrioLoop,
        shared: ServerShared,
        factory: Callable[[ServerShared, TrioLoop], AcceptedConnection],
        handshake_timeout: float,
    ) -> None:
        self._loop = loop
        self._shared = shared
        self._factory = factory
        self._handshake_timeout = handshake_timeout
        self._keeper = _SSLObjectKeeper(shared.ssl_context) if shared.ssl_context is not None else None
        self._scopes: list[trio.CancelScope] = []
        self._listeners: list[trio.SocketListener] = []
        self._running = 0
        self._stopped = trio.Event()

    def close(self) -> None:
        for scope in self._scopes:
            scope.cancel()
        for listener in self._listeners:
            listener.socket.close()

    async def wait_closed(self) -> None:
        """Wait until every accept loop has ended (after ``close()``)."""
        await self._stopped.wait()

    def _start(self, listener: trio.SocketListener) -> None:
        scope = trio.CancelScope()
        self._scopes.append(scope)
        self._listeners.append(listener)
        self._running += 1
        self._loop._system.start_soon(self._accept_loop, listener, scope, name="zonda.accept")

    async def _accept_loop(self, listener: trio.SocketListener, scope: trio.CancelScope) -> None:
        start = self._loop._system.start_soon
        try:
            with scope:
                while True:
                    try:
                        stream = await listener.accept()
                    except trio.ClosedResourceError:
                        return
                    except OSError as exc:
                        if exc.errno not in ACCEPT_RETRY_ERRNOS:
                            raise
                        error_log.error("accept() failed: %s; retrying in %gs", exc, ACCEPT_RETRY_DELAY)
                        await trio.sleep(ACCEPT_RETRY_DELAY)
                        continue
                    start(self._connection, stream, name="zonda.connection")
        finally:
            self._running -= 1
            if not self._running:
                self._stopped.set()

    async def _connection(self, socket_stream: trio.SocketStream) -> None:
        """One accepted connection: the TLS handshake, ``open()``, then this task reads until the end."""
        sock = socket_stream.socket
        try:
            client = peer_address(sock.getpeername())
            server = local_address(sock.getsockname())
        except OSError:  # reset before we looked
            sock.close()
            return
        ssl_object: ssl.SSLObject | None = None
        stream: TrioStream | None = None
        keeper = self._keeper
        if keeper is None:
            stream = TrioStream(socket_stream)
        else:
            tls = trio.SSLStream(socket_stream, cast(ssl.SSLContext, keeper), server_side=True)
            ssl_object = keeper.ssl_object
            with trio.move_on_after(self._handshake_timeout):
                try:
                    await tls.do_handshake()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # not TLS, a certificate refused, or gone: closed unseen, as asyncio does
                else:
                    stream = TrioStream(tls)
            if stream is None:
                sock.close()
                return
        connection = self._factory(self._shared, self._loop)
        stream.protocol = cast("StreamProtocol", connection)
        self._loop._system.start_soon(stream.write_loop, name="zonda.writer")
        try:
            connection.open(stream, client, server, ssl_object)
        except Exception:
            error_log.exception("Error opening a connection")
            stream.abort()
            return
        await stream.read()


def serve_trio(
    loop: TrioLoop,
    sockets: Iterable[socket.socket],
    shared: ServerShared,
    factory: Callable[[ServerShared, TrioLoop], AcceptedConnection],
    handshake_timeout: float = 10.0,
) -> TrioListeners:
    """Accept on ``sockets`` (bound and listening stdlib sockets) until ``close()``: each connection gets
    ``factory(shared, loop)`` (e.g. ``HTTP1Connection``), opened once its TLS handshake (``shared.ssl_context``)
    is done within ``handshake_timeout`` seconds."""
    listeners = TrioListeners(loop, shared, factory, handshake_timeout)
    for sock in sockets:
        listeners._start(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    return listeners
