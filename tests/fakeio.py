"""A fake I/O driver for ``zonda.connection`` and the bridge: ``zonda.io.base``'s seam with no sockets, and
time that moves only when a test moves it.

``FakeLoop`` is the ``Loop``. Its clock stands still until ``advance()``; timers wait in a heap and fire in
order as time passes; ``call_soon`` callbacks and app tasks run when the test calls ``run()`` (``advance()``
and the stream's driver-side methods call it too). An app call is a coroutine stepped by hand: it runs until it
awaits a ``FakeWaiter`` and runs on once that waiter is set. Awaiting anything else (``asyncio.sleep``, an
asyncio Future) fails the task: the bridge hands apps only the loop's waiters. ``spawn`` starts a task on the
loop's next turn (asyncio before Python 3.12), or runs its first step at once with ``eager=True`` (3.12's
``eager_start``): the connection layer must be right either way.

``FakeStream`` is one connection's ``ByteStream``. It records what is written, holds incoming bytes while
reading is paused (delivering them on resume, as a socket would), calls ``connection_lost`` on the loop's next
turn after ``close()`` or ``abort()`` as asyncio's transports do (after a ``close()`` with ``unsent`` bytes, once
the test drains them), and ``set_protocol`` changes who gets its callbacks. Its driver side (``feed``, ``feed_eof``, ``pause_writing``, ...) does what a driver would, then lets
the loop run.

``FakeServer`` builds what ``Server._serve_app`` builds for its connections (``SessionContext``,
``ServerShared``, the connection class) from ``Config`` options, and opens connections on fake streams.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import os
import ssl
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass, field
from typing import Any

from hpack import Decoder, Encoder

from h2wire import Frame, frame, parse
from wire import Closed, Response, Wire
from zonda.asgi.session import SessionContext
from zonda.asgi.types import ASGIApp
from zonda.config import Config
from zonda.connection.base import Connection
from zonda.connection.http1 import HTTP1Connection
from zonda.connection.observed import ObservedHTTP1Connection
from zonda.connection.shared import ServerShared
from zonda.errors import ClientDisconnected
from zonda.io.base import FileDrain
from zonda.metrics import Tally
from zonda.protocols.http2 import DATA, END_HEADERS, END_STREAM, HEADERS, PREFACE, SETTINGS
from zonda.server import ws_settings

DATE = b"Mon, 01 Jan 2024 00:00:00 GMT"  # the Date header every response carries here
CLIENT = ("192.0.2.10", 40000)  # TEST-NET-1: the peer of a fake connection unless a test says otherwise
SERVER = ("127.0.0.1", 8000)
RUN_LIMIT = 10_000  # callbacks one run() may make: more means something reschedules itself forever


class FakeTimer:
    """A ``call_at`` entry: ordered by time, then by when it was scheduled (as asyncio fires equal times)."""

    __slots__ = ("callback", "cancelled", "order", "when")

    def __init__(self, when: float, order: int, callback: Callable[[], object]) -> None:
        self.when = when
        self.order = order
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: FakeTimer) -> bool:
        return (self.when, self.order) < (other.when, other.order)


class FakeWaiter:
    """A one-shot wake-up. Setting it twice is an error, as it is for an asyncio Future."""

    __slots__ = ("_done", "_loop", "_wakeups")

    def __init__(self, loop: FakeLoop) -> None:
        self._loop = loop
        self._done = False
        self._wakeups: list[Callable[[], None]] = []

    def done(self) -> bool:
        return self._done

    def set_result(self, result: None, /) -> None:
        if self._done:
            raise RuntimeError("waiter already set")
        self._done = True
        for wakeup in self._wakeups:
            self._loop.call_soon(wakeup)
        self._wakeups.clear()

    def __await__(self) -> Generator[Any, None, None]:
        if not self._done:
            yield self
        assert self._done, "a task resumed before its waiter was set"

    def when_done(self, wakeup: Callable[[], None]) -> None:
        if self._done:
            self._loop.call_soon(wakeup)
        else:
            self._wakeups.append(wakeup)


class FakeTask:
    """An app call: a coroutine stepped by the loop, in its own copy of the context."""

    def __init__(self, loop: FakeLoop, coro: Coroutine[Any, Any, None]) -> None:
        self.loop = loop
        self.coro = coro
        self.context = contextvars.copy_context()
        self.finished = False
        self.error: BaseException | None = None

    def step(self) -> None:
        try:
            awaited = self.context.run(self.coro.send, None)
        except StopIteration:
            self.finished = True
            return
        except BaseException as exc:  # the bridge catches app errors: one that escapes is a finding
            self.finished = True
            self.error = exc
            self.loop.errors.append(exc)
            return
        if isinstance(awaited, FakeWaiter):
            awaited.when_done(self.step)
            return
        self.finished = True
        self.error = TypeError(f"a task awaited {awaited!r}, which is not the loop's waiter")
        self.loop.errors.append(self.error)
        self.coro.close()


class FakeLoop:
    """The ``io.base.Loop`` with a hand-moved clock; see the module docstring."""

    def __init__(self, eager: bool = False, now: float = 1000.0) -> None:
        self.eager = eager
        self.now = now
        self.timers: list[FakeTimer] = []
        self.ready: list[Callable[[], object]] = []
        self.tasks: list[FakeTask] = []
        self.errors: list[BaseException] = []
        self._order = itertools.count()

    # ------------------------------------------------------------ the seam

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object], /) -> FakeTimer:
        timer = FakeTimer(when, next(self._order), callback)
        heapq.heappush(self.timers, timer)
        return timer

    def call_soon(self, callback: Callable[[], object], /) -> None:
        self.ready.append(callback)

    def call_soon_threadsafe(self, callback: Callable[[], object], /) -> None:
        self.ready.append(callback)  # one thread here: the queue is the same

    def create_waiter(self) -> FakeWaiter:
        return FakeWaiter(self)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = FakeTask(self, coro)
        self.tasks.append(task)
        if self.eager:
            task.step()
        else:
            self.call_soon(task.step)

    def file_sender(self, stream: Any, plaintext: bool, conn: FileDrain) -> FakeFileSender:
        return FakeFileSender(stream, conn)

    def unacknowledged(self, stream: Any) -> int:
        return int(stream.unsent)

    async def read_file(self, fd: int, size: int, offset: int, /) -> bytes:
        """A worker thread's read: the bytes come a loop turn later."""
        waiter = FakeWaiter(self)
        self.call_soon(lambda: waiter.set_result(None))
        await waiter
        return os.pread(fd, size, offset)

    # ------------------------------------------------------------ the test's side

    def run(self) -> None:
        """Run what is ready (callbacks, task steps, timers already due) until nothing is."""
        for _ in range(RUN_LIMIT):
            if self.ready:
                callback = self.ready.pop(0)
                callback()
            elif not self._fire_one(self.now):
                return
        raise AssertionError(f"the loop is still busy after {RUN_LIMIT} callbacks")

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` on, firing each timer due on the way at its own time."""
        target = self.now + seconds
        self.run()
        while self._fire_one(target):
            self.run()
        self.now = target
        self.run()

    def _fire_one(self, until: float) -> bool:
        timers = self.timers
        while timers and timers[0].cancelled:
            heapq.heappop(timers)
        if not timers or timers[0].when > until:
            return False
        timer = heapq.heappop(timers)
        self.now = max(self.now, timer.when)
        timer.callback()
        return True

    def next_timer(self) -> float | None:
        """When the earliest live timer fires (None: none is armed)."""
        live = [timer.when for timer in self.timers if not timer.cancelled]
        return min(live) if live else None

    def check(self) -> None:
        """Fail with the first error a task let escape."""
        if self.errors:
            raise AssertionError(f"{len(self.errors)} task error(s)") from self.errors[0]

    def close(self) -> None:
        """Close the coroutines of tasks still suspended (their apps see GeneratorExit, as at shutdown)."""
        for task in self.tasks:
            if not task.finished:
                task.coro.close()
                task.finished = True


class FakeFileSender:
    """The ``FileSender`` of a TLS connection: the file's bytes read here and written through the stream."""

    os_sendfile = False
    bytes_sent = 0  # by os.sendfile: never, here

    def __init__(self, stream: Any, conn: FileDrain) -> None:
        self.stream = stream
        self.conn = conn

    async def send(self, fd: int, offset: int, count: int) -> int:
        sent = 0
        while sent < count:
            if self.conn.closed:
                raise ClientDisconnected("client disconnected while a file was being sent")
            chunk = os.pread(fd, min(65536, count - sent), offset + sent)
            if not chunk:
                break
            self.stream.write(chunk)
            sent += len(chunk)
            if self.conn.write_paused:
                await self.conn.drain()
        return sent

    def cancel(self) -> None:
        pass  # send() looks at conn.closed before each chunk


class FakeStream:
    """A ``ByteStream`` with a driver side for the test; see the module docstring."""

    def __init__(self, loop: FakeLoop) -> None:
        self.loop = loop
        self.protocol: Any = None
        self.written = bytearray()  # what the connection wrote and the test has not taken yet
        self.writes = 0  # write() calls with bytes that went out (a test of batching reads it)
        self.closed = False
        self.aborted = False
        self.lost = False  # connection_lost was called
        self.reading_paused = False
        self.late_writes: list[bytes] = []  # writes after close() or abort(): a bug, unless a test wants them
        self.unsent = (
            0  # what get_write_buffer_size() says: bytes the "kernel" has not taken (the test sets it)
        )
        self._incoming = bytearray()  # bytes the peer sent while reading was paused

    # ------------------------------------------------------------ the ByteStream seam

    def write(self, data: bytes) -> None:
        assert isinstance(data, bytes | bytearray | memoryview), type(data)
        if self.closed or self.aborted:
            self.late_writes.append(bytes(data))
        else:
            self.written += data
            self.writes += 1

    def close(self) -> None:
        if not self.is_closing():
            self.closed = True
            if not self.unsent:
                self.loop.call_soon(self._lose)
            # else: lost once the test drains it (``drain``), as a transport flushes before it closes

    def abort(self) -> None:
        if not self.aborted:
            self.aborted = True
            self.loop.call_soon(self._lose)  # at most once: _lose looks

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            self.loop.call_soon(self._deliver_held)  # the socket is read again on the loop's next turn

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    # ------------------------------------------------------------ the driver's side

    def feed(self, data: bytes) -> None:
        """The peer sent ``data``: to the protocol now, or held while reading is paused. Then run the loop."""
        assert not self.is_closing(), "bytes fed to a closed connection"
        if self.reading_paused or self._incoming:
            self._incoming += data
        else:
            self.protocol.data_received(data)
        self.loop.run()

    def feed_eof(self) -> None:
        """The peer closed its side: ``eof_received``, and a close unless the protocol keeps the stream open."""
        if not self.protocol.eof_received():
            self.close()
        self.loop.run()

    def pause_writing(self) -> None:
        """The write buffer passed its high-water mark."""
        self.protocol.pause_writing()
        self.loop.run()

    def resume_writing(self) -> None:
        """The write buffer drained below its low-water mark."""
        self.protocol.resume_writing()
        self.loop.run()

    def drain(self, unsent: int = 0) -> None:
        """The peer read: ``unsent`` bytes are left in the buffer; a closed stream with none left is lost."""
        self.unsent = unsent
        if self.closed and not unsent and not self.lost:
            self._lose()
        self.loop.run()

    def reset(self) -> None:
        """The peer reset the connection."""
        self.aborted = True
        self._lose(ConnectionResetError("connection reset by peer"))
        self.loop.run()

    def take(self) -> bytes:
        """What was written since the last take."""
        data = bytes(self.written)
        self.written.clear()
        return data

    def _deliver_held(self) -> None:
        if self._incoming and not self.reading_paused and not self.is_closing():
            data = bytes(self._incoming)
            self._incoming.clear()
            self.protocol.data_received(data)

    def _lose(self, exc: Exception | None = None) -> None:
        if not self.lost:
            self.lost = True
            self.protocol.connection_lost(exc)


class Replies(Wire):
    """``wire.Wire``'s response reading over bytes a fake stream took, instead of a socket."""

    def __init__(self, data: bytes) -> None:  # no socket: Wire's reading works on ``buffer`` alone
        self.buffer = data
        self.timeout = 0.0

    def _fill(self) -> None:
        raise Closed(self.buffer)

    def read_until_closed(self, timeout: float | None = None) -> bytes:
        data, self.buffer = self.buffer, b""
        return data


def responses(data: bytes) -> list[Response]:
    """Every HTTP/1.1 response in ``data``, which must end with the last one."""
    replies = Replies(data)
    found = []
    while replies.buffer:
        found.append(replies.read_response())
    return found


class FakeTLS:
    """What a connection reads of a TLS session (``ssl.SSLObject``): the ALPN choice and ``tls_extension``'s
    version, cipher and peer certificate (none: no client certificate was asked for)."""

    def __init__(self, alpn: str | None = "h2") -> None:
        self.alpn = alpn
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # only its cipher list is read

    def selected_alpn_protocol(self) -> str | None:
        return self.alpn

    def version(self) -> str:
        return "TLSv1.3"

    def cipher(self) -> tuple[str, str, int]:
        return ("TLS_AES_128_GCM_SHA256", "TLSv1.3", 128)

    def getpeercert(self, binary_form: bool = False) -> bytes | None:
        return None


class FakeServer:
    """A server's shared state as ``Server._serve_app`` builds it, on a ``FakeLoop``, minus the listeners."""

    def __init__(self, app: ASGIApp, eager: bool = False, metrics: bool = False, **options: Any) -> None:
        self.loop = FakeLoop(eager=eager)
        config = self.config = Config(app=app, **options)
        context = SessionContext(
            app,
            {},
            root_path=config.root_path,
            access_log=False,
            limit_concurrency=config.limit_concurrency,
            ws=ws_settings(config),
            on_response=None,
        )
        self.shared = ServerShared(config, context, None)
        self.shared.defaults.set_date(DATE)
        if metrics:
            self.shared.tally = Tally(self.shared)  # what Metrics.attach gives the server
            self.shared.count_bytes = True
        # (the server itself needs the subclass only for PROXY headers; with metrics on here it reads as the
        # plain class does, whose byte counts are the same code)
        observed = metrics or config.proxy_protocol != "off"
        self.kind: type[HTTP1Connection] = ObservedHTTP1Connection if observed else HTTP1Connection

    def connect(
        self,
        client: tuple[str, int] | None = CLIENT,
        server: tuple[str, int | None] | None = SERVER,
        tls: FakeTLS | None = None,
    ) -> FakeStream:
        """A connection accepted (and handshaken, with ``tls``) as a driver opens one."""
        stream = FakeStream(self.loop)
        conn = self.kind(self.shared, self.loop)
        stream.set_protocol(conn)
        conn.open(stream, client, server, tls)  # type: ignore[arg-type]  # FakeTLS has what open() reads
        self.loop.run()
        return stream

    @property
    def connections(self) -> set[Connection]:
        return self.shared.connections

    def shutdown(self) -> None:
        """What a graceful stop does first (``Server._drain_connections``): every connection is told."""
        for connection in list(self.shared.connections):
            connection.shutdown()
        self.loop.run()

    def close(self) -> None:
        self.loop.close()


Header = tuple[bytes, bytes]


@dataclass
class ServerFrame(Frame):
    fields: list[Header] = field(default_factory=list)  # a HEADERS frame's block, decoded


@dataclass
class H2Response:
    """What the server sent on one stream."""

    headers: list[Header]
    body: bytes
    ended: bool  # END_STREAM came

    @property
    def status(self) -> int:
        return int(dict(self.headers)[b":status"])


class H2Peer:
    """An HTTP/2 client on a fake stream: frames built with ``h2wire``'s helpers and an HPACK encoder of its
    own; the server's output read back with ``h2wire.parse``, every header block decoded in order."""

    def __init__(self, stream: FakeStream) -> None:
        self.stream = stream
        self.encoder = Encoder()
        self.decoder = Decoder()

    def send(self, *chunks: bytes) -> None:
        self.stream.feed(b"".join(chunks))

    @staticmethod
    def preface(settings: bytes = b"") -> bytes:
        """The client preface and its SETTINGS frame."""
        return PREFACE + frame(SETTINGS, 0, 0, settings)

    def headers(self, stream_id: int, fields: list[Header], end_stream: bool = True) -> bytes:
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        return frame(HEADERS, flags, stream_id, bytes(self.encoder.encode(fields)))

    def read(self, data: bytes | None = None) -> list[ServerFrame]:
        """The frames written since the last read (or in ``data``)."""
        frames = []
        for found in parse(self.stream.take() if data is None else data):
            received = ServerFrame(found.kind, found.flags, found.stream_id, found.payload)
            if found.kind == HEADERS:
                assert found.flags & END_HEADERS, found
                received.fields = [
                    (bytes(n), bytes(v)) for n, v in self.decoder.decode(found.payload, raw=True)
                ]
            frames.append(received)
        return frames


def h2_response(frames: list[ServerFrame], stream_id: int) -> H2Response:
    """Stream ``stream_id``'s response among ``frames``: its header fields, body and whether it ended."""
    response = H2Response([], b"", False)
    for found in frames:
        if found.stream_id != stream_id:
            continue
        if found.kind == HEADERS and not response.headers:
            response.headers = found.fields
        elif found.kind == DATA:
            response.body += found.payload
        if found.kind in (HEADERS, DATA) and found.flags & END_STREAM:
            response.ended = True
    return response
