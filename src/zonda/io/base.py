"""The one seam between the loop-neutral code (``zonda.connection``, ``zonda.asgi``) and an I/O driver.

A driver (``io/asyncio.py`` for asyncio and uvloop; others to come) gives each connection a ``ByteStream`` and
every connection of a server one ``Loop``. The connection layer and the bridge call only these: no asyncio,
uvloop or trio name reaches them. asyncio's transports are ``ByteStream``s as they are, and the asyncio
``Loop`` binds the loop's own methods, so the seam costs the hot path no extra call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import socket
    import ssl

T = TypeVar("T")


class Timer(Protocol):
    """A scheduled call that can be called off."""

    def cancel(self) -> None: ...


class Waiter(Protocol):
    """A one-shot wake-up: the connection sets it, an app's task awaits it (asyncio's Future fits)."""

    def done(self) -> bool: ...
    def set_result(self, result: None, /) -> None: ...
    def __await__(self) -> Generator[Any, None, None]: ...


class StreamProtocol(Protocol):
    """What a byte stream calls on the connection that owns it (asyncio's protocol callbacks)."""

    def data_received(self, data: bytes) -> None: ...
    def eof_received(self) -> bool | None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def pause_writing(self) -> None: ...
    def resume_writing(self) -> None: ...


class Accepting(StreamProtocol, Protocol):
    """A connection as a driver opens it (``zonda.connection``'s, made per accepted socket)."""

    def open(
        self,
        stream: ByteStream,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        ssl_object: ssl.SSLObject | None,
    ) -> None:
        """``stream`` is accepted (its TLS handshake done): the peer's and our address, the TLS session."""
        ...


class ByteStream(Protocol):
    """One connection's bytes. ``write`` never blocks: past the high-water mark the stream calls the
    protocol's ``pause_writing`` and, once drained, ``resume_writing``."""

    def write(self, data: bytes) -> None: ...
    def close(self) -> None:
        """Close once what was written is sent (``abort`` ends a close that waits on a client for too long)."""
        ...

    def abort(self) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        ...

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_protocol(self, protocol: StreamProtocol) -> None:
        """From now on ``protocol`` gets this stream's callbacks: protocol switching."""
        ...


class FileSender(Protocol):
    """A driver's way to move a file's bytes onto one connection after what was already written. It writes to
    the driver's own stream (``Connection.raw_stream``), past the connection's core: the connection counts
    them itself."""

    @property
    def os_sendfile(self) -> bool:
        """True when files go by ``os.sendfile`` (plaintext), False when read in blocks (TLS)."""
        ...

    @property
    def bytes_sent(self) -> int:
        """File bytes ``os.sendfile`` put on this connection so far, growing while a send is under way (the
        connection's ``--timeout-write`` check watches it; bytes read in blocks go through the stream's buffer
        instead)."""
        ...

    async def send(self, fd: int, offset: int, count: int) -> int:
        """Send ``count`` bytes of ``fd`` from ``offset``; return how many went (fewer: the file ended).
        Raises ClientDisconnected or OSError."""
        ...

    def cancel(self) -> None:
        """The connection is lost: a send in progress ends with ClientDisconnected."""
        ...


class FileDrain(Protocol):
    """The connection's side a ``FileSender`` waits on."""

    write_paused: bool

    @property
    def closed(self) -> bool: ...
    def drain(self) -> Waiter: ...


class Loop(Protocol):
    """What every connection of a server asks of its event loop."""

    def time(self) -> float: ...
    def call_at(self, when: float, callback: Callable[[], object], /) -> Timer: ...
    def call_soon(self, callback: Callable[[], object], /) -> object: ...
    def call_soon_threadsafe(self, callback: Callable[[], object], /) -> object:
        """Wake the loop from another thread (the WSGI pool) to run ``callback`` on it."""
        ...

    def create_waiter(self) -> Waiter: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run an app call as a real task of this loop, from its first line, in its own context."""
        ...

    def file_sender(self, stream: ByteStream, plaintext: bool, conn: FileDrain) -> FileSender:
        """How ``stream`` sends files (os.sendfile on plaintext, chunks read off the loop thread on TLS)."""
        ...

    def read_file(self, fd: int, size: int, offset: int, /) -> Awaitable[bytes]:
        """At most ``size`` bytes of ``fd`` from ``offset`` (``os.pread``), read in a worker thread so that a
        slow disk holds up this one response, not the loop: files sent as HTTP/2 and HTTP/3 body blocks."""
        ...

    def unacknowledged(self, stream: ByteStream) -> int:
        """Bytes written to ``stream`` (the driver's own) that its client has not taken yet: the stream's buffer
        and the kernel's send queue. Unlike the buffer alone, this goes down as the client reads, not only when
        the kernel asks for more (after a third of a socket buffer that grows to megabytes): ``--timeout-write``
        compares it between two looks, made only when the connection's timer fires, never per write."""
        ...


class DatagramSender(Protocol):
    """A bound UDP socket's sending side (QUIC). A datagram that cannot go out now (the socket buffer is full) is
    dropped, as the network may drop any: QUIC's loss recovery sends again what mattered."""

    def sendto(self, data: bytes, addr: Any, /) -> None: ...
    def close(self) -> None:
        """Stop receiving and close the socket."""
        ...


class DatagramReceiver(Protocol):
    """Who takes a UDP socket's datagrams: the QUIC endpoint (``zonda.connection.quic``)."""

    def datagram_received(self, data: bytes, addr: Any, /) -> None: ...


class TaskHandle(Protocol):
    """A task: an app call, or a server's own (lifespan, a worker's heartbeat)."""

    def cancel(self) -> object: ...
    def done(self) -> bool: ...


class Listening(Protocol):
    """Listeners accepting connections; ``close()`` stops accepting (open connections go on)."""

    def close(self) -> None: ...
    async def close_gracefully(self, deadline: float) -> None:
        """Stop accepting and close, and return once every connection accepted before is open (registered
        with the server) or dropped, or at ``deadline`` (``Loop.time()``): a connection the kernel handed over
        just before is served, not reset when the process exits. trio's driver also waits for TLS handshakes
        in progress; asyncio's cannot tell a failed one from a slow one, and waits for plaintext ones only."""
        ...


class Runtime(Protocol):
    """What a server asks of the event loop it runs on; ``loop`` is the part its connections use.

    ``zonda.server`` runs on any driver through this; ``zonda.io.running()`` gives the one of the loop the
    caller runs on."""

    @property
    def name(self) -> str:
        """The loop's name for the start-up line: asyncio, uvloop, trio."""
        ...

    @property
    def loop(self) -> Loop: ...

    async def sleep(self, seconds: float) -> None: ...
    async def wait_for(self, awaitable: Awaitable[T], timeout: float) -> T:
        """``awaitable``'s result; TimeoutError (it cancelled) if it takes longer than ``timeout`` seconds."""
        ...

    def start(self, coro: Coroutine[Any, Any, None]) -> TaskHandle: ...
    async def join(self, tasks: Iterable[TaskHandle], timeout: float) -> None:
        """Wait until ``tasks`` are done, ``timeout`` seconds at most; their errors are theirs."""
        ...

    def app_tasks(self) -> list[TaskHandle]:
        """The app calls (``Loop.spawn``) still running: cancelled after the graceful timeout."""
        ...

    def shielded(self, seconds: float) -> AbstractContextManager[object]:
        """Around the shutdown sequence: it runs to its end (``seconds`` at most) even when the caller was
        cancelled. trio fails every await in a cancelled scope unless shielded; asyncio delivers a cancellation
        once, so there it is nothing."""
        ...

    async def listen(
        self,
        sockets: list[socket.socket],
        connection: Callable[[], Accepting],
        ssl_context: ssl.SSLContext | None,
        handshake_timeout: float,
        backlog: int,
    ) -> Listening:
        """Accept on bound ``sockets``; each connection gets a ``connection()``, opened once its TLS handshake
        (``ssl_context``) is done; one that takes over ``handshake_timeout`` seconds is dropped unseen."""
        ...

    async def listen_datagrams(
        self, sock: socket.socket, receiver: Callable[[DatagramSender], DatagramReceiver]
    ) -> DatagramSender:
        """Read datagrams from bound UDP ``sock`` into ``receiver(sender)``; closing the sender stops it."""
        ...

    def on_signals(self, signals: Iterable[int], handler: Callable[[int], None]) -> Callable[[], None]:
        """Call ``handler(signum)`` on the loop for these signals (main thread only); returns the undo."""
        ...


# The Loop of the server the running code belongs to: set by the server before it listens, so its connections'
# callbacks and its app tasks see it (the WSGI adapter wakes the loop from its threads through it).
current_loop: ContextVar[Loop] = ContextVar("zonda_current_loop")
