"""The trio driver: the ``io.base`` seam (``Loop``, ``Runtime``) on trio.

``zonda.io.run("trio", server.serve())`` runs a server on it; inside a program's own ``trio.run``::

    async with open_runtime():                # timers, app tasks, connections; running() finds it
        await server.serve()

Everything a connection does lives in ``zonda.connection``; this module only accepts (the TLS handshake done
before ``open()``), keeps the time and the timers, starts app tasks, and wakes the loop from threads and
signals. A connection's bytes are ``zonda.io._trio_stream``'s.

Tasks: one system nursery holds the timer task, accept loops, connections' readers and writers, and the
server's own tasks (``Runtime.start``: lifespan); app calls (``Loop.spawn``) run in a nursery of their own
(``AppTasks``), which the server cancels after the graceful timeout without touching the rest.

Timers: one timer task per loop with a heap (``zonda.timers``, as asyncio keeps its ``TimerHandle`` s),
sleeping in a cancel scope whose deadline is the earliest timer. ``call_at`` is a heap push, plus moving that
deadline when the new timer is the earliest; ``cancel()`` marks the entry, and the heap is compacted when most
of it is cancelled. Measured on trio 0.35: ``call_at`` plus ``cancel`` ~0.4 us, against ~8 us to enter and
leave a cancel scope with a deadline (a task per timer costs more still), and each connection re-arms its timer
as its deadlines move.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import logging
import math
import signal
import socket
import ssl
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # a dependency of trio's there

from zonda.io._addresses import local_address, peer_address
from zonda.io._trio_datagrams import TrioDatagrams, listen_datagrams
from zonda.io._trio_stream import TrioFileSender, TrioStream, read_block
from zonda.io._trio_waiter import TrioWaiter
from zonda.timers import HeapTimer, TimerHeap

if TYPE_CHECKING:
    from zonda.io.base import (
        Accepting,
        ByteStream,
        DatagramReceiver,
        DatagramSender,
        FileDrain,
        FileSender,
        Listening,
        Loop,
        Runtime,
        TaskHandle,
        Timer,
        Waiter,
    )

T = TypeVar("T")

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


class TimerQueue(TimerHeap):
    """Every timer of one loop (``TrioLoop.call_at``), fired by one task (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._scope: trio.CancelScope | None = None  # the task's sleep, while it sleeps

    def call_at(self, when: float, callback: Callable[[], object], /) -> HeapTimer:
        timer = self.push(when, callback)
        scope = self._scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when
        return timer

    async def run(self) -> None:
        while True:
            self.run_due(trio.current_time())
            earliest = self.earliest()
            with trio.CancelScope(deadline=math.inf if earliest is None else earliest) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None


class AppTasks:
    """One generation of app calls: a nursery of its own, and the ``io.base.TaskHandle`` the server cancels at
    the end of a graceful shutdown (``Runtime.app_tasks``). Cancelling it retires the nursery; app calls
    spawned from then on start a new generation, as asyncio's tasks created after a cancel run normally."""

    def __init__(self, loop: TrioLoop) -> None:
        self._loop = loop
        self.nursery: trio.Nursery | None = None  # open once its host task runs
        self.pending: list[tuple[contextvars.Context, Coroutine[Any, Any, None]]] = []  # spawned before that
        self.count = 0  # app calls started and not finished (counted from start_soon: queued ones too)
        self._idle: list[TrioWaiter] = []

    def cancel(self) -> None:
        if self._loop._apps is self:
            self._loop._new_generation()
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()
        for _, coro in self.pending:
            coro.close()
        self.pending.clear()

    def done(self) -> bool:
        return not self.count and not self.pending

    async def wait(self) -> None:
        while not self.done():
            waiter = TrioWaiter()
            self._idle.append(waiter)
            await waiter

    def finished_one(self) -> None:
        self.count -= 1
        if not self.count and self._idle:
            for waiter in self._idle:
                waiter.set_result(None)
            self._idle.clear()

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self.nursery is not None
        self.count += 1
        self.nursery.start_soon(self._loop._run_app, self, coro, name=APP_TASK)

    async def host(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The task whose nursery the generation's app calls run in; it lives until the loop closes."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for (
                context,
                coro,
            ) in self.pending:  # in the context each was spawned from, as start_soon copies it
                context.run(self._start, coro)
            self.pending.clear()
            task_status.started()
            await trio.sleep_forever()


class TrioLoop:
    """The ``io.base.Loop`` of trio; made by ``open_runtime()`` (``TrioRuntime.loop``)."""

    def __init__(self, system: trio.Nursery, timers: TimerQueue) -> None:
        self._system = system
        self._timers = timers
        self._token = trio.lowlevel.current_trio_token()
        self.time: Callable[[], float] = trio.current_time
        self.call_at: Callable[[float, Callable[[], object]], HeapTimer] = timers.call_at
        self.create_waiter: Callable[[], TrioWaiter] = TrioWaiter
        self.read_file: Callable[[int, int, int], Awaitable[bytes]] = read_block  # in trio's thread pool
        self._apps = AppTasks(self)  # the current generation; its host is started by open_runtime

    def call_soon(self, callback: Callable[[], object], /) -> None:
        self._token.run_sync_soon(_run_logged, callback)

    def call_soon_threadsafe(self, callback: Callable[[], object], /) -> None:
        """From any thread. Raises ``trio.RunFinishedError`` (a RuntimeError) once the run has ended."""
        self._token.run_sync_soon(_run_logged, callback)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run an app call as a trio task in a copy of the calling task's context (``start_soon`` copies it),
        from the scheduler's next batch: trio has no eager start."""
        apps = self._apps
        nursery = apps.nursery
        if nursery is not None:
            apps.count += 1  # now, not when it runs: a shutdown's wait must not miss it meanwhile
            nursery.start_soon(self._run_app, apps, coro, name=APP_TASK)
        else:
            apps.pending.append((contextvars.copy_context(), coro))

    async def _run_app(self, apps: AppTasks, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except Exception:  # the bridge answers for the app's errors: this is a bug of zonda's own
            error_log.exception("Error in an app task")
        except (
            BaseExceptionGroup
        ) as group:  # only the cancellation may reach the nursery: the rest would end the run
            cancelled, rest = group.split(trio.Cancelled)
            if rest is not None:
                error_log.error("Error in an app task", exc_info=rest)
            if cancelled is not None:
                raise cancelled  # noqa: B904  # passed on as it came, not chained to its own group
        finally:
            apps.finished_one()

    def _new_generation(self) -> None:
        self._apps = AppTasks(self)
        self._system.start_soon(self._apps.host, name="zonda.apps")

    @property
    def app_calls(self) -> int:
        """App calls running in the current generation."""
        return self._apps.count

    def file_sender(self, stream: ByteStream, plaintext: bool, conn: FileDrain) -> TrioFileSender:
        return TrioFileSender(stream, plaintext, conn)

    def unacknowledged(self, stream: ByteStream) -> int:
        if isinstance(stream, TrioStream):
            return stream.unacknowledged()
        return stream.get_write_buffer_size()


class TrioTask:
    """An ``io.base.TaskHandle`` of ``TrioRuntime.start``: a task with a cancel scope of its own."""

    __slots__ = ("_finished", "scope")

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self._finished = trio.Event()

    def cancel(self) -> None:
        self.scope.cancel()

    def done(self) -> bool:
        return self._finished.is_set()

    async def wait(self) -> None:
        await self._finished.wait()

    async def run(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            with self.scope:
                await coro
        except Exception:  # as an asyncio Task keeps its error: the task ends, the server does not
            error_log.exception("Error in a task on the trio loop")
        finally:
            self._finished.set()


_runtime: contextvars.ContextVar[TrioRuntime] = contextvars.ContextVar("zonda_trio_runtime")


class TrioRuntime:
    """The ``io.base.Runtime`` of trio: what ``zonda.server`` asks of the loop, inside ``open_runtime()``."""

    name = "trio"

    def __init__(self, loop: TrioLoop) -> None:
        self.loop = loop

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        with trio.move_on_after(timeout):
            return await awaitable
        raise TimeoutError(f"not done within {timeout:g}s")

    def start(self, coro: Coroutine[Any, Any, None]) -> TrioTask:
        task = TrioTask()
        self.loop._system.start_soon(task.run, coro, name="zonda.task")
        return task

    async def join(self, tasks: Iterable[TaskHandle], timeout: float) -> None:
        with trio.move_on_after(timeout):
            for task in tasks:
                if isinstance(task, (TrioTask, AppTasks)):
                    await task.wait()
                else:  # not one of ours: poll it
                    while not task.done():
                        await trio.sleep(0.01)

    def app_tasks(self) -> list[TaskHandle]:
        apps = self.loop._apps
        return [] if apps.done() else [apps]

    def shielded(self, seconds: float) -> trio.CancelScope:
        return trio.CancelScope(shield=True, deadline=trio.current_time() + seconds)

    async def listen(
        self,
        sockets: list[socket.socket],
        connection: Callable[[], Accepting],
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: float,
        backlog: int,
    ) -> TrioListeners:
        for sock in sockets:
            sock.listen(backlog)  # as asyncio's create_server does
        return serve_trio(self.loop, sockets, connection, ssl_context, handshake_timeout)

    async def listen_datagrams(
        self, sock: socket.socket, receiver: Callable[[DatagramSender], DatagramReceiver]
    ) -> DatagramSender:
        return await listen_datagrams(self.loop._system, sock, receiver)

    def on_signals(self, signals: Iterable[int], handler: Callable[[int], None]) -> Callable[[], None]:
        """Python handlers that hand the signal to the loop (``run_sync_soon`` is safe in a signal handler)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # signals reach only the main thread; an embedder stops us with shutdown()
        token = self.loop._token
        previous: dict[int, Any] = {}

        def on_signal(signum: int, frame: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(handler, signum)

        for signum in signals:
            previous[signum] = signal.signal(signum, on_signal)

        def undo() -> None:
            for signum, old in previous.items():
                signal.signal(signum, old)
            previous.clear()

        return undo


@asynccontextmanager
async def open_runtime() -> AsyncIterator[TrioRuntime]:
    """A ``TrioRuntime`` for the block (``running()`` finds it there); on leaving it, every task it started
    is cancelled, connections included. An exception from the block comes out as it is, not in an
    ExceptionGroup.

    The tasks it starts (timers, connections, app calls, lifespan) live in a shielded nursery: a cancellation
    from outside reaches the block alone, as cancelling an asyncio task running ``serve()`` reaches only that
    task, so the block's shutdown sequence (``Runtime.shielded``) still has its connections and app to drain."""
    failure: Exception | None = None
    async with trio.open_nursery() as outer:
        system: trio.Nursery = await outer.start(_shielded_nursery, name="zonda.system")
        timers = TimerQueue()
        system.start_soon(timers.run, name="zonda.timers")
        loop = TrioLoop(system, timers)
        await system.start(loop._apps.host, name="zonda.apps")
        runtime = TrioRuntime(loop)
        token = _runtime.set(runtime)
        try:
            yield runtime
        except Exception as exc:
            failure = exc
        finally:
            _runtime.reset(token)
            system.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _shielded_nursery(task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            await trio.sleep_forever()  # until open_runtime cancels the nursery


def running() -> TrioRuntime:
    """The runtime of the ``open_runtime()`` block the caller runs in."""
    try:
        return _runtime.get()
    except LookupError:
        raise RuntimeError(
            "zonda on trio runs inside zonda.io.trio.open_runtime() (zonda.io.run('trio', ...) opens it)"
        ) from None


def serving_runtime() -> contextlib.AbstractAsyncContextManager[TrioRuntime]:
    """The ``open_runtime()`` block the caller runs in, or a new one around the caller's block: a
    ``Server.serve()`` awaited straight from a trio program works, as hypercorn's ``serve()`` does."""
    try:
        return contextlib.nullcontext(_runtime.get())
    except LookupError:
        return open_runtime()


def run(main: Coroutine[Any, Any, None]) -> None:
    """``trio.run`` of ``main`` inside ``open_runtime()``."""

    async def entry() -> None:
        async with open_runtime():
            await main

    trio.run(entry)


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
    """The accept loops of ``serve_trio`` (an ``io.base.Listening``): ``close()`` stops accepting and closes the
    listening sockets; connections already accepted go on."""

    def __init__(
        self,
        loop: TrioLoop,
        connection: Callable[[], Accepting],
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: float,
    ) -> None:
        self._loop = loop
        self._connection_factory = connection
        self._handshake_timeout = handshake_timeout
        self._keeper = _SSLObjectKeeper(ssl_context) if ssl_context is not None else None
        self._scopes: list[trio.CancelScope] = []
        self._listeners: list[trio.SocketListener] = []
        self._running = 0
        self._stopped = trio.Event()
        self._opening = 0  # accepted, not yet opened or dropped (the handshake bounds how long)

    def close(self) -> None:
        for scope in self._scopes:
            scope.cancel()
        for listener in self._listeners:
            listener.socket.close()

    async def close_gracefully(self, deadline: float) -> None:
        self.close()
        while self._opening and trio.current_time() < deadline:
            await trio.sleep(0.01)

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
                    self._opening += 1  # from here: the task that opens it starts in the next batch
                    start(self._serve_connection, stream, name="zonda.connection")
        finally:
            self._running -= 1
            if not self._running:
                self._stopped.set()

    async def _serve_connection(self, socket_stream: trio.SocketStream) -> None:
        """One accepted connection: the TLS handshake, ``open()``, then this task reads until the end."""
        try:
            stream = await self._open(socket_stream)
        finally:
            self._opening -= 1
        if stream is not None:
            await stream.read()

    async def _open(self, socket_stream: trio.SocketStream) -> TrioStream | None:
        """The TLS handshake and ``open()``; the stream to read, or None: the connection was dropped."""
        sock = socket_stream.socket
        try:
            client = peer_address(sock.getpeername())
            server = local_address(sock.getsockname())
        except OSError:  # reset before we looked
            sock.close()
            return None
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
                return None
        connection = self._connection_factory()
        stream.protocol = connection
        self._loop._system.start_soon(stream.write_loop, name="zonda.writer")
        try:
            connection.open(stream, client, server, ssl_object)
        except Exception:
            error_log.exception("Error opening a connection")
            stream.abort()
            return None
        return stream


def serve_trio(
    loop: TrioLoop,
    sockets: Iterable[socket.socket],
    connection: Callable[[], Accepting],
    ssl_context: ssl.SSLContext | None = None,
    handshake_timeout: float = 10.0,
) -> TrioListeners:
    """Accept on ``sockets`` (bound and listening) until ``close()``: each connection gets a ``connection()``
    (e.g. ``HTTP1Connection(shared, loop)``), opened once its TLS handshake (``ssl_context``) is done within
    ``handshake_timeout`` seconds; one that fails or takes longer is closed unseen."""
    listeners = TrioListeners(loop, connection, ssl_context, handshake_timeout)
    for sock in sockets:
        listeners._start(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    return listeners


if TYPE_CHECKING:

    def _implements_the_seam(
        runtime: TrioRuntime,
        listening: TrioListeners,
        task: TrioTask,
        apps: AppTasks,
        timer: HeapTimer,
        waiter: TrioWaiter,
        stream: TrioStream,
        files: TrioFileSender,
        datagrams: TrioDatagrams,
    ) -> tuple[
        Runtime,
        Listening,
        TaskHandle,
        TaskHandle,
        Timer,
        Waiter,
        ByteStream,
        FileSender,
        Loop,
        DatagramSender,
    ]:
        """mypy checks here that the driver's classes are what ``io.base`` asks for."""
        return runtime, listening, task, apps, timer, waiter, stream, files, runtime.loop, datagrams
