"""An HTTP/3 connection: one ``HTTP3Connection`` per QUIC connection, one ``StreamChannel`` per request stream.

The QUIC endpoint (``connection.quic``) makes one per new connection and hands it the datagrams routed to it.
Everything else is as on HTTP/2: one ``HTTPSession`` for all the streams, the same stream channels, the same
bridge; output is batched per loop turn (frames queued while a datagram is handled, and by the app tasks it
started when they take their turns, go out in one round of packets queued behind those tasks), and one timer
follows the QUIC connection's own (``QuicConnection.get_timer``: loss detection, acknowledgements, the idle
timeout).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from zonda.asgi._files import FILE_OFFERS
from zonda.asgi.seams import ConnectionInfo
from zonda.asgi.session import HTTPSession
from zonda.connection.multiplexed import StreamDispatch
from zonda.connection.streams import StreamChannel, WebSocketChannel
from zonda.connection.timer import DeadlineTimer
from zonda.io.base import Loop, Waiter
from zonda.logging import describe_peer
from zonda.protocols.events import ConnectionTerminated, Event
from zonda.protocols.http3 import INTERIM_RESPONSES, H3Core, H3ErrorCode

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from zonda.connection.shared import ServerShared
    from zonda.io.base import DatagramSender

h3_log = logging.getLogger("zonda.http3")
# What the bridge offers on HTTP/3 connections (ASGI extensions.rst); copied into every request's scope.
HTTP3_EXTENSIONS: dict[str, dict[str, Any]] = {
    **FILE_OFFERS,  # the files' bytes go as the stream's DATA (StreamChannel.send_file)
    "http.response.trailers": {},
}
if INTERIM_RESPONSES:
    HTTP3_EXTENSIONS["http.response.early_hint"] = {}


class Endpoint(Protocol):
    """What a connection asks of the QUIC endpoint that made it (``connection.quic.QuicEndpoint``)."""

    @property
    def sender(self) -> DatagramSender: ...

    def update_ids(self, connection: HTTP3Connection) -> None:
        """The connection's core issued or retired connection IDs: route by its current ones."""
        ...

    def handshake_done(self, connection: HTTP3Connection) -> None: ...
    def forget(self, connection: HTTP3Connection) -> None:
        """The connection is gone: its datagrams are no longer routed to it."""
        ...


class HTTP3Connection(StreamDispatch):
    """One QUIC connection serving HTTP/3: the core, one session for all its streams, a channel per stream."""

    protocol_label = "http3"

    def __init__(
        self, shared: ServerShared, loop: Loop, endpoint: Endpoint, core: H3Core, info: ConnectionInfo
    ) -> None:
        self.shared = shared
        self.loop = loop
        self.endpoint = endpoint
        self.core = core
        self.write_paused = False  # a QUIC connection never pauses as a whole: its streams do (is_blocked)
        self.websockets: dict[int, WebSocketChannel] = {}  # accepted WebSocket streams still open (RFC 9220)
        self.spawn = loop.spawn
        info.extensions.update(HTTP3_EXTENSIONS)
        self.session = HTTPSession(self, info, shared.context, channels=self)
        self.timer = DeadlineTimer(loop, self._on_timer)
        self.batching = False
        self._flush_queued = False
        self._closed = False
        self._stream_waiters: dict[int, Waiter] = {}
        self._tls_pending = True  # the tls scope extension, once the handshake says what it agreed
        shared.connections.add(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def channel(self, stream_id: int) -> StreamChannel:
        """The transport of one request's stream."""
        return StreamChannel(self, stream_id)

    def websocket_channel(self, stream_id: int) -> WebSocketChannel:
        """The transport of an extended CONNECT's WebSocket cycle (RFC 9220, as RFC 8441 over HTTP/2)."""
        return WebSocketChannel(self, stream_id)

    # ------------------------------------------------------------ datagrams and time

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._handle(self.core.receive_datagram(data, addr))

    def _on_timer(self) -> None:
        self._handle(self.core.handle_timer(self.loop.time()))

    def _handle(self, events: list[Event]) -> None:
        core = self.core
        if self._tls_pending and core.cipher_suite is not None:
            self._offer_tls(core.cipher_suite)
        if self._dispatch(events, core.unblocked):
            self._log_termination(events)
        self.flush()

    def _offer_tls(self, cipher_suite: int) -> None:
        """The ``tls`` scope extension (0.2) for the requests to come: QUIC is TLS 1.3 (RFC 9001). zonda's QUIC
        asks for no client certificate."""
        self._tls_pending = False
        self.endpoint.handshake_done(self)
        self.session.info.extensions["tls"] = {
            "server_cert": self.shared.server_cert,
            "client_cert_chain": [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": 0x0304,
            "cipher_suite": cipher_suite,
        }

    def _log_termination(self, events: list[Event]) -> None:
        terminated = events[-1]
        assert isinstance(terminated, ConnectionTerminated)
        if terminated.error is not None:
            client = self.session.info.client
            self.shared.rejection_log.log(
                self.loop.time(),
                "HTTP/3 connection error",
                h3_log,
                logging.INFO,
                "HTTP/3 connection from %s ended: %s",
                describe_peer(client),
                terminated.error.detail,
            )

    # ------------------------------------------------------------ the bridge's side

    def flush(self) -> None:
        if not self.batching:  # else sent once the datagram's events are all handled
            self._flush_soon()

    def _flush_now(self) -> None:
        self._flush_queued = False
        core = self.core
        if not self._closed:
            self._send(core.datagrams_to_send())
        self.endpoint.update_ids(self)
        if core.terminated:
            self._lost()
        else:
            self.timer.arm(core.deadline)

    def _send(self, datagrams: list[tuple[bytes, Any]]) -> None:
        send = self.endpoint.sender.sendto
        for data, addr in datagrams:
            send(data, addr)

    def byte_counts(self) -> tuple[int, int]:
        """The UDP payloads the core was fed and handed out (``zonda_bytes_total``)."""
        core = self.core
        return core.bytes_received, core.bytes_sent

    def drain_stream(self, stream_id: int) -> Waiter:
        return self._stream_waiter(stream_id, self._closed or not self.core.is_blocked(stream_id))

    def drain(self) -> Waiter:
        waiter = self.loop.create_waiter()
        waiter.set_result(None)
        return waiter

    def create_waiter(self) -> Waiter:
        return self.loop.create_waiter()

    def time(self) -> float:
        return self.loop.time()

    def pause_reading(self) -> None:
        pass  # per stream (StreamChannel)

    def resume_reading(self) -> None:
        pass

    def response_complete(self) -> None:
        pass  # the core tracks stream ends

    def rearm(self) -> None:
        if not self._closed:
            self.timer.arm(self.core.deadline)

    def send_file(self, *args: object) -> Coroutine[Any, Any, int]:
        raise NotImplementedError("files go out on a request's stream (StreamChannel.send_file)")

    # ------------------------------------------------------------ shutdown and loss

    def shutdown(self) -> None:
        """Graceful shutdown: GOAWAY, then close once the streams in flight are done."""
        if not self._closed:
            self.batching = True  # the close frames and the GOAWAY go out together
            try:
                for channel in list(self.websockets.values()):
                    channel.going_away()  # 1001 on each WebSocket; the connection closes once their streams end
                self.core.finish_and_close()
            finally:
                self.batching = False
            self.flush()

    def stop_streaming(self) -> int:
        return 0 if self._closed else self.session.stop_streaming()

    def abort(self) -> None:
        """The graceful timeout is over: CONNECTION_CLOSE now, and forget the connection."""
        if not self._closed:
            self.core.quic.close(error_code=H3ErrorCode.H3_NO_ERROR, reason_phrase="server shutting down")
            self._send(self.core.datagrams_to_send())
            self._lost()

    def _lost(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.timer.cancel()
        for channel in list(self.websockets.values()):
            channel.lost()
        self.endpoint.forget(self)
        shared = self.shared
        shared.connections.discard(self)
        if shared.count_bytes:  # once: _closed is set
            received, sent = self.byte_counts()
            shared.bytes_in += received
            shared.bytes_out += sent
        self.session.connection_lost()
        self._wake_all()
