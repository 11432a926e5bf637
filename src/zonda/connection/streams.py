"""Stream channels: one stream of a multiplexed connection as the bridge's ``Transport`` (HTTP/2 and HTTP/3),
and the WebSocket tunnel over such a stream (RFC 8441).

A ``StreamChannel`` is a request's transport: flushing, draining and pausing act on its stream (flow control
pauses a stream; the connection reads on for the others), and files (pathsend, zerocopysend) go out as the
stream's body, read in blocks under its flow control (``send_file``), for HTTP/2 and HTTP/3 alike. A
``WebSocketChannel`` starts as one, and once the app accepts carries the WebSocket's bytes in the stream's
DATA, with a timer of its own for the frame core.
"""

from __future__ import annotations

import os
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from zonda.asgi.seams import Core
from zonda.connection.base import SMALL_FILE
from zonda.connection.timer import DeadlineTimer
from zonda.errors import ClientDisconnected
from zonda.io.base import Loop, Waiter
from zonda.protocols.events import Data, Event, StreamReset
from zonda.protocols.http2 import ErrorCode

if TYPE_CHECKING:
    from zonda.asgi.websocket import WebSocketCycle
    from zonda.protocols.websocket import WSConnection

# File bytes per read when a file goes out as a stream's body: what one response holds while its stream waits.
# As the drivers' blocks over TLS: each read costs a thread hop (~0.1 ms on asyncio), which 64 KiB blocks paid
# for at 0.6 GB/s against 1.4 GB/s here (a 200 MB pathsend over h2c to curl, one core).
FILE_BLOCK = 256 * 1024


class StreamCore(Core, Protocol):
    """What a channel asks of its connection's core beyond the bridge's ``Core``: per-stream flow and resets."""

    def is_blocked(self, stream_id: int) -> bool: ...
    def is_open(self, stream_id: int) -> bool: ...
    def pause_stream(self, stream_id: int) -> None: ...
    def resume_stream(self, stream_id: int) -> None: ...
    def reset_stream(self, stream_id: int, code: ErrorCode) -> None: ...


class Multiplexed(Protocol):
    """The connection a channel belongs to (``HTTP2Connection``, ``HTTP3Connection``)."""

    loop: Loop
    write_paused: bool
    websockets: dict[int, WebSocketChannel]

    @property
    def closed(self) -> bool: ...

    @property
    def core(self) -> StreamCore: ...

    def flush(self) -> None: ...
    def drain_stream(self, stream_id: int) -> Waiter: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...
    def response_complete(self) -> None: ...
    def rearm(self) -> None: ...


class StreamChannel:
    """One stream's view of its connection: the bridge's ``Transport`` for that stream's cycle."""

    __slots__ = ("conn", "core", "stream_id")

    def __init__(self, conn: Multiplexed, stream_id: int) -> None:
        self.conn = conn
        self.core: StreamCore = conn.core
        self.stream_id = stream_id

    @property
    def write_paused(self) -> bool:
        return self.conn.write_paused or self.core.is_blocked(self.stream_id)

    def flush(self) -> None:
        self.conn.flush()

    def drain(self) -> Waiter:
        return self.conn.drain_stream(self.stream_id)

    def create_waiter(self) -> Waiter:
        return self.conn.loop.create_waiter()

    def time(self) -> float:
        return self.conn.loop.time()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self.conn.spawn(coro)

    def pause_reading(self) -> None:
        # HTTP/2 flow control does the pausing: the stream's window stays closed until the app reads.
        self.core.pause_stream(self.stream_id)

    def resume_reading(self) -> None:
        self.core.resume_stream(self.stream_id)
        self.conn.flush()

    def response_complete(self) -> None:
        self.conn.response_complete()

    def abort(self) -> None:
        self.core.reset_stream(self.stream_id, ErrorCode.INTERNAL_ERROR)
        self.conn.flush()

    def rearm(self) -> None:
        self.conn.rearm()

    async def send_file(self, file: BinaryIO, offset: int, count: int) -> int:
        """``count`` bytes of ``file`` from ``offset`` as this stream's body (pathsend, zerocopysend); return
        how many went (fewer: the file ended). The core has checked them against the response's framing
        (``send_file``). Blocks of ``FILE_BLOCK`` bytes are read in a worker thread (``Loop.read_file``; a
        small file at once, as over HTTP/1.1) and queued with ``send_body``; while the stream cannot send
        (flow control, acknowledgements, the connection's writing paused) the next block waits for its drain,
        so a response holds about one block, whatever the file's size. Raises ClientDisconnected once the
        stream is reset or the connection lost."""
        fd = file.fileno()
        loop = self.conn.loop
        sent = 0
        while sent < count:
            size = min(FILE_BLOCK, count - sent)
            if count <= SMALL_FILE:  # a few KiB, page-cached as a rule: cheaper than a hand-off
                data = os.pread(fd, size, offset + sent)
            else:
                data = await loop.read_file(fd, size, offset + sent)
            if self._gone():
                raise ClientDisconnected("client disconnected while a file was being sent")
            if not data:
                break  # the file ended early
            sent += len(data)
            self.core.send_body(self.stream_id, data, False)
            self.conn.flush()
            if self.write_paused:
                await self.drain()
                if self._gone():
                    raise ClientDisconnected("client disconnected while a file was being sent")
        return sent

    def _gone(self) -> bool:
        """The stream can carry no more of the response: reset (by either side) or the connection lost."""
        return self.conn.closed or not self.core.is_open(self.stream_id)


class WebSocketChannel(StreamChannel):
    """The transport of a WebSocket stream (RFC 8441): an HTTP response until ``upgrade()``, then a tunnel.

    ``upgrade()`` sends the 200 head without ending the stream and takes the WebSocket core and its handler
    (the cycle). From then on the connection hands this stream's DATA to ``receive()``, which feeds the core
    and the handler; ``flush()`` moves the core's output into DATA frames and, once the core is closing, ends
    the stream (END_STREAM, as the server closes TCP over HTTP/1.1). Back-pressure is per stream: pausing keeps
    the stream's window closed and holds what still arrives; the connection reads on. The core's keep-alive and
    closing-handshake deadline gets a timer of its own. Before ``upgrade()`` DATA is held (window closed) for
    the core; a denial drops it with the stream.
    """

    __slots__ = ("_ended", "_held", "_held_end", "_paused", "handler", "timer", "ws")

    def __init__(self, conn: Multiplexed, stream_id: int) -> None:
        super().__init__(conn, stream_id)
        self.ws: WSConnection | None = None
        self.handler: WebSocketCycle | None = None
        self._held = bytearray()  # DATA not yet fed: before the accept, or while paused
        self._held_end = False
        self._paused = False
        self._ended = False  # the WebSocket is over on this stream (ended, reset, or the connection lost)
        self.timer = DeadlineTimer(conn.loop, self._on_timer)

    # ------------------------------------------------------------ the cycle's side

    def upgrade(
        self,
        stream_id: int,
        headers: Iterable[tuple[bytes, bytes]],
        core: WSConnection,
        handler: WebSocketCycle,
    ) -> None:
        h2 = self.core
        self.ws = core
        self.handler = handler
        if not h2.is_open(stream_id):  # reset while the app decided
            self._ended = True
            handler.on_disconnect()
            return
        h2.send_response(stream_id, 200, headers)
        h2.send_body(stream_id, b"", False)  # the head goes now; the stream stays open for the frames
        self.conn.websockets[stream_id] = self
        if self._held or self._held_end:  # frames that came with the request: fed from the loop, as a read
            h2.resume_stream(stream_id)
            self.conn.loop.call_soon(self._replay)
        self.conn.flush()
        self._arm()

    def flush(self) -> None:
        ws = self.ws
        if ws is not None and not self._ended:
            data = ws.data_to_send()
            if data:
                self.core.send_body(self.stream_id, data, False)
            if ws.closing:
                self._finish()
        self.conn.flush()

    def pause_reading(self) -> None:
        if not self._paused:
            self._paused = True
            self.core.pause_stream(self.stream_id)
            if self.ws is not None:
                self.ws.set_reading_paused(True)  # a pong could not be read: the keep-alive waits

    def resume_reading(self) -> None:
        if self._paused:
            self._paused = False
            self.core.resume_stream(self.stream_id)
            ws = self.ws
            if ws is not None and not self._ended:
                ws.set_reading_paused(False)
                if self._held or self._held_end:
                    self.conn.loop.call_soon(self._replay)
                self._arm()
            self.conn.flush()

    def abort(self) -> None:
        self._stop()
        super().abort()

    def rearm(self) -> None:
        if self.ws is None:
            self.conn.rearm()
        else:
            self._arm()

    # ------------------------------------------------------------ the connection's side

    def receive(self, data: bytes, end_stream: bool) -> None:
        """The stream's DATA; END_STREAM is the peer's end of the byte stream, as TCP's FIN."""
        if self._ended:
            return
        if self.ws is None or self._paused or self._held:
            self._held += data
            self._held_end = self._held_end or end_stream
            if self.ws is None:
                self.core.pause_stream(self.stream_id)  # held for the core: no more until the app accepts
            return
        self._feed(data, end_stream)

    def going_away(self) -> None:
        """Graceful shutdown: Going Away (1001); the stream ends once the peer answers or the wait runs out."""
        ws = self.ws
        if ws is not None and not self._ended:
            ws.finish_and_close()
            self.flush()
            self._arm()

    def lost(self) -> None:
        """The stream was reset or the connection lost: the app gets 1006, unless it already knows better."""
        if not self._ended:
            self._stop()
            if self.handler is not None:
                self.handler.on_disconnect()

    # ------------------------------------------------------------ internals

    def _feed(self, data: bytes, end_stream: bool) -> None:
        ws = self.ws
        assert ws is not None
        if data:
            events = ws.receive_data(data)
            if events:
                self._dispatch(events)
        if end_stream and not self._ended:
            # The peer ended its side before the closing handshake ended ours: an abrupt loss (1006).
            self._finish()
            self.conn.flush()
        self._arm()

    def _dispatch(self, events: list[Any]) -> None:
        """The core's events to the handler (which flushes); a WebSocket that failed or timed out ends here."""
        handler = self.handler
        assert handler is not None
        if handler.handle_events(events) and not self._ended:
            self.flush()  # ends the stream if the core is closing, as it is after a failure
            if not self._ended:
                self._finish()
                self.conn.flush()

    def _replay(self) -> None:
        if self._paused or self._ended or self.ws is None or not (self._held or self._held_end):
            return
        data, end_stream = bytes(self._held), self._held_end
        self._held = bytearray()
        self._held_end = False
        self._feed(data, end_stream)

    def _finish(self) -> None:
        """End our side of the stream; the handler hears of it (1006) if the core had not told it already."""
        self._stop()
        self.core.send_body(self.stream_id, b"", True)
        if self.handler is not None:
            self.handler.on_disconnect()

    def _stop(self) -> None:
        self._ended = True
        self._held = bytearray()
        self.timer.cancel()
        self.conn.websockets.pop(self.stream_id, None)

    def _arm(self) -> None:
        """The timer for the core's deadline (keep-alive ping, pong wait, closing handshake)."""
        ws = self.ws
        if ws is not None and not self._ended:
            self.timer.arm(ws.deadline)

    def _on_timer(self) -> None:
        ws = self.ws
        if ws is None or self._ended:
            return
        events = ws.handle_timer(self.conn.loop.time())
        if events:
            self._dispatch(events)
        self._arm()


def route_websockets(websockets: dict[int, WebSocketChannel], events: list[Event]) -> list[Event]:
    """DATA on an accepted WebSocket stream is the WebSocket's, not a request body: its channel takes it, even
    after the app has returned (the closing handshake may still run). A reset ends the WebSocket and still
    reaches the session, for the app's cycle. Returns the events left for the session."""
    rest: list[Event] = []
    for event in events:
        if type(event) is Data:
            channel = websockets.get(event.stream_id)
            if channel is not None:
                channel.receive(event.data, event.end_stream)
                continue
        elif type(event) is StreamReset:
            channel = websockets.get(event.stream_id)
            if channel is not None:
                channel.lost()
        rest.append(event)
    return rest
