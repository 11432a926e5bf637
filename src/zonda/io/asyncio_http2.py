"""The asyncio driver for HTTP/2: one ``H2Protocol`` per connection, one ``StreamChannel`` per stream.

A connection becomes HTTP/2 in one of three ways, all decided by the HTTP/1.1 driver that accepted it: ALPN
``h2`` on TLS, the client preface on plaintext (prior knowledge), or an ``Upgrade: h2c`` request. The HTTP/1.1
protocol object then hands the transport over with ``transport.set_protocol`` (uvloop caches the protocol's
callbacks, so swapping methods on the old object would not reach it).

Output is batched per read: apps that answer without suspending queue their frames while ``data_received``
runs, and the connection writes them with one ``transport.write`` at the end.

WebSocket (RFC 8441): an extended CONNECT with ``:protocol websocket`` gets a ``WebSocketChannel``. Accepting
sends a 200 that leaves the stream open; from then on the stream's DATA is the WebSocket's byte stream, fed to
the same frame core as over HTTP/1.1, and END_STREAM and RST_STREAM stand for TCP's FIN and RST.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from zonda.asgi._files import PATHSEND, ZEROCOPYSEND
from zonda.asgi.http import ConnectionInfo, HTTPSession
from zonda.io.asyncio import H1Protocol
from zonda.io.observed import CountingTransport
from zonda.protocols.events import ConnectionTerminated, Data, Event, Request, StreamReset
from zonda.protocols.http2 import ErrorCode, H2Connection, H2Error

if TYPE_CHECKING:
    from zonda.asgi.websocket import WebSocketCycle
    from zonda.metrics import Tally
    from zonda.protocols.websocket import WSConnection
    from zonda.server import ServerShared

error_log = logging.getLogger("zonda.error")
# What the bridge offers on HTTP/2 connections (ASGI extensions.rst); copied into every request's scope.
HTTP2_EXTENSIONS: dict[str, dict[str, Any]] = {
    "http.response.trailers": {},
    "http.response.push": {},
    "http.response.early_hint": {},
}
h2_log = logging.getLogger("zonda.http2")


class StreamChannel:
    """One stream's view of its connection: the bridge's ``Transport`` for that stream's cycle."""

    __slots__ = ("conn", "core", "stream_id")

    def __init__(self, conn: H2Protocol, stream_id: int) -> None:
        self.conn = conn
        self.core: H2Connection = conn.core
        self.stream_id = stream_id

    @property
    def write_paused(self) -> bool:
        return self.conn.write_paused or self.core.is_blocked(self.stream_id)

    def flush(self) -> None:
        self.conn.flush()

    def drain(self) -> asyncio.Future[None]:
        return self.conn.drain_stream(self.stream_id)

    def create_future(self) -> asyncio.Future[Any]:
        return self.conn.loop.create_future()

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

    def upgrade(self, stream_id: int, headers: Any, core: Any, handler: Any) -> None:
        raise NotImplementedError("WebSocket over HTTP/2 goes through extended CONNECT")


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

    __slots__ = ("_ended", "_held", "_held_end", "_paused", "_timer", "_timer_at", "handler", "ws")

    def __init__(self, conn: H2Protocol, stream_id: int) -> None:
        super().__init__(conn, stream_id)
        self.ws: WSConnection | None = None
        self.handler: WebSocketCycle | None = None
        self._held = bytearray()  # DATA not yet fed: before the accept, or while paused
        self._held_end = False
        self._paused = False
        self._ended = False  # the WebSocket is over on this stream (ended, reset, or the connection lost)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    # ------------------------------------------------------------ the cycle's side

    def upgrade(self, stream_id: int, headers: Any, core: Any, handler: Any) -> None:
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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        self.conn.websockets.pop(self.stream_id, None)

    def _arm(self) -> None:
        """A timer for the core's deadline (keep-alive ping, pong wait, closing handshake), if it moved earlier."""
        ws = self.ws
        if ws is None or self._ended:
            return
        deadline = ws.deadline
        if deadline is not None and (self._timer_at is None or deadline < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = deadline
            self._timer = self.conn.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        ws = self.ws
        if ws is None or self._ended:
            return
        events = ws.handle_timer(self.conn.loop.time())
        if events:
            self._dispatch(events)
        self._arm()


class H2Protocol(H1Protocol):
    """An HTTP/2 connection. Shares the timer, write-pause and shutdown plumbing of the HTTP/1.1 driver."""

    protocol_label = "http2"

    core: H2Connection

    def __init__(
        self,
        shared: ServerShared,
        loop: asyncio.AbstractEventLoop,
        transport: asyncio.Transport,
        info: ConnectionInfo,
    ) -> None:
        super().__init__(shared, loop)
        self.transport = transport
        # the core adds its attack and error counts to the server's as they happen (metrics read them live)
        self.core = H2Connection(
            shared.h2_settings,  # type: ignore[arg-type]
            shared.defaults,
            loop.time,
            shared.h2_counters,
        )
        tally = shared.tally
        if tally is not None:
            self._count_bytes(transport, tally)
        # Scope extensions of this connection: no file sending (the driver's sendfile is HTTP/1.1 framing).
        info.extensions.pop(ZEROCOPYSEND, None)
        info.extensions.pop(PATHSEND, None)
        info.extensions.update(HTTP2_EXTENSIONS)
        session = HTTPSession(self, info, shared.context, sequential=False)
        session.stream_transport = self._channel  # type: ignore[assignment]  # a Transport, structurally
        self.session = session
        self.batching = False
        self._stream_waiters: dict[int, asyncio.Future[None]] = {}
        self.websockets: dict[int, WebSocketChannel] = {}  # accepted WebSocket streams still open

    def _count_bytes(self, transport: asyncio.Transport, tally: Tally) -> None:
        """Metrics are on: count the bytes of this connection, as ``ObservedH1Protocol`` does for HTTP/1.1.

        Bytes out: the HTTP/1.1 driver's counting transport, which a plaintext connection (prior knowledge,
        h2c) already writes through; TLS with ALPN ``h2`` never had one. Bytes in: ``data_received`` is
        replaced on this object before ``start()`` hands it to the transport (uvloop reads the callback
        then), so without metrics a read costs nothing more. Bytes the HTTP/1.1 driver read before the hand-
        over were counted there; ``start()`` feeds them past the counting."""
        if not isinstance(transport, CountingTransport):
            self.transport = CountingTransport(transport, tally)  # type: ignore[assignment]
        core = self.core
        handle = self._handle

        def data_received(data: bytes) -> None:
            tally.bytes_in += len(data)
            handle(core.receive_data(data))

        self.data_received = data_received  # type: ignore[method-assign]

    def _channel(self, stream_id: int) -> StreamChannel:
        return StreamChannel(self, stream_id)

    def websocket_channel(self, stream_id: int) -> WebSocketChannel:
        """The transport of an extended CONNECT's WebSocket cycle (``zonda.asgi.websocket``)."""
        return WebSocketChannel(self, stream_id)

    # ------------------------------------------------------------ taking over a connection

    def start(self, held: bytes = b"") -> None:
        """Take over from the HTTP/1.1 protocol: register, send our SETTINGS, feed what was already read."""
        shared = self.shared
        shared.connections.add(self)
        self.transport.set_protocol(self)
        self.flush()
        if held:
            self._handle(self.core.receive_data(held))  # not self.data_received: counted when read
        else:
            self._arm_if_earlier()

    def start_upgraded(self, request: Request, body_length: int, held: bytes) -> None:
        """h2c: answer ``request`` on stream 1; ``body_length`` bytes of its body come before the preface."""
        self.shared.connections.add(self)
        self.transport.set_protocol(self)
        events = self.core.initiate_upgrade(request, body_length)
        self._handle(events)
        if held:
            self._handle(self.core.receive_data(held))  # not self.data_received: counted when read
        else:
            self._arm_if_earlier()

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # pragma: no cover - never called
        raise AssertionError("H2Protocol takes over an open connection; see start()")

    def data_received(self, data: bytes) -> None:
        self._handle(self.core.receive_data(data))

    def _handle(self, events: list[Event]) -> None:
        core = self.core
        terminated = False
        if events:
            self.batching = True
            try:
                if self.websockets:
                    events = self._route_websockets(events)
                terminated = self.session.handle_events(events)
            finally:
                self.batching = False
            if self._stream_waiters:
                for event in events:
                    if type(event) is StreamReset:
                        self._wake(event.stream_id)
        if core.unblocked:
            for stream_id in core.unblocked:
                self._wake(stream_id)
            core.unblocked.clear()
        if terminated:
            self._log_termination(events)
        self.flush()
        self._arm_if_earlier()

    def _route_websockets(self, events: list[Event]) -> list[Event]:
        """DATA on an accepted WebSocket stream is the WebSocket's, not a request body: its channel takes it,
        even after the app has returned (the closing handshake may still run). A reset ends the WebSocket and
        still reaches the session, for the app's cycle."""
        websockets = self.websockets
        rest: list[Event] = []
        for event in events:
            kind = type(event)
            if kind is Data:
                channel = websockets.get(event.stream_id)  # type: ignore[union-attr]
                if channel is not None:
                    channel.receive(event.data, event.end_stream)  # type: ignore[union-attr]
                    continue
            elif kind is StreamReset:
                channel = websockets.get(event.stream_id)  # type: ignore[union-attr]
                if channel is not None:
                    channel.lost()
            rest.append(event)
        return rest

    def _log_termination(self, events: list[Event]) -> None:
        terminated = events[-1]
        assert isinstance(terminated, ConnectionTerminated)
        error = terminated.error
        client = self.session.info.client
        peer = f"{client[0]}:{client[1]}" if client else "client"
        if error is None:  # the idle timeout: GOAWAY NO_ERROR
            h2_log.debug("GOAWAY NO_ERROR to %s: %s", peer, terminated.reason)
            return
        name = type(error).__name__
        self.shared.rejections[name] = self.shared.rejections.get(name, 0) + 1
        if isinstance(error, H2Error):
            level = logging.WARNING if error.code == ErrorCode.ENHANCE_YOUR_CALM else logging.INFO
            h2_log.log(level, "GOAWAY %s to %s: %s", error.code.name, peer, error.detail)
        else:
            error_log.info("HTTP/2 connection from %s ended: %s", peer, error.detail)

    def connection_lost(self, exc: Exception | None) -> None:
        for channel in list(self.websockets.values()):
            channel.lost()
        super().connection_lost(exc)
        for stream_id in list(self._stream_waiters):
            self._wake(stream_id)
        counters = self.core.counters  # already in shared.h2_counters: the core adds to both
        if counters:
            h2_log.debug("HTTP/2 connection counters: %s", counters)
            stalled = counters.get("send_stall", 0) + counters.get("body_stall", 0)
            if stalled:
                # one line per connection, not per stream: a client that stalls many streams is one event
                client = self.session.info.client
                h2_log.info(
                    "HTTP/2 connection from %s ended after %d stream reset(s) for stalling over %gs "
                    "(%d with the client's window closed, %d with the request body stalled)",
                    f"{client[0]}:{client[1]}" if client else "client",
                    stalled,
                    self.core.settings.stall_timeout,
                    counters.get("send_stall", 0),
                    counters.get("body_stall", 0),
                )

    def resume_writing(self) -> None:
        super().resume_writing()
        for stream_id in list(self._stream_waiters):
            if not self.core.is_blocked(stream_id):
                self._wake(stream_id)

    # ------------------------------------------------------------ the bridge's side

    def flush(self) -> None:
        if self.batching:
            return  # written once the read's events are all handled
        core = self.core
        data = core.data_to_send()
        if data and not self._closed:
            self.transport.write(data)
        if core.closing:
            self._close()

    def drain_stream(self, stream_id: int) -> asyncio.Future[None]:
        waiter = self.loop.create_future()
        if self._closed or not (self.write_paused or self.core.is_blocked(stream_id)):
            waiter.set_result(None)
        else:
            previous = self._stream_waiters.get(stream_id)
            if previous is not None and not previous.done():
                previous.set_result(None)
            self._stream_waiters[stream_id] = waiter
            self._arm_if_earlier()  # the core may have brought its stall sweep forward (send outside a read)
        return waiter

    def _wake(self, stream_id: int) -> None:
        waiter = self._stream_waiters.pop(stream_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_reading(self) -> None:
        pass  # per stream (StreamChannel); the connection itself keeps reading for control frames

    def resume_reading(self) -> None:
        pass

    def response_complete(self) -> None:
        pass  # the core tracks stream ends; its deadline is read after every read and timer

    def upgrade(self, stream_id: int, headers: Any, core: Any, handler: Any) -> None:
        raise NotImplementedError("an HTTP/2 connection is not upgraded")

    def shutdown(self) -> None:
        if not self._closed:
            for channel in list(self.websockets.values()):
                channel.going_away()  # 1001 on each WebSocket; GOAWAY waits for their streams to end
            self.core.finish_and_close()
            self.flush()
            self._arm_if_earlier()

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._handle(self.core.handle_timer(self.loop.time()))
