"""The asyncio driver (also uvloop's): the ``io.base`` seam on an asyncio event loop.

asyncio's transports are ``ByteStream``s as they are, and ``zonda.connection``'s objects are protocols asyncio
can call as they are: this module only accepts (reading the peer's addresses and the TLS session once), binds
the loop's methods into an ``AsyncioLoop``, starts app tasks, and sends files. Every app call is a real Task
from its first line; on Python 3.12+ its first step runs inside the read (``eager_start``), so a request whose
app never waits is answered in the same read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from zonda.errors import ConfigError
from zonda.io._addresses import local_address, peer_address
from zonda.io._asyncio_datagrams import listen_datagrams
from zonda.io._sendfile import AsyncioFileSender, read_block
from zonda.io._shared import TLS_CLOSE_TIMEOUT, kernel_unacknowledged

if TYPE_CHECKING:
    import socket
    import ssl

    from zonda.io.base import (
        Accepting,
        ByteStream,
        DatagramReceiver,
        DatagramSender,
        FileDrain,
        TaskHandle,
    )


if sys.version_info >= (3, 12):

    def start_task(
        loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[Any]], coro: Coroutine[Any, Any, None]
    ) -> None:
        """Run ``coro`` as a Task whose first step runs now (``eager_start``); track it in ``tasks`` while it
        lives. The app sees a real task from its first line (``current_task()``, TaskGroup, ``asyncio.timeout``,
        anyio cancel scopes) in its own copy of the context, and a request whose app never waits is answered
        within the read that brought it."""
        task = asyncio.Task(coro, loop=loop, eager_start=True)
        if not task.done():
            tasks.add(task)
            task.add_done_callback(tasks.discard)

else:

    def start_task(
        loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[Any]], coro: Coroutine[Any, Any, None]
    ) -> None:
        """Run ``coro`` as a Task (its first step on the loop's next turn: no eager start before 3.12); track
        it in ``tasks`` while it lives."""
        task = loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)


error_log = logging.getLogger("zonda.error")
T = TypeVar("T")
# Seconds a closing TLS connection waits for the peer's close_notify before the socket is closed anyway (the
# loop's default is 30). Waiting is not required (RFC 8446 section 6.1), and an idle pooled client may never
# answer, which would hold every graceful shutdown for the whole grace period; but the same timer also bounds
# the flushing of a response still buffered when the connection closes, so it is not made tiny either.


class AsyncioLoop:
    """The ``io.base.Loop`` of asyncio and uvloop: the loop's own methods, bound once per server."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tasks: set[asyncio.Task[Any]]) -> None:
        self.loop = loop
        self.tasks = tasks  # app tasks still running: the server cancels them after the graceful timeout
        self.time = loop.time
        self.call_at = loop.call_at
        self.call_soon = loop.call_soon
        self.call_soon_threadsafe = loop.call_soon_threadsafe
        self.create_waiter = loop.create_future
        self.spawn: Callable[[Coroutine[Any, Any, None]], None] = functools.partial(start_task, loop, tasks)

    def file_sender(self, stream: ByteStream, plaintext: bool, conn: FileDrain) -> AsyncioFileSender:
        return AsyncioFileSender(self.loop, stream, plaintext, conn)  # type: ignore[arg-type]  # a transport

    def read_file(self, fd: int, size: int, offset: int, /) -> Awaitable[bytes]:
        return read_block(self.loop, fd, size, offset)

    def unacknowledged(self, stream: ByteStream) -> int:
        transport = cast(asyncio.Transport, stream)
        try:
            sock = transport.get_extra_info("socket")  # a TLS transport's is the TCP socket below it
            buffered = transport.get_write_buffer_size()
        except AttributeError:  # asyncio's TLS transport, closed by both sides, has let its protocol go
            return 0
        return buffered + (kernel_unacknowledged(sock.fileno()) if sock is not None else 0)


# An accepted plaintext socket is opened a loop turn later: this bounds the wait for one that never is.
OPENING_WAIT = 1.0

_runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncioRuntime] = weakref.WeakKeyDictionary()


def running() -> AsyncioRuntime:
    """The runtime of the running loop, one per loop: every caller on it sees the same app tasks."""
    loop = asyncio.get_running_loop()
    runtime = _runtimes.get(loop)
    if runtime is None:
        runtime = _runtimes[loop] = AsyncioRuntime(loop)
    return runtime


class _Opening(asyncio.Protocol):
    """What asyncio calls first on an accepted connection (after its TLS handshake, if any): hands the transport
    to the connection, then opens it with the addresses and the TLS session, read once. From then on asyncio
    calls the connection itself (it is an asyncio protocol by its methods): this object costs no call per read."""

    __slots__ = ("__weakref__", "conn", "opened")

    def __init__(self, conn: Accepting) -> None:
        self.conn = conn
        self.opened = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.opened = True
        conn = self.conn
        transport.set_protocol(conn)  # type: ignore[arg-type]  # a protocol by its methods
        server = local_address(transport.get_extra_info("sockname"))
        client = peer_address(transport.get_extra_info("peername"))
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        stream = cast("ByteStream", transport)
        if (
            ssl_object is not None
            and _NO_SSL_SHUTDOWN_TIMEOUT
            and type(transport).__module__.startswith("asyncio")
        ):
            stream = _TLSClosing(transport)
        try:
            conn.open(stream, client, server, ssl_object)
        except Exception:  # a bug above the seam: this connection ends, not the server (as on trio)
            error_log.exception("Error opening a connection; closing it")
            cast(asyncio.Transport, transport).abort()


# Python 3.10's asyncio takes no ssl_shutdown_timeout: a closed TLS transport would wait for the peer's
# close_notify as long as the peer keeps TCP open (an idle pooled client: until the graceful timeout).
_NO_SSL_SHUTDOWN_TIMEOUT = sys.version_info < (3, 11)


class _TLSClosing:
    """An asyncio TLS transport whose ``close()`` turns into ``abort()`` after ``TLS_CLOSE_TIMEOUT``
    (Python 3.10 only, see above); everything else is the transport's own."""

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()

    def close(self) -> None:
        self._transport.close()
        self._loop.call_later(TLS_CLOSE_TIMEOUT, self._transport.abort)  # a no-op once it is gone

    def get_write_buffer_size(self) -> int:
        try:
            return self._transport.get_write_buffer_size()
        except AttributeError:  # 3.10's TLS transport once its connection is lost: nothing left to send
            return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Listening:
    def __init__(self, servers: list[asyncio.base_events.Server], accepts_in_tasks: bool) -> None:
        self._servers = servers
        self._accepts_in_tasks = accepts_in_tasks
        # Plaintext connections accepted and not yet opened (weak: held only for the wait below). TLS ones are
        # not waited for: asyncio never tells the protocol of a failed handshake, so one could not be told
        # from one in progress (trio's driver can, and waits for both).
        self.opening: weakref.WeakSet[_Opening] = weakref.WeakSet()

    def close(self) -> None:
        for server in self._servers:
            server.close()

    async def close_gracefully(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        if self._accepts_in_tasks:
            # asyncio's own loop accepts in one callback and makes each transport in a task a turn later,
            # which fails once the server is closed (the connection is dropped): stop accepting first, let
            # those tasks run, then close. uvloop makes the transport as it accepts.
            for server in self._servers:
                for sock in server.sockets:
                    loop.remove_reader(sock.fileno())
            await asyncio.sleep(0)
        self.close()
        deadline = min(deadline, loop.time() + OPENING_WAIT)
        while any(not opening.opened for opening in self.opening) and loop.time() < deadline:
            await asyncio.sleep(0.005)


class AsyncioRuntime:
    """The ``io.base.Runtime`` of asyncio and uvloop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.name = type(loop).__module__.split(".")[0]  # "asyncio" or "uvloop"
        self.aio = loop
        self.loop = AsyncioLoop(loop, set())

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            raise TimeoutError(f"not done within {timeout:g}s") from None

    def start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self.aio.create_task(coro)

    async def join(self, tasks: Iterable[TaskHandle], timeout: float) -> None:
        waiting = [task for task in tasks if not task.done()]
        if waiting:
            await asyncio.wait(cast("list[asyncio.Task[None]]", waiting), timeout=timeout)

    def app_tasks(self) -> list[TaskHandle]:
        return list(self.loop.tasks)

    def shielded(self, seconds: float) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    async def listen(
        self,
        sockets: list[socket.socket],
        connection: Callable[[], Accepting],
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: float,
        backlog: int,
    ) -> _Listening:
        options: dict[str, Any] = {}
        if ssl_context is not None:
            # The handshake runs before connection_made: a client that does not finish it in time, or sends
            # anything but TLS, is closed without the app or the connection registry ever seeing it.
            options = {"ssl": ssl_context, "ssl_handshake_timeout": handshake_timeout}
            if self.name != "asyncio" or sys.version_info >= (3, 11):  # asyncio takes it from 3.11
                options["ssl_shutdown_timeout"] = TLS_CLOSE_TIMEOUT

        listening = _Listening([], accepts_in_tasks=self.name == "asyncio")
        opening = listening.opening
        plaintext = ssl_context is None

        def protocol() -> asyncio.BaseProtocol:
            accepted = _Opening(connection())
            if plaintext:
                opening.add(accepted)
            return accepted

        for sock in sockets:
            listening._servers.append(
                await self.aio.create_server(protocol, sock=sock, backlog=backlog, **options)
            )
        return listening

    async def listen_datagrams(
        self, sock: socket.socket, receiver: Callable[[DatagramSender], DatagramReceiver]
    ) -> DatagramSender:
        return await listen_datagrams(self.aio, sock, receiver)

    def on_signals(self, signals: Iterable[int], handler: Callable[[int], None]) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # signals reach only the main thread; an embedder stops us with shutdown()
        installed = []
        for signum in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):  # no signals on this loop/platform
                self.aio.add_signal_handler(signum, handler, signum)
                installed.append(signum)

        def undo() -> None:
            for signum in installed:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    self.aio.remove_signal_handler(signum)

        return undo


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise ConfigError("loop: uvloop is not installed (pip install 'zonda[standard]')") from None
        else:
            return uvloop.new_event_loop
    return asyncio.new_event_loop


def run(name: str, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to the end on a new loop of this kind (``auto``: uvloop when installed)."""
    factory = loop_factory(name)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main)
    else:  # pragma: no cover
        loop = factory()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(main)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
