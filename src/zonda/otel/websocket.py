"""``TracedWebSocketCycle``: a ``WebSocketCycle`` with one SERVER span for the whole session.

The semantic conventions define no WebSocket span, so the session's span is the HTTP span of its handshake
request, kept open until the app returns: named by the method on the wire (GET over HTTP/1.1, CONNECT over
HTTP/2 and HTTP/3, RFC 8441/9220), ``url.scheme`` ``ws``/``wss``, ``http.response.status_code`` 101 (HTTP/1.1)
or 200 when accepted, or the denial's status; ``zonda.websocket.close_code`` says how it closed (the code of the
close frame zonda sent, which echoes the peer's when the peer closed first; 1006 when the connection was lost
without one). "First byte" is the handshake's answer going out, "last byte" its end (at once for an accept).
"""

from __future__ import annotations

from time import time_ns
from typing import Any

from opentelemetry.trace import INVALID_SPAN, Span

from zonda.asgi.session import HTTPSession
from zonda.asgi.types import Message, Scope
from zonda.asgi.websocket import WebSocketCycle, WSState
from zonda.otel.spans import FIRST_BYTE, LAST_BYTE, close_span, record_failure
from zonda.protocols.events import Request
from zonda.protocols.websocket import Handshake, WSSettings


class TracedWebSocketCycle(WebSocketCycle):
    def __init__(
        self, session: HTTPSession, request: Request, scope: Scope, handshake: Handshake, settings: WSSettings
    ) -> None:
        super().__init__(session, request, scope, handshake, settings)
        self.received_ns = time_ns()
        self.method = request.method.decode("latin-1")
        self.span: Span = INVALID_SPAN  # until run() starts the real one
        self.failed = False
        self.answered = False

    async def run(self) -> None:
        tracing = self.session.context.tracing
        assert tracing is not None  # installed with this class
        span, token = tracing.open_span(self.scope, self.info.client, self.method, self.received_ns)
        self.span = span
        try:
            await WebSocketCycle.run(self)
        finally:
            code = self.close_code()
            if code is not None:
                span.set_attribute("zonda.websocket.close_code", code)
            close_span(span, token, self.status, self.failed)

    def _send_connecting(self, message_type: str, message: Message) -> None:
        WebSocketCycle._send_connecting(self, message_type, message)
        if self.state is not WSState.CONNECTING:
            self._answered()

    def response_sent(self) -> None:
        self._answered()  # an accept: its answer's first byte and last byte go out together
        self.span.add_event(LAST_BYTE)

    def close_code(self) -> int | None:
        """How the session closed: the close frame zonda sent, else what the app was told; None if it was
        never accepted."""
        core = self.core
        if core is None:
            return None
        sent = core.close_sent
        if sent is not None:
            return int(sent.code)
        told: Any = self._disconnect_message
        return int(told["code"]) if told is not None else None

    def _app_failed(self, exc: Exception) -> None:
        self.failed = True
        record_failure(self.span, exc)
        WebSocketCycle._app_failed(self, exc)

    def _respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self._answered()  # a denial: the app's websocket.close, or a 500 for an app that failed or said nothing
        WebSocketCycle._respond(self, status, headers, body)

    def _answered(self) -> None:
        """The handshake's answer goes out (once: a denial passes here twice)."""
        if not self.answered:
            self.answered = True
            self.span.add_event(FIRST_BYTE)
