"""HTTP/2 core conformance, frame layer (RFC 9113 §3.4, §4, §5.1, §6): preface, SETTINGS, frame sizes and
types, padding, stream states. Driven in memory with hand-built frames (``h2wire``); every error asserts the
exact GOAWAY or RST_STREAM code."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import pytest

from h2wire import (
    GET,
    Clock,
    H2Pair,
    RawClient,
    assert_connection_error,
    assert_stream_error,
    continuation,
    data,
    goaway,
    headers_priority,
    make_server,
    parse,
    ping,
    priority,
    request_fields,
    rst,
    settings_payload,
    u32,
    window_update,
)
from zonda.protocols.events import Data, Request, StreamReset
from zonda.protocols.http2 import (
    ACK,
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
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    ErrorCode,
    frame,
)

# ---------------------------------------------------------------------------------------------- preface


def test_server_settings_are_the_first_frame() -> None:
    server = make_server()
    frames = parse(server.data_to_send())
    assert [(f.kind, f.flags, f.stream_id) for f in frames] == [(SETTINGS, 0, 0), (WINDOW_UPDATE, 0, 0)]
    assert frames[0].settings == {
        0x3: 100,  # MAX_CONCURRENT_STREAMS
        0x4: 1024 * 1024,  # INITIAL_WINDOW_SIZE
        0x5: 16384,  # MAX_FRAME_SIZE
        0x6: 65536,  # MAX_HEADER_LIST_SIZE
        0x1: 4096,  # HEADER_TABLE_SIZE
        0x2: 0,  # ENABLE_PUSH
    }
    assert frames[1].increment == 4 * 1024 * 1024 - 65535  # the connection window, opened up front


def test_server_settings_announce_connect_protocol_and_skip_a_useless_window_update() -> None:
    server = make_server(enable_connect_protocol=True, connection_window_size=65535)
    frames = parse(server.data_to_send())
    assert [f.kind for f in frames] == [SETTINGS]
    assert frames[0].settings[0x8] == 1


def test_h2_client_handshake() -> None:
    pair = H2Pair()
    assert pair.client.remote_settings.max_concurrent_streams == 100
    assert pair.client.remote_settings.initial_window_size == 1024 * 1024
    assert pair.client.outbound_flow_control_window == 4 * 1024 * 1024
    assert not pair.server.closing


@pytest.mark.parametrize(
    "garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", b"PRX"]
)
def test_bad_preface_is_a_protocol_error(garbage: bytes) -> None:
    client = RawClient(handshake=False)
    events = client.send(garbage)
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR, last=0)


def test_preface_split_across_reads() -> None:
    client = RawClient(handshake=False)
    wire = PREFACE + frame(SETTINGS, 0, 0) + client.headers(1)
    events = []
    for i in range(len(wire)):
        events += client.send(wire[i : i + 1])
    assert [type(e) for e in events] == [Request]
    assert [(f.kind, f.flags) for f in client.read()] == [(SETTINGS, ACK)]


def test_preface_must_be_followed_by_settings() -> None:
    # RFC 9113 §3.4: the preface is the magic string and then a SETTINGS frame.
    client = RawClient(handshake=False)
    events = client.send(PREFACE + ping())
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_preface_followed_by_settings_ack_is_invalid() -> None:
    client = RawClient(handshake=False)
    events = client.send(PREFACE, frame(SETTINGS, ACK, 0))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_preface_settings_checked_when_the_frame_header_arrives_late() -> None:
    client = RawClient(handshake=False)
    assert client.send(PREFACE + b"\x00\x00") == []
    events = client.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, client.block(GET))[2:])
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


# ---------------------------------------------------------------------------------------------- SETTINGS


def test_client_settings_are_acknowledged_every_time() -> None:
    client = RawClient()
    assert client.send(frame(SETTINGS, 0, 0, settings_payload(max_frame_size=32768))) == []
    assert [(f.kind, f.flags, f.payload) for f in client.read()] == [(SETTINGS, ACK, b"")]
    assert client.server.peer_max_frame_size == 32768
    assert client.send(frame(SETTINGS, ACK, 0)) == []  # an ACK of ours is not answered
    assert client.read() == []


def test_settings_ack_with_payload_is_a_frame_size_error() -> None:
    client = RawClient(ack=False)
    events = client.send(frame(SETTINGS, ACK, 0, settings_payload(enable_push=0)))
    assert_connection_error(client, events, ErrorCode.FRAME_SIZE_ERROR)


@pytest.mark.parametrize("length", [1, 5, 7, 13])
def test_settings_length_not_a_multiple_of_six(length: int) -> None:
    client = RawClient()
    events = client.send(frame(SETTINGS, 0, 0, b"\0" * length))
    assert_connection_error(client, events, ErrorCode.FRAME_SIZE_ERROR)


def test_settings_on_a_stream_is_a_protocol_error() -> None:
    client = RawClient()
    events = client.send(frame(SETTINGS, 0, 1, settings_payload(enable_push=0)))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_enable_push_other_than_0_or_1() -> None:
    client = RawClient()
    events = client.send(frame(SETTINGS, 0, 0, settings_payload(enable_push=2)))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_enable_connect_protocol_other_than_0_or_1() -> None:
    client = RawClient()
    events = client.send(frame(SETTINGS, 0, 0, settings_payload(enable_connect_protocol=2)))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_initial_window_size_above_2_31_minus_1() -> None:
    client = RawClient()
    assert client.send(frame(SETTINGS, 0, 0, settings_payload(initial_window_size=2**31 - 1))) == []
    client.read()
    events = client.send(frame(SETTINGS, 0, 0, settings_payload(initial_window_size=2**31)))
    assert_connection_error(client, events, ErrorCode.FLOW_CONTROL_ERROR)


@pytest.mark.parametrize("size", [0, 16383, 2**24, 2**32 - 1])
def test_max_frame_size_out_of_range(size: int) -> None:
    client = RawClient()
    events = client.send(frame(SETTINGS, 0, 0, settings_payload(max_frame_size=size)))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("size", [16384, 2**24 - 1])
def test_max_frame_size_bounds_are_accepted(size: int) -> None:
    client = RawClient()
    assert client.send(frame(SETTINGS, 0, 0, settings_payload(max_frame_size=size))) == []
    assert client.server.peer_max_frame_size == size


def test_unknown_settings_are_ignored() -> None:
    client = RawClient()
    payload = settings_payload(x7=1, x10=12345, xFFFF=2**32 - 1, header_table_size=0, max_header_list_size=10)
    assert client.send(frame(SETTINGS, 0, 0, payload)) == []
    assert [(f.kind, f.flags) for f in client.read()] == [(SETTINGS, ACK)]
    client.request(1)


def test_settings_in_the_preface_are_applied() -> None:
    client = RawClient(client_settings=settings_payload(enable_push=0, max_frame_size=20000))
    assert not client.server.peer_enable_push
    assert client.server.peer_max_frame_size == 20000


# ---------------------------------------------------------------------------------------------- frame sizes


def test_frame_above_our_max_frame_size_is_rejected_from_its_header() -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    # only the 9-byte header has arrived: the size is known, the error is immediate
    events = client.send(frame(DATA, 0, 1, b"x" * 16385)[:9])
    assert [type(e) for e in events[:-1]] == [StreamReset]
    assert_connection_error(client, events, ErrorCode.FRAME_SIZE_ERROR, last=1)


def test_frame_of_exactly_max_frame_size_is_accepted() -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(data(1, b"x" * 16384))
    assert events == [Data(1, b"x" * 16384, False)]


def test_frame_above_a_larger_configured_max_frame_size() -> None:
    client = RawClient(max_frame_size=32768)
    client.request(1, end_stream=False)
    assert client.send(data(1, b"x" * 32768)) == [Data(1, b"x" * 32768, False)]
    events = client.send(data(1, b"x" * 32769))
    assert_connection_error(client, events, ErrorCode.FRAME_SIZE_ERROR, last=1)


@pytest.mark.parametrize("length", [0, 7, 9])
def test_ping_not_8_bytes(length: int) -> None:
    client = RawClient()
    events = client.send(frame(PING, 0, 0, b"p" * length))
    assert_connection_error(client, events, ErrorCode.FRAME_SIZE_ERROR)


def test_ping_is_answered_with_ack_and_same_payload() -> None:
    client = RawClient()
    assert client.send(ping(b"\x00\x01\x02\x03\xfc\xfd\xfe\xff")) == []
    assert [(f.kind, f.flags, f.stream_id, f.payload) for f in client.read()] == [
        (PING, ACK, 0, b"\x00\x01\x02\x03\xfc\xfd\xfe\xff")
    ]


def test_ping_ack_is_not_answered() -> None:
    client = RawClient()
    assert client.send(ping(flags=ACK)) == []
    assert client.read() == []


def test_ping_on_a_stream_is_a_protocol_error() -> None:
    client = RawClient()
    events = client.send(frame(PING, 0, 1, b"12345678"))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("stream_id", [0, 1])
@pytest.mark.parametrize("length", [0, 3, 5])
def test_window_update_not_4_bytes(stream_id: int, length: int) -> None:
    client = RawClient()
    client.request(1)
    events = client.send(frame(WINDOW_UPDATE, 0, stream_id, b"\0\0\0\1\0"[:length]))
    assert_connection_error(client, events, ErrorCode.FRAME_SIZE_ERROR, last=1)


@pytest.mark.parametrize("length", [0, 3, 5])
def test_rst_stream_not_4_bytes(length: int) -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(frame(RST_STREAM, 0, 1, b"\0\0\0\x08\0"[:length]))
    assert [type(e) for e in events] == [StreamReset, type(events[-1])]
    assert_connection_error(client, events, ErrorCode.FRAME_SIZE_ERROR, last=1)


def test_rst_stream_on_stream_0() -> None:
    client = RawClient()
    events = client.send(rst(0))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("length", [0, 4, 6])
def test_priority_not_5_bytes_is_a_stream_error(length: int) -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(frame(PRIORITY, 0, 1, b"\0\0\0\0\x10\0"[:length]))
    assert_stream_error(client, events, 1, ErrorCode.FRAME_SIZE_ERROR, handed_out=True)
    # the stream is gone; the next one opens normally
    client.request(3)


def test_priority_on_stream_0() -> None:
    client = RawClient()
    events = client.send(frame(PRIORITY, 0, 0, u32(1) + b"\x10"))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_priority_frames_are_accepted_on_idle_open_and_closed_streams() -> None:
    client = RawClient()
    assert client.send(priority(5, depends_on=3), priority(7, depends_on=0)) == []
    client.request(1)
    client.respond(1)
    client.read()
    assert client.send(priority(1, depends_on=9), priority(1, depends_on=0)) == []  # closed: fine
    assert client.read() == []
    # PRIORITY does not open the idle stream it names: HEADERS may still use it
    client.request(5)


@pytest.mark.parametrize("kind", [0xA, 0xB, 0x10, 0xFF])
def test_unknown_frame_types_are_ignored(kind: int) -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(
        frame(kind, 0xFF, 0, b"whatever"), frame(kind, 0, 1, b""), frame(kind, 0, 99, b"x" * 100)
    )
    assert events == []
    assert client.read() == []
    assert client.send(data(1, b"body", end_stream=True)) == [Data(1, b"body", True)]


def test_push_promise_from_a_client() -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(frame(PUSH_PROMISE, END_HEADERS, 1, u32(2) + client.block(GET)))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR, last=1)


def test_data_on_stream_0() -> None:
    client = RawClient()
    events = client.send(data(0, b"x"))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_headers_on_stream_0() -> None:
    client = RawClient()
    events = client.send(client.headers(0))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_goaway_on_a_stream() -> None:
    client = RawClient()
    events = client.send(frame(GOAWAY, 0, 1, u32(0) + u32(0)))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_goaway_shorter_than_8_bytes() -> None:
    client = RawClient()
    events = client.send(frame(GOAWAY, 0, 0, u32(0)))
    assert_connection_error(client, events, ErrorCode.FRAME_SIZE_ERROR)


def test_client_goaway_lets_open_streams_finish() -> None:
    client = RawClient()
    client.request(1)
    assert client.send(frame(GOAWAY, 0, 0, u32(0) + u32(ErrorCode.NO_ERROR) + b"bye")) == []
    g = goaway(client.read())
    assert (g.code, g.last_stream_id) == (ErrorCode.NO_ERROR, 1)
    assert not client.server.closing
    client.respond(1, body=b"done")
    assert [(f.kind, f.stream_id) for f in client.read()] == [(HEADERS, 1), (DATA, 1)]
    assert client.server.closing


def test_reserved_bit_of_the_stream_id_is_ignored() -> None:
    client = RawClient()
    request = client.server.receive_data(
        frame(HEADERS, END_HEADERS | END_STREAM, 0x80000001, client.block(GET))
    )
    assert len(request) == 1 and isinstance(request[0], Request)
    assert request[0].stream_id == 1


# ---------------------------------------------------------------------------------------------- padding


def test_padded_data_is_delivered_without_its_padding() -> None:
    client = RawClient(connection_window_size=1024)  # the connection window goes back once 256 bytes came
    client.request(1, end_stream=False)
    events = client.send(
        data(1, b"hello", pad=10), data(1, b"", pad=0), data(1, b"!", end_stream=True, pad=255)
    )
    assert events == [Data(1, b"hello", False), Data(1, b"", False), Data(1, b"!", True)]
    # flow control counts the whole frames, padding and the pad length byte included
    frames = client.read()
    assert [(f.kind, f.stream_id, f.increment) for f in frames] == [(WINDOW_UPDATE, 0, 16 + 1 + 257)]


def test_padded_headers_are_delivered() -> None:
    client = RawClient()
    block = client.block(request_fields(b"/padded"))
    events = client.send(frame(HEADERS, END_HEADERS | END_STREAM | PADDED, 1, b"\x07" + block + b"\0" * 7))
    assert [e.path for e in events if isinstance(e, Request)] == [b"/padded"]
    block = client.block(request_fields(b"/both"))
    flags = END_HEADERS | END_STREAM | PADDED | PRIORITY_FLAG
    events = client.send(frame(HEADERS, flags, 3, b"\x03" + u32(1) + b"\xff" + block + b"\0" * 3))
    assert [e.path for e in events if isinstance(e, Request)] == [b"/both"]


@pytest.mark.parametrize("extra", [0, 1, 50])
def test_data_padding_as_long_as_the_frame(extra: int) -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    payload = b"abc"
    # pad length >= the frame payload's length (pad length byte + data + padding actually present)
    events = client.send(frame(DATA, PADDED, 1, bytes([len(payload) + 1 + extra]) + payload))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR, last=1)


def test_headers_padding_as_long_as_the_frame() -> None:
    client = RawClient()
    block = client.block(GET)
    events = client.send(frame(HEADERS, END_HEADERS | PADDED, 1, bytes([len(block) + 1]) + block))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_padded_frame_without_a_pad_length() -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(frame(DATA, PADDED, 1, b""))
    assert_connection_error(client, events, ErrorCode.FRAME_SIZE_ERROR, last=1)


def test_padding_may_fill_the_whole_data_frame() -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    assert client.send(frame(DATA, PADDED | END_STREAM, 1, b"\x04" + b"\0" * 4)) == [Data(1, b"", True)]


# ---------------------------------------------------------------------------------------------- stream states


def test_even_stream_id_from_a_client() -> None:
    client = RawClient()
    events = client.send(client.headers(2))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_stream_id_lower_than_one_already_used() -> None:
    client = RawClient()
    client.request(5)
    events = client.send(client.headers(3))
    assert_connection_error(client, events[1:], ErrorCode.PROTOCOL_ERROR, last=5)


def test_headers_reusing_a_finished_stream_is_stream_closed() -> None:
    # RFC 9113 §5.1 "closed": frames after END_STREAM are a connection error STREAM_CLOSED.
    client = RawClient()
    client.request(1)
    client.respond(1)
    client.read()
    events = client.send(client.headers(1))
    assert_connection_error(client, events, ErrorCode.STREAM_CLOSED, last=1)


def test_skipped_stream_ids_are_closed() -> None:
    client = RawClient()
    client.request(7)
    events = client.send(client.headers(1))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR, last=7)


def test_data_on_an_idle_stream() -> None:
    client = RawClient()
    events = client.send(data(1, b"x"))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_data_on_an_idle_stream_above_open_ones() -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(data(3, b"x"))
    assert_connection_error(client, events[1:], ErrorCode.PROTOCOL_ERROR, last=1)


def test_data_on_a_half_closed_remote_stream_is_stream_closed() -> None:
    client = RawClient()
    client.request(1, end_stream=True)
    events = client.send(data(1, b"late"))
    assert_stream_error(client, events, 1, ErrorCode.STREAM_CLOSED, handed_out=True)
    assert not client.server.is_open(1)
    client.server.send_response(1, 200, [])  # the app's late answer goes nowhere
    assert client.read() == []


def test_data_on_a_long_finished_stream_is_answered_stream_closed() -> None:
    # Deliberate: a stream that ended normally is forgotten; DATA on it gets RST_STREAM STREAM_CLOSED (a stream
    # error, which RFC 9113 §5.1 allows us to use instead of the connection error), and later frames are ignored.
    client = RawClient()
    client.request(1)
    client.respond(1)
    client.read()
    events = client.send(data(1, b"x"))
    assert_stream_error(client, events, 1, ErrorCode.STREAM_CLOSED)
    assert client.send(data(1, b"y")) == []
    assert [f.kind for f in client.read()] == []


def test_frames_on_a_stream_we_reset_are_ignored() -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(window_update(1, 0))  # a stream error: RST_STREAM PROTOCOL_ERROR
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR, handed_out=True)
    # what the client had in flight is ignored, and the HPACK state stays in step with the trailers' block
    events = client.send(
        data(1, b"in flight"),
        window_update(1, 100),
        priority(1, 0),
        client.headers(1, [(b"x-trailer", b"1")], end_stream=True),
        rst(1, ErrorCode.CANCEL),
    )
    assert events == []
    assert [f.kind for f in client.read() if f.stream_id] == []
    request = client.request(3, [*GET, (b"x-trailer", b"1")])
    assert (b"x-trailer", b"1") in request.headers


def test_frames_on_a_stream_the_app_reset_are_ignored() -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    client.server.reset_stream(1, ErrorCode.INTERNAL_ERROR)
    assert [(f.kind, f.stream_id, f.code) for f in client.read()] == [
        (RST_STREAM, 1, ErrorCode.INTERNAL_ERROR)
    ]
    assert client.send(data(1, b"x"), client.headers(1, [(b"a", b"b")]), window_update(1, 1)) == []
    assert [f.kind for f in client.read() if f.stream_id] == []


def test_rst_stream_on_an_idle_stream() -> None:
    client = RawClient()
    client.request(1)
    events = client.send(rst(3))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR, last=1)


def test_window_update_on_an_idle_stream() -> None:
    client = RawClient()
    events = client.send(window_update(1, 100))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "idle_frame",
    [rst(2), window_update(4, 1), data(2, b"x")],
    ids=["RST_STREAM", "WINDOW_UPDATE", "DATA"],
)
def test_frames_on_an_idle_even_stream(idle_frame: bytes) -> None:
    # Even streams are ours to open (pushes); one we never promised is idle (RFC 9113 §5.1).
    client = RawClient()
    client.request(5)
    events = client.send(idle_frame)
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR, last=5)


def test_rst_stream_and_window_update_on_closed_streams_are_fine() -> None:
    client = RawClient()
    client.request(1)
    client.respond(1)
    client.read()
    assert client.send(window_update(1, 10), rst(1)) == []
    assert client.read() == []


def test_headers_interrupted_by_another_frame() -> None:
    client = RawClient()
    block = client.block(GET)
    events = client.send(frame(HEADERS, END_STREAM, 1, block[:3]), ping())
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_headers_interrupted_by_continuation_on_another_stream() -> None:
    client = RawClient()
    block = client.block(GET)
    events = client.send(
        frame(HEADERS, END_STREAM, 1, block[:3]), continuation(3, block[3:], end_headers=True)
    )
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_headers_interrupted_by_data_on_the_same_stream() -> None:
    client = RawClient()
    block = client.block(GET)
    events = client.send(frame(HEADERS, 0, 1, block[:3]), data(1, b"x"))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_continuation_without_headers() -> None:
    client = RawClient()
    events = client.send(continuation(1, client.block(GET), end_headers=True))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_continuation_after_a_complete_header_block() -> None:
    client = RawClient()
    events = client.send(client.headers(1, end_stream=False), continuation(1, b"", end_headers=True))
    assert [type(e) for e in events[:1]] == [Request]
    assert_connection_error(client, events[1:], ErrorCode.PROTOCOL_ERROR, last=1)


@pytest.mark.parametrize("piece", [2, 7, 64])
def test_header_block_over_continuation_frames(piece: int) -> None:
    client = RawClient()
    fields = request_fields(b"/split?x=1", extra=[(b"x-long", b"v" * 120), (b"accept", b"*/*")])
    block = client.block(fields)
    chunks = [block[i : i + piece] for i in range(0, len(block), piece)]
    wire = [frame(HEADERS, END_STREAM, 1, chunks[0])]
    wire += [continuation(1, c) for c in chunks[1:-1]]
    wire.append(continuation(1, chunks[-1], end_headers=True))
    if piece == 2:
        wire = wire[:1] + [continuation(1, b"")] * 3 + wire[1:]  # empty CONTINUATION frames are legal
    events = []
    for w in wire:  # one frame per read too
        events += client.send(w)
    assert len(events) == 1 and isinstance(events[0], Request)
    request = events[0]
    assert (request.path, request.query_string, request.end_stream) == (b"/split", b"x=1", True)
    assert request.headers == [(b"host", b"example.com"), (b"x-long", b"v" * 120), (b"accept", b"*/*")]
    # the block set the HPACK dynamic table: the next, fully indexed, request decodes the same
    assert client.request(3, fields).headers == request.headers


def test_headers_with_end_stream_over_continuation_then_body() -> None:
    client = RawClient()
    block = client.block(request_fields(method=b"POST"))
    events = client.send(frame(HEADERS, 0, 1, block[:4]), continuation(1, block[4:], end_headers=True))
    assert len(events) == 1 and isinstance(events[0], Request) and not events[0].end_stream
    assert client.send(data(1, b"body", end_stream=True)) == [Data(1, b"body", True)]


def test_headers_depending_on_itself_is_a_protocol_error() -> None:
    # RFC 9113 §5.3.1 names it a stream error; the core makes it a connection error, which §5.4 allows: the
    # frame's header block is not decoded, so the HPACK state could not be kept in step otherwise.
    client = RawClient()
    events = client.send(headers_priority(1, client.block(GET), depends_on=1))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


def test_headers_with_a_valid_priority() -> None:
    client = RawClient()
    events = client.send(headers_priority(3, client.block(GET), depends_on=1))
    assert [type(e) for e in events] == [Request]


def test_priority_frame_depending_on_itself_is_a_stream_error() -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(priority(1, depends_on=1))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR, handed_out=True)


def test_priority_on_an_idle_stream_depending_on_itself() -> None:
    # A stream error, but RST_STREAM must not name an idle stream (RFC 9113 §6.4): a client fails the connection
    # on one, so the server makes it the connection's error (§5.4.1). Found by fuzz/http2.py: h2 as the client
    # refused the RST_STREAM.
    client = RawClient()
    events = client.send(priority(3, depends_on=3))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)


@pytest.mark.parametrize("length", [0, 4, 6])
def test_priority_not_5_bytes_on_an_idle_stream(length: int) -> None:
    client = RawClient()
    client.request(1)
    events = client.send(frame(PRIORITY, 0, 5, b"\0\0\0\0\x10\0"[:length]))
    assert_connection_error(client, events, ErrorCode.FRAME_SIZE_ERROR, last=1)


def test_priority_on_an_idle_stream_read_by_h2_as_the_client() -> None:
    """What the fuzz target found: an h2 client that has opened no stream yet gets a connection error it can
    read, not an RST_STREAM on an idle stream that it refuses as a protocol error."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    server = make_server()
    server.receive_data(client.data_to_send() + priority(1, depends_on=1))
    events = client.receive_data(server.data_to_send())
    assert [type(e) for e in events if not isinstance(e, h2.events.RemoteSettingsChanged)] == [
        h2.events.WindowUpdated,
        h2.events.SettingsAcknowledged,
        h2.events.ConnectionTerminated,
    ]
    assert events[-1].error_code == ErrorCode.PROTOCOL_ERROR


def test_max_concurrent_streams_exceeded_is_refused() -> None:
    client = RawClient(max_concurrent_streams=2)
    client.request(1)
    client.request(3, end_stream=False)
    events = client.send(client.headers(5))
    assert_stream_error(client, events, 5, ErrorCode.REFUSED_STREAM)
    assert client.server.counters["stream_refused_stream"] == 1
    # a response ends stream 1: there is room again
    client.respond(1)
    client.read()
    assert client.request(7).stream_id == 7


def test_client_rst_stream_resets_only_that_stream() -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    client.request(3, end_stream=False)
    events = client.send(rst(1, ErrorCode.CANCEL))
    assert len(events) == 1 and isinstance(events[0], StreamReset)
    assert events[0].stream_id == 1 and "CANCEL" in events[0].reason
    assert client.read() == []
    assert not client.server.is_open(1) and client.server.is_open(3)
    assert client.send(data(3, b"more", end_stream=True)) == [Data(3, b"more", True)]
    client.respond(3, body=b"ok")
    assert [(f.kind, f.stream_id) for f in client.read()] == [(HEADERS, 3), (DATA, 3)]
    client.server.send_response(1, 200, [])  # the reset stream's app is ignored
    client.server.send_body(1, b"x", True)
    assert client.read() == []


def test_client_rst_stream_with_an_unknown_error_code() -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(rst(1, 0xDEAD))
    assert isinstance(events[0], StreamReset) and "0xdead" in events[0].reason


def test_stream_id_max() -> None:
    client = RawClient()
    assert client.request(2**31 - 1).stream_id == 2**31 - 1
    events = client.send(client.headers(1))
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR, last=2**31 - 1)


def test_request_with_end_stream_then_response_closes_the_stream() -> None:
    client = RawClient()
    client.request(1)
    assert client.server.is_open(1)
    client.respond(1, body=b"x")
    frames = client.read()
    assert [(f.kind, f.flags & END_STREAM) for f in frames] == [(HEADERS, 0), (DATA, END_STREAM)]
    assert not client.server.is_open(1)


def test_fake_clock_is_used() -> None:
    clock = Clock(5.0)
    client = RawClient(clock=clock, idle_timeout=7.0)
    assert client.server.deadline == 12.0
