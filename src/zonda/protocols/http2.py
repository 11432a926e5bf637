"""The HTTP/2 server core (RFC 9113): bytes in, events out, bytes to send out.

zonda owns the frame layer, stream states, flow control and settings; HPACK is the ``hpack`` package behind
two caches, because encoding or decoding one header block in pure Python costs 15-30 µs: responses are
encoded statelessly and cached process-wide (``zonda.protocols.http2_fields``), and a request block made only
of one-byte indexed fields (every byte >= 0x80, none 0xff) leaves the decoder's dynamic table untouched, so
while the table does not change its decoding is cached per connection. That cache is dropped whenever a block
that may change the table is decoded.

Stream states follow RFC 9113 §5.1 as the table in ``zonda.protocols.http2_streams`` spells them out: what a
frame gets on a stream that is idle, reserved, half-closed or closed (and how it closed). A response complete
before its request leaves the stream half-closed (local): the rest of the request body is still taken, flow
controlled and its window returned, until the client's END_STREAM. The wire vocabulary (frame types, flags,
error codes) is ``zonda.protocols.http2_frames``, re-exported here.

Errors: a connection error queues GOAWAY and ends in ``ConnectionTerminated(error=H2Error)``; a stream error
queues RST_STREAM and, when the stream had a request handed out, a ``StreamReset``. ``receive_data`` never
raises for the peer's mistakes. Time is an input, as in the HTTP/1.1 core: ``deadline`` + ``handle_timer``.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from hpack import Decoder, HPACKError, OversizedHeaderListError

from zonda.errors import AppProtocolError, BadRequest
from zonda.protocols._output import OutputBuffer
from zonda.protocols.events import ConnectionTerminated, Data, Event, Request, StreamReset
from zonda.protocols.fields import check_file_length
from zonda.protocols.http1 import DefaultHeaders
from zonda.protocols.http2_fields import (
    NO_BODY_STATUSES,
    TABLE_SIZE_ZERO,
    bad_trailer_name,
    check_request_fields,
    encode_headers,
    promised_request,
    response_head,
    trailer_block,
)
from zonda.protocols.http2_frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_WINDOW,
    ENABLE_CONNECT_PROTOCOL,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    GOAWAY_HEAD,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    MAX_CONCURRENT_STREAMS,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST_SIZE,
    MAX_WINDOW,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ENTRY,
    U32,
    WINDOW_UPDATE,
    ErrorCode,
    H2Error,
    StreamError,
    code_name,
    frame,
    unpack_header,
)
from zonda.protocols.http2_streams import (
    FRAME_NAMES,
    RULES,
    Closed,
    ClosedStreams,
    H2Stream,
    StreamState,
    Verdict,
    Where,
)

__all__ = [
    "ACK",
    "CONTINUATION",
    "DATA",
    "END_HEADERS",
    "END_STREAM",
    "GOAWAY",
    "HEADERS",
    "PADDED",
    "PING",
    "PREFACE",
    "PRIORITY",
    "PRIORITY_FLAG",
    "PUSH_PROMISE",
    "RST_STREAM",
    "SETTINGS",
    "WINDOW_UPDATE",
    "ErrorCode",
    "H2Connection",
    "H2Error",
    "H2Settings",
    "frame",
    "h2c_upgrade",
]

log = logging.getLogger("zonda.http2")

FLOOD_WINDOW = 10.0  # seconds over which resets and control frames are counted


@dataclass(frozen=True, slots=True)
class H2Settings:
    """What the server advertises and enforces. Timeouts in seconds."""

    max_concurrent_streams: int = 100
    initial_window_size: int = 1024 * 1024
    connection_window_size: int = 4 * 1024 * 1024
    max_frame_size: int = 16384
    max_header_list_size: int = 65536
    max_resets: int = 200
    max_control_frames: int = 1000
    idle_timeout: float = 60.0
    header_timeout: float = 10.0  # for the client preface and a header block split over frames
    stall_timeout: float = 30.0  # a stream whose request body stalls for this long is reset
    send_stall_timeout: float | None = 30.0  # ... and one whose client keeps its window closed (None: never)
    min_body_rate: int = 256  # bytes/s a request body must average from its first byte (0: no minimum) ...
    body_rate_grace: float = 5.0  # ... checked from this many seconds on
    enable_connect_protocol: bool = False  # RFC 8441 (WebSocket over HTTP/2)

    @property
    def sweep_interval(self) -> float:
        """How often ``handle_timer`` looks for stalled streams while some are open."""
        send = self.send_stall_timeout
        return (self.stall_timeout if send is None or send > self.stall_timeout else send) / 2

    @property
    def first_body_sweep(self) -> float:
        """Seconds after a request body begins that a sweep looks at it first: with the rate's grace."""
        sweep = self.sweep_interval
        return self.body_rate_grace if self.min_body_rate and self.body_rate_grace < sweep else sweep


class H2Connection(OutputBuffer):
    """One HTTP/2 server connection."""

    __slots__ = (
        "_block",
        "_block_end_stream",
        "_block_frames",
        "_block_stream",
        "_buffer",
        "_closed_streams",
        "_conn_recv_unacked",
        "_control_count",
        "_control_since",
        "_decode_cache",
        "_decoder",
        "_events",
        "_first_block_sent",
        "_goaway_last_id",
        "_goaway_sent",
        "_last_stream_id",
        "_next_push_id",
        "_preface_seen",
        "_reset_count",
        "_reset_since",
        "_settings_acked",
        "_settings_due",
        "_upgrade_body_left",
        "blocked",
        "bytes_received",
        "clock",
        "closing",
        "conn_send_window",
        "counters",
        "deadline",
        "defaults",
        "has_held_data",
        "peer_enable_push",
        "peer_initial_window",
        "peer_max_frame_size",
        "peer_max_pushed",
        "settings",
        "streams",
        "totals",
        "unblocked",
    )

    def __init__(
        self,
        settings: H2Settings,
        defaults: DefaultHeaders,
        clock: Callable[[], float],
        totals: dict[str, int] | None = None,
        count_bytes: bool = False,
    ) -> None:
        """``count_bytes``: keep ``bytes_received`` and ``bytes_sent`` (the metrics' byte counts)."""
        self.settings = settings
        self.defaults = defaults
        self.clock = clock
        self.closing = False
        self.has_held_data = False  # the HTTP/1.1 driver's question; never true here
        self.streams: dict[int, H2Stream] = {}
        self.blocked: dict[int, H2Stream] = {}  # streams with body bytes waiting for window, in order
        self.unblocked: list[int] = []  # streams whose waiting bytes all went out since the driver looked
        self.counters: dict[str, int] = {}  # this connection's attack and error counters, logged at its end
        # The same counts, added as they happen to a dict shared by the server's connections (its metrics
        # read it while connections are still open). Only attacks and errors count: no cost per request.
        self.totals = totals
        self.conn_send_window = DEFAULT_WINDOW
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame_size = 16384
        self.peer_enable_push = True
        # the client's SETTINGS_MAX_CONCURRENT_STREAMS (it bounds pushes): unlimited until it says
        self.peer_max_pushed = 1 << 31
        self._out: list[bytes] = []
        self.count_bytes = count_bytes
        self.bytes_received = 0  # every byte fed, and every byte handed out (the connection's byte counts)
        self.bytes_sent = 0
        self._buffer = b""
        self._events: list[Event] = []
        self._preface_seen = False
        self._settings_acked = False
        self._settings_due = True  # the client's first frame, a SETTINGS, is still to come
        self._decoder = Decoder()
        self._decoder.max_header_list_size = max(4 * settings.max_header_list_size, 65536)
        self._decoder.max_allowed_table_size = 4096
        self._decode_cache: dict[bytes, tuple[Any, ...]] = {}
        self._first_block_sent = False
        self._last_stream_id = 0
        self._next_push_id = 2
        self._goaway_sent = False
        self._goaway_last_id = 0
        self._closed_streams = ClosedStreams()  # how the recently closed streams closed (RFC 9113 §5.1)
        self._conn_recv_unacked = 0
        self._block: list[bytes] | None = None  # a header block arriving over CONTINUATION frames
        self._block_stream = 0
        self._block_end_stream = False
        self._block_frames = 0
        self._upgrade_body_left = 0  # h2c: body bytes of the upgraded request still to come as HTTP/1.1
        now = clock()
        self._reset_count = 0
        self._reset_since = now
        self._control_count = 0
        self._control_since = now
        self.deadline: float | None = now + settings.header_timeout  # the client preface
        self._send_preface()

    def _send_preface(self) -> None:
        s = self.settings
        entries = [
            (MAX_CONCURRENT_STREAMS, s.max_concurrent_streams),
            (INITIAL_WINDOW_SIZE, s.initial_window_size),
            (MAX_FRAME_SIZE, s.max_frame_size),
            (MAX_HEADER_LIST_SIZE, s.max_header_list_size),
            (HEADER_TABLE_SIZE, 4096),
            (ENABLE_PUSH, 0),  # a server never receives pushes
        ]
        if s.enable_connect_protocol:
            entries.append((ENABLE_CONNECT_PROTOCOL, 1))
        payload = b"".join(SETTINGS_ENTRY.pack(k, v) for k, v in entries)
        self._out.append(frame(SETTINGS, 0, 0, payload))
        extra = s.connection_window_size - DEFAULT_WINDOW
        if extra > 0:
            self._out.append(frame(WINDOW_UPDATE, 0, 0, U32.pack(extra)))

    # ------------------------------------------------------------------ input

    def initiate_upgrade(self, request: Request, body_length: int) -> list[Event]:
        """h2c (RFC 7540 §3.2): the HTTP/1.1 request becomes stream 1. Its body (if any) still comes as
        HTTP/1.1 bytes, ahead of the client preface: ``receive_data`` takes them as stream 1's body first."""
        self._upgrade_body_left = body_length
        stream = H2Stream(1, self.peer_initial_window, recv_open=body_length > 0)
        stream.head_only = request.method == b"HEAD"
        stream.content_length = body_length
        stream.progress_at = stream.rate_since = self.clock()
        self.streams[1] = stream
        self._last_stream_id = 1
        request.stream_id = 1
        request.http_version = "2"
        request.end_stream = body_length == 0
        request.keep_alive = True
        request.expect_continue = False
        request.upgrade = None
        return [request]

    def receive_upgrade_body(self, data: bytes, end_stream: bool) -> list[Event]:
        self._upgrade_body_left = max(0, self._upgrade_body_left - len(data))
        stream = self.streams.get(1)
        if stream is None:
            return []
        stream.received += len(data)
        stream.progress_at = self.clock()
        if end_stream:
            stream.recv_open = False
            if not stream.send_open:
                self._forget(1, Closed.ENDED)
        return [Data(1, data, end_stream)]

    def apply_http2_settings(self, payload: bytes) -> None:
        """Apply the client's settings from an ``HTTP2-Settings`` upgrade header (already base64-decoded)."""
        self._apply_settings(payload)

    def receive_data(self, data: bytes) -> list[Event]:
        if self.count_bytes:
            self.bytes_received += len(data)
        if self.closing:
            return []
        if self._upgrade_body_left:  # h2c: the upgraded request's body, before the preface
            left = self._upgrade_body_left
            body = self.receive_upgrade_body(data[:left], len(data) >= left)
            data = data[left:]
            if not data:
                return body
            events = self._events = body
        else:
            events = self._events = []
        buffer = self._buffer + data if self._buffer else data
        try:
            if not self._preface_seen:
                if len(buffer) < 24:
                    if not PREFACE.startswith(buffer):
                        raise H2Error(ErrorCode.PROTOCOL_ERROR, "invalid connection preface")
                    self._buffer = buffer
                    return events
                if buffer[:24] != PREFACE:
                    raise H2Error(ErrorCode.PROTOCOL_ERROR, "invalid connection preface")
                self._preface_seen = True
                buffer = buffer[24:]
                self._update_deadline()
            if self._settings_due and len(buffer) >= 9:
                # The client preface ends in a SETTINGS frame (RFC 9113 §3.4): the first frame must be one.
                if buffer[3] != SETTINGS or buffer[4] & ACK:
                    raise H2Error(ErrorCode.PROTOCOL_ERROR, "the connection preface must end in SETTINGS")
                self._settings_due = False
            self._buffer = self._parse_frames(buffer)
        except H2Error as exc:
            self._buffer = b""
            self._connection_error(exc)
        if self._conn_recv_unacked >= self.settings.connection_window_size // 4 and not self.closing:
            self._out.append(frame(WINDOW_UPDATE, 0, 0, U32.pack(self._conn_recv_unacked)))
            self._conn_recv_unacked = 0
        return events

    def _parse_frames(self, buffer: bytes) -> bytes:
        offset = 0
        size = len(buffer)
        max_frame = self.settings.max_frame_size
        while size - offset >= 9:
            length_hi, length_lo, kind, flags, stream_id = unpack_header(buffer, offset)
            length = (length_hi << 16) | length_lo
            if length > max_frame:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds {max_frame}")
            end = offset + 9 + length
            if end > size:
                break
            payload = buffer[offset + 9 : end]
            offset = end
            stream_id &= 0x7FFFFFFF
            if self._block is not None and (kind != CONTINUATION or stream_id != self._block_stream):
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "header block interrupted by another frame")
            if kind == DATA:
                self._on_data(stream_id, flags, payload)
            elif kind == HEADERS:
                self._on_headers(stream_id, flags, payload)
            elif kind == CONTINUATION:
                self._on_continuation(stream_id, flags, payload)
            elif kind == WINDOW_UPDATE:
                self._on_window_update(stream_id, payload)
            elif kind == RST_STREAM:
                self._on_rst_stream(stream_id, payload)
            elif kind == SETTINGS:
                self._on_settings(stream_id, flags, payload)
            elif kind == PING:
                self._on_ping(stream_id, flags, payload)
            elif kind == PRIORITY:
                self._on_priority(stream_id, payload)
            elif kind == GOAWAY:
                self._on_goaway(stream_id, payload)
            elif kind == PUSH_PROMISE:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "clients must not send PUSH_PROMISE")
            else:
                self._count_control("unknown frame")  # extension frames are ignored (RFC 9113 §5.5)
        return buffer[offset:] if offset < size else b""

    @staticmethod
    def _strip_padding(flags: int, payload: bytes) -> bytes:
        if flags & PADDED:
            if not payload:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "padded frame without a pad length")
            pad = payload[0]
            if pad >= len(payload):
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
            return payload[1 : len(payload) - pad]
        return payload

    def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        # Flow control counts the whole frame, padding included, even on streams we no longer track.
        self._conn_recv_unacked += len(payload)
        if self._conn_recv_unacked > self.settings.connection_window_size:
            raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        data = self._strip_padding(flags, payload)
        stream = self.streams.get(stream_id)
        if stream is None or not stream.recv_open:  # not open nor half-closed (local): see the table
            self._apply_rule(stream_id, stream, DATA)
            return
        stream.recv_unacked += len(payload)
        window = self.settings.initial_window_size
        if not self._settings_acked:
            window = max(window, DEFAULT_WINDOW)  # the client may not have applied our SETTINGS yet
        if stream.recv_unacked > window:
            self._reset_stream(stream_id, ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the stream window")
            return
        received = stream.received = stream.received + len(data)
        end_stream = bool(flags & END_STREAM)
        if stream.content_length is not None and (
            received > stream.content_length or (end_stream and received != stream.content_length)
        ):
            self._reset_stream(
                stream_id, ErrorCode.PROTOCOL_ERROR, "request body does not match content-length"
            )
            return
        if not data and not end_stream:
            self._count_control("empty DATA frame")
        stream.progress_at = self.clock()
        if end_stream:
            stream.recv_open = False
            stream.recv_unacked = 0
            if not stream.send_open:
                self._forget(stream_id, Closed.ENDED)
        elif not stream.recv_paused and stream.recv_unacked >= (self.settings.initial_window_size // 4 or 1):
            # (never an increment of 0, an error for the client: a window under 4 bytes has a quarter of 0)
            self._out.append(frame(WINDOW_UPDATE, 0, stream_id, U32.pack(stream.recv_unacked)))
            stream.recv_unacked = 0
        if not stream.answered:
            self._events.append(Data(stream_id, data, end_stream))

    def _on_headers(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id == 0:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        payload = self._strip_padding(flags, payload)
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "HEADERS priority fields truncated")
            if U32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, f"stream {stream_id} depends on itself")
            payload = payload[5:]
        if flags & END_HEADERS:
            self._header_block(stream_id, payload, bool(flags & END_STREAM))
        else:
            self._block = [payload]
            self._block_stream = stream_id
            self._block_end_stream = bool(flags & END_STREAM)
            self._block_frames = 1
            self._update_deadline()

    def _on_continuation(self, stream_id: int, flags: int, payload: bytes) -> None:
        block = self._block
        if block is None:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without a header block in progress")
        block.append(payload)
        self._block_frames += 1
        # CONTINUATION flood: the block's compressed size and frame count are both capped.
        if sum(map(len, block)) > self.settings.max_header_list_size or self._block_frames > 128:
            self._count("continuation_flood")
            raise H2Error(
                ErrorCode.ENHANCE_YOUR_CALM, "header block too large or in too many CONTINUATION frames"
            )
        if flags & END_HEADERS:
            self._block = None
            self._update_deadline()
            self._header_block(stream_id, b"".join(block), self._block_end_stream)

    def _decode(self, block: bytes) -> tuple[Any, ...]:
        """Decode and check a request header block: (method, scheme, path, authority, protocol, headers, cl)."""
        cache = self._decode_cache
        cached = cache.get(block)
        if cached is not None:
            return cached
        pure = bool(block) and min(block) >= 0x80 and 0xFF not in block
        if not pure:
            cache.clear()  # the dynamic table may change under the cached blocks
        try:
            fields = self._decoder.decode(block, raw=True)
        except OversizedHeaderListError:
            self._count("hpack_bomb")
            raise H2Error(ErrorCode.ENHANCE_YOUR_CALM, "decoded header list is far above the limit") from None
        except (HPACKError, ValueError, IndexError) as exc:
            raise H2Error(ErrorCode.COMPRESSION_ERROR, f"HPACK decoding failed: {exc}") from None
        parsed = check_request_fields(fields, self.settings)
        if pure and len(cache) < 64:
            cache[block] = parsed
        return parsed

    def _header_block(self, stream_id: int, block: bytes, end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            # Trailers: decode (the HPACK state must stay in step), then end the request.
            fields = self._decode_trailers(block)
            if stream.recv_open:
                self._trailers(stream, fields, end_stream)
            else:
                self._apply_rule(stream_id, stream, HEADERS)
            return
        if stream_id % 2 == 0:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, f"client opened even-numbered stream {stream_id}")
        if stream_id <= self._last_stream_id:
            self._decode_trailers(block)  # keeps the HPACK state in step
            self._apply_rule(stream_id, None, HEADERS)
            return
        self._last_stream_id = stream_id
        try:
            method, _, path, _, protocol, headers, content_length, oversized = self._decode(block)
        except StreamError as exc:
            self._reset_stream(stream_id, exc.code, exc.detail)
            return
        if self._goaway_sent:
            # After GOAWAY, new streams are ignored (RFC 9113 §6.8), and so are the frames that follow them.
            self._closed_streams.add(stream_id, Closed.RESET_SENT)
            return
        if len(self.streams) >= self.settings.max_concurrent_streams:
            self._reset_stream(stream_id, ErrorCode.REFUSED_STREAM, "too many concurrent streams")
            return
        if end_stream and content_length:
            # malformed before any app sees it: no StreamReset
            self._reset_stream(
                stream_id, ErrorCode.PROTOCOL_ERROR, "request body does not match content-length"
            )
            return
        stream = H2Stream(stream_id, self.peer_initial_window, not end_stream)
        stream.content_length = content_length
        stream.head_only = method == b"HEAD"
        stream.progress_at = self.clock()
        stream.tunnel = protocol is not None
        self.streams[stream_id] = stream
        # While streams are open handle_timer sweeps for stalled ones every stall_timeout / 2. The pending
        # deadline may still be the idle one (idle_timeout away): a request with a body to wait for brings
        # the first sweep forward; requests without one are never stalled waiting on the client's body.
        if not end_stream:
            stream.rate_since = stream.progress_at
            self._sweep_by(stream.progress_at + self.settings.first_body_sweep)
        if oversized:
            self._count("header_list_too_large")
            self._respond_error(stream, 431, "request header list exceeds SETTINGS_MAX_HEADER_LIST_SIZE")
            return
        path_part, _, query = path.partition(b"?")
        request = Request(
            stream_id,
            method,
            path_part,
            query,
            list(headers),  # a fresh list per request: apps may change their scope
            "2",
            end_stream,
            True,
            False,
            protocol,
        )
        self._events.append(request)

    def _trailers(self, stream: H2Stream, fields: Any, end_stream: bool) -> None:
        """A header block on a stream whose request is still coming (open or half-closed (local))."""
        stream_id = stream.stream_id
        if not end_stream:
            self._reset_stream(stream_id, ErrorCode.PROTOCOL_ERROR, "trailers without END_STREAM")
            return
        bad = bad_trailer_name(fields)
        if bad is not None:
            self._reset_stream(stream_id, ErrorCode.PROTOCOL_ERROR, f"trailer name {bad!r} is invalid")
            return
        stream.recv_open = False
        if stream.content_length is not None and stream.received != stream.content_length:
            self._reset_stream(
                stream_id, ErrorCode.PROTOCOL_ERROR, "request body does not match content-length"
            )
            return
        if not stream.send_open:
            self._forget(stream_id, Closed.ENDED)
        if not stream.answered:
            self._events.append(Data(stream_id, b"", True))

    def _where(self, stream_id: int, stream: H2Stream | None) -> Where:
        if stream is not None:
            return stream.state
        if self._idle(stream_id):
            return StreamState.IDLE
        return self._closed_streams.get(stream_id)

    def _apply_rule(self, stream_id: int, stream: H2Stream | None, kind: int) -> None:
        """A ``kind`` frame on a stream that is not open for it: what RFC 9113 §5.1 says it gets there
        (``http2_streams.RULES``): a stream error, a connection error (raised), or nothing (ignored). Callers
        handle the frames the table lets through themselves."""
        where = self._where(stream_id, stream)
        verdict, code = RULES[where][kind]
        if verdict is Verdict.STREAM_ERROR:
            self._reset_stream(stream_id, code, f"{FRAME_NAMES[kind]} on {where.value} stream {stream_id}")
        elif verdict is Verdict.CONNECTION_ERROR:
            raise H2Error(code, f"{FRAME_NAMES[kind]} on {where.value} stream {stream_id}")

    def _decode_trailers(self, block: bytes) -> Any:
        """Decode a block whose fields nobody reads (request trailers, streams already closed)."""
        self._decode_cache.clear()
        try:
            return self._decoder.decode(block, raw=True)
        except OversizedHeaderListError:
            self._count("hpack_bomb")
            raise H2Error(ErrorCode.ENHANCE_YOUR_CALM, "decoded header list is far above the limit") from None
        except (HPACKError, ValueError, IndexError) as exc:
            raise H2Error(ErrorCode.COMPRESSION_ERROR, f"HPACK decoding failed: {exc}") from None

    def _respond_error(self, stream: H2Stream, status: int, text: str) -> None:
        """The core answers a request itself (431): no app sees it, nor any event of its stream after."""
        stream.answered = True
        body = f"{text}\n".encode()
        fields = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        self.send_response(stream.stream_id, status, fields)
        self.send_body(stream.stream_id, body, True)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE must be 4 bytes")
        increment = U32.unpack(payload)[0] & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE with a zero increment")
            window = self.conn_send_window = self.conn_send_window + increment
            if window > MAX_WINDOW:
                raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            if self.blocked:
                self._send_blocked()
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            self._apply_rule(stream_id, None, WINDOW_UPDATE)  # idle or closed: an error, or ignored
            return
        if increment == 0:
            self._reset_stream(stream_id, ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE with a zero increment")
            return
        window = stream.send_window = stream.send_window + increment
        if window > MAX_WINDOW:
            self._reset_stream(stream_id, ErrorCode.FLOW_CONTROL_ERROR, "stream window above 2^31-1")
            return
        if stream_id in self.blocked:
            stream.blocked_since = self.clock()
            self._send_blocked()

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM must be 4 bytes")
        stream = self.streams.get(stream_id)
        if stream is None:
            self._apply_rule(stream_id, None, RST_STREAM)  # idle: a connection error; closed: ignored
        self._note_reset()
        if stream is not None:
            code = U32.unpack(payload)[0]
            self._forget(stream_id, Closed.RESET_RECEIVED)
            if not stream.answered:
                self._events.append(StreamReset(stream_id, f"client reset the stream ({code_name(code)})"))

    def _idle(self, stream_id: int) -> bool:
        """No HEADERS opened (odd ids: the client's) or PUSH_PROMISE reserved (even: ours) the stream yet."""
        if stream_id & 1:
            return stream_id > self._last_stream_id
        return stream_id >= self._next_push_id

    def _on_settings(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id != 0:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            self._settings_acked = True
            return
        if len(payload) % 6:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        self._count_control("SETTINGS")
        grew = self._apply_settings(payload)
        self._out.append(frame(SETTINGS, ACK, 0))
        # Only after the ACK: the client counts on its new window and frame size from the ACK on (§6.5.3).
        if grew and self.blocked:
            self._send_blocked()

    def _apply_settings(self, payload: bytes) -> bool:
        """Apply a SETTINGS payload; True when the stream windows grew (blocked streams may go on)."""
        grew = False
        for offset in range(0, len(payload) - len(payload) % 6, 6):
            key, value = SETTINGS_ENTRY.unpack_from(payload, offset)
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise H2Error(ErrorCode.FLOW_CONTROL_ERROR, "a stream window went above 2^31-1")
                if delta > 0:
                    grew = True
            elif key == MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise H2Error(ErrorCode.PROTOCOL_ERROR, f"SETTINGS_MAX_FRAME_SIZE {value} out of range")
                self.peer_max_frame_size = value
            elif key == ENABLE_PUSH:
                if value > 1:
                    raise H2Error(ErrorCode.PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH {value} is not 0 or 1")
                self.peer_enable_push = value == 1
            elif key == ENABLE_CONNECT_PROTOCOL and value > 1:
                raise H2Error(ErrorCode.PROTOCOL_ERROR, "SETTINGS_ENABLE_CONNECT_PROTOCOL is not 0 or 1")
            elif key == MAX_CONCURRENT_STREAMS:
                self.peer_max_pushed = value  # the streams a server opens: pushes
            # HEADER_TABLE_SIZE: our encoder uses no dynamic table, so any size is fine.
            # MAX_HEADER_LIST_SIZE is advisory.
        return grew

    def _on_ping(self, stream_id: int, flags: int, payload: bytes) -> None:
        if stream_id != 0:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "PING must be 8 bytes")
        if not flags & ACK:
            self._count_control("PING")
            self._out.append(frame(PING, ACK, 0, payload))

    def _on_priority(self, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            self._priority_error(stream_id, ErrorCode.FRAME_SIZE_ERROR, "PRIORITY must be 5 bytes")
            return
        self._count_control("PRIORITY")
        if U32.unpack_from(payload)[0] & 0x7FFFFFFF == stream_id:
            self._priority_error(stream_id, ErrorCode.PROTOCOL_ERROR, f"stream {stream_id} depends on itself")

    def _priority_error(self, stream_id: int, code: ErrorCode, detail: str) -> None:
        """A bad PRIORITY frame is a stream error (RFC 9113 §6.3, RFC 7540 §5.3.1), but RST_STREAM must never name
        an idle stream (§6.4: its receiver fails the connection, as h2 does): on an idle stream the error is the
        connection's, which §5.4.1 allows for any stream error."""
        if stream_id not in self.streams and self._idle(stream_id):
            raise H2Error(code, f"{detail} (on idle stream {stream_id})")
        self._reset_stream(stream_id, code, detail)

    def _on_goaway(self, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise H2Error(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise H2Error(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        # The client is leaving: finish the streams it has open, then close.
        self.finish_and_close()

    # ------------------------------------------------------------------ errors and floods

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1
        totals = self.totals
        if totals is not None:
            totals[name] = totals.get(name, 0) + 1

    def _count_control(self, what: str) -> None:
        now = self.clock()
        if now - self._control_since > FLOOD_WINDOW:
            self._control_since = now
            self._control_count = 0
        self._control_count += 1
        if self._control_count > self.settings.max_control_frames:
            self._count("control_flood")
            raise H2Error(
                ErrorCode.ENHANCE_YOUR_CALM,
                f"more than {self.settings.max_control_frames} control frames in {FLOOD_WINDOW:g}s ({what})",
            )

    def _note_reset(self) -> None:
        now = self.clock()
        if now - self._reset_since > FLOOD_WINDOW:
            self._reset_since = now
            self._reset_count = 0
        self._reset_count += 1
        if self._reset_count > self.settings.max_resets:
            self._count("rapid_reset")
            raise H2Error(
                ErrorCode.ENHANCE_YOUR_CALM,
                f"more than {self.settings.max_resets} stream resets in {FLOOD_WINDOW:g}s (rapid reset)",
            )

    def _connection_error(self, exc: H2Error) -> None:
        self._count(exc.code.name.lower())
        self._send_goaway(exc.code, exc.detail)
        for stream_id, stream in list(self.streams.items()):
            self._forget(stream_id, Closed.RESET_SENT)
            if not stream.answered:
                self._events.append(StreamReset(stream_id, exc.detail))
        self.closing = True
        self.deadline = None
        self._events.append(ConnectionTerminated(exc.detail, exc))

    def _send_goaway(self, code: ErrorCode, detail: str = "") -> None:
        if not self._goaway_sent or code != ErrorCode.NO_ERROR:
            debug = detail.encode("utf-8", "replace")[:256] if code != ErrorCode.NO_ERROR else b""
            if not self._goaway_sent:
                # the first GOAWAY's last stream id: a later one must not raise it (RFC 9113 §6.8)
                self._goaway_last_id = self._last_stream_id
            self._out.append(frame(GOAWAY, 0, 0, GOAWAY_HEAD.pack(self._goaway_last_id, code) + debug))
            self._goaway_sent = True

    def _reset_stream(self, stream_id: int, code: ErrorCode, detail: str, count: bool = True) -> None:
        """A stream error: RST_STREAM; the app, if one runs for the stream, gets a disconnect.

        ``count``: the resets a client provokes count against ``max_resets`` like its own RST_STREAMs, or it
        could cancel work as fast as rapid reset by breaking the rules instead ("MadeYouReset", CVE-2025-8671).
        Timeouts pass False (``handle_timer`` must not raise)."""
        self._out.append(frame(RST_STREAM, 0, stream_id, U32.pack(code)))
        self._count("stream_" + code.name.lower())
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._forget(stream_id, Closed.RESET_SENT)
            if not stream.answered:
                self._events.append(StreamReset(stream_id, detail))
        else:
            self._closed_streams.add(stream_id, Closed.RESET_SENT)  # its later frames are ignored
        if count:
            self._note_reset()

    def _forget(self, stream_id: int, how: Closed) -> None:
        """The stream is closed (``how``, for the frames that may still come on it)."""
        stream = self.streams.pop(stream_id, None)
        if stream is not None and stream_id in self.blocked:
            del self.blocked[stream_id]
        self._closed_streams.add(stream_id, how)
        if not self.streams:
            if self._goaway_sent or self.closing:
                self.closing = True
            self._update_deadline()

    # ------------------------------------------------------------------ output

    def send_continue(self, stream_id: int = 0) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and not stream.started:
            self._out.append(
                self._headers_frame(stream_id, encode_headers((100,), [(b":status", b"100")]), False)
            )

    def send_early_hint(self, stream_id: int, links: Iterable[bytes]) -> None:
        """A 103 (RFC 8297) with ``link`` fields, while the final response head has not gone out."""
        stream = self.streams.get(stream_id)
        if stream is None or (stream.started and stream.resp_head is None):
            return  # the final head is out: too late for an informational response
        fields = [(b":status", b"103")] + [(b"link", link) for link in links]
        self._out.append(self._headers_frame(stream_id, encode_headers((103, *fields), fields), False))

    def send_response(self, stream_id: int, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open:
            return  # reset meanwhile: the app learns it at its next send()
        stream.resp_head, stream.resp_length = response_head(status, headers, self.defaults)
        if status in NO_BODY_STATUSES:
            stream.head_only = True
        stream.started = True

    def _headers_frame(self, stream_id: int, block: bytes, end_stream: bool) -> bytes:
        if not self._first_block_sent:
            self._first_block_sent = True
            block = TABLE_SIZE_ZERO + block
        flags = END_STREAM if end_stream else 0
        max_size = self.peer_max_frame_size
        if len(block) <= max_size:
            return frame(HEADERS, flags | END_HEADERS, stream_id, block)
        parts = [frame(HEADERS, flags, stream_id, block[:max_size])]
        for start in range(max_size, len(block), max_size):
            last = start + max_size >= len(block)
            parts.append(
                frame(CONTINUATION, END_HEADERS if last else 0, stream_id, block[start : start + max_size])
            )
        return b"".join(parts)

    def send_body(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        """Queue body bytes; what exceeds the flow-control windows waits in the stream (see ``is_blocked``)."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open:
            return
        head = stream.resp_head
        if stream.head_only:  # HEAD, 204, 304: the body is dropped
            if head is not None:
                stream.resp_head = None
                self._out.append(self._headers_frame(stream_id, head, end_stream))
            elif end_stream:
                self._out.append(frame(DATA, END_STREAM, stream_id))
            if end_stream:
                self._end_send(stream)
            return
        length = stream.resp_length
        if length is not None:
            sent = stream.resp_sent = stream.resp_sent + len(data)
            if sent > length or (end_stream and sent != length):
                self.reset_stream(stream_id, ErrorCode.INTERNAL_ERROR)
                if sent > length:
                    raise AppProtocolError(
                        f"http.response.body: more body than the declared content-length ({length})"
                    )
                raise AppProtocolError(
                    f"http.response.body: response ended after {sent} of {length} declared content-length bytes"
                )
        if head is not None:
            stream.resp_head = None
            if end_stream and not data:
                self._out.append(self._headers_frame(stream_id, head, True))
                self._end_send(stream)
                return
            self._out.append(self._headers_frame(stream_id, head, False))
        if stream.pending_size:
            stream.pending.append(data)
            stream.pending_size += len(data)
            stream.end_pending = end_stream
            return
        size = len(data)
        window = min(stream.send_window, self.conn_send_window)
        if size <= window and size <= self.peer_max_frame_size:
            # the common case: one frame
            stream.send_window -= size
            self.conn_send_window -= size
            if end_stream:
                self._out.append(frame(DATA, END_STREAM, stream_id, data))
                self._end_send(stream)
            elif data:
                self._out.append(frame(DATA, 0, stream_id, data))
            return
        stream.pending.append(data)
        stream.pending_size = size
        stream.end_pending = end_stream
        self._flush_stream(stream)
        if (stream.pending_size or stream.end_pending) and stream_id not in self.blocked:
            stream.blocked_since = self.clock()
            self.blocked[stream_id] = stream
            self._sweep_by(stream.blocked_since + self.settings.sweep_interval)

    def send_trailers(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """End the stream with a trailer block (after the body's last piece, sent without end_stream)."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open:
            return
        block = trailer_block(headers)
        length = stream.resp_length
        if length is not None and stream.resp_sent != length and not stream.head_only:
            # trailers end the stream: short of the declared content-length, as send_body refuses it (§8.1.1)
            self.reset_stream(stream_id, ErrorCode.INTERNAL_ERROR)
            raise AppProtocolError(
                f"http.response.trailers: response ended after {stream.resp_sent} of {length} declared "
                "content-length bytes"
            )
        if stream.resp_head is not None:
            self._out.append(self._headers_frame(stream_id, stream.resp_head, False))
            stream.resp_head = None
        if stream.pending_size:
            stream.trailers_pending = block
            stream.end_pending = True
            return
        self._out.append(self._headers_frame(stream_id, block, True))
        self._end_send(stream)

    def push(
        self,
        stream_id: int,
        path: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        scheme: bytes,
        authority: bytes,
    ) -> Request | None:
        """Promise a pushed response (``http.response.push``); returns the request its app is to answer."""
        stream = self.streams.get(stream_id)
        if stream is None or not self.peer_enable_push or self._goaway_sent or not stream.send_open:
            return None
        # RFC 9113 §5.1.2: no more pushed streams open at once than the client allows; a push is only a hint,
        # so past the limit it is left out (pushed streams leave ``streams`` once their response is sent)
        if sum(1 for open_id in self.streams if not open_id & 1) >= self.peer_max_pushed:
            return None
        fields, block = promised_request(path, headers, scheme, authority)
        promised = self._next_push_id
        self._next_push_id += 2
        if not self._first_block_sent:
            self._first_block_sent = True
            block = TABLE_SIZE_ZERO + block
        self._out.append(frame(PUSH_PROMISE, END_HEADERS, stream_id, U32.pack(promised) + block))
        pushed = H2Stream(promised, self.peer_initial_window, recv_open=False)
        self.streams[promised] = pushed
        path_part, _, query = path.partition(b"?")
        request_headers = [(b"host", authority), *((n, v) for n, v in fields[4:])]
        return Request(promised, b"GET", path_part, query, request_headers, "2", True)

    def _flush_stream(self, stream: H2Stream) -> None:
        """Send as much of a stream's waiting bytes as the windows allow."""
        out = self._out
        max_frame = self.peer_max_frame_size
        stream_id = stream.stream_id
        pending = stream.pending
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        offset = 0
        size = len(data)
        while offset < size:
            window = min(stream.send_window, self.conn_send_window, max_frame)
            if window <= 0:
                break
            chunk = data[offset : offset + window]
            offset += len(chunk)
            stream.send_window -= len(chunk)
            self.conn_send_window -= len(chunk)
            last = offset == size and stream.end_pending and stream.trailers_pending is None
            out.append(frame(DATA, END_STREAM if last else 0, stream_id, chunk))
        rest = data[offset:]
        stream.pending = [rest] if rest else []
        stream.pending_size = len(rest)
        if not rest and stream.end_pending:
            if stream.trailers_pending is not None:
                out.append(self._headers_frame(stream_id, stream.trailers_pending, True))
                stream.trailers_pending = None
            elif size == 0:
                out.append(frame(DATA, END_STREAM, stream_id))
            stream.end_pending = False
            self._end_send(stream)

    def _send_blocked(self) -> None:
        for stream in list(self.blocked.values()):
            if self.conn_send_window <= 0:
                break
            if stream.send_window > 0:
                self._flush_stream(stream)
                if not stream.pending_size and not stream.end_pending:
                    self.blocked.pop(stream.stream_id, None)
                    self.unblocked.append(stream.stream_id)
        self._update_deadline()

    def _end_send(self, stream: H2Stream) -> None:
        stream.send_open = False
        if not stream.recv_open:
            self._forget(stream.stream_id, Closed.ENDED)
        elif stream.tunnel or self._goaway_sent:
            self._stop_request(stream)
        # else the response is complete before the request: half-closed (local). The rest of the request is
        # taken and its window returned until the client's END_STREAM, so the client can finish what it sends
        # and the frames it sends meanwhile get what §5.1 says (RST_STREAM NO_ERROR here would leave them
        # unanswered). The body stall timeout and the concurrent stream limit still hold for the stream.

    def _stop_request(self, stream: H2Stream) -> None:
        """Our response is complete: ask the client to stop sending its request (RFC 9113 §8.1), for a tunnel
        (a WebSocket whose peer may never end its side) and once the connection is going away."""
        self._out.append(frame(RST_STREAM, 0, stream.stream_id, U32.pack(ErrorCode.NO_ERROR)))
        self._forget(stream.stream_id, Closed.RESET_SENT)

    def send_file(self, stream_id: int, count: int, end_stream: bool) -> int:
        """``count`` bytes of a file are to follow as body (pathsend, zerocopysend): how many go, 0 for a
        response without a body (HEAD, 204, 304) or a stream already gone. The stream channel sends them with
        ``send_body`` (``StreamChannel.send_file``); more than the declared content-length resets the stream and
        raises ``AppProtocolError`` before any of them goes."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open or stream.head_only:
            return 0
        try:
            check_file_length(count, stream.resp_sent, stream.resp_length)
        except AppProtocolError:
            self.reset_stream(stream_id, ErrorCode.INTERNAL_ERROR)
            raise
        return count

    def file_sent(self, stream_id: int, count: int, end_stream: bool) -> None:
        """The file's bytes are queued; ``end_stream`` ends the response (its content-length checked)."""
        if end_stream:
            self.send_body(stream_id, b"", True)

    def accept_upgrade(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        raise AppProtocolError("HTTP/2 streams are not upgraded; WebSocket uses extended CONNECT")

    def is_blocked(self, stream_id: int) -> bool:
        """The stream's body bytes wait for the client's window: the app's send() should wait."""
        return stream_id in self.blocked

    def is_open(self, stream_id: int) -> bool:
        """The stream can still carry our response (it was not reset, and the response is not complete)."""
        stream = self.streams.get(stream_id)
        return stream is not None and stream.send_open

    def reset_stream(self, stream_id: int, code: ErrorCode = ErrorCode.CANCEL) -> None:
        """The server gives up on a stream (app failure after the head, a stalled client)."""
        if stream_id in self.streams:
            self._out.append(frame(RST_STREAM, 0, stream_id, U32.pack(code)))
            self._forget(stream_id, Closed.RESET_SENT)

    # ------------------------------------------------------------------ body flow (the bridge's pause/resume)

    def pause_stream(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.recv_paused = True

    def resume_stream(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and stream.recv_paused:
            stream.recv_paused = False
            # held back by the app meanwhile: the client's rate counts from now, with a new grace
            stream.progress_at = stream.rate_since = self.clock()
            stream.rate_mark = stream.received
            if stream.recv_open and stream.recv_unacked:
                self._out.append(frame(WINDOW_UPDATE, 0, stream_id, U32.pack(stream.recv_unacked)))
                stream.recv_unacked = 0

    # ------------------------------------------------------------------ shutdown and time

    def finish_and_close(self) -> None:
        """Graceful shutdown: GOAWAY with the last stream id; close once the open streams are done."""
        if not self._goaway_sent:
            self._send_goaway(ErrorCode.NO_ERROR)
        for stream in list(self.streams.values()):
            if stream.recv_open and not stream.send_open:
                self._stop_request(stream)  # answered: the rest of its request would only delay the close
        if not self.streams:
            self.closing = True
            self.deadline = None

    def _sweep_by(self, sweep: float) -> None:
        """A stream began waiting on the client: the next sweep for stalled streams must come by ``sweep``, not
        at an idle deadline set while no stream was open. A preface or header block deadline is left as it is
        (handle_timer takes any deadline then for a header timeout)."""
        deadline = self.deadline
        if deadline is not None and self._preface_seen and self._block is None and sweep < deadline:
            self.deadline = sweep

    def _update_deadline(self) -> None:
        settings = self.settings
        now = self.clock()
        if not self._preface_seen or self._block is not None:
            self.deadline = now + settings.header_timeout
        elif not self.streams:
            self.deadline = now + settings.idle_timeout
        else:
            # A sweep for stalled streams, at least every idle_timeout: the last stream may end outside a read
            # (its app finishing in a task), where the driver does not look at the idle deadline that sets;
            # the next timer then finds it and the driver re-arms for it.
            self.deadline = now + min(settings.sweep_interval, settings.idle_timeout)

    def handle_timer(self, now: float) -> list[Event]:
        deadline = self.deadline
        if deadline is None or now < deadline or self.closing:
            return []
        events = self._events = []
        if not self._preface_seen or self._block is not None:
            self._count("header_timeout")
            self._connection_error(
                H2Error(ErrorCode.PROTOCOL_ERROR, "client preface or header block timed out")
            )
            return events
        if not self.streams:
            self._send_goaway(ErrorCode.NO_ERROR)
            self.closing = True
            self.deadline = None
            events.append(ConnectionTerminated("idle timeout"))
            return events
        settings = self.settings
        limit = settings.stall_timeout
        send_limit = settings.send_stall_timeout
        for stream in list(self.streams.values()):
            if (
                send_limit is not None
                and stream.stream_id in self.blocked
                and now - stream.blocked_since > send_limit
            ):
                self._count("send_stall")
                self._reset_stream(
                    stream.stream_id,
                    ErrorCode.CANCEL,
                    f"client window stayed closed for {send_limit:g}s",
                    False,
                )
            elif stream.recv_open and not stream.recv_paused and not stream.tunnel:
                # (a WebSocket keeps itself alive with its pings, or not)
                if now - stream.progress_at > limit:
                    self._count("body_stall")
                    self._reset_stream(
                        stream.stream_id, ErrorCode.CANCEL, f"request body stalled for {limit:g}s", False
                    )
                elif settings.min_body_rate and now - stream.rate_since >= settings.body_rate_grace:
                    self._check_rate(stream, now)
        self._update_deadline()
        return events

    def _check_rate(self, stream: H2Stream, now: float) -> None:
        """--limit-request-body-rate: a stream whose body has averaged under the minimum since it began (or
        since it was last resumed) is reset with CANCEL, as a stalled one is."""
        rate = self.settings.min_body_rate
        elapsed = now - stream.rate_since
        received = stream.received - stream.rate_mark
        if received < rate * elapsed:
            self._count("body_rate")
            self._reset_stream(
                stream.stream_id,
                ErrorCode.CANCEL,
                f"request body too slow: {received} bytes in {elapsed:.1f}s, under the minimum of {rate} bytes/s",
                False,
            )


def h2c_upgrade(request: Request) -> tuple[int, bytes]:
    """Check an HTTP/1.1 ``Upgrade: h2c`` request (RFC 7540 §3.2): return its body length and the client's
    settings from ``HTTP2-Settings`` (base64url, unpadded). Raises ``BadRequest`` when it can't be upgraded:
    no HTTP2-Settings (§3.2.1), or a chunked body, which can't be told from what follows it once the HTTP/1.1
    parser has stopped for the upgrade."""
    headers = dict(request.headers)
    encoded = headers.get(b"http2-settings")
    if encoded is None or b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        raise BadRequest("h2c upgrade needs HTTP2-Settings and a Content-Length body")
    try:
        settings = base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4))
    except ValueError:
        settings = b""  # a bad header: the client's SETTINGS frame follows anyway
    return int(headers.get(b"content-length", b"0") or 0), settings
