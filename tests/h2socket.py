"""HTTP/2 over a real socket for end-to-end tests, written independently of zonda's core.

``RawH2`` sends frames built by hand (``frame()``: valid or not, in any order) and reads the server's frames
back, decoding header blocks with ``hpack``: for attack tests that need exact GOAWAY and RST_STREAM codes.
``H2Client`` is a well-behaved client on the ``h2`` package (its own state machine, HPACK and flow control),
for the flow-control, reset and shutdown tests; with ``auto_ack=False`` the test decides when window goes back.
(``tests/h2wire.py`` is the in-memory counterpart, for the core's conformance tests.)

    with RawH2(server.port) as raw:                 # preface + SETTINGS sent, the server's SETTINGS read
        raw.send(raw.headers(1, "/"), ping())
        goaway = raw.goaway()                       # the first GOAWAY frame
    with H2Client(server.port) as client:
        state = client.get("/path")                 # status, headers, body, trailers, reset code
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
from h2.errors import ErrorCodes
from hpack import Decoder, Encoder

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6)
DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9
FRAME_NAMES = {
    DATA: "DATA",
    HEADERS: "HEADERS",
    PRIORITY: "PRIORITY",
    RST_STREAM: "RST_STREAM",
    SETTINGS: "SETTINGS",
    PUSH_PROMISE: "PUSH_PROMISE",
    PING: "PING",
    GOAWAY: "GOAWAY",
    WINDOW_UPDATE: "WINDOW_UPDATE",
    CONTINUATION: "CONTINUATION",
}

# Flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Settings (RFC 9113 §6.5.2)
HEADER_TABLE_SIZE = 0x1
ENABLE_PUSH = 0x2
MAX_CONCURRENT_STREAMS = 0x3
INITIAL_WINDOW_SIZE = 0x4
MAX_FRAME_SIZE = 0x5
MAX_HEADER_LIST_SIZE = 0x6


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame, exactly as given (no checks: a test may want it wrong)."""
    length = len(payload)
    return struct.pack(">BHBBL", length >> 16, length & 0xFFFF, kind, flags, stream_id) + payload


def settings_frame(values: dict[int, int] | None = None) -> bytes:
    payload = b"".join(struct.pack(">HL", key, value) for key, value in (values or {}).items())
    return frame(SETTINGS, 0, 0, payload)


def rst_stream(stream_id: int, code: int = ErrorCodes.CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream_id, struct.pack(">L", code))


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">L", increment))


def ping(data: bytes = b"zondaz2!") -> bytes:
    return frame(PING, 0, 0, data)


def priority(stream_id: int, depends_on: int = 0, weight: int = 16) -> bytes:
    return frame(PRIORITY, 0, stream_id, struct.pack(">LB", depends_on, weight - 1))


@dataclass
class Frame:
    """A frame the server sent; ``fields`` is the decoded header block of HEADERS and PUSH_PROMISE."""

    kind: int
    flags: int
    stream_id: int
    payload: bytes
    fields: list[tuple[bytes, bytes]] | None = None

    @property
    def name(self) -> str:
        return FRAME_NAMES.get(self.kind, hex(self.kind))

    @property
    def error_code(self) -> ErrorCodes | int:
        """RST_STREAM's or GOAWAY's error code."""
        offset = 4 if self.kind == GOAWAY else 0
        code = int(struct.unpack_from(">L", self.payload, offset)[0])
        try:
            return ErrorCodes(code)
        except ValueError:
            return code

    @property
    def last_stream_id(self) -> int:
        assert self.kind == GOAWAY
        return int(struct.unpack_from(">L", self.payload)[0]) & 0x7FFFFFFF

    @property
    def debug_data(self) -> bytes:
        assert self.kind == GOAWAY
        return self.payload[8:]

    @property
    def settings(self) -> dict[int, int]:
        assert self.kind == SETTINGS
        return dict(struct.iter_unpack(">HL", self.payload))

    @property
    def increment(self) -> int:
        assert self.kind == WINDOW_UPDATE
        return int(struct.unpack(">L", self.payload)[0]) & 0x7FFFFFFF

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.fields or () if key == name), None)

    def __repr__(self) -> str:
        if self.kind in (GOAWAY, RST_STREAM) and len(self.payload) >= 4:
            code = self.error_code
            extra = f" {code.name if isinstance(code, ErrorCodes) else code}"
            if self.kind == GOAWAY:
                extra += f" last={self.last_stream_id} {self.debug_data!r}"
        elif self.fields is not None:
            extra = f" {self.fields!r}"
        else:
            extra = f" len={len(self.payload)}"
        return f"<{self.name} flags={self.flags:#x} stream={self.stream_id}{extra}>"


def connect(
    port: int, host: str = "127.0.0.1", context: ssl.SSLContext | None = None, timeout: float = 5.0
) -> socket.socket:
    """A TCP connection, wrapped in TLS (which must negotiate h2) when ``context`` is given."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="localhost")
        assert sock.selected_alpn_protocol() == "h2", sock.selected_alpn_protocol()
    return sock


class RawH2:
    """One HTTP/2 connection made of hand-built frames."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        context: ssl.SSLContext | None = None,
        preface: bool = True,
        settings: dict[int, int] | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.sock = connect(port, host, context, timeout)
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.frames: list[Frame] = []  # everything the server sent, in order
        self.closed = False  # the server closed (EOF or reset)
        self.server_settings: dict[int, int] = {}
        self._buffer = b""
        self._block: Frame | None = None  # a HEADERS or PUSH_PROMISE waiting for its CONTINUATIONs
        self._block_parts: list[bytes] = []
        self._seen = 0  # frames[:_seen] were already looked at by wait_for
        if preface:
            self.send(PREFACE + settings_frame(settings))
            first = self.wait_for(lambda f: f.kind == SETTINGS and not f.flags & ACK, what="server SETTINGS")
            self.server_settings = first.settings
            self.send(frame(SETTINGS, ACK, 0))

    def __enter__(self) -> RawH2:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    # ------------------------------------------------------------ sending

    def send(self, *frames: bytes) -> bool:
        """Send the frames in one write; False if the server had already closed the connection."""
        try:
            self.sock.sendall(b"".join(frames))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return False
        return True

    def block(self, fields: Iterable[tuple[bytes | str, bytes | str]]) -> bytes:
        """An HPACK header block (this connection's encoder, so its dynamic table stays in step)."""
        return bytes(self.encoder.encode(list(fields)))

    @staticmethod
    def request_fields(
        path: str = "/", method: str = "GET", extra: Iterable[tuple[bytes | str, bytes | str]] = ()
    ) -> list[tuple[bytes | str, bytes | str]]:
        return [
            (":method", method),
            (":scheme", "http"),
            (":authority", "localhost"),
            (":path", path),
            *extra,
        ]

    def headers(
        self,
        stream_id: int,
        path: str = "/",
        method: str = "GET",
        extra: Iterable[tuple[bytes | str, bytes | str]] = (),
        end_stream: bool = True,
    ) -> bytes:
        """A HEADERS frame with a whole request head."""
        flags = END_HEADERS | (END_STREAM if end_stream else 0)
        return frame(HEADERS, flags, stream_id, self.block(self.request_fields(path, method, extra)))

    # ------------------------------------------------------------ receiving

    def read(self, timeout: float = 0.2) -> list[Frame]:
        """Frames that arrive within ``timeout`` (fewer if the server closes)."""
        start = len(self.frames)
        deadline = time.monotonic() + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._receive(left)
        return self.frames[start:]

    def _receive(self, timeout: float) -> None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return
        buffer = self._buffer + data
        offset = 0
        while len(buffer) - offset >= 9:
            hi, lo, kind, flags, stream_id = struct.unpack_from(">BHBBL", buffer, offset)
            length = (hi << 16) | lo
            if len(buffer) - offset - 9 < length:
                break
            payload = buffer[offset + 9 : offset + 9 + length]
            offset += 9 + length
            self._frame(Frame(kind, flags, stream_id & 0x7FFFFFFF, payload))
        self._buffer = buffer[offset:]

    def _frame(self, received: Frame) -> None:
        self.frames.append(received)
        if received.kind in (HEADERS, PUSH_PROMISE):
            payload = received.payload
            if received.flags & PADDED:
                payload = payload[1 : len(payload) - payload[0]]
            if received.kind == HEADERS and received.flags & PRIORITY_FLAG:
                payload = payload[5:]
            if received.kind == PUSH_PROMISE:
                payload = payload[4:]
            self._block, self._block_parts = received, [payload]
        elif received.kind == CONTINUATION:
            self._block_parts.append(received.payload)
        else:
            return
        if received.flags & END_HEADERS and self._block is not None:
            decoded = self.decoder.decode(b"".join(self._block_parts), raw=True)
            self._block.fields = [(bytes(name), bytes(value)) for name, value in decoded]
            self._block = None

    def wait_for(self, predicate: Callable[[Frame], bool], timeout: float = 5.0, what: str = "") -> Frame:
        """The first frame not yet waited for that matches; fails (listing what came) after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.frames):
                candidate = self.frames[self._seen]
                if candidate.kind in (HEADERS, PUSH_PROMISE) and candidate.fields is None:
                    break  # its CONTINUATIONs are still coming
                self._seen += 1
                if predicate(candidate):
                    return candidate
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                closed = " (connection closed)" if self.closed else ""
                raise AssertionError(
                    f"no {what or 'matching frame'} within {timeout}s{closed}; got {self.frames}"
                )
            self._receive(left)

    def goaway(self, timeout: float = 5.0) -> Frame:
        return self.wait_for(lambda f: f.kind == GOAWAY, timeout, "GOAWAY")

    def reset_of(self, stream_id: int, timeout: float = 5.0) -> Frame:
        return self.wait_for(
            lambda f: f.kind == RST_STREAM and f.stream_id == stream_id, timeout, f"RST_STREAM on {stream_id}"
        )

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True once the server closed the connection (reading, and keeping, whatever it sent before)."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self._receive(deadline - time.monotonic())
        return self.closed

    def response(self, stream_id: int, timeout: float = 5.0) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The final response on ``stream_id``: status, headers and body (fails on RST_STREAM)."""
        deadline = time.monotonic() + timeout
        while True:
            head: Frame | None = None
            body = b""
            for received in self.frames:
                if received.stream_id != stream_id:
                    continue
                if received.kind == RST_STREAM:
                    raise AssertionError(f"stream {stream_id} reset: {received!r}")
                if received.kind == HEADERS and received.fields is not None:
                    if head is None and received.header(b":status") not in (b"100", b"103"):
                        head = received
                elif received.kind == DATA:
                    body += _unpad(received)
                if received.kind in (HEADERS, DATA) and received.flags & END_STREAM and head is not None:
                    return int(head.header(b":status") or 0), head.fields or [], body
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(f"no complete response on stream {stream_id}; got {self.frames}")
            self._receive(left)


def _unpad(received: Frame) -> bytes:
    payload = received.payload
    if received.flags & PADDED:
        return payload[1 : len(payload) - payload[0]]
    return payload


# ---------------------------------------------------------------------------------------------- h2 client


@dataclass
class StreamState:
    headers: list[tuple[bytes, bytes]] | None = None
    informational: list[list[tuple[bytes, bytes]]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] | None = None
    ended: bool = False
    reset_code: ErrorCodes | int | None = None
    promised_by: int | None = None  # a pushed stream: the stream its PUSH_PROMISE came on

    @property
    def status(self) -> int:
        assert self.headers is not None, "no response head"
        return int(dict(self.headers)[b":status"])

    @property
    def done(self) -> bool:
        return self.ended or self.reset_code is not None

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers or () if key == name), None)


class H2Client:
    """A client connection on the ``h2`` package. ``auto_ack``: return window as soon as data arrives."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        context: ssl.SSLContext | None = None,
        settings: dict[int, int] | None = None,
        auto_ack: bool = True,
        timeout: float = 5.0,
    ) -> None:
        self.sock = connect(port, host, context, timeout)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        if settings:  # a second SETTINGS frame, ahead of any request: the server applies it first
            self.conn.update_settings(settings)  # type: ignore[arg-type]
        self.auto_ack = auto_ack
        self.streams: dict[int, StreamState] = {}
        self.events: list[h2.events.Event] = []
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.remote_settings: dict[int, int] = {}
        self.closed = False
        self.authority = f"localhost:{port}"
        self.scheme = "https" if context is not None else "http"
        self.flush()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.closed:
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                self.closed = True

    def request(
        self,
        path: str = "/",
        method: str = "GET",
        headers: Iterable[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
        end_stream: bool = True,
    ) -> int:
        """Open a stream; ``body`` is sent as far as the windows allow (``send_body`` sends the rest)."""
        stream_id = self.conn.get_next_available_stream_id()
        fields = [
            (b":method", method.encode()),
            (b":scheme", self.scheme.encode()),
            (b":authority", self.authority.encode()),
            (b":path", path.encode()),
            *headers,
        ]
        self.streams[stream_id] = StreamState()
        self.conn.send_headers(stream_id, fields, end_stream=end_stream and body is None)
        self.flush()
        if body is not None:
            self.send_body(stream_id, body, end_stream)
        return stream_id

    def send_body(self, stream_id: int, body: bytes, end_stream: bool = True) -> int:
        """Send what the flow-control windows allow now; return how many bytes went."""
        sent = 0
        while sent < len(body):
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                break
            chunk = body[sent : sent + window]
            sent += len(chunk)
            self.conn.send_data(stream_id, chunk, end_stream=end_stream and sent == len(body))
        if not body and end_stream:
            self.conn.end_stream(stream_id)
        self.flush()
        return sent

    def reset(self, stream_id: int, code: ErrorCodes = ErrorCodes.CANCEL) -> None:
        self.conn.reset_stream(stream_id, code)
        self.flush()

    def ack(self, stream_id: int, size: int) -> None:
        """Return ``size`` bytes of window on the stream and the connection."""
        self.conn.acknowledge_received_data(size, stream_id)
        self.flush()

    def pump(self, timeout: float = 0.1) -> list[h2.events.Event]:
        """Read once (up to ``timeout``), handle what came, return its events."""
        if self.closed:
            return []
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return []
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for event in events:
            self._on_event(event)
        self.events.extend(events)
        self.flush()
        return events

    def _on_event(self, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", None)
        state = self.streams.get(stream_id) if stream_id else None
        if isinstance(event, h2.events.ResponseReceived) and state is not None:
            state.headers = list(event.headers or [])  # type: ignore[arg-type]
        elif isinstance(event, h2.events.InformationalResponseReceived) and state is not None:
            state.informational.append(list(event.headers or []))  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived) and state is not None:
            state.data += event.data or b""
            if self.auto_ack and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, stream_id)  # type: ignore[arg-type]
        elif isinstance(event, h2.events.TrailersReceived) and state is not None:
            state.trailers = list(event.headers or [])  # type: ignore[arg-type]
        elif isinstance(event, h2.events.StreamEnded) and state is not None:
            state.ended = True
        elif isinstance(event, h2.events.StreamReset) and state is not None:
            state.reset_code = event.error_code
        elif isinstance(event, h2.events.PushedStreamReceived):
            assert event.pushed_stream_id is not None
            self.streams[event.pushed_stream_id] = StreamState(promised_by=event.parent_stream_id)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self.remote_settings.update({int(k): v.new_value for k, v in event.changed_settings.items()})
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event

    def wait(self, condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
        """Pump until ``condition()``; fail after ``timeout`` or if the server closes first."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline or self.closed:
                raise AssertionError(f"no {what} within {timeout}s (closed: {self.closed}); {self.streams}")
            self.pump(min(0.05, max(deadline - time.monotonic(), 0.001)))

    def response(self, stream_id: int, timeout: float = 5.0) -> StreamState:
        """Wait until ``stream_id`` ends or is reset; its state."""
        state = self.streams[stream_id]
        self.wait(lambda: state.done, timeout, f"end of stream {stream_id}")
        return state

    def get(self, path: str = "/", timeout: float = 5.0, **kwargs: Any) -> StreamState:
        return self.response(self.request(path, **kwargs), timeout)
