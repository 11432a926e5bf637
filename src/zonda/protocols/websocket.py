"""WebSocket: the opening handshake checks (RFC 6455 §4.2, RFC 7692) and a frame-level server core.

The core knows nothing of how the connection was opened (HTTP/1.1 Upgrade now; extended CONNECT on HTTP/2 and
HTTP/3 later): it takes frames in and emits whole messages, over the ``websockets`` library's sans-io
``Protocol`` (chosen over wsproto by bench/ws_libs.py: 3-4x less CPU per echoed message, and its
permessage-deflate decoder honours the size limit, so a small compressed frame cannot inflate past it).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import InvalidState, NegotiationError
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.headers import build_extension, parse_extension
from websockets.protocol import CLOSED, OPEN, Protocol, Side

from zonda.errors import BadRequest, ProtocolError
from zonda.protocols.events import ConnectionTerminated, Event, Headers, Request

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# websockets logs "connection closed" at INFO for every connection; zonda logs what matters itself.
_protocol_log = logging.getLogger("zonda.websocket")
_protocol_log.setLevel(logging.WARNING)


class UpgradeRequired(ProtocolError):
    status = 426


@dataclass(frozen=True, slots=True)
class WSSettings:
    max_size: int = 16 * 1024 * 1024
    max_queue: int = 32
    per_message_deflate: bool = True
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0


@dataclass(slots=True)
class Handshake:
    """A valid opening handshake: what the scope and the 101 response need."""

    key: bytes
    subprotocols: list[str] = field(default_factory=list)
    extension_offers: list[Any] = field(default_factory=list)

    def accept_headers(
        self, settings: WSSettings, subprotocol: str | None
    ) -> tuple[Headers, list[Extension]]:
        """Headers for the 101 response, and the extensions they agree to (RFC 6455 §4.2.2)."""
        accept = base64.b64encode(hashlib.sha1(self.key + _GUID).digest())
        headers: Headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", accept),
        ]
        if subprotocol:
            headers.append((b"sec-websocket-protocol", subprotocol.encode()))
        extensions: list[Extension] = []
        if settings.per_message_deflate and self.extension_offers:
            factory = ServerPerMessageDeflateFactory(
                server_max_window_bits=None, compress_settings={"memLevel": 5}
            )
            for name, params in self.extension_offers:
                if name != factory.name:
                    continue
                try:
                    response_params, extension = factory.process_request_params(params, extensions)
                except NegotiationError:
                    continue  # an offer we cannot take; a later one may do (RFC 7692 §5)
                extensions.append(extension)
                value = build_extension([(factory.name, response_params)])
                headers.append((b"sec-websocket-extensions", value.encode()))
                break
        return headers, extensions


def _tokens(headers: Headers, name: bytes) -> list[bytes]:
    return [t.strip().lower() for n, v in headers if n == name for t in v.split(b",")]


def check_handshake(request: Request) -> Handshake:
    """Validate an HTTP/1.1 WebSocket upgrade request. Raises BadRequest or UpgradeRequired (426)."""
    headers = request.headers
    if request.method != b"GET":
        raise BadRequest("WebSocket handshake must use GET")
    if request.http_version != "1.1":
        raise BadRequest("WebSocket handshake needs HTTP/1.1")
    if b"websocket" not in _tokens(headers, b"upgrade"):
        raise BadRequest("Upgrade header must name websocket")
    if b"upgrade" not in _tokens(headers, b"connection"):
        raise BadRequest("Connection header must include Upgrade")
    versions = [v.strip() for n, v in headers if n == b"sec-websocket-version"]
    if versions != [b"13"]:
        raise UpgradeRequired("Sec-WebSocket-Version must be 13")
    keys = [v.strip() for n, v in headers if n == b"sec-websocket-key"]
    if len(keys) != 1:
        raise BadRequest("exactly one Sec-WebSocket-Key header is required")
    try:
        if len(base64.b64decode(keys[0], validate=True)) != 16:
            raise ValueError
    except (binascii.Error, ValueError):
        raise BadRequest("Sec-WebSocket-Key must be 16 bytes, base64-encoded") from None
    subprotocols = [
        p.decode("latin-1")
        for p in (t.strip() for n, v in headers if n == b"sec-websocket-protocol" for t in v.split(b","))
        if p
    ]
    offers: list[Any] = []
    for name, value in headers:
        if name == b"sec-websocket-extensions":
            try:
                offers.extend(parse_extension(value.decode("latin-1")))
            except Exception:  # websockets raises InvalidHeaderFormat; a bad offer is declined, not fatal
                continue
    return Handshake(keys[0], subprotocols, offers)


@dataclass(slots=True)
class Message:
    """A whole data message from the peer."""

    data: bytes | str


@dataclass(slots=True)
class PeerClosed:
    """The peer sent a close frame (already answered), or the connection failed with ``code``.

    ``failure`` is set when the peer broke the protocol (1002, 1007, 1009 ...) or stopped answering.
    """

    code: int
    reason: str = ""
    failure: bool = False


WSEvent = Message | PeerClosed | ConnectionTerminated


class WSConnection:
    """The server side of one open WebSocket: frames in, whole messages out, frames to send out.

    Pings are answered by the protocol layer; keep-alive pings are sent on ``deadline``, and a peer that
    does not answer within ``ping_timeout`` fails the connection (1006 to the app).
    """

    def __init__(self, settings: WSSettings, extensions: list[Extension], clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self.closing = False  # the TCP connection should close once the output is flushed
        self.deadline: float | None = None
        self._proto = Protocol(Side.SERVER, state=OPEN, max_size=settings.max_size, logger=_protocol_log)
        self._proto.extensions = extensions
        self._fragments: list[bytes] = []
        self._text: Any = None  # the incremental UTF-8 decoder of a fragmented text message
        self._awaiting_pong: bytes | None = None
        self._out: list[bytes] = []
        self._failure_reported = False
        self._schedule_ping()

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes) -> list[Event | WSEvent]:
        proto = self._proto
        if proto.state is CLOSED:
            return []
        proto.receive_data(data)
        events: list[Event | WSEvent] = []
        for frame in proto.events_received():
            self._on_frame(frame, events)  # type: ignore[arg-type]  # a server Protocol yields only Frames
        self._collect_output(events)
        return events

    def receive_eof(self) -> list[Event | WSEvent]:
        self._proto.receive_eof()
        events: list[Event | WSEvent] = []
        self._collect_output(events)
        return events

    def _on_frame(self, frame: Frame, events: list[Event | WSEvent]) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            self._on_data_frame(frame, events)
        elif opcode is Opcode.PONG:
            if self._awaiting_pong is not None and frame.data == self._awaiting_pong:
                self._awaiting_pong = None
                self._schedule_ping()
        elif opcode is Opcode.CLOSE:
            received = self._proto.close_rcvd
            if received is None:
                events.append(PeerClosed(CloseCode.NO_STATUS_RCVD))
            else:
                code = received.code
                events.append(PeerClosed(code, received.reason))

    def _on_data_frame(self, frame: Frame, events: list[Event | WSEvent]) -> None:
        opcode = frame.opcode
        payload = bytes(frame.data)
        if opcode is Opcode.TEXT:
            if frame.fin:
                try:
                    events.append(Message(payload.decode()))
                except UnicodeDecodeError as exc:
                    self._fail(CloseCode.INVALID_DATA, f"invalid UTF-8 at byte {exc.start}")
                return
            self._text = codecs.getincrementaldecoder("utf-8")()
            self._fragments = []
        elif opcode is Opcode.BINARY:
            if frame.fin:
                events.append(Message(payload))
                return
            self._text = None
            self._fragments = []
        if self._text is not None:
            try:  # fail fast on invalid UTF-8 inside a fragmented message (Autobahn 6.4)
                self._fragments.append(self._text.decode(payload, frame.fin).encode())
            except UnicodeDecodeError as exc:
                self._fail(CloseCode.INVALID_DATA, f"invalid UTF-8 at byte {exc.start}")
                return
        else:
            self._fragments.append(payload)
        if frame.fin:
            data = b"".join(self._fragments)
            self._fragments = []
            events.append(Message(data.decode() if self._text is not None else data))
            self._text = None

    def _fail(self, code: int, reason: str) -> None:
        self._proto.fail(code, reason)

    def _collect_output(self, events: list[Event | WSEvent]) -> None:
        proto = self._proto
        for chunk in proto.data_to_send():
            if chunk:
                self._out.append(chunk)
            else:
                self.closing = True  # websockets' EOF marker: the server closes TCP now
        exc = proto.parser_exc
        if exc is not None and not self._failure_reported:
            self._failure_reported = True
            sent = proto.close_sent
            code = sent.code if sent is not None else CloseCode.ABNORMAL_CLOSURE
            events.append(PeerClosed(code if code != CloseCode.NO_STATUS_RCVD else 1006, str(exc), True))
            events.append(ConnectionTerminated(str(exc)))

    # ------------------------------------------------------------------ output

    def send_message(self, data: bytes | str) -> None:
        """Queue one whole message (text for ``str``). Raises InvalidState once closing."""
        if isinstance(data, str):
            self._proto.send_text(data.encode())
        else:
            self._proto.send_binary(data)
        self._collect_output([])

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; a no-op if it has already begun."""
        try:
            self._proto.send_close(code, reason)
        except InvalidState:
            return
        self._collect_output([])
        self.deadline = self.clock() + (self.settings.ping_timeout or 5.0)  # the peer has this long to answer

    @property
    def open(self) -> bool:
        return self._proto.state is OPEN

    @property
    def close_sent(self) -> Close | None:
        return self._proto.close_sent

    def data_to_send(self) -> bytes:
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    # ------------------------------------------------------------------ time

    def _schedule_ping(self) -> None:
        interval = self.settings.ping_interval
        self.deadline = None if not interval else self.clock() + interval

    def handle_timer(self, now: float) -> list[Event | WSEvent]:
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        proto = self._proto
        events: list[Event | WSEvent] = []
        if proto.state is not OPEN:
            self.closing = True  # the peer never finished the closing handshake
            self.deadline = None
            events.append(ConnectionTerminated("closing handshake timed out"))
        elif self._awaiting_pong is not None:
            self.closing = True
            self.deadline = None
            events.append(PeerClosed(CloseCode.ABNORMAL_CLOSURE, "keep-alive ping timed out", True))
            events.append(ConnectionTerminated("keep-alive ping timed out"))
        else:
            payload = now.hex().encode()[:16]
            self._awaiting_pong = payload
            proto.send_ping(payload)
            self._collect_output(events)
            timeout = self.settings.ping_timeout
            if timeout:
                self.deadline = now + timeout
            else:
                self._awaiting_pong = None  # pings without a timeout only keep NAT mappings warm
                self._schedule_ping()
        return events

    def set_reading_paused(self, paused: bool) -> None:
        """Reading paused for back-pressure says nothing about the peer; pings go on regardless."""

    def finish_and_close(self) -> None:
        """Server shutdown: Going Away (1001)."""
        self.send_close(CloseCode.GOING_AWAY, "server shutting down")
