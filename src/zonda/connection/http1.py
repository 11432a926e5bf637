"""An HTTP/1.1 connection: the core and the bridge on one byte stream, and every switch away from HTTP/1.1.

``data_received`` -> core -> bridge -> ``stream.write`` runs synchronously. A connection opens as HTTP/1.1 and
may leave it: ALPN ``h2`` (TLS), ``--http 2`` (every connection, at once) or the client preface (prior
knowledge) hand the stream to an ``HTTP2Connection``; an ``Upgrade: h2c`` request is answered with 101 and
served over HTTP/2; an accepted WebSocket swaps the frame core in and makes the cycle the event handler. Over
the limit of open connections a new one gets a 503 and is closed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from zonda.asgi._files import FILE_OFFERS
from zonda.asgi.seams import ConnectionInfo
from zonda.asgi.session import HTTPSession
from zonda.connection.base import ActiveCore, Connection, EventHandler
from zonda.connection.log import log_opened
from zonda.errors import ProtocolError, RequestTimeout
from zonda.io.base import ByteStream
from zonda.logging import describe_peer
from zonda.protocols.events import ConnectionTerminated, Event, HTTP2Preface, Request
from zonda.protocols.http1 import H1Connection, error_response
from zonda.tls import tls_extension

if TYPE_CHECKING:
    import ssl

    from zonda.asgi.websocket import WebSocketCycle
    from zonda.protocols.websocket import WSConnection

error_log = logging.getLogger("zonda.error")
Address = tuple[str, int]
# What the bridge offers on HTTP/1.1 connections (ASGI extensions.rst); copied into every request's scope.
HTTP1_EXTENSIONS: dict[str, dict[str, Any]] = {
    **FILE_OFFERS,
    "http.response.trailers": {},  # sent after the last chunk when the client said te: trailers
    "http.response.early_hint": {},  # 103 Early Hints, never to an HTTP/1.0 client
}


class HTTP1Connection(Connection):
    """One connection as HTTP/1.1 (or, after an accepted upgrade, as a WebSocket)."""

    core: H1Connection  # the HTTP/1.1 core: the bridge answers requests through it
    active: ActiveCore  # the core that reads now: ``core``, or a WebSocket's frame core after an upgrade
    handler: EventHandler  # who gets the active core's events: the session, or an accepted WebSocket cycle

    def open(
        self,
        stream: ByteStream,
        client: Address | None,
        server: tuple[str, int | None] | None,
        ssl_object: ssl.SSLObject | None,
    ) -> None:
        """The driver accepted ``stream`` (its TLS handshake done, if any): serve it."""
        shared = self.shared
        self.stream = self.raw_stream = stream
        if shared.limit_connections and len(shared.connections) >= shared.limit_connections:
            shared.stats_refused += 1
            shared.rejection_log.log(
                self.loop.time(),
                "503 response (--limit-connections)",
                error_log,
                logging.WARNING,
                "Connection refused: --limit-connections %d reached",
                shared.limit_connections,
            )
            refusal = ProtocolError("too many connections", status=503)
            response = error_response(refusal, shared.defaults, b"retry-after: 1\r\n")
            stream.write(response)
            if shared.count_bytes:  # never registered: straight to the server's totals
                shared.bytes_out += len(response)
            stream.close()
            self._closed = True
            return
        if shared.log_connections:
            log_opened(client, server, ssl_object is not None)
        info = self._connection_info(client, server, ssl_object)
        if (ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2") or (
            shared.http2_only and self._http2_from_the_first_byte(client)
        ):
            self._start_http2(b"", info)
            return
        shared.connections.add(self)
        self.core = self.active = H1Connection(
            shared.limits, shared.defaults, self.loop.time, count_bytes=shared.count_bytes
        )
        self.session = self.handler = HTTPSession(self, info, shared.context, upgrades=self)
        self.plaintext = ssl_object is None
        info.extensions.update(HTTP1_EXTENSIONS)
        self._arm_if_earlier()

    def _http2_from_the_first_byte(self, client: Address | None) -> bool:
        """``--http 2``: the HTTP/2 core reads the connection from its first byte, so an HTTP/1.1 request or a
        bad preface is a connection error (GOAWAY PROTOCOL_ERROR), not an HTTP/1.1 400. A subclass that reads
        something first (a PROXY protocol header) says no and hands over after it."""
        return True

    def _connection_info(
        self, client: Address | None, server: tuple[str, int | None] | None, ssl_object: ssl.SSLObject | None
    ) -> ConnectionInfo:
        if ssl_object is None:
            return self.make_info(client, server, "http")
        info = self.make_info(client, server, "https")  # WebSocket scopes turn it into "wss"
        info.extensions["tls"] = tls_extension(ssl_object, self.shared.server_cert)  # never on plain HTTP
        return info

    def make_info(
        self, client: Address | None, server: tuple[str, int | None] | None, scheme: str
    ) -> ConnectionInfo:
        info = ConnectionInfo(client, server, scheme, self.shared.context.root_path)
        proxy = self.shared.proxy
        if proxy is not None:  # the peer is judged once, here: trusted or not (zonda.proxy)
            info.rewrite = proxy.rewriter(client[0] if client else None)
        return info

    # ------------------------------------------------------------ the stream's callbacks

    def data_received(self, data: bytes) -> None:
        events = self.active.receive_data(data)
        if events and self.handler.handle_events(events):
            self._terminated(events)
        self._arm_if_earlier()

    # ------------------------------------------------------------ the bridge's transport

    def flush(self) -> None:
        core = self.active
        data = core.data_to_send()
        if data and not self._closed:
            self.stream.write(data)
            if self.stream.is_closing() and not core.closing:
                # The write failed (peer gone): make send() wait for connection_lost, then raise.
                self.write_paused = True
        if core.closing:
            self._close()

    def _queued_output(self) -> bytes:
        return self.core.data_to_send()

    def byte_counts(self) -> tuple[int, int]:
        received, sent = self.direct_in, self.direct_out
        if self.session is None:  # refused, or handed to HTTP/2 before HTTP/1.1 began: no core was made
            return received, sent
        core, active = self.core, self.active
        received += core.bytes_received
        sent += core.bytes_sent
        if active is not core:  # a WebSocket's frame core, after the upgrade
            received += active.bytes_received
            sent += active.bytes_sent
        return received, sent

    def pause_reading(self) -> None:
        if not self.reading_paused and not self._closed:
            self.reading_paused = True
            self.stream.pause_reading()
            self.active.set_reading_paused(True)

    def resume_reading(self) -> None:
        if self.reading_paused and not self._closed:
            self.reading_paused = False
            self.stream.resume_reading()
            self.active.set_reading_paused(False)
            self._arm_if_earlier()

    def response_complete(self) -> None:
        core = self.core
        if core.closing or self._closed:
            return
        if core.has_held_data:
            self.data_received(b"")
            return
        # the keep-alive deadline: earlier than the armed one only after a long request
        deadline = core.deadline
        if deadline is not None:
            at = self.timer.at
            if at is None or deadline < at:
                self.timer.arm(deadline)

    # ------------------------------------------------------------ switching protocols

    def _start_http2(self, data: bytes, info: ConnectionInfo) -> None:
        """ALPN chose h2, or the client opened with the HTTP/2 preface: an ``HTTP2Connection`` takes the
        stream."""
        from zonda.connection.http2 import HTTP2Connection

        self._hand_over()
        h2 = HTTP2Connection(self.shared, self.loop, self.stream, info, self.raw_stream)
        self.let_go_of_stream()
        h2.start(data)

    def upgrade_h2c(self, request: Request) -> None:
        """Answer an ``Upgrade: h2c`` request with 101 and serve it, and the connection, over HTTP/2."""
        from zonda.connection.http2 import HTTP2Connection
        from zonda.protocols.http2 import h2c_upgrade

        if self._closed:
            # Closed before the upgrade's turn came (an earlier response said `Connection: close`, or the peer
            # went): its connection_lost may have come already, so an HTTP/2 object made now would never leave
            # the registry, and its frames would follow the close.
            return
        try:
            body_length, settings = h2c_upgrade(request)
        except ProtocolError as refusal:
            response = error_response(refusal, self.shared.defaults)
            self.stream.write(response)
            self.direct_out += len(response)
            self._close()
            return
        held = self.core.accept_upgrade(
            request.stream_id, [(b"connection", b"Upgrade"), (b"upgrade", b"h2c")]
        )
        self.flush()
        if self.reading_paused:  # paused for a request pipelined before this one: HTTP/2 reads from here
            self.reading_paused = False
            self.stream.resume_reading()
        self._hand_over()
        h2 = HTTP2Connection(self.shared, self.loop, self.stream, self.session.info, self.raw_stream)
        self.let_go_of_stream()
        with contextlib.suppress(ProtocolError):  # bad settings: the client's SETTINGS frame follows anyway
            h2.core.apply_http2_settings(settings)
        h2.flush()  # our SETTINGS, the first HTTP/2 frame after 101 (RFC 7540 §3.2)
        h2.start_upgraded(request, body_length, held)

    def _hand_over(self) -> None:
        """This object leaves the connection to another: unregister it, publish its byte counts (the bytes it
        passes on are the next core's to count) and stop its timer."""
        self.shared.connections.discard(self)
        self.publish_bytes()
        self.timer.cancel()
        self._closed = True  # nothing more goes through this object

    def upgrade(
        self,
        stream_id: int,
        headers: Iterable[tuple[bytes, bytes]],
        core: WSConnection,
        handler: WebSocketCycle,
    ) -> None:
        """Answer the upgrade request with 101; from now on ``core`` parses and ``handler`` gets its events."""
        held = self.core.accept_upgrade(stream_id, headers)
        self.flush()
        core.count_bytes = self.shared.count_bytes  # its bytes are this connection's from now on
        self.active = core
        self.handler = handler
        self.protocol_label = "websocket"
        if self.reading_paused:  # paused for pipelining, which is over: the new protocol reads from here
            self.reading_paused = False
            self.stream.resume_reading()
        if held:
            self.data_received(held)
        else:
            self._arm_if_earlier()

    # ------------------------------------------------------------ shutdown and time

    def shutdown(self) -> None:
        """Graceful shutdown: finish what was received, then close."""
        if not self._closed:
            self.active.finish_and_close()
            self.flush()
            self._arm_if_earlier()  # e.g. the deadline for a WebSocket peer's answer to Going Away

    def stop_streaming(self) -> int:
        """Later in a graceful shutdown (``--shutdown-stream-notice``): ``http.disconnect`` to the responses
        still streaming with their request read whole, so their apps end them cleanly; returns how many."""
        if self._closed or self.handler is not self.session:  # e.g. a WebSocket: it had Going Away
            return 0
        return self.session.stop_streaming()

    def core_deadline(self) -> float | None:
        return self.active.deadline

    def _arm_if_earlier(self) -> None:
        # DeadlineTimer.arm's test inlined: this runs at every read and response, and the deadline rarely moves
        # earlier (keep-alive's moves later with each request).
        deadline = self.active.deadline
        if deadline is not None and not self._closed:
            at = self.timer.at
            if at is None or deadline < at:
                self.timer.arm(deadline)

    def _on_timer(self) -> None:
        now = self.loop.time()
        if self._write_check is not None and self._writes_stalled(now):
            return
        events = self.active.handle_timer(now)
        if events and self.handler.handle_events(events):
            self._terminated(events)
        self._arm_if_earlier()

    def _terminated(self, events: list[Event]) -> None:
        if type(events[0]) is HTTP2Preface:
            self._start_http2(events[0].data, self.session.info)
            return
        terminated = events[-1]
        assert isinstance(terminated, ConnectionTerminated)
        error = terminated.error
        if error is not None:
            shared = self.shared
            name = type(error).__name__
            shared.rejections[name] = shared.rejections.get(name, 0) + 1
            level = logging.INFO if isinstance(error, RequestTimeout) else logging.WARNING
            client = self.session.info.client
            shared.rejection_log.log(
                self.loop.time(),
                f"{error.status} response ({name})",
                error_log,
                level,
                "%d response to %s: %s",
                error.status,
                describe_peer(client),
                error.detail,
            )
        self.flush()
