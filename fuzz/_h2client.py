"""The independent client of the HTTP/2 target: the ``h2`` library, client side with header validation on, told
what the fuzz client sent and then fed the server's output.

h2 is told, frame by frame, what the core has read from the fuzz client: the streams it opened (with the method
the core saw, so HEAD responses are checked as such) and ended, its SETTINGS, WINDOW_UPDATEs and resets. It then
reads the server's bytes and checks them as a client must: responses only on streams it opened, DATA within its
flow-control windows, frames within its SETTINGS_MAX_FRAME_SIZE, valid response headers, content-length kept.

Where h2 differs from RFC 9113 and zonda is not at fault, narrowly worked around here:
- h2 takes any GOAWAY, NO_ERROR too, as the end, and refuses the frames of a graceful shutdown after it (§6.8
  lets streams up to the last stream id finish): GOAWAY frames are checked by the target, not fed to h2.
- h2 enforces SETTINGS_MAX_HEADER_LIST_SIZE on what it receives, which §6.5.2 makes advisory: the client's
  value is not passed on.
- h2 applies every pending local setting at the first SETTINGS ACK: each mirrored SETTINGS carries every
  setting, so each ACK applies exactly one frame's values (§6.5.3).
- h2 takes a new SETTINGS_MAX_FRAME_SIZE from its next read on: it reads one frame at a time.
- h2 applies a new initial window to closed streams it has not swept yet: it is made to sweep them first.
- the fuzz client opens more streams than the server allows (the core refuses them), which h2 would not send:
  the server's SETTINGS_MAX_CONCURRENT_STREAMS is hidden from it.
- an action h2's state machine refuses closes the stream (or the connection) in h2 for good, where the core
  answers the client's mistake: the client's mistakes are not mirrored.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.stream import StreamState

from h2wire import Frame, parse
from zonda.protocols.events import Request
from zonda.protocols.http2 import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ErrorCode,
    frame,
)

_MAX_CONCURRENT, _HEADER_TABLE, _ENABLE_PUSH, _WINDOW, _FRAME_SIZE = 3, 1, 2, 4, 5
_MAX_WINDOW = 2**31 - 1
_MAY_END = frozenset((StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE))  # where a client may end a stream
_MAY_UPDATE = _MAY_END | {StreamState.HALF_CLOSED_LOCAL, StreamState.RESERVED_REMOTE}  # or reset, update it
_AUTHORITY = (b":authority", b"example.com")
_FIELDS = {
    b"GET": [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), _AUTHORITY],
    b"HEAD": [(b":method", b"HEAD"), (b":scheme", b"https"), (b":path", b"/"), _AUTHORITY],
    b"websocket": [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"https"),
        _AUTHORITY,
    ],
    b"CONNECT": [(b":method", b"CONNECT"), _AUTHORITY],
}


class MirroredClient:
    """h2 as the client; ``step`` counts the target's steps (reads, timer ticks, app turns)."""

    def __init__(self, upgrade: bool = False) -> None:
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_inbound_headers=True,
            validate_outbound_headers=True,
        )
        self.conn = h2.connection.H2Connection(config)
        # RFC 9113's defaults, not h2's (h2 limits pushes to 100 open streams)
        unlimited = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: _MAX_WINDOW}
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values=unlimited)
        self.settings = {_HEADER_TABLE: 4096, _ENABLE_PUSH: 1, _WINDOW: 65535, _FRAME_SIZE: 16384}
        self.upgrade_settings = b""
        self.highest = 0
        self.opened: set[int] = set()
        if upgrade:  # h2c: stream 1 is the upgraded request, its HTTP2-Settings are our settings
            self.upgrade_settings = base64.urlsafe_b64decode(self.conn.initiate_upgrade_connection() or b"")
            self.highest = 1
            self.opened.add(1)
        else:
            self.conn.initiate_connection()
        self.wire = b""
        self.offset = len(PREFACE)
        self.block: tuple[int, bool] | None = None
        self.client_settings = self.client_pings = 0
        self.first_settings = True
        self.step = 0
        self.client_reset: dict[int, int] = {}  # stream -> the step the client's RST_STREAM on it was read in

    # ------------------------------------------------------------------ what the client sent

    def sent(self, data: bytes, requests: dict[int, Request], max_frame: int) -> None:
        """The core has read ``data``: mirror its whole frames (the core reads every whole frame it has)."""
        self.wire += data
        wire, offset = self.wire, self.offset
        while len(wire) - offset >= 9:
            length = int.from_bytes(wire[offset : offset + 3], "big")
            if length > max_frame or len(wire) - offset < 9 + length:
                break
            kind, flags = wire[offset + 3], wire[offset + 4]
            stream_id = int.from_bytes(wire[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
            self._frame(kind, flags, stream_id, wire[offset + 9 : offset + 9 + length], requests)
            offset += 9 + length
        self.offset = offset

    def _frame(
        self, kind: int, flags: int, stream_id: int, payload: bytes, requests: dict[int, Request]
    ) -> None:
        conn, block = self.conn, self.block
        self.block = None
        if block is not None and kind == CONTINUATION and stream_id == block[0]:
            if flags & END_HEADERS:
                self._header_block(block[0], block[1], requests)
            else:
                self.block = block
        elif kind == HEADERS:
            if flags & END_HEADERS:
                self._header_block(stream_id, bool(flags & END_STREAM), requests)
            else:
                self.block = (stream_id, bool(flags & END_STREAM))
        elif kind == DATA and flags & END_STREAM:
            self._on_stream(stream_id, _MAY_END, conn.end_stream, stream_id)
        elif kind == SETTINGS and not flags & ACK:
            self.client_settings += 1
            settings = dict(self.settings)
            for offset in range(0, len(payload) - 5, 6):
                key, value = struct.unpack_from(">HL", payload, offset)
                if key in settings:
                    settings[key] = value
            if self._call(conn.update_settings, settings):
                self.settings = settings
        elif kind == PING and not flags & ACK:
            self.client_pings += 1
        elif kind == WINDOW_UPDATE and len(payload) == 4:
            # h2 raises only after it has grown a window past 2^31-1: not for those (the core fails them)
            increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
            if not stream_id and increment and conn.inbound_flow_control_window + increment <= _MAX_WINDOW:
                self._call(conn.increment_flow_control_window, increment, None)
            elif increment and stream_id in conn.streams:
                window = conn.streams[stream_id].inbound_flow_control_window
                if window + increment <= _MAX_WINDOW:
                    self._on_stream(
                        stream_id, _MAY_UPDATE, conn.increment_flow_control_window, increment, stream_id
                    )
        elif kind == RST_STREAM and len(payload) == 4:
            code = int.from_bytes(payload, "big")
            if self._on_stream(stream_id, _MAY_UPDATE, conn.reset_stream, stream_id, code):
                self.client_reset.setdefault(stream_id, self.step)

    def _header_block(self, stream_id: int, end_stream: bool, requests: dict[int, Request]) -> None:
        if stream_id % 2 == 0 or stream_id <= self.highest:
            if end_stream:
                self._on_stream(stream_id, _MAY_END, self.conn.end_stream, stream_id)  # trailers
            return
        self.highest = stream_id
        self.opened.add(stream_id)
        request = requests.get(stream_id)
        method = b"GET" if request is None else request.upgrade or request.method
        self._call(self.conn.send_headers, stream_id, _FIELDS.get(method, _FIELDS[b"GET"]), end_stream)

    def _on_stream(
        self, stream_id: int, allowed: frozenset[StreamState], action: Callable[..., object], *args: object
    ) -> bool:
        stream = self.conn.streams.get(stream_id)
        return stream is not None and stream.state_machine.state in allowed and self._call(action, *args)

    def _call(self, action: Callable[..., object], *args: object) -> bool:
        try:
            action(*args)
        except (h2.exceptions.H2Error, ValueError):  # the client's mistake: the core answers it
            return False
        return True

    # ------------------------------------------------------------------ what the server sent

    def read(self, frames: list[Frame]) -> list[h2.events.Event]:
        """Feed the server's frames (without GOAWAY) to h2: it must neither fail nor answer one with an error."""
        self.conn.data_to_send()  # what the mirrored actions produced: the fuzz client sent its own bytes
        events: list[h2.events.Event] = []
        for f in frames:
            payload = f.payload
            if f.kind == GOAWAY:
                continue
            if f.kind == SETTINGS and not f.flags & ACK and self.first_settings:
                self.first_settings = False
                entries = [payload[i : i + 6] for i in range(0, len(payload), 6)]
                payload = b"".join(e for e in entries if e[:2] != b"\0\3")
            if f.kind == SETTINGS and f.flags & ACK:
                _ = self.conn.open_outbound_streams  # sweeps h2's closed streams
            try:
                events += self.conn.receive_data(frame(f.kind, f.flags, f.stream_id, payload))
            except h2.exceptions.ProtocolError as exc:
                raise AssertionError(f"h2 refused zonda's output: {exc!r}", f) from exc
        # What the core sent while it read a chunk went out before the client's frames after it in the chunk,
        # but was mirrored after them all: h2 rightly answers that on a stream the client has just reset with
        # STREAM_CLOSED. (The target checks that only RST_STREAM comes on it in later steps.)
        complaints = [
            f
            for f in parse(self.conn.data_to_send())
            if f.kind == GOAWAY or (f.kind == RST_STREAM and not self._in_flight(f))
        ]
        assert not complaints, ("h2 answered zonda's output with an error", complaints)
        return events

    def _in_flight(self, f: Frame) -> bool:
        return f.code == ErrorCode.STREAM_CLOSED and self.client_reset.get(f.stream_id) == self.step
