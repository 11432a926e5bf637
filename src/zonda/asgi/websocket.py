"""The ASGI WebSocket bridge (www spec 2.5 and the ``websocket.http.response`` extension).

A ``WebSocketCycle`` starts as one request of an HTTP session: the app gets ``websocket.connect`` while the
handshake is pending. ``websocket.accept`` switches the connection to the frame-level core and makes the
cycle the connection's event handler; ``websocket.close`` before accepting answers 403, and
``websocket.http.response.*`` sends the app's own HTTP response. Messages from the peer wait in a bounded
queue; when it is full, the connection stops being read.

A peer that breaks the protocol after good messages: the core holds the failure while the app has those messages
to take or is handling one (``_app_busy``), and the cycle releases it when the app asks for more, so the app's
answers to them (an echo) go out before the close frame (Autobahn "OK", not "NON-STRICT").

Over HTTP/2 (RFC 8441) the WebSocket is one stream of the connection: the cycle gets that stream's own
transport (``websocket_channel``), which answers ``websocket.accept`` with a 200 that leaves the stream open and
from then on carries the frames in DATA frames; "stops being read" closes the stream's flow-control window.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from zonda.asgi.seams import WebSocketTransport
from zonda.asgi.types import ASGIApp, Message, Scope
from zonda.errors import AppProtocolError, ClientDisconnected, split_cancellation
from zonda.logging import describe_peer
from zonda.protocols.events import ConnectionTerminated, Request
from zonda.protocols.websocket import Handshake, PeerClosed, WSConnection, WSSettings
from zonda.protocols.websocket import Message as WSMessage

if TYPE_CHECKING:
    from zonda.asgi.session import HTTPSession

error_log = logging.getLogger("zonda.error")


class StreamTunnel(WebSocketTransport, Protocol):
    """One stream's transport on a multiplexed connection, able to carry a WebSocket (HTTP/2: RFC 8441)."""

    def receive(self, data: bytes, end_stream: bool) -> None:
        """The stream's DATA (END_STREAM: the peer's end, as TCP's FIN over HTTP/1.1)."""
        ...


class WSState(enum.Enum):
    CONNECTING = "handshake pending"
    RESPONDING = "sending an HTTP denial response"
    OPEN = "open"
    CLOSED = "closed"


class WebSocketCycle:
    """One WebSocket: the app's ``receive``/``send``, then the connection's event handler once accepted."""

    def __init__(
        self, session: HTTPSession, request: Request, scope: Scope, handshake: Handshake, settings: WSSettings
    ) -> None:
        self.session = session
        self.info = session.info
        self.stream_id = request.stream_id
        self.tunnel: StreamTunnel | None = None
        self.transport: WebSocketTransport
        channels = session.channels
        if (
            channels is not None
        ):  # HTTP/2: the stream's own transport, which carries the WebSocket once accepted
            self.transport = self.tunnel = channels.websocket_channel(request.stream_id)
        elif session.upgrades is not None:  # HTTP/1.1: the connection is the transport, upgraded on accept
            self.transport = session.upgrades
        else:
            raise TypeError("a WebSocket needs an upgradable connection or stream channels")
        self.scope = scope
        self.app: ASGIApp = session.context.app
        self.stats = session.context.stats
        self.handshake = handshake
        self.settings = settings
        self.state = WSState.CONNECTING
        self.accepted = False  # by websocket.accept (not a denial): what the metrics count as a connection
        self.status = 0
        self.bytes_sent = 0
        self.started_at = 0.0
        self.disconnected = False
        self.core: WSConnection | None = None
        self._connect_sent = False
        self._disconnect_message: Message | None = None
        self._inbox: deque[Message] = deque()
        self._waiter: Any = None
        self._paused = False
        self._app_done = False  # the app returned: nobody receives any more
        self._handling = False  # the app took a message and has not asked for the next yet

    # ------------------------------------------------------ events from the core

    def on_data(self, data: bytes, end_stream: bool) -> None:
        """HTTP/2: DATA on the stream before the WebSocket is accepted (the session routes it here). The
        stream's transport holds it for the WebSocket core; once accepted, the driver feeds it directly."""
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.receive(data, end_stream)

    # ------------------------------------------------------ events from the WebSocket core (after accept)

    def handle_events(self, events: list[Any]) -> bool:
        terminated = False
        for event in events:
            kind = type(event)
            if kind is WSMessage:
                self.stats.ws_messages_in += 1
                data = event.data
                if type(data) is str:
                    self._deliver({"type": "websocket.receive", "text": data})
                else:
                    self._deliver({"type": "websocket.receive", "bytes": data})
            elif kind is PeerClosed:
                if event.failure:
                    client = self.info.client
                    self.session.context.rejection_log.log(
                        self.session.transport.time(),
                        f"WebSocket closed with {event.code}",
                        error_log,
                        logging.INFO,
                        "WebSocket %s from %s closed with %d: %s",
                        self.path,
                        describe_peer(client),
                        event.code,
                        event.reason,
                    )
                self._disconnect(event.code, event.reason)
            elif kind is ConnectionTerminated:
                terminated = True
        if len(self._inbox) >= self.settings.max_queue and not self._paused:
            self._paused = True
            self.transport.pause_reading()  # the app is behind: stop reading until it catches up
        self.transport.flush()  # pongs and close replies the core queued
        return terminated

    def connection_lost(self) -> None:
        self._disconnect(1006, "")
        self.session.connection_lost()

    def on_disconnect(self) -> None:
        self._disconnect(1006, "")

    @property
    def idle(self) -> bool:
        return False

    def _deliver(self, message: Message) -> None:
        if self._app_done:
            return
        self._inbox.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _disconnect(self, code: int, reason: str) -> None:
        if not self.disconnected:
            self.disconnected = True
            message = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._disconnect_message = message
            self._deliver(message)

    # ------------------------------------------------------ the app's side

    async def receive(self) -> Message:
        if not self._connect_sent:
            self._connect_sent = True
            return {"type": "websocket.connect"}
        while not self._inbox:
            if self._disconnect_message is not None:
                return dict(self._disconnect_message)  # asked again after the disconnect: the same answer
            self._handling = False
            core = self.core
            if core is not None and core.failure_held:
                self._release_failure()  # the app has had every message before the bad frame
                continue
            waiter = self._waiter = self.transport.create_waiter()
            try:
                await waiter
            finally:
                self._waiter = None
        message = self._inbox.popleft()
        self._handling = True
        if self._paused and len(self._inbox) <= self.settings.max_queue // 2:
            self._paused = False
            self.transport.resume_reading()
        return message

    async def send(self, message: Message) -> None:
        try:
            message_type = message["type"]
        except (KeyError, TypeError):
            raise AppProtocolError(
                f"ASGI message must be a dict with a 'type' key, got {message!r}"
            ) from None
        state = self.state
        if state is WSState.OPEN:
            await self._send_open(message_type, message)
        elif state is WSState.CONNECTING:
            self._send_connecting(message_type, message)
        elif state is WSState.RESPONDING:
            self._send_http_body(message_type, message)
        else:
            raise ClientDisconnected(f"WebSocket is closed; cannot send {message_type!r}")

    async def _send_open(self, message_type: str, message: Message) -> None:
        core = self.core
        assert core is not None
        if self.disconnected or not core.open:
            raise ClientDisconnected(f"WebSocket is closed; cannot send {message_type!r}")
        if message_type == "websocket.send":
            data = _payload(message)
            core.send_message(data)
            self.bytes_sent += len(data)
            self.stats.ws_messages_out += 1
            self.transport.flush()
            if self.transport.write_paused:
                await self.transport.drain()
        elif message_type == "websocket.close":
            code = message.get("code", 1000)
            reason = message.get("reason") or ""
            if type(code) is not int:
                raise AppProtocolError(f"websocket.close 'code' must be an int, got {code!r}")
            if core.failure_held:
                self._release_failure()  # the peer's failure, found first, is the close that goes out
                return
            try:
                core.send_close(code, reason)
            except ValueError as exc:  # a reserved code or a reason over 123 bytes
                raise AppProtocolError(f"websocket.close: {exc} ({code}, {reason!r})") from exc
            self._flush_close()
        else:
            raise AppProtocolError(f"Expected 'websocket.send' or 'websocket.close', got {message_type!r}")

    def _send_connecting(self, message_type: str, message: Message) -> None:
        if self.disconnected:
            raise ClientDisconnected(f"client disconnected before {message_type!r} could be sent")
        if message_type == "websocket.accept":
            self._accept(message)
        elif message_type == "websocket.close":
            self._respond(403, [(b"content-type", b"text/plain; charset=utf-8")], b"Forbidden\n")
        elif message_type == "websocket.http.response.start":
            status = message.get("status")
            if type(status) is not int:
                raise AppProtocolError(
                    f"websocket.http.response.start 'status' must be an int, got {status!r}"
                )
            headers = [*message.get("headers", ()), (b"connection", b"close")]
            self.transport.core.send_response(self.stream_id, status, headers)
            self.status = status
            self.state = WSState.RESPONDING
        else:
            raise AppProtocolError(
                "Expected 'websocket.accept', 'websocket.close' or 'websocket.http.response.start', "
                f"got {message_type!r}"
            )

    def _send_http_body(self, message_type: str, message: Message) -> None:
        if message_type != "websocket.http.response.body":
            raise AppProtocolError(f"Expected 'websocket.http.response.body', got {message_type!r}")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if type(body) is not bytes:  # as http.response.body's
            if not isinstance(body, bytes | bytearray | memoryview):
                raise AppProtocolError(
                    f"websocket.http.response.body 'body' must be bytes, got {type(body).__name__}"
                )
            body = bytes(body)
        self.bytes_sent += len(body)
        self.transport.core.send_body(self.stream_id, body, not more)
        self.transport.flush()
        if not more:
            self.state = WSState.CLOSED
            self.session.response_complete(self)

    def _accept(self, message: Message) -> None:
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and subprotocol not in self.handshake.subprotocols:
            raise AppProtocolError(
                f"websocket.accept: subprotocol {subprotocol!r} was not offered by the client"
            )
        headers, extensions = self.handshake.accept_headers(self.settings, subprotocol)
        for name, value in message.get("headers", ()):
            if name.lower() in (
                b"sec-websocket-protocol",
                b"sec-websocket-accept",
                b"upgrade",
                b"connection",
            ):
                raise AppProtocolError(f"websocket.accept: header {name!r} is the server's to send")
            headers.append((name, value))
        self.core = WSConnection(self.settings, extensions, self.transport.time, self._app_busy)
        self.status = 200 if self.handshake.extended_connect else 101
        self.state = WSState.OPEN
        self.accepted = True
        try:
            self.transport.upgrade(self.stream_id, headers, self.core, self)
        except AppProtocolError:
            # Headers the app got wrong, found before anything was sent: still connecting, so the app's
            # failure is answered with a 500 (as open, it would wait for a close frame that never left).
            self.core = None
            self.status = 0
            self.state = WSState.CONNECTING
            self.accepted = False
            raise
        if self.session.context.access_log:
            self.log_access()  # the 101: the HTTP session has handed the connection over

    def _respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        core = self.transport.core
        core.send_response(
            self.stream_id,
            status,
            [*headers, (b"content-length", b"%d" % len(body)), (b"connection", b"close")],
        )
        core.send_body(self.stream_id, body, True)
        self.status = status
        self.bytes_sent = len(body)
        self.state = WSState.CLOSED
        self.transport.flush()
        self.session.response_complete(self)

    async def run(self) -> None:
        """Call the app; close or answer for whatever it leaves undone."""
        try:
            await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except Exception as exc:
            self._app_failed(exc)
        except (
            BaseException
        ) as exc:  # cancellation at shutdown, never swallowed; a task group's errors with it
            failure, cancellation = split_cancellation(exc)
            if failure is not None:
                self._app_failed(failure)
            elif self.state is WSState.OPEN and self.core is not None:
                self.core.send_close(1012, "server restarting")
                self._flush_close()
            self._stop_receiving()
            self.session.cycle_finished(self)
            if cancellation is not None:
                raise cancellation  # noqa: B904  # passed on as it came, not chained to its own group
            return
        else:
            if self.state is WSState.CONNECTING:
                error_log.error(
                    "ASGI app returned without accepting or closing the WebSocket (%s)", self.path
                )
                self._respond(500, [], b"Internal Server Error\n")
            elif self.state is WSState.OPEN and self.core is not None and self.core.open:
                self.core.send_close(1000)  # the app is done with the socket
                self._flush_close()
            elif self.state is WSState.RESPONDING:
                self.transport.abort()
        self._stop_receiving()
        self.session.cycle_finished(self)

    def _stop_receiving(self) -> None:
        """The app is done: what still comes is dropped, and reading paused for the app's sake goes on, or the
        peer's close frame would never be read and the closing handshake would wait out its timeout."""
        self._app_done = True
        self._inbox.clear()
        if self._paused:
            self._paused = False
            self.transport.resume_reading()

    def _app_failed(self, exc: Exception) -> None:
        if self.disconnected:
            error_log.debug("ASGI app raised after the WebSocket closed (%s)", self.path, exc_info=exc)
            return
        error_log.error("Exception in ASGI app (WebSocket %s)", self.path, exc_info=exc)
        if self.state is WSState.CONNECTING:
            self._respond(500, [], b"Internal Server Error\n")
        elif self.state is WSState.OPEN and self.core is not None:
            self.core.send_close(1011, "internal error")
            self._flush_close()
        elif self.state is WSState.RESPONDING:
            self.transport.abort()

    def _app_busy(self) -> bool:
        """Has the app messages still to take, or one it is handling? A failure then waits for it."""
        return not self._app_done and (bool(self._inbox) or self._handling)

    def _release_failure(self) -> None:
        """The failure the core held goes out (close frame, end of the connection); the app hears of it."""
        assert self.core is not None
        self.handle_events(self.core.release_failure())

    def _flush_close(self) -> None:
        """Write the close frame just queued and arm the timer for the peer's answer."""
        self.transport.flush()
        self.transport.rearm()

    @property
    def path(self) -> str:
        return str(self.scope["path"])

    def log_access(self) -> None:
        """The per-response hook (access log, metrics): for the 101 (200 over HTTP/2), or a denial's answer."""
        self.session.context.on_response(self)


def _payload(message: Message) -> bytes | str:
    data = message.get("bytes")
    text = message.get("text")
    if data is not None and text is None:
        if type(data) is bytes:  # the common case, without building a union type per message
            return data
        if not isinstance(data, bytes | bytearray | memoryview):
            raise AppProtocolError(f"websocket.send 'bytes' must be bytes, got {type(data).__name__}")
        return bytes(data)
    if text is not None and data is None:
        if not isinstance(text, str):
            raise AppProtocolError(f"websocket.send 'text' must be str, got {type(text).__name__}")
        return text
    raise AppProtocolError("websocket.send needs exactly one of 'bytes' and 'text'")
