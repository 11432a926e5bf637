"""An HTTP/2 connection: one ``HTTP2Connection`` per connection, one ``StreamChannel`` per stream.

A connection becomes HTTP/2 in one of three ways, all decided by the ``HTTP1Connection`` that opened it: ALPN
``h2`` on TLS, the client preface on plaintext (prior knowledge), or an ``Upgrade: h2c`` request. That object
then hands the stream over with ``stream.set_protocol`` (uvloop caches the protocol's callbacks, so swapping
methods on the old object would not reach it).

Output is batched per loop turn: frames queued while a read's events are handled, and by the app tasks that
read started when they take their turns, go out in one ``transport.write`` queued behind those tasks on the
loop (``StreamDispatch._flush_soon``): with many streams a connection writes once per read, not per stream.

WebSocket (RFC 8441): an extended CONNECT with ``:protocol websocket`` gets a ``WebSocketChannel``. Accepting
sends a 200 that leaves the stream open; from then on the stream's DATA is the WebSocket's byte stream, fed to
the same frame core as over HTTP/1.1, and END_STREAM and RST_STREAM stand for TCP's FIN and RST.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from zonda.asgi._files import FILE_OFFERS
from zonda.asgi.seams import ConnectionInfo
from zonda.asgi.session import HTTPSession
from zonda.connection.base import Connection
from zonda.connection.multiplexed import StreamDispatch
from zonda.connection.streams import StreamChannel, WebSocketChannel
from zonda.io.base import ByteStream, Loop, Waiter
from zonda.logging import describe_peer
from zonda.protocols.events import ConnectionTerminated, Event, Request
from zonda.protocols.http2 import ErrorCode, H2Connection, H2Error

if TYPE_CHECKING:
    from zonda.connection.shared import ServerShared

error_log = logging.getLogger("zonda.error")
# What the bridge offers on HTTP/2 connections (ASGI extensions.rst); copied into every request's scope.
HTTP2_EXTENSIONS: dict[str, dict[str, Any]] = {
    **FILE_OFFERS,  # the files' bytes go as the stream's DATA (StreamChannel.send_file)
    "http.response.trailers": {},
    "http.response.push": {},
    "http.response.early_hint": {},
}
h2_log = logging.getLogger("zonda.http2")

# While a read's events are handled, output waits to go out in one write, up to this many frames: an app whose
# first step runs inside the read (an eager task start, Python 3.12+) and streams must meet the transport's
# back-pressure then too, not queue its whole body in the core.
BATCH_PIECES = 64


class HTTP2Connection(StreamDispatch, Connection):
    """An HTTP/2 connection: the core, one session for all its streams, a channel per stream."""

    protocol_label = "http2"

    core: H2Connection

    def __init__(
        self,
        shared: ServerShared,
        loop: Loop,
        stream: ByteStream,
        info: ConnectionInfo,
        raw_stream: ByteStream | None = None,
    ) -> None:
        """``stream`` is written through; ``raw_stream`` is the driver's own below it, when it differs."""
        super().__init__(shared, loop)
        self.stream = stream
        self.raw_stream = stream if raw_stream is None else raw_stream
        # the core adds its attack and error counts to the server's as they happen (metrics read them live)
        settings = shared.h2_settings
        assert settings is not None, "an HTTP/2 connection on a server without HTTP/2"
        self.core = H2Connection(
            settings,
            shared.defaults,
            loop.time,
            shared.h2_counters,
            count_bytes=shared.count_bytes,
        )
        info.extensions.update(HTTP2_EXTENSIONS)
        self.session = self.handler = HTTPSession(self, info, shared.context, channels=self)
        self.batching = False
        self._flush_queued = False
        self._stream_waiters: dict[int, Waiter] = {}
        self.websockets: dict[int, WebSocketChannel] = {}  # accepted WebSocket streams still open

    def byte_counts(self) -> tuple[int, int]:
        """The core's counts: the bytes the HTTP/1.1 object read first and passed on are among them (it
        counted only what it kept), and WebSocket streams' bytes are their DATA frames'."""
        core = self.core
        return core.bytes_received + self.direct_in, core.bytes_sent + self.direct_out

    def channel(self, stream_id: int) -> StreamChannel:
        """The transport of one request's stream."""
        return StreamChannel(self, stream_id)

    def websocket_channel(self, stream_id: int) -> WebSocketChannel:
        """The transport of an extended CONNECT's WebSocket cycle (``zonda.asgi.websocket``)."""
        return WebSocketChannel(self, stream_id)

    # ------------------------------------------------------------ taking over a connection

    def start(self, held: bytes = b"") -> None:
        """Take over from the HTTP/1.1 protocol: register, send our SETTINGS, feed what was already read."""
        self.shared.connections.add(self)
        self.stream.set_protocol(self)
        self.flush()
        if held:
            self._handle(self.core.receive_data(held))
        else:
            self._arm_if_earlier()

    def start_upgraded(self, request: Request, body_length: int, held: bytes) -> None:
        """h2c: answer ``request`` on stream 1; ``body_length`` bytes of its body come before the preface."""
        self.shared.connections.add(self)
        self.stream.set_protocol(self)
        events = self.core.initiate_upgrade(request, body_length)
        self._handle(events)
        if held:
            self._handle(self.core.receive_data(held))
        else:
            self._arm_if_earlier()

    # ------------------------------------------------------------ the stream's callbacks

    def data_received(self, data: bytes) -> None:
        self._handle(self.core.receive_data(data))

    def _handle(self, events: list[Event]) -> None:
        if self._dispatch(events, self.core.unblocked):
            self._log_termination(events)
        self.flush()
        self._arm_if_earlier()

    def _log_termination(self, events: list[Event]) -> None:
        terminated = events[-1]
        assert isinstance(terminated, ConnectionTerminated)
        error = terminated.error
        client = self.session.info.client
        peer = describe_peer(client)
        if error is None:  # the idle timeout: GOAWAY NO_ERROR
            h2_log.debug("GOAWAY NO_ERROR to %s: %s", peer, terminated.reason)
            return
        shared = self.shared
        name = type(error).__name__
        shared.rejections[name] = shared.rejections.get(name, 0) + 1
        now = self.loop.time()
        if isinstance(error, H2Error):
            level = logging.WARNING if error.code == ErrorCode.ENHANCE_YOUR_CALM else logging.INFO
            shared.rejection_log.log(
                now,
                f"GOAWAY {error.code.name}",
                h2_log,
                level,
                "GOAWAY %s to %s: %s",
                error.code.name,
                peer,
                error.detail,
            )
        else:
            shared.rejection_log.log(
                now,
                f"HTTP/2 {name}",
                error_log,
                logging.INFO,
                "HTTP/2 connection from %s ended: %s",
                peer,
                error.detail,
            )

    def connection_lost(self, exc: Exception | None) -> None:
        for channel in list(self.websockets.values()):
            channel.lost()
        super().connection_lost(exc)
        self._wake_all()
        counters = self.core.counters  # already in shared.h2_counters: the core adds to both
        if counters:
            h2_log.debug("HTTP/2 connection counters: %s", counters)
            self._log_slow_streams(counters)

    def _log_slow_streams(self, counters: dict[str, int]) -> None:
        """One line per connection, not per stream (a client that stalls many streams is one event), for the
        streams reset for waiting on a slow client."""
        settings = self.core.settings
        kinds = (
            ("send_stall", f"with the client's window closed for {settings.send_stall_timeout or 0:g}s"),
            ("body_stall", f"with the request body stalled for {settings.stall_timeout:g}s"),
            ("body_rate", f"with the request body under {settings.min_body_rate} bytes/s"),
        )
        found = [(counters[name], text) for name, text in kinds if counters.get(name)]
        if not found:
            return
        client = self.session.info.client
        self.shared.rejection_log.log(
            self.loop.time(),
            "HTTP/2 slow-client stream resets",
            h2_log,
            logging.INFO,
            "HTTP/2 connection from %s ended after %d stream reset(s) for slow clients: %s",
            describe_peer(client),
            sum(count for count, _ in found),
            ", ".join(f"{count} {text}" for count, text in found),
        )

    def resume_writing(self) -> None:
        super().resume_writing()
        for stream_id in list(self._stream_waiters):
            if not self.core.is_blocked(stream_id):
                self._wake(stream_id)

    # ------------------------------------------------------------ the bridge's side

    def flush(self) -> None:
        core = self.core
        if core.queued() < BATCH_PIECES and not core.closing:
            if not self.batching:  # else written once the read's events are all handled
                self._flush_soon()
            return
        self._flush_now()

    def _flush_now(self) -> None:
        self._flush_queued = False
        core = self.core
        data = core.data_to_send()
        if data and not self._closed:
            self.stream.write(data)
        if core.closing:
            self._close()

    def _queued_output(self) -> bytes:
        raise NotImplementedError("files go out on a request's stream (StreamChannel.send_file)")

    def drain_stream(self, stream_id: int) -> Waiter:
        ready = self._closed or not (self.write_paused or self.core.is_blocked(stream_id))
        if not ready:
            self._arm_if_earlier()  # the core may have brought its stall sweep forward (send outside a read)
        return self._stream_waiter(stream_id, ready)

    def pause_reading(self) -> None:
        pass  # per stream (StreamChannel); the connection itself keeps reading for control frames

    def resume_reading(self) -> None:
        pass

    def response_complete(self) -> None:
        pass  # the core tracks stream ends; its deadline is read after every read and timer

    def shutdown(self) -> None:
        if not self._closed:
            self.batching = True  # the close frames and the GOAWAY go out in one write
            try:
                for channel in list(self.websockets.values()):
                    channel.going_away()  # 1001 on each WebSocket; GOAWAY waits for their streams to end
                self.core.finish_and_close()
            finally:
                self.batching = False
            self.flush()
            self._arm_if_earlier()

    def stop_streaming(self) -> int:
        """Later in a graceful shutdown: ``http.disconnect`` to responses still streaming (``HTTPSession``)."""
        return 0 if self._closed else self.session.stop_streaming()

    def core_deadline(self) -> float | None:
        return self.core.deadline

    def _on_timer(self) -> None:
        now = self.loop.time()
        if self._write_check is not None and self._writes_stalled(now):
            return
        self._handle(self.core.handle_timer(now))
