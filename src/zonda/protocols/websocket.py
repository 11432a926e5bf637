"""WebSocket: the opening handshake checks (RFC 6455 §4.2, RFC 7692) and a frame-level server core.

The core knows nothing of how the connection was opened (HTTP/1.1 Upgrade, or extended CONNECT on an HTTP/2
stream, RFC 8441): it takes frames in and emits whole messages, over the ``websockets`` library's sans-io
``Protocol`` (chosen over wsproto by bench/ws_libs.py: 3-4x less CPU per echoed message, and its
permessage-deflate decoder honours the size limit, so a small compressed frame cannot inflate past it).

Fast path: without extensions, ``WSConnection`` cuts the stream into frames itself (headers only) and hands
websockets whole frames, so websockets' parser always sits at a frame boundary. A whole unfragmented TEXT or BINARY
frame while the connection is OPEN is unmasked and becomes a ``Message`` directly, and outgoing messages are framed
directly (RFC 6455 §5.2); everything else (control frames, fragments, RSV bits, errors) goes through websockets.
bench/ws.py: ~25% less server CPU per echoed message. The frame-level pieces live in ``_ws_frames``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import NegotiationError
from websockets.exceptions import ProtocolError as WSProtocolError
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.headers import build_extension, parse_extension
from websockets.protocol import CLOSED, OPEN

from zonda.errors import BadRequest, ProtocolError
from zonda.protocols._output import OutputBuffer
from zonda.protocols._ws_frames import (
    BINARY_FIN,
    TEXT_FIN,
    Message,
    ServerProtocol,
    TextCheck,
    apply_mask,
    frame_bounds,
    frame_header,
)
from zonda.protocols.events import ConnectionTerminated, Event, Headers, Request

__all__ = [
    "Handshake",
    "Message",
    "PeerClosed",
    "Ping",
    "UpgradeRequired",
    "WSConnection",
    "WSEvent",
    "WSSettings",
    "check_extended_connect",
    "check_handshake",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


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
    """A valid opening handshake: what the scope and the 101 (or, over extended CONNECT, 200) response need."""

    key: bytes  # b"" for extended CONNECT, which has no key (RFC 8441 §5)
    subprotocols: list[str] = field(default_factory=list)
    extension_offers: list[Any] = field(default_factory=list)
    extended_connect: bool = False  # opened with CONNECT and :protocol websocket on an HTTP/2 stream

    def accept_headers(
        self, settings: WSSettings, subprotocol: str | None
    ) -> tuple[Headers, list[Extension]]:
        """Headers for the 101 response (RFC 6455 §4.2.2), or for the 200 that accepts an extended CONNECT
        (RFC 8441 §5: no Upgrade, Connection or Sec-WebSocket-Accept), and the extensions they agree to."""
        headers: Headers
        if self.extended_connect:
            headers = []
        else:
            accept = base64.b64encode(hashlib.sha1(self.key + _GUID).digest())
            headers = [
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
                if ("server_max_window_bits", "8") in params:
                    # zlib refuses to compress with a 256-byte window; websockets >= 17 declines this offer
                    # itself, older releases (the last ones for Python 3.10) accept it and then fail
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
    """Validate a WebSocket opening handshake: an HTTP/1.1 upgrade request (RFC 6455 §4.2.1), or an extended
    CONNECT on an HTTP/2 or HTTP/3 stream (RFC 8441 §5, RFC 9220 §3). Raises BadRequest or UpgradeRequired (426)."""
    if request.http_version in ("2", "3"):
        return check_extended_connect(request)
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
    return Handshake(keys[0], _subprotocols(headers), _extension_offers(headers))


def check_extended_connect(request: Request) -> Handshake:
    """Validate an extended CONNECT that opens a WebSocket on an HTTP/2 stream (RFC 8441 §4-5).

    The core has checked the pseudo-headers (:scheme and :path present, :protocol only with CONNECT, and only
    once SETTINGS_ENABLE_CONNECT_PROTOCOL was sent). No key: the :protocol pseudo-header supersedes
    Sec-WebSocket-Key and Sec-WebSocket-Accept; Sec-WebSocket-Version, -Protocol and -Extensions mean what they
    do in RFC 6455. Raises BadRequest or UpgradeRequired (426).
    """
    if request.method != b"CONNECT" or request.upgrade != b"websocket":
        raise BadRequest("WebSocket over HTTP/2 or HTTP/3 needs CONNECT with :protocol websocket")
    headers = request.headers
    versions = [v.strip() for n, v in headers if n == b"sec-websocket-version"]
    if versions != [b"13"]:
        raise UpgradeRequired("Sec-WebSocket-Version must be 13")
    return Handshake(b"", _subprotocols(headers), _extension_offers(headers), extended_connect=True)


def _subprotocols(headers: Headers) -> list[str]:
    return [
        p.decode("latin-1")
        for p in (t.strip() for n, v in headers if n == b"sec-websocket-protocol" for t in v.split(b","))
        if p
    ]


def _extension_offers(headers: Headers) -> list[Any]:
    offers: list[Any] = []
    for name, value in headers:
        if name == b"sec-websocket-extensions":
            try:
                offers.extend(parse_extension(value.decode("latin-1")))
            except Exception:  # websockets raises InvalidHeaderFormat; a bad offer is declined, not fatal
                continue
    return offers


@dataclass(slots=True)
class Ping:
    """A ping came in (its pong is queued) or a keep-alive ping went out: output for the driver to flush."""

    data: bytes
    outgoing: bool = False


@dataclass(slots=True)
class PeerClosed:
    """The peer sent a close frame (already answered), or the connection failed with ``code``.

    ``failure`` is set when the peer broke the protocol (1002, 1007, 1009 ...) or stopped answering.
    """

    code: int
    reason: str = ""
    failure: bool = False


WSEvent = Message | Ping | PeerClosed | ConnectionTerminated


def _never() -> bool:
    return False


class WSConnection(OutputBuffer):
    """The server side of one open WebSocket: frames in, whole messages out, frames to send out.

    Pings are answered by the protocol layer. Keep-alive pings go out every ``ping_interval``; a peer that does
    not answer within ``ping_timeout`` fails the connection (1011 on the wire, 1006 to the app). While reading
    is paused for back-pressure the peer's pong cannot be read, so the keep-alive waits too. One ``deadline``
    covers the keep-alive, the closing handshake and a held failure.

    A bad frame after good messages (Autobahn 3.2, 4.1.3, 5.15 ...): the messages come out first and the
    failure is held (``failure_held``: nothing more is read, no close frame yet) while ``app_busy()`` says the
    app has messages to take or is handling one, or while this very read gave it messages; the caller then
    calls ``release_failure()`` once the app asks for more, so what the app sends in answer goes out before the
    close frame. A held failure goes by itself after the closing-handshake time, and ``send_close`` sends it
    instead of the close asked for. Without messages before it, a failure goes at once.
    """

    def __init__(
        self,
        settings: WSSettings,
        extensions: list[Extension],
        clock: Callable[[], float],
        app_busy: Callable[[], bool] = _never,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.app_busy = app_busy
        self.closing = False  # the TCP connection should close once the output is flushed
        self.failure_held = False  # the peer broke the protocol; the close frame waits for release_failure()
        self.deadline: float | None = None
        self._proto = ServerProtocol(settings.max_size)
        self._proto.extensions = extensions
        self._fast = not extensions  # frames cut here while True; see the module docstring
        self._held = bytearray()  # the start of an incomplete whole-message frame (fast path)
        self._owed = 0  # bytes of a frame websockets is parsing that are still to come (fast path)
        self._text_check: TextCheck | None = None  # the text frame coming in pieces (fast path)
        self._release_by: float | None = None  # a held failure goes out by then at the latest
        self._out: list[bytes] = []
        # every byte fed and handed out: an upgraded HTTP/1.1 connection's byte counts, if that connection asks
        # (over HTTP/2 and HTTP/3 the bytes are their DATA, counted by those cores)
        self.count_bytes = False
        self.bytes_received = 0
        self.bytes_sent = 0
        self._failed = False
        self._failure: tuple[int, str] | None = None  # the code and reason to report once
        self._paused = False
        self._pings = 0
        self._ping_at: float | None = None
        self._pong_by: float | None = None
        self._awaiting_pong: bytes | None = None
        self._close_by: float | None = None
        if settings.ping_interval:
            self._ping_at = clock() + settings.ping_interval
        self._update_deadline()

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes) -> list[Event | WSEvent]:
        if self.count_bytes:
            self.bytes_received += len(data)
        proto = self._proto
        if self.closing or self.failure_held or proto.state is CLOSED:
            return []
        events: list[Event | WSEvent] = []
        if self._fast:
            self._receive_frames(data, events)
        else:
            self._feed(data, events)
        if proto.failure is not None:
            self._settle_failure(events)
        self._collect_output(events)
        return events

    def _settle_failure(self, events: list[Event | WSEvent]) -> None:
        """The peer broke the protocol: fail now, or hold the failure until the app has had the messages that
        came before the bad frame (see the class docstring)."""
        if self.app_busy() or any(type(event) is Message for event in events):
            self.failure_held = True
            self._ping_at = self._pong_by = None  # a pong could not be read any more
            self._release_by = self.clock() + (self.settings.ping_timeout or 5.0)
            self._update_deadline()
        else:
            self._fail_now()

    def release_failure(self) -> list[Event | WSEvent]:
        """Send the held failure's close frame, then close: the app has had the messages before it."""
        events: list[Event | WSEvent] = []
        if self.failure_held:
            self._fail_now()
            self._collect_output(events)
        return events

    def _fail_now(self) -> None:
        failure = self._proto.failure
        assert failure is not None
        self._proto.fail_now(*failure)
        self.failure_held = False
        self._release_by = None
        self._failed = True
        self._failure = failure
        self._update_deadline()

    def _feed(self, data: bytes, events: list[Event | WSEvent]) -> None:
        """websockets parses ``data``: whole Messages and control frames come back."""
        proto = self._proto
        proto.receive_data(data)
        received: list[Any] = proto.events_received()  # whole Messages and control Frames
        for event in received:
            if type(event) is Message:
                events.append(event)
            else:
                self._on_control(event, events)

    def _receive_frames(self, data: bytes, events: list[Event | WSEvent]) -> None:
        """The fast path: whole messages here; any other frame goes to websockets from its header on."""
        proto = self._proto
        if self._owed:  # the rest of a frame websockets is parsing
            owed = self._owed
            piece = data[:owed]
            self._owed = max(0, owed - len(data))
            check = self._text_check
            if check is not None:
                if self._owed:  # still incomplete: its text so far must be UTF-8
                    if not self._check_text(check, piece):
                        return
                else:  # complete now: websockets decodes it
                    self._text_check = None
            self._feed(piece, events)
            data = data[owed:]
            if proto.state is not OPEN or proto.failure is not None:
                self._leave_fast_path(data, events)
                return
        held = self._held
        buffered = bool(held)
        if buffered:
            held += data
        buf = held if buffered else data
        pos = 0
        while pos < len(buf):
            key, stop = frame_bounds(buf, pos)
            if key < 0:
                break
            length = stop - key - 4
            first = buf[pos]
            if (
                first in (BINARY_FIN, TEXT_FIN)
                and buf[pos + 1] & 0x80  # masked (RFC 6455 §5.3)
                and length <= proto.limit
                and proto.current_size is None  # not inside a fragmented message
                and proto.state is OPEN
            ):
                if stop > len(buf):  # held until the rest comes; its text is checked as it comes
                    if first == TEXT_FIN and not self._check_held_text(buf, key):
                        pos = len(buf)
                    break
                if self._text_check is not None:  # this frame's first part was checked already
                    ok = self._finish_held_text(buf, key, stop, events)
                else:
                    ok = self._fast_message(
                        first, apply_mask(buf[key + 4 : stop], buf[key : key + 4]), events
                    )
                if not ok:
                    pos = len(buf)
                    break
            else:  # a control frame, a fragment, RSV bits, an error: websockets checks it as the bytes come
                known = min(stop, len(buf))
                self._feed(bytes(buf[pos:known]), events)
                if proto.state is not OPEN or proto.failure is not None:
                    # closing or failed: websockets takes (or ignores) the rest as it comes
                    self._leave_fast_path(bytes(buf[known:]), events)
                    pos = len(buf)
                    break
                if stop > known:
                    self._owed = stop - known
                    if buf[pos + 1] & 0x80 and not self._start_text_check(first, buf[key:known]):
                        pos = len(buf)
                    else:
                        pos = known
                    break
            pos = stop
        if buffered:
            del held[:pos]
        elif pos < len(buf):
            held += buf[pos:]

    def _fast_message(self, first: int, payload: bytes, events: list[Event | WSEvent]) -> bool:
        if first == BINARY_FIN:
            events.append(Message(payload))
            return True
        try:
            events.append(Message(payload.decode()))
            return True
        except UnicodeDecodeError as exc:  # as websockets' parser fails it (RFC 6455 §8.1)
            self._invalid_text(f"{exc.reason} at position {exc.start}")
            return False

    def _invalid_text(self, reason: str) -> None:
        self._fast = False
        self._text_check = None
        self._proto.fail(CloseCode.INVALID_DATA, reason)  # held for _settle_failure

    def _check_held_text(self, buf: bytes | bytearray, key: int) -> bool:
        """A whole-message text frame held incomplete: decode what came of it so far."""
        check = self._text_check
        if check is None:
            check = self._text_check = TextCheck(b"", keep=True)
        with memoryview(buf) as view:  # released before the buffer grows again
            return self._check_text(check, view[key + check.taken :])

    def _finish_held_text(
        self, buf: bytes | bytearray, key: int, stop: int, events: list[Event | WSEvent]
    ) -> bool:
        check = self._text_check
        assert check is not None and check.parts is not None
        self._text_check = None
        reason = check.feed(buf[key + check.taken : stop], final=True)
        if reason is not None:
            self._invalid_text(reason)
            return False
        events.append(Message("".join(check.parts)))
        return True

    def _start_text_check(self, first: int, rest: bytes | bytearray) -> bool:
        """A masked data frame websockets parses came in part (``rest``: what came after its header): if it
        carries text (the first frame of a text message, or a continuation of one), check the part and what
        follows (``_owed``) as it comes."""
        opcode = first & 0x7F  # FIN aside; RSV bits set make it a 1002 once whole, so no check for them
        proto = self._proto
        if opcode == 1 and proto.current_size is None:
            pending = b""
        elif opcode == 0 and proto.text_decoder is not None:
            pending = proto.text_decoder.getstate()[0]  # a character may span the frames
        else:
            return True
        check = self._text_check = TextCheck(pending, keep=False)
        return self._check_text(check, rest)

    def _check_text(self, check: TextCheck, masked: bytes | bytearray | memoryview) -> bool:
        reason = check.feed(masked) if masked else None
        if reason is None:
            return True
        self._invalid_text(reason)
        return False

    def _leave_fast_path(self, rest: bytes, events: list[Event | WSEvent]) -> None:
        self._fast = False
        self._held = bytearray()
        if rest:
            self._feed(rest, events)

    def receive_eof(self) -> list[Event | WSEvent]:
        """The peer closed TCP: an abrupt loss (1006) unless the closing handshake had finished; a held failure
        goes now."""
        if self.closing or self._proto.state is CLOSED:
            return []
        if self.failure_held:
            return self.release_failure()
        self._proto.receive_eof()
        events: list[Event | WSEvent] = []
        self._collect_output(events)
        return events

    def _on_control(self, frame: Frame, events: list[Event | WSEvent]) -> None:
        opcode = frame.opcode
        if opcode is Opcode.PING:
            events.append(Ping(bytes(frame.data)))  # websockets queued the pong
        elif opcode is Opcode.PONG:
            if self._awaiting_pong is not None and frame.data == self._awaiting_pong:
                self._awaiting_pong = None
                self._pong_by = None
                interval = self.settings.ping_interval
                if interval and self._proto.state is OPEN:
                    self._ping_at = self.clock() + interval
                self._update_deadline()
        elif opcode is Opcode.CLOSE:
            received = self._proto.close_rcvd
            if received is None:
                events.append(PeerClosed(1005))
            else:  # an empty close frame parses as 1005 (RFC 6455 §7.1.5)
                events.append(PeerClosed(int(received.code), received.reason))

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 §7.1.7): close frame with ``code``, then close TCP."""
        self._proto.fail_now(code, reason)
        self._failed = True
        self._failure = (int(code), reason)

    def _collect_output(self, events: list[Event | WSEvent]) -> None:
        proto = self._proto
        for chunk in proto.data_to_send():
            if chunk:
                self._out.append(chunk)
            else:
                self.closing = True  # websockets' EOF marker: the server closes TCP now
                self.deadline = None
        exc = proto.parser_exc
        if exc is not None and not self._failed and proto.failure is None:  # failed in websockets itself
            self._failed = True
            sent = proto.close_sent
            code = sent.code if sent is not None and sent.code != CloseCode.NO_STATUS_RCVD else 1006
            self._failure = (int(code), str(exc))
        if self._failed and self._failure is not None:
            code, reason = self._failure
            self._failure = None  # reported once
            events.append(PeerClosed(code, reason, True))
            events.append(ConnectionTerminated(reason))

    # ------------------------------------------------------------------ output

    def send_message(self, data: bytes | str) -> None:
        """Queue one whole message (text for ``str``). Raises InvalidState once closing."""
        if self._fast and self._proto.state is OPEN:  # framed here; websockets' output is always drained
            if isinstance(data, str):
                payload, first = data.encode(), TEXT_FIN
            else:
                payload, first = data, BINARY_FIN
            self._out.append(frame_header(first, len(payload)) + payload)
            return
        if isinstance(data, str):
            self._proto.send_text(data.encode())
        else:
            self._proto.send_binary(data)
        self._collect_output([])

    def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake; a no-op if it has already begun.

        Raises ValueError for a code that may not be sent (RFC 6455 §7.4) or a reason over 123 bytes.
        """
        if self._proto.state is not OPEN:
            return
        if self.failure_held:  # the peer's failure, decided first, is the close that goes out
            self._fail_now()
            self._collect_output([])
            return
        try:
            self._proto.send_close(code, reason)
        except WSProtocolError as exc:
            raise ValueError(str(exc)) from None
        self._collect_output([])
        # The peer has this long to answer with its close frame; keep-alive pings stop.
        self._ping_at = self._pong_by = None
        self._close_by = self.clock() + (self.settings.ping_timeout or 5.0)
        self._update_deadline()

    @property
    def open(self) -> bool:
        return self._proto.state is OPEN

    @property
    def close_sent(self) -> Close | None:
        return self._proto.close_sent

    # ------------------------------------------------------------------ time

    def _update_deadline(self) -> None:
        if self.closing:
            self.deadline = None
            return
        candidates = [self._close_by, self._release_by]
        if not self._paused:
            candidates += (self._ping_at, self._pong_by)
        times = [t for t in candidates if t is not None]
        self.deadline = min(times) if times else None

    def handle_timer(self, now: float) -> list[Event | WSEvent]:
        deadline = self.deadline
        if deadline is None or now < deadline:
            return []
        events: list[Event | WSEvent] = []
        if self._release_by is not None and now >= self._release_by:
            events = self.release_failure()  # the app did not ask for more in time
        elif self._close_by is not None and now >= self._close_by:
            self.closing = True  # the peer never finished the closing handshake (RFC 6455 §7.1.1)
            events.append(ConnectionTerminated("closing handshake timed out"))
        elif self._pong_by is not None and now >= self._pong_by:
            self._pong_by = None
            self._fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self._failure = (1006, "keep-alive ping timed out")
            self._collect_output(events)
        elif self._ping_at is not None and now >= self._ping_at and self._proto.state is OPEN:
            payload = b"%08x" % (self._pings % 0xFFFFFFFF)
            self._pings += 1
            self._proto.send_ping(payload)
            self._collect_output(events)
            events.append(Ping(payload, outgoing=True))
            timeout, interval = self.settings.ping_timeout, self.settings.ping_interval
            if timeout:
                self._awaiting_pong = payload
                self._pong_by = now + timeout
                self._ping_at = None
            else:  # pings without a timeout only keep NAT mappings warm
                self._ping_at = now + interval if interval else None
        self._update_deadline()
        return events

    def set_reading_paused(self, paused: bool) -> None:
        """While reading is paused for back-pressure, a pong could not be read: keep-alive waits."""
        self._paused = paused
        if not paused and self._pong_by is not None and self.settings.ping_timeout:
            self._pong_by = self.clock() + self.settings.ping_timeout  # a fresh wait for the pong
        self._update_deadline()

    def finish_and_close(self) -> None:
        """Server shutdown: Going Away (1001)."""
        self.send_close(CloseCode.GOING_AWAY, "server shutting down")
