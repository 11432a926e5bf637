"""HTTP/2 frames by hand and two in-memory clients for the sans-io HTTP/2 core (no sockets, a fake clock).

``RawClient`` speaks frames built with ``frame()`` (any frame, valid or not) and an ``hpack`` encoder of its
own, for everything the ``h2`` package refuses to send. ``H2Pair`` wires an ``h2`` client to the core and
pumps bytes both ways until both sides are quiet. ``parse()`` reads the server's output back as frames.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
from hpack import Decoder, Encoder

from helpers import Clock
from zonda.protocols.events import ConnectionTerminated, Event, Request, StreamReset
from zonda.protocols.http1 import DefaultHeaders
from zonda.protocols.http2 import (
    ACK,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ErrorCode,
    H2Connection,
    H2Error,
    H2Settings,
    frame,
)

Header = tuple[bytes, bytes]
DATE = b"Mon, 01 Jan 2024 00:00:00 GMT"
GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"example.com")]


def make_server(clock: Clock | None = None, server: bytes | None = b"zonda", **settings: Any) -> H2Connection:
    defaults = DefaultHeaders(server)
    defaults.set_date(DATE)
    return H2Connection(H2Settings(**settings), defaults, clock or Clock())


@dataclass
class Frame:
    kind: int
    flags: int
    stream_id: int
    payload: bytes

    @property
    def code(self) -> int:
        """The error code of a RST_STREAM or GOAWAY frame."""
        if self.kind == RST_STREAM:
            return int(struct.unpack(">L", self.payload)[0])
        assert self.kind == GOAWAY, self
        return int(struct.unpack(">L", self.payload[4:8])[0])

    @property
    def last_stream_id(self) -> int:
        assert self.kind == GOAWAY
        return int(struct.unpack(">L", self.payload[:4])[0]) & 0x7FFFFFFF

    @property
    def increment(self) -> int:
        assert self.kind == WINDOW_UPDATE
        return int(struct.unpack(">L", self.payload)[0])

    @property
    def settings(self) -> dict[int, int]:
        assert self.kind == SETTINGS
        return {k: v for k, v in struct.iter_unpack(">HL", self.payload)}


def parse(data: bytes) -> list[Frame]:
    frames = []
    offset = 0
    while offset < len(data):
        hi, lo, kind, flags, stream_id = struct.unpack_from(">BHBBL", data, offset)
        length = (hi << 16) | lo
        frames.append(Frame(kind, flags, stream_id & 0x7FFFFFFF, data[offset + 9 : offset + 9 + length]))
        offset += 9 + length
    assert offset == len(data), "truncated frame in the server's output"
    return frames


def settings_payload(**entries: int) -> bytes:
    return b"".join(
        struct.pack(">HL", int(k[1:], 16) if k.startswith("x") else _SETTING[k], v)
        for k, v in entries.items()
    )


_SETTING = {
    "header_table_size": 0x1,
    "enable_push": 0x2,
    "max_concurrent_streams": 0x3,
    "initial_window_size": 0x4,
    "max_frame_size": 0x5,
    "max_header_list_size": 0x6,
    "enable_connect_protocol": 0x8,
}


def u32(value: int) -> bytes:
    return struct.pack(">L", value)


def window_update(stream_id: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream_id, u32(increment))


def rst(stream_id: int, code: int = ErrorCode.CANCEL) -> bytes:
    return frame(RST_STREAM, 0, stream_id, u32(code))


def ping(payload: bytes = b"12345678", flags: int = 0) -> bytes:
    return frame(PING, flags, 0, payload)


def priority(stream_id: int, depends_on: int = 0, weight: int = 16) -> bytes:
    return frame(PRIORITY, 0, stream_id, u32(depends_on) + bytes([weight]))


def data(stream_id: int, body: bytes, end_stream: bool = False, pad: int | None = None) -> bytes:
    flags = END_STREAM if end_stream else 0
    if pad is not None:
        return frame(DATA, flags | PADDED, stream_id, bytes([pad]) + body + b"\0" * pad)
    return frame(DATA, flags, stream_id, body)


def request_fields(
    path: bytes = b"/",
    method: bytes = b"GET",
    extra: Iterable[Header] = (),
    authority: bytes = b"example.com",
) -> list[Header]:
    return [
        (b":method", method),
        (b":scheme", b"https"),
        (b":path", path),
        (b":authority", authority),
        *extra,
    ]


class RawClient:
    """A client made of hand-built frames, against one server core."""

    def __init__(
        self,
        clock: Clock | None = None,
        handshake: bool = True,
        client_settings: bytes = b"",
        ack: bool = True,
        **settings: Any,
    ) -> None:
        self.clock = clock or Clock()
        self.server = make_server(self.clock, **settings)
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.events: list[Event] = []
        self.preface_frames = parse(self.server.data_to_send())
        if handshake:
            self.events = self.send(PREFACE + frame(SETTINGS, 0, 0, client_settings))
            acked = self.read()
            assert [(f.kind, f.flags) for f in acked] == [(SETTINGS, ACK)], acked
            if ack:
                assert self.send(frame(SETTINGS, ACK, 0)) == []
                assert self.read() == []

    def send(self, *chunks: bytes) -> list[Event]:
        return self.server.receive_data(b"".join(chunks))

    def read(self) -> list[Frame]:
        return parse(self.server.data_to_send())

    def block(self, fields: Sequence[Header]) -> bytes:
        return bytes(self.encoder.encode(list(fields)))

    def headers(
        self,
        stream_id: int,
        fields: Sequence[Header] | None = None,
        end_stream: bool = True,
        end_headers: bool = True,
        flags: int = 0,
        prefix: bytes = b"",
    ) -> bytes:
        """A HEADERS frame; ``fields`` default to a GET of / (encoded with this client's HPACK state)."""
        block = self.block(GET if fields is None else fields)
        flags |= (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        return frame(HEADERS, flags, stream_id, prefix + block)

    def request(
        self, stream_id: int, fields: Sequence[Header] | None = None, end_stream: bool = True
    ) -> Request:
        """Send a request that must be accepted; return its Request event."""
        events = self.send(self.headers(stream_id, fields, end_stream))
        assert len(events) == 1 and isinstance(events[0], Request), events
        return events[0]

    def respond(
        self, stream_id: int, status: int = 200, headers: Iterable[Header] = (), body: bytes = b""
    ) -> None:
        self.server.send_response(stream_id, status, headers)
        self.server.send_body(stream_id, body, True)

    def decode(self, f: Frame) -> list[Header]:
        """Decode a HEADERS frame (its block is whole: the server only splits above our max frame size)."""
        assert f.kind == HEADERS and f.flags & END_HEADERS, f
        return [(bytes(n), bytes(v)) for n, v in self.decoder.decode(f.payload, raw=True)]


def continuation(stream_id: int, fragment: bytes, end_headers: bool = False) -> bytes:
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream_id, fragment)


def headers_priority(stream_id: int, block: bytes, depends_on: int, end_stream: bool = True) -> bytes:
    flags = END_HEADERS | PRIORITY_FLAG | (END_STREAM if end_stream else 0)
    return frame(HEADERS, flags, stream_id, u32(depends_on) + b"\x10" + block)


def terminated(events: Sequence[Event], code: ErrorCode) -> ConnectionTerminated:
    """The last event ends the connection with a connection error of ``code``."""
    assert events, "no events"
    last = events[-1]
    assert isinstance(last, ConnectionTerminated), events
    assert isinstance(last.error, H2Error), last
    assert last.error.code == code, (last.error.code, code, last.reason)
    return last


def goaway(frames: Sequence[Frame]) -> Frame:
    """The one GOAWAY among the frames (it must be the last frame sent)."""
    found = [f for f in frames if f.kind == GOAWAY]
    assert len(found) == 1, frames
    assert frames[-1] is found[0], frames
    return found[0]


def assert_connection_error(
    client: RawClient, events: Sequence[Event], code: ErrorCode, last: int = 0
) -> None:
    """GOAWAY ``code`` with last stream id ``last``, ConnectionTerminated, and the core ignores later input."""
    terminated(events, code)
    g = goaway(client.read())
    assert (ErrorCode(g.code), g.last_stream_id) == (code, last)
    assert client.server.closing
    assert client.send(ping()) == []
    assert client.read() == []


def assert_stream_error(
    client: RawClient, events: Sequence[Event], stream_id: int, code: ErrorCode, handed_out: bool = False
) -> None:
    """RST_STREAM ``code`` on ``stream_id`` only; a StreamReset if the app had the request; the connection lives."""
    frames = [f for f in client.read() if f.kind != WINDOW_UPDATE or f.stream_id != 0]
    assert [(f.kind, f.stream_id, f.code) for f in frames] == [(RST_STREAM, stream_id, code)], frames
    expected = [StreamReset] if handed_out else []
    assert [type(e) for e in events] == expected, events
    assert not client.server.closing
    assert client.send(ping(b"stillup!")) == []
    assert [(f.kind, f.payload) for f in client.read()] == [(PING, b"stillup!")]


class H2Pair:
    """An ``h2`` client wired to a server core in memory."""

    def __init__(
        self, clock: Clock | None = None, client_settings: dict[int, int] | None = None, **settings: Any
    ) -> None:
        self.clock = clock or Clock()
        self.server = make_server(self.clock, **settings)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.client = h2.connection.H2Connection(config)
        if client_settings:
            self.client.local_settings = h2.settings.Settings(client=True, initial_values=client_settings)
        self.client.initiate_connection()
        self.server_events: list[Event] = []
        server_events, client_events = self.pump()
        assert server_events == []
        assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in client_events)

    def pump(self) -> tuple[list[Event], list[h2.events.Event]]:
        """Move bytes both ways until neither side has anything to send."""
        server_events: list[Event] = []
        client_events: list[h2.events.Event] = []
        while True:
            out = self.client.data_to_send()
            if out:
                server_events += self.server.receive_data(out)
            back = self.server.data_to_send()
            if back:
                client_events += self.client.receive_data(back)
            if not out and not back:
                return server_events, client_events

    def request(
        self, fields: Sequence[Header] | None = None, body: bytes | None = None, end_stream: bool = True
    ) -> tuple[int, Request]:
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(
            stream_id, list(GET if fields is None else fields), end_stream=body is None and end_stream
        )
        if body is not None:
            self.client.send_data(stream_id, body, end_stream=end_stream)
        events, _ = self.pump()
        assert isinstance(events[0], Request), events
        return stream_id, events[0]

    def respond(
        self, stream_id: int, status: int = 200, headers: Iterable[Header] = (), body: bytes = b""
    ) -> list[h2.events.Event]:
        self.server.send_response(stream_id, status, headers)
        self.server.send_body(stream_id, body, True)
        return self.pump()[1]


def response_of(events: Sequence[h2.events.Event], stream_id: int) -> tuple[dict[bytes, bytes], bytes, bool]:
    """The response headers, the body and whether the stream ended, from the h2 client's events."""
    headers: dict[bytes, bytes] = {}
    body = b""
    ended = False
    for e in events:
        if getattr(e, "stream_id", None) != stream_id:
            continue
        if isinstance(e, h2.events.ResponseReceived):
            headers = dict(e.headers)
        elif isinstance(e, h2.events.DataReceived):
            body += e.data
        elif isinstance(e, h2.events.StreamEnded):
            ended = True
    return headers, body, ended
