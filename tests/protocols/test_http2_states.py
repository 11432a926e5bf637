"""HTTP/2 stream states (RFC 9113 §5.1), in memory: every state a client's stream can be in, crossed with every
stream-level frame the client can send there, against the exact outcome (handled, ignored, RST_STREAM or
GOAWAY with its code); then the half-closed (local) state of a response that is complete before its request:
the rest of the body is taken, flow controlled and accounted until the client's END_STREAM."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from h2wire import (
    GET,
    RawClient,
    assert_connection_error,
    assert_stream_error,
    data,
    ping,
    priority,
    request_fields,
    rst,
    settings_payload,
    window_update,
)
from zonda.protocols.events import Data, Event, Request, StreamReset
from zonda.protocols.http2 import DATA, GOAWAY, HEADERS, PING, RST_STREAM, WINDOW_UPDATE, ErrorCode
from zonda.protocols.http2_streams import Closed, ClosedStreams, StreamState

POST = request_fields(method=b"POST")


# ------------------------------------------------------------------------------------ streams in each state


def idle(client: RawClient) -> int:
    return 1


def idle_above_an_open_one(client: RawClient) -> int:
    client.request(1, end_stream=False)
    return 3


def reserved_local(client: RawClient) -> int:
    client.request(1)
    pushed = client.server.push(1, b"/pushed", [], b"https", b"example.com")
    assert pushed is not None
    client.read()
    return pushed.stream_id


def open_(client: RawClient) -> int:
    client.request(1, POST, end_stream=False)
    return 1


def half_closed_local(client: RawClient) -> int:
    client.request(1, POST, end_stream=False)
    client.respond(1, 413, [], b"too big")
    frames = client.read()
    assert [f.kind for f in frames] == [HEADERS, DATA], frames  # no RST_STREAM NO_ERROR: the body may come
    return 1


def half_closed_remote(client: RawClient) -> int:
    client.request(1)
    return 1


def closed_by_both_ends(client: RawClient) -> int:
    client.request(1)
    client.respond(1)
    client.read()
    return 1


def closed_by_both_ends_response_first(client: RawClient) -> int:
    half_closed_local(client)
    assert client.send(data(1, b"rest", end_stream=True)) == [Data(1, b"rest", True)]
    assert client.read() == []
    return 1


def closed_by_our_reset(client: RawClient) -> int:
    client.request(1, POST, end_stream=False)
    client.server.reset_stream(1, ErrorCode.INTERNAL_ERROR)
    assert [(f.kind, f.code) for f in client.read()] == [(RST_STREAM, ErrorCode.INTERNAL_ERROR)]
    return 1


def closed_by_our_stream_error(client: RawClient) -> int:
    client.request(1, POST, end_stream=False)
    events = client.send(window_update(1, 0))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR, handed_out=True)
    return 1


def closed_by_the_clients_reset(client: RawClient) -> int:
    client.request(1, POST, end_stream=False)
    assert [type(e) for e in client.send(rst(1))] == [StreamReset]
    assert client.read() == []
    return 1


def closed_long_ago(client: RawClient) -> int:
    client.request(1)
    client.respond(1)
    for stream_id in range(3, 3 + 2 * ClosedStreams().limit, 2):  # enough closed streams to forget stream 1
        client.request(stream_id)
        client.respond(stream_id)
    client.read()
    return 1


def skipped_over(client: RawClient) -> int:
    client.request(3)  # opening 3 closes the idle stream 1 (RFC 9113 §5.1.1)
    return 1


STATES: dict[str, Callable[[RawClient], int]] = {
    "idle": idle,
    "idle above an open stream": idle_above_an_open_one,
    "reserved (local)": reserved_local,
    "open": open_,
    "half-closed (local)": half_closed_local,
    "half-closed (remote)": half_closed_remote,
    "closed: both END_STREAMs": closed_by_both_ends,
    "closed: both END_STREAMs, response first": closed_by_both_ends_response_first,
    "closed: our RST_STREAM": closed_by_our_reset,
    "closed: our stream error": closed_by_our_stream_error,
    "closed: the client's RST_STREAM": closed_by_the_clients_reset,
    "closed: long ago": closed_long_ago,
    "closed: skipped over": skipped_over,
}

# what each frame gets: "handled", "ignored", ("stream", code) or ("connection", code)
HANDLED, IGNORED = "handled", "ignored"
PROTOCOL = ("connection", ErrorCode.PROTOCOL_ERROR)
CLOSED = ("connection", ErrorCode.STREAM_CLOSED)
STREAM_CLOSED = ("stream", ErrorCode.STREAM_CLOSED)
# state -> DATA, HEADERS, WINDOW_UPDATE, RST_STREAM, PRIORITY
EXPECTED: dict[str, tuple[object, object, object, object, object]] = {
    "idle": (PROTOCOL, HANDLED, PROTOCOL, PROTOCOL, HANDLED),
    "idle above an open stream": (PROTOCOL, HANDLED, PROTOCOL, PROTOCOL, HANDLED),
    "reserved (local)": (PROTOCOL, PROTOCOL, HANDLED, HANDLED, HANDLED),
    "open": (HANDLED, HANDLED, HANDLED, HANDLED, HANDLED),
    "half-closed (local)": (HANDLED, HANDLED, HANDLED, HANDLED, HANDLED),
    "half-closed (remote)": (STREAM_CLOSED, STREAM_CLOSED, HANDLED, HANDLED, HANDLED),
    "closed: both END_STREAMs": (STREAM_CLOSED, CLOSED, IGNORED, IGNORED, IGNORED),
    "closed: both END_STREAMs, response first": (STREAM_CLOSED, CLOSED, IGNORED, IGNORED, IGNORED),
    "closed: our RST_STREAM": (IGNORED, IGNORED, IGNORED, IGNORED, IGNORED),
    "closed: our stream error": (IGNORED, IGNORED, IGNORED, IGNORED, IGNORED),
    "closed: the client's RST_STREAM": (STREAM_CLOSED, STREAM_CLOSED, STREAM_CLOSED, IGNORED, IGNORED),
    "closed: long ago": (STREAM_CLOSED, PROTOCOL, IGNORED, IGNORED, IGNORED),
    "closed: skipped over": (STREAM_CLOSED, PROTOCOL, IGNORED, IGNORED, IGNORED),
}
FRAMES = {
    "D": "DATA",
    "H": "HEADERS",
    "W": "WINDOW_UPDATE",
    "R": "RST_STREAM",
    "P": "PRIORITY",
}  # EXPECTED order


def frame_for(client: RawClient, letter: str, stream_id: int) -> bytes:
    """The frame a client sends on ``stream_id``; HEADERS ends the stream (trailers on an open one, a whole
    request on an idle one)."""
    if letter == "D":
        return data(stream_id, b"late", end_stream=True)
    if letter == "H":
        live = client.server.streams.get(stream_id)
        fields = [(b"x-trailer", b"1")] if live is not None else GET
        return client.headers(stream_id, fields, end_stream=True)
    if letter == "W":
        return window_update(stream_id, 100)
    if letter == "R":
        return rst(stream_id, ErrorCode.CANCEL)
    return priority(stream_id, depends_on=0)


CASES = [(state, letter) for state in STATES for letter in FRAMES]


@pytest.mark.parametrize(("state", "letter"), CASES, ids=[f"{s}: {FRAMES[f]}" for s, f in CASES])
def test_every_frame_in_every_state(state: str, letter: str) -> None:
    client = RawClient()
    stream_id = STATES[state](client)
    last = client.server._last_stream_id
    live = stream_id in client.server.streams
    events = client.send(frame_for(client, letter, stream_id))
    expected = EXPECTED[state][list(FRAMES).index(letter)]
    if isinstance(expected, tuple) and expected[0] == "connection":
        assert_connection_error(client, events, expected[1], last=last)
        return
    if isinstance(expected, tuple):
        assert_stream_error(client, events, stream_id, expected[1], handed_out=live)
        # one RST_STREAM per stream: what the client sends after it is ignored (RFC 9113 §5.1 "closed")
        assert client.send(data(stream_id, b"more"), window_update(stream_id, 1)) == []
        assert [f for f in client.read() if f.stream_id] == []
        return
    frames = [f for f in client.read() if f.stream_id]
    if expected == IGNORED:
        assert (events, frames) == ([], [])
    else:
        assert_handled(letter, stream_id, live, events, frames)
    assert not client.server.closing
    assert client.send(ping(b"stillup!")) == []
    assert [(f.kind, f.payload) for f in client.read()] == [(PING, b"stillup!")]


def assert_handled(
    letter: str, stream_id: int, live: bool, events: list[Event], frames: list[object]
) -> None:
    if letter == "D":
        assert events == [Data(stream_id, b"late", True)]
    elif letter == "H" and live:
        assert events == [Data(stream_id, b"", True)]  # trailers end the request
    elif letter == "H":
        assert [(type(e), e.stream_id) for e in events] == [(Request, stream_id)]
    elif letter == "R" and live:
        assert [(type(e), e.stream_id) for e in events] == [(StreamReset, stream_id)]
    else:
        assert events == []
    assert frames == []


def test_the_states_named_by_the_core() -> None:
    client = RawClient()
    assert client.server._where(1, None) is StreamState.IDLE
    client.request(1, POST, end_stream=False)
    client.request(3)
    stream = client.server.streams
    assert (stream[1].state, stream[3].state) == (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)
    client.respond(1)
    assert stream[1].state is StreamState.HALF_CLOSED_LOCAL
    client.send(data(1, b"", end_stream=True))
    assert client.server._where(1, None) is Closed.ENDED
    pushed = client.server.push(3, b"/p", [], b"https", b"h")
    assert pushed is not None
    assert stream[pushed.stream_id].state is StreamState.RESERVED_LOCAL
    client.server.send_response(pushed.stream_id, 200, [])
    assert stream[pushed.stream_id].state is StreamState.RESERVED_LOCAL  # the head has not gone out yet
    client.server.send_body(pushed.stream_id, b"x", False)
    assert stream[pushed.stream_id].state is StreamState.HALF_CLOSED_REMOTE


def test_a_second_frame_after_the_clients_reset_gets_no_second_reset() -> None:
    client = RawClient()
    closed_by_the_clients_reset(client)
    events = client.send(data(1, b"a"), client.headers(1, [(b"x", b"1")]), data(1, b"b", end_stream=True))
    assert_stream_error(client, events, 1, ErrorCode.STREAM_CLOSED)
    assert client.server.counters["stream_stream_closed"] == 1


def test_stream_errors_after_the_clients_reset_count_against_max_resets() -> None:
    # A client must not get unbounded resets out of us by sending on streams it reset ("MadeYouReset"): its own
    # RST_STREAM and our STREAM_CLOSED answer both count.
    client = RawClient(max_resets=3)
    client.request(1, POST, end_stream=False)
    client.send(rst(1), data(1, b"x"))
    client.request(3, POST, end_stream=False)
    events = client.send(rst(3), data(3, b"x"))
    assert_connection_error(client, events, ErrorCode.ENHANCE_YOUR_CALM, last=3)


# ------------------------------------------------------------ half-closed (local): the response came first


def test_response_first_takes_the_rest_of_the_body_and_returns_its_window() -> None:
    window = 65536
    client = RawClient(initial_window_size=window, connection_window_size=4 * window)
    half_closed_local(client)
    chunk = b"x" * (window // 4)
    updates: dict[int, int] = {}
    for _ in range(8):  # twice the stream window and half the connection's: it must be returned to go on
        assert client.send(data(1, chunk)) == [Data(1, chunk, False)]
        for f in client.read():
            assert f.kind == WINDOW_UPDATE, f
            updates[f.stream_id] = updates.get(f.stream_id, 0) + f.increment
    assert updates == {1: 8 * len(chunk), 0: 8 * len(chunk)}
    assert client.send(data(1, b"end", end_stream=True)) == [Data(1, b"end", True)]
    assert 1 not in client.server.streams


def test_response_first_still_counts_against_max_concurrent_streams_until_the_body_ends() -> None:
    client = RawClient(max_concurrent_streams=1)
    half_closed_local(client)
    events = client.send(client.headers(3))
    assert_stream_error(client, events, 3, ErrorCode.REFUSED_STREAM)
    client.send(data(1, b"", end_stream=True))
    assert client.request(5).stream_id == 5


def test_response_first_then_a_zero_window_update_is_a_stream_protocol_error() -> None:
    # h2spec 6.9 #2 with an app that answers before it reads the body
    client = RawClient()
    half_closed_local(client)
    events = client.send(window_update(1, 0))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR, handed_out=True)


def test_response_first_then_the_window_above_2_31_minus_1_is_a_stream_flow_control_error() -> None:
    # h2spec 6.9.1 #3: the first RST_STREAM the client sees must be FLOW_CONTROL_ERROR
    client = RawClient()
    half_closed_local(client)
    events = client.send(window_update(1, 2**31 - 1), window_update(1, 2**31 - 1))
    assert_stream_error(client, events, 1, ErrorCode.FLOW_CONTROL_ERROR, handed_out=True)


def test_response_first_then_pseudo_header_trailers_are_a_stream_protocol_error() -> None:
    # h2spec 8.1.2.1 #3: trailers with a pseudo-header (and no END_STREAM) after some body
    client = RawClient()
    half_closed_local(client)
    assert client.send(data(1, b"test")) == [Data(1, b"test", False)]
    events = client.send(client.headers(1, [(b":method", b"POST")], end_stream=False))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR, handed_out=True)


def test_response_first_then_data_beyond_the_stream_window() -> None:
    client = RawClient(initial_window_size=16384)
    half_closed_local(client)
    client.server.pause_stream(1)  # the app is still running and holds the window closed
    chunk = b"x" * 16384
    assert client.send(data(1, chunk)) == [Data(1, chunk, False)]
    events = client.send(data(1, b"y"))
    assert_stream_error(client, events, 1, ErrorCode.FLOW_CONTROL_ERROR, handed_out=True)


def test_response_first_then_trailers_end_the_request() -> None:
    client = RawClient()
    half_closed_local(client)
    assert client.send(client.headers(1, [(b"x-checksum", b"1")])) == [Data(1, b"", True)]
    assert 1 not in client.server.streams
    assert client.read() == []


def test_response_first_then_a_stalled_body_is_reset_by_the_stall_timeout() -> None:
    client = RawClient(stall_timeout=10, idle_timeout=60, min_body_rate=0)  # the stall alone
    half_closed_local(client)
    start = client.clock.now
    assert client.server.handle_timer(start + 9) == []
    client.clock.now = start + 10.5
    events = client.server.handle_timer(client.clock.now)
    assert [(type(e), e.stream_id) for e in events] == [(StreamReset, 1)]
    assert [(f.kind, f.stream_id, f.code) for f in client.read()] == [(RST_STREAM, 1, ErrorCode.CANCEL)]


def test_response_first_with_a_content_length_the_body_breaks() -> None:
    client = RawClient()
    client.request(1, [*POST, (b"content-length", b"4")], end_stream=False)
    client.respond(1)
    client.read()
    events = client.send(data(1, b"12345"))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR, handed_out=True)


def test_graceful_shutdown_stops_the_bodies_of_answered_requests() -> None:
    # Going away, the rest of a request already answered would only hold the connection open: RST_STREAM
    # NO_ERROR asks the client to stop (RFC 9113 §8.1), and a connection with nothing else open closes.
    client = RawClient()
    half_closed_local(client)
    client.server.finish_and_close()
    frames = client.read()
    assert [(f.kind, f.stream_id, f.code) for f in frames] == [
        (GOAWAY, 0, ErrorCode.NO_ERROR),
        (RST_STREAM, 1, ErrorCode.NO_ERROR),
    ]
    assert client.server.closing


def test_after_goaway_a_response_first_stops_the_body_at_once() -> None:
    client = RawClient()
    client.request(1, POST, end_stream=False)
    client.request(3)
    client.server.finish_and_close()
    client.read()
    client.respond(1)
    assert [(f.kind, f.stream_id) for f in client.read()][-1:] == [(RST_STREAM, 1)]
    assert client.send(data(1, b"in flight", end_stream=True)) == []  # we reset it: ignored
    client.respond(3)
    client.read()
    assert client.server.closing


def test_a_tunnel_ended_by_us_first_is_reset_with_no_error() -> None:
    # A WebSocket over HTTP/2 (RFC 8441) whose peer never ends its side must not keep the stream forever.
    client = RawClient(enable_connect_protocol=True)
    fields = [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"https"),
        (b":path", b"/ws"),
        (b":authority", b"example.com"),
    ]
    client.request(1, fields, end_stream=False)
    client.server.send_response(1, 200, [])
    client.server.send_body(1, b"", False)
    client.server.send_body(1, b"", True)
    frames = client.read()
    assert [(f.kind, f.code) for f in frames if f.kind == RST_STREAM] == [(RST_STREAM, ErrorCode.NO_ERROR)]
    assert 1 not in client.server.streams


def test_is_open_is_false_once_the_response_is_complete() -> None:
    client = RawClient()
    half_closed_local(client)
    assert 1 in client.server.streams and not client.server.is_open(1)
    client.server.send_response(1, 200, [])  # a late head goes nowhere
    client.server.send_body(1, b"x", True)
    assert client.read() == []


@pytest.mark.parametrize("paused", [False, True])
def test_connection_window_is_returned_for_data_on_streams_reset_meanwhile(paused: bool) -> None:
    window = 65535
    client = RawClient(connection_window_size=window, client_settings=settings_payload())
    client.request(1, POST, end_stream=False)
    if paused:
        client.server.pause_stream(1)
    client.server.reset_stream(1)
    client.read()
    chunk = b"x" * 16384
    for _ in range(4):  # all of the connection window: the client can go on only if it comes back
        assert client.send(data(1, chunk)) == []
    increments = [f.increment for f in client.read() if f.kind == WINDOW_UPDATE and f.stream_id == 0]
    assert sum(increments) == 4 * len(chunk)
