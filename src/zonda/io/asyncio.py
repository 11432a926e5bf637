"""The asyncio driver (also uvloop's): the ``io.base`` seam on an asyncio event loop.

asyncio's transports are ``ByteStream``s as they are, and ``zonda.connection``'s objects are protocols asyncio
can call as they are: this module only accepts (reading the peer's addresses and the TLS session once), binds
the loop's methods into an ``AsyncioLoop``, starts app tasks, and sends files. Every app call is a real Task
from its first line; on Python 3.12+ its first step runs inside the read (``eager_start``), so a request whose
app never waits is answered in the same read.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, cast

from zonda.connection.http1 import Address, HTTP1Connection
from zonda.connection.observed import ObservedHTTP1Connection
from zonda.io._sendfile import AsyncioFileSender

if TYPE_CHECKING:
    import ssl

    from zonda.io.base import ByteStream, FileDrain
    from zonda.server import ServerShared


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


def _address(address: object) -> Address | None:
    return (address[0], address[1]) if isinstance(address, tuple) else None


def _accept(conn: HTTP1Connection, transport: asyncio.Transport) -> None:
    """asyncio's ``connection_made`` (after the TLS handshake, if any): the addresses and the TLS session,
    read once, open the connection."""
    sock = transport.get_extra_info("sockname")
    if isinstance(sock, tuple):
        server: tuple[str, int | None] | None = (sock[0], sock[1])
    elif sock:
        server = (sock if isinstance(sock, str) else sock.decode(), None)  # a Unix socket's path
    else:
        server = None
    ssl_object: ssl.SSLObject | None = None
    if conn.shared.ssl_context is not None:
        ssl_object = transport.get_extra_info("ssl_object")
    conn.open(transport, _address(transport.get_extra_info("peername")), server, ssl_object)


class H1Protocol(HTTP1Connection):
    """An ``HTTP1Connection`` accepted by asyncio."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        _accept(self, transport)


class ObservedH1Protocol(ObservedHTTP1Connection):
    """An ``ObservedHTTP1Connection`` (PROXY header, byte counts) accepted by asyncio."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        _accept(self, transport)


def protocol_factory(
    observed: bool, shared: ServerShared, io_loop: AsyncioLoop
) -> Callable[[], asyncio.BaseProtocol]:
    """What ``loop.create_server`` calls per accepted connection. ``observed``: the PROXY protocol or metrics
    are on (``ObservedHTTP1Connection``; the plain class pays nothing for either)."""
    kind = ObservedH1Protocol if observed else H1Protocol
    return lambda: cast(asyncio.BaseProtocol, kind(shared, io_loop))  # an asyncio protocol by its methods
