"""HTTP/2 core conformance, hostile peers and time (RFC 9113 §10.5, §6.8, RFC 7540 §3.2): floods and their
counters, stalls and timeouts on a fake clock, graceful shutdown, h2c upgrade, and random input that must
never make ``receive_data`` raise."""

from __future__ import annotations

import base64

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest
from h2.stream import StreamState
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from h2wire import (
    GET,
    H2Pair,
    RawClient,
    assert_connection_error,
    assert_stream_error,
    continuation,
    data,
    goaway,
    make_server,
    parse,
    ping,
    priority,
    request_fields,
    response_of,
    rst,
    settings_payload,
    window_update,
)
from zonda.errors import AppProtocolError
from zonda.protocols.events import ConnectionTerminated, Data, Request, StreamReset
from zonda.protocols.http2 import (
    DATA,
    END_HEADERS,
    END_STREAM,
    FLOOD_WINDOW,
    GOAWAY,
    HEADERS,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    ErrorCode,
    H2Connection,
    H2Error,
    frame,
)


def run_timers(client: RawClient, until: float) -> list[object]:
    """Move the clock from deadline to deadline up to ``until``, as a driver's timer would; all events."""
    server = client.server
    events: list[object] = []
    while server.deadline is not None and server.deadline <= until and not server.closing:
        client.clock.now = max(client.clock.now, server.deadline)
        events += server.handle_timer(client.clock.now)
    client.clock.now = until
    events += server.handle_timer(until)
    return events


# ---------------------------------------------------------------------------------------------- rapid reset


def test_rapid_reset_is_enhance_your_calm() -> None:
    client = RawClient(max_resets=10)
    for stream_id in range(1, 21, 2):  # ten streams opened and cancelled: at the limit, fine
        events = client.send(client.headers(stream_id, end_stream=False), rst(stream_id))
        assert [type(e) for e in events] == [Request, StreamReset]
    assert client.read() == []
    events = client.send(client.headers(21, end_stream=False), rst(21))
    assert [type(e) for e in events[:2]] == [Request, StreamReset]
    assert_connection_error(client, events, ErrorCode.ENHANCE_YOUR_CALM, last=21)
    assert client.server.counters["rapid_reset"] == 1
    assert client.server.counters["enhance_your_calm"] == 1


def test_rapid_reset_in_one_read() -> None:
    client = RawClient(max_resets=50)
    wire = b"".join(client.headers(s, end_stream=False) + rst(s) for s in range(1, 301, 2))
    events = client.send(wire)
    assert sum(isinstance(e, Request) for e in events) == 51
    assert_connection_error(client, events, ErrorCode.ENHANCE_YOUR_CALM, last=101)


def test_resets_spread_over_time_are_fine() -> None:
    client = RawClient(max_resets=10)
    stream_id = 1
    for _ in range(5):
        for _ in range(10):
            client.send(client.headers(stream_id, end_stream=False), rst(stream_id))
            stream_id += 2
        client.clock.advance(FLOOD_WINDOW + 0.1)
    assert not client.server.closing
    assert "rapid_reset" not in client.server.counters


def test_refused_streams_count_as_resets() -> None:
    client = RawClient(max_resets=5, max_concurrent_streams=1)
    client.request(1)
    for stream_id in range(3, 13, 2):
        assert_stream_error(
            client, client.send(client.headers(stream_id)), stream_id, ErrorCode.REFUSED_STREAM
        )
    events = client.send(client.headers(13))
    assert_connection_error(client, events, ErrorCode.ENHANCE_YOUR_CALM, last=13)
    assert client.server.counters["rapid_reset"] == 1


def test_counts_go_to_the_shared_totals_as_they_happen() -> None:
    """A core given ``totals`` (the server's, which metrics read) adds every count there at once, while its
    connection is open; the totals of two connections add up."""
    totals: dict[str, int] = {}
    attacked, refused = RawClient(max_resets=2), RawClient(max_concurrent_streams=1)
    attacked.server.totals = refused.server.totals = totals
    refused.request(1)
    assert_stream_error(refused, refused.send(refused.headers(3)), 3, ErrorCode.REFUSED_STREAM)
    assert totals == {"stream_refused_stream": 1}
    assert not refused.server.closing
    events = attacked.send(*[attacked.headers(s, end_stream=False) + rst(s) for s in (1, 3, 5)])
    assert_connection_error(attacked, events, ErrorCode.ENHANCE_YOUR_CALM, last=5)
    assert totals == {"stream_refused_stream": 1, "rapid_reset": 1, "enhance_your_calm": 1}
    assert attacked.server.counters == {"rapid_reset": 1, "enhance_your_calm": 1}


@pytest.mark.parametrize(
    "provoke",
    [
        pytest.param(
            lambda c, s: [c.headers(s, end_stream=False), window_update(s, 0)], id="window_update 0"
        ),
        pytest.param(lambda c, s: [c.headers(s), data(s, b"x")], id="data after end_stream"),
        pytest.param(lambda c, s: [c.headers(s, [*GET, (b"Bad", b"1")])], id="malformed request"),
        pytest.param(
            lambda c, s: [c.headers(s, end_stream=False), window_update(s, 2**31 - 1)], id="window overflow"
        ),
    ],
)
def test_resets_the_client_makes_us_send_count_too(provoke: object) -> None:
    # "MadeYouReset" (CVE-2025-8671): a client that gets the server to reset its streams, instead of resetting
    # them itself, must meet the same limit as rapid reset.
    client = RawClient(max_resets=10)
    for stream_id in range(1, 21, 2):
        client.send(*provoke(client, stream_id))  # type: ignore[operator]
        assert [f.kind for f in client.read() if f.stream_id] == [RST_STREAM]
    events = client.send(*provoke(client, 21))  # type: ignore[operator]
    assert_connection_error(client, events, ErrorCode.ENHANCE_YOUR_CALM, last=21)
    assert client.server.counters["rapid_reset"] == 1


def test_timeouts_do_not_count_as_resets() -> None:
    client = RawClient(max_resets=1, stall_timeout=10)
    for stream_id in (1, 3, 5):
        client.request(stream_id, end_stream=False)
    events = run_timers(client, client.clock.now + 30)
    assert [type(e) for e in events] == [StreamReset] * 3
    assert not client.server.closing


# ---------------------------------------------------------------------------------------------- CONTINUATION


def test_header_block_in_128_frames_is_fine() -> None:
    client = RawClient()
    block = client.block(GET)
    wire = [frame(HEADERS, END_STREAM, 1, block)] + [continuation(1, b"")] * 126
    wire.append(continuation(1, b"", end_headers=True))
    assert [type(e) for e in client.send(*wire)] == [Request]


def test_continuation_flood_is_enhance_your_calm() -> None:
    client = RawClient()
    wire = [frame(HEADERS, END_STREAM, 1, client.block(GET))] + [continuation(1, b"")] * 10_000
    events = client.send(*wire)
    assert_connection_error(client, events, ErrorCode.ENHANCE_YOUR_CALM)
    assert client.server.counters["continuation_flood"] == 1


def test_continuation_flood_one_frame_per_read() -> None:
    client = RawClient()
    client.send(frame(HEADERS, 0, 1, b""))
    for _ in range(127):
        assert client.send(continuation(1, b"")) == []
    events = client.send(continuation(1, b""))
    assert_connection_error(client, events, ErrorCode.ENHANCE_YOUR_CALM)


def test_oversized_header_block_is_enhance_your_calm() -> None:
    # The block is refused once its compressed size passes SETTINGS_MAX_HEADER_LIST_SIZE, before decoding.
    client = RawClient(max_header_list_size=65536)
    wire = [frame(HEADERS, 0, 1, b"\x00" * 16384)] + [continuation(1, b"\x00" * 16384)] * 3
    assert client.send(*wire) == []
    events = client.send(continuation(1, b"\x00" * 16384, end_headers=True))
    assert_connection_error(client, events, ErrorCode.ENHANCE_YOUR_CALM)
    assert client.server.counters["continuation_flood"] == 1


# ---------------------------------------------------------------------------------------------- control floods


FLOODS = {
    "SETTINGS": lambda c: frame(SETTINGS, 0, 0, settings_payload(enable_push=0)),
    "PING": lambda c: ping(),
    "PRIORITY": lambda c: priority(1, 0),
    "empty DATA": lambda c: data(1, b""),
    "empty padded DATA": lambda c: data(1, b"", pad=3),
    "unknown frame": lambda c: frame(0xBB, 0, 0, b""),
}


@pytest.mark.parametrize("make", FLOODS.values(), ids=FLOODS.keys())
def test_control_frame_flood_is_enhance_your_calm(make: object) -> None:
    client = RawClient(max_control_frames=20)
    client.request(1, end_stream=False)
    one = make(client)  # type: ignore[operator]
    # the client's first SETTINGS counted as one: 19 more are fine
    for _ in range(19):
        assert client.send(one) in ([], [Data(1, b"", False)])
    client.read()
    events = client.send(one)
    assert_connection_error(client, events, ErrorCode.ENHANCE_YOUR_CALM, last=1)
    assert client.server.counters["control_flood"] == 1


@pytest.mark.parametrize("make", FLOODS.values(), ids=FLOODS.keys())
def test_control_frame_flood_in_one_read(make: object) -> None:
    client = RawClient(max_control_frames=1000)
    client.request(1, end_stream=False)
    events = client.send(make(client) * 5000)  # type: ignore[operator]
    assert_connection_error(client, events, ErrorCode.ENHANCE_YOUR_CALM, last=1)


def test_control_frames_spread_over_time_are_fine() -> None:
    client = RawClient(max_control_frames=20)
    for _ in range(10):
        for _ in range(15):
            client.send(ping())
        client.clock.advance(FLOOD_WINDOW + 0.1)
    assert not client.server.closing
    assert len(client.read()) == 150


def test_body_data_is_not_a_control_frame() -> None:
    client = RawClient(max_control_frames=5)
    client.request(1, end_stream=False)
    for _ in range(50):
        client.send(data(1, b"x"))
    assert client.send(data(1, b"", end_stream=True)) == [Data(1, b"", True)]
    assert not client.server.closing


# ---------------------------------------------------------------------------------------------- timeouts


def test_zero_window_stall_resets_the_stream() -> None:
    client = RawClient(stall_timeout=30, client_settings=settings_payload(initial_window_size=0))
    client.request(1)
    client.request(3)  # waits on nothing from the client: the app has not answered yet
    start = client.clock.now
    client.respond(1, body=b"x" * 100)
    assert client.server.is_blocked(1)
    client.read()
    assert run_timers(client, start + 30) == []  # not yet
    events = run_timers(client, start + 46)
    assert events == [StreamReset(1, "client window stayed closed for 30s")]
    assert [(f.kind, f.stream_id, f.code) for f in client.read()] == [(RST_STREAM, 1, ErrorCode.CANCEL)]
    assert client.server.counters["send_stall"] == 1
    assert not client.server.is_blocked(1) and client.server.blocked == {}
    assert not client.server.closing


def test_window_progress_restarts_the_stall_clock() -> None:
    client = RawClient(stall_timeout=30, client_settings=settings_payload(initial_window_size=0))
    client.request(1)
    start = client.clock.now
    client.respond(1, body=b"x" * 100)
    run_timers(client, start + 25)
    client.send(window_update(1, 10))  # some window: the stream is moving, slowly
    assert run_timers(client, start + 50) == []
    events = run_timers(client, start + 80)
    assert [type(e) for e in events] == [StreamReset]


def test_idle_timeout_sends_goaway_no_error() -> None:
    client = RawClient(idle_timeout=60)
    start = client.clock.now
    assert client.server.deadline == start + 60
    assert client.server.handle_timer(start + 59.9) == []
    client.clock.now = start + 60
    events = client.server.handle_timer(start + 60)
    assert len(events) == 1 and isinstance(events[0], ConnectionTerminated)
    assert events[0].error is None and events[0].reason == "idle timeout"
    g = goaway(client.read())
    assert (g.code, g.last_stream_id) == (ErrorCode.NO_ERROR, 0)
    assert client.server.closing and client.server.deadline is None


def test_idle_timeout_counts_from_the_last_stream() -> None:
    client = RawClient(idle_timeout=60, stall_timeout=30)
    start = client.clock.now
    client.request(1)
    assert run_timers(client, start + 100) == []  # an open stream (the app thinking): not idle, not stalled
    client.respond(1)
    client.read()
    assert client.server.deadline == start + 160
    assert run_timers(client, start + 159) == []
    events = run_timers(client, start + 160)
    assert [type(e) for e in events] == [ConnectionTerminated]


def test_pings_do_not_keep_an_idle_connection_open() -> None:
    client = RawClient(idle_timeout=60)
    start = client.clock.now
    for i in range(6):
        client.clock.now = start + 10 * i
        client.send(ping())
    events = run_timers(client, start + 60)
    assert [type(e) for e in events] == [ConnectionTerminated]


def test_preface_timeout() -> None:
    client = RawClient(handshake=False, header_timeout=10)
    client.send(PREFACE[:10])
    assert client.server.handle_timer(client.clock.now + 9) == []
    client.clock.advance(10)
    events = client.server.handle_timer(client.clock.now)
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)
    assert client.server.counters["header_timeout"] == 1


def test_magic_then_silence_is_an_idle_connection() -> None:
    # The magic string came; its SETTINGS frame never does. Idle, not a broken preface (nothing broke yet).
    client = RawClient(handshake=False, header_timeout=10, idle_timeout=60)
    client.send(PREFACE)
    assert client.server.deadline == client.clock.now + 60
    events = run_timers(client, client.clock.now + 60)
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert [(f.kind, f.code) for f in client.read()] == [(GOAWAY, ErrorCode.NO_ERROR)]


def test_header_block_timeout() -> None:
    client = RawClient(header_timeout=10, idle_timeout=60)
    client.clock.advance(5)
    client.send(frame(HEADERS, END_STREAM, 1, client.block(GET)[:2]))  # END_HEADERS never comes
    assert client.server.deadline == client.clock.now + 10
    assert client.server.handle_timer(client.clock.now + 9) == []
    client.clock.advance(10)
    events = client.server.handle_timer(client.clock.now)
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR)
    assert client.server.counters["header_timeout"] == 1


def test_header_block_completed_in_time_restores_the_deadline() -> None:
    client = RawClient(header_timeout=10, idle_timeout=60)
    block = client.block(GET)
    client.send(frame(HEADERS, END_STREAM, 1, block[:2]))
    client.clock.advance(9)
    assert [type(e) for e in client.send(continuation(1, block[2:], end_headers=True))] == [Request]
    assert client.server.handle_timer(client.clock.now + 5) == []


def test_request_body_stall_resets_the_stream() -> None:
    client = RawClient(stall_timeout=30, min_body_rate=0)  # the stall alone
    start = client.clock.now
    client.request(1, end_stream=False)
    client.request(3, end_stream=False)
    client.clock.now = start + 20
    client.send(data(3, b"progress"))
    events = run_timers(client, start + 46)
    assert events == [StreamReset(1, "request body stalled for 30s")]
    assert [(f.kind, f.stream_id, f.code) for f in client.read()] == [(RST_STREAM, 1, ErrorCode.CANCEL)]
    assert client.server.counters["body_stall"] == 1
    events = run_timers(client, start + 70)
    assert events == [StreamReset(3, "request body stalled for 30s")]
    assert client.server.counters["body_stall"] == 2


def test_paused_body_does_not_stall() -> None:
    client = RawClient(stall_timeout=30)
    start = client.clock.now
    client.request(1, end_stream=False)
    client.server.pause_stream(1)  # the app is behind, not the client
    assert run_timers(client, start + 200) == []
    client.server.resume_stream(1)
    events = run_timers(client, start + 250)
    assert [type(e) for e in events] == [StreamReset]


def test_extended_connect_tunnel_does_not_stall() -> None:
    client = RawClient(stall_timeout=30, enable_connect_protocol=True)
    fields = [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"https"),
        (b":path", b"/ws"),
    ]
    client.request(1, fields, end_stream=False)
    assert run_timers(client, client.clock.now + 300) == []
    assert client.server.is_open(1)


# ---------------------------------------------------------------------------------------------- shutdown


def test_graceful_shutdown_lets_open_streams_finish() -> None:
    client = RawClient()
    client.request(1)
    client.request(3, end_stream=False)
    client.server.finish_and_close()
    g = goaway(client.read())
    assert (g.code, g.last_stream_id) == (ErrorCode.NO_ERROR, 3)
    assert not client.server.closing
    # new streams are ignored (RFC 9113 §6.8), and so is what follows them
    assert client.send(client.headers(5, end_stream=False)) == []
    assert client.send(data(5, b"ignored", end_stream=True)) == []
    assert [f.kind for f in client.read() if f.stream_id] == []
    # the open ones carry on
    assert client.send(data(3, b"body", end_stream=True)) == [Data(3, b"body", True)]
    client.respond(1, body=b"one")
    assert not client.server.closing
    client.respond(3, body=b"three")
    assert [(f.kind, f.stream_id) for f in client.read()] == [
        (HEADERS, 1),
        (DATA, 1),
        (HEADERS, 3),
        (DATA, 3),
    ]
    assert client.server.closing
    assert client.send(client.headers(7)) == []


def test_goaway_last_stream_id_never_increases() -> None:
    # RFC 9113 §6.8: a later GOAWAY must not announce a higher last stream id than an earlier one.
    client = RawClient()
    client.request(1, end_stream=False)
    client.server.finish_and_close()
    assert goaway(client.read()).last_stream_id == 1
    client.send(client.headers(3), client.headers(5))  # ignored
    events = client.send(frame(SETTINGS, 0, 1, b""))  # a connection error
    assert_connection_error(client, events, ErrorCode.PROTOCOL_ERROR, last=1)


def test_finish_and_close_without_streams_closes_at_once() -> None:
    client = RawClient()
    client.server.finish_and_close()
    client.server.finish_and_close()  # idempotent
    frames = client.read()
    assert [(f.kind, f.code, f.last_stream_id) for f in frames] == [(GOAWAY, ErrorCode.NO_ERROR, 0)]
    assert client.server.closing and client.server.deadline is None


def test_graceful_shutdown_with_flow_controlled_responses() -> None:
    client = RawClient(client_settings=settings_payload(initial_window_size=10))
    client.request(1)
    client.respond(1, body=b"x" * 25)
    client.server.finish_and_close()
    client.read()
    assert not client.server.closing
    client.send(window_update(1, 100))
    assert [(f.kind, len(f.payload)) for f in client.read()] == [(DATA, 15)]
    assert client.server.closing


def test_graceful_shutdown_seen_by_the_h2_client() -> None:
    pair = H2Pair()
    pair.request()
    pair.request()
    pair.server.finish_and_close()
    _, events = pair.pump()
    (ended,) = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    assert (ended.error_code, ended.last_stream_id, ended.additional_data) == (ErrorCode.NO_ERROR, 3, None)


# ---------------------------------------------------------------------------------------------- h2c


def _h1_request(method: bytes = b"GET") -> Request:
    return Request(1, method, b"/up", b"a=1", [(b"host", b"example.com")], "1.1", False, True, False, b"h2c")


def test_h2c_upgrade_without_a_body() -> None:
    server = make_server()
    h2client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    # the client's HTTP2-Settings header (base64url, no padding) carries a SETTINGS payload
    settings_header = h2client.initiate_upgrade_connection()
    server.apply_http2_settings(
        base64.urlsafe_b64decode(settings_header + b"=" * (-len(settings_header) % 4))
    )
    events = server.initiate_upgrade(_h1_request(), 0)
    assert len(events) == 1 and isinstance(events[0], Request)
    request = events[0]
    assert (request.stream_id, request.http_version, request.end_stream, request.upgrade) == (
        1,
        "2",
        True,
        None,
    )
    assert (request.path, request.query_string) == (b"/up", b"a=1")
    # the server's SETTINGS come first, then the response on stream 1
    server.send_response(1, 200, [(b"content-type", b"text/plain")])
    server.send_body(1, b"upgraded", True)
    assert server.receive_data(h2client.data_to_send()) == []
    client_events = h2client.receive_data(server.data_to_send())
    assert response_of(client_events, 1)[1:] == (b"upgraded", True)
    assert not server.is_open(1)
    h2client.send_headers(3, GET, end_stream=True)
    assert [type(e) for e in server.receive_data(h2client.data_to_send())] == [Request]


def test_h2c_upgrade_with_a_body() -> None:
    server = make_server()
    events = server.initiate_upgrade(_h1_request(b"POST"), 5)
    assert isinstance(events[0], Request) and events[0].end_stream is False
    assert server.receive_upgrade_body(b"hel", False) == [Data(1, b"hel", False)]
    assert server.receive_upgrade_body(b"lo", True) == [Data(1, b"lo", True)]
    server.send_response(1, 200, [])
    server.send_body(1, b"ok", True)
    assert not server.is_open(1)
    frames = parse(server.data_to_send())
    assert [(f.kind, f.stream_id) for f in frames] == [(SETTINGS, 0), (0x8, 0), (HEADERS, 1), (DATA, 1)]
    assert server.receive_upgrade_body(b"late", True) == []


def test_h2c_settings_header_is_checked_like_a_settings_frame() -> None:
    server = make_server()
    server.apply_http2_settings(settings_payload(initial_window_size=100, max_frame_size=20000) + b"\x00\x04")
    assert (server.peer_initial_window, server.peer_max_frame_size) == (
        100,
        20000,
    )  # a partial entry: ignored
    with pytest.raises(H2Error) as caught:
        server.apply_http2_settings(settings_payload(enable_push=2))
    assert caught.value.code == ErrorCode.PROTOCOL_ERROR


def test_h2c_upgrade_head() -> None:
    server = make_server()
    server.initiate_upgrade(_h1_request(b"HEAD"), 0)
    server.send_response(1, 200, [(b"content-length", b"10")])
    server.send_body(1, b"x" * 10, True)
    frames = parse(server.data_to_send())
    assert [(f.kind, f.flags & END_STREAM) for f in frames[-1:]] == [(HEADERS, END_STREAM)]


def test_h2c_stream_1_is_taken() -> None:
    server = make_server()
    server.initiate_upgrade(_h1_request(), 0)
    client = RawClient()
    client.server = server
    server.receive_data(PREFACE + frame(SETTINGS, 0, 0))
    server.data_to_send()
    # stream 1 is the upgraded request, half-closed (remote): HEADERS on it is STREAM_CLOSED (RFC 9113 §5.1)
    events = server.receive_data(client.headers(1))
    assert_stream_error(client, events, 1, ErrorCode.STREAM_CLOSED, handed_out=True)
    assert [type(e) for e in client.send(client.headers(3))] == [Request]


# ---------------------------------------------------------------------------------------------- random input


EVENT_TYPES = (Request, Data, StreamReset, ConnectionTerminated)


def _check(server: H2Connection, events: list[object]) -> None:
    assert all(isinstance(e, EVENT_TYPES) for e in events), events
    if any(isinstance(e, ConnectionTerminated) for e in events):
        assert server.closing
        assert isinstance(events[-1], ConnectionTerminated)
    parse(server.data_to_send())  # whatever it sends is well-framed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.integers(1, 64))
def test_random_bytes_after_the_preface_never_raise(garbage: bytes, chunk: int) -> None:
    client = RawClient()
    for i in range(0, len(garbage), chunk):
        _check(client.server, client.send(garbage[i : i + chunk]))  # type: ignore[arg-type]


_fields = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b":method",
                b":path",
                b":scheme",
                b":authority",
                b":protocol",
                b"cookie",
                b"content-length",
                b"te",
                b"x-a",
                b"X-B",
                b"connection",
                b"",
            ]
        ),
        st.sampled_from([b"GET", b"/", b"https", b"x", b"1", b"trailers", b"", b" x", b"a\r\nb", b"9" * 30]),
    ),
    max_size=8,
)

_frames = st.one_of(
    st.builds(
        lambda kind, flags, sid, payload: frame(kind, flags, sid, payload),
        st.integers(0, 12),
        st.sampled_from([0, 1, 4, 5, 8, 0x20, 0x25, 0x2D, 0xFF]),
        st.sampled_from([0, 1, 2, 3, 5, 7, 0x7FFFFFFF, 0x80000001]),
        st.binary(max_size=24),
    ),
    st.tuples(st.sampled_from([1, 3, 5, 7, 9]), _fields, st.booleans(), st.booleans()),  # HEADERS from fields
    st.builds(
        lambda sid, inc: window_update(sid, inc), st.sampled_from([0, 1, 3]), st.integers(0, 2**31 - 1)
    ),
    st.builds(
        lambda sid, size, end: data(sid, b"d" * size, end),
        st.sampled_from([1, 3, 5]),
        st.integers(0, 100),
        st.booleans(),
    ),
    st.just(rst(1)),
    st.just(ping()),
    st.just(frame(SETTINGS, 0, 0, settings_payload(initial_window_size=0))),
    st.just(frame(SETTINGS, 0, 0, settings_payload(initial_window_size=2**20, max_frame_size=16385))),
)

_actions = st.lists(
    st.one_of(
        _frames,
        st.sampled_from(
            ["respond", "respond_big", "trailers", "reset", "push", "pause", "resume", "timer", "finish"]
        ),
    ),
    max_size=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_actions)
def test_random_frame_sequences_never_raise(actions: list[object]) -> None:
    client = RawClient(max_control_frames=50, max_resets=20, max_concurrent_streams=4)
    server = client.server
    streams: list[int] = []
    for action in actions:
        if isinstance(action, bytes):
            events: list[object] = list(client.send(action))
        elif isinstance(action, tuple):
            stream_id, fields, end_stream, split = action
            block = client.block(fields)
            if split and block:
                wire = frame(HEADERS, END_STREAM if end_stream else 0, stream_id, block[:1])
                wire += continuation(stream_id, block[1:], end_headers=True)
            else:
                wire = frame(HEADERS, (END_STREAM if end_stream else 0) | END_HEADERS, stream_id, block)
            events = list(client.send(wire))
        else:
            events = []
            target = streams[-1] if streams else 1
            try:
                if action in ("respond", "respond_big"):
                    server.send_response(target, 200, [(b"content-type", b"text/plain")])
                    server.send_body(target, b"x" * (70_000 if action == "respond_big" else 10), True)
                elif action == "trailers":
                    server.send_response(target, 200, [])
                    server.send_body(target, b"x", False)
                    server.send_trailers(target, [(b"x-t", b"1")])
                elif action == "reset":
                    server.reset_stream(target)
                elif action == "push":
                    pushed = server.push(target, b"/p", [], b"https", b"h")
                    if pushed is not None:
                        streams.append(pushed.stream_id)
                elif action == "pause":
                    server.pause_stream(target)
                elif action == "resume":
                    server.resume_stream(target)
                elif action == "timer":
                    client.clock.advance(40)
                    events = list(server.handle_timer(client.clock.now))
                elif action == "finish":
                    server.finish_and_close()
            except AppProtocolError:
                pass
        streams += [e.stream_id for e in events if isinstance(e, Request)]
        _check(server, events)
    assert set(server.blocked) <= set(server.streams)


_client_actions = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.integers(0, 40_000), st.booleans()),
        st.tuples(st.just("body"), st.integers(0, 20_000), st.booleans()),
        st.tuples(st.just("client_reset"), st.integers(0, 3)),
        st.tuples(st.just("ack"), st.integers(0, 100_000)),
        st.tuples(st.just("window"), st.sampled_from([0, 1, 100, 65535, 2**20])),
        st.tuples(st.just("frame_size"), st.sampled_from([16384, 20000, 2**20])),
        st.tuples(st.just("ping"), st.just(0)),
        st.tuples(st.just("hold"), st.booleans()),
        st.tuples(
            st.sampled_from(
                [
                    "respond",
                    "big_head",
                    "trailers",
                    "server_reset",
                    "push",
                    "hint",
                    "pause",
                    "resume",
                    "timer",
                ]
            ),
            st.integers(0, 100_000),
        ),
    ),
    max_size=30,
)


def _can_send(client: h2.connection.H2Connection, stream_id: int) -> bool:
    """h2 closes a stream it is asked to misuse (and then raises): ask it only what is allowed."""
    stream = client.streams.get(stream_id)
    return stream is not None and stream.state_machine.state in (
        StreamState.OPEN,
        StreamState.HALF_CLOSED_REMOTE,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_client_actions)
def test_h2_client_accepts_whatever_the_core_sends(actions: list[tuple[object, ...]]) -> None:
    """The h2 package as the judge: a client that keeps the rules never sees the core break them (flow control,
    frame sizes, stream states, HPACK), whatever the app and the client do in between."""
    pair = H2Pair(stall_timeout=30)
    server, client = pair.server, pair.client
    settings_codes = h2.settings.SettingCodes
    requests: list[int] = []
    responded: set[int] = set()  # the bridge starts one response a stream: so does this app
    hold = False  # the client stops giving window back
    for action in actions:
        kind, arg = action[0], action[1]
        target = requests[-1 - int(arg) % len(requests)] if requests else None
        try:  # the client side: h2 refuses what would break the rules (closed streams, windows, frame size)
            if kind == "request":
                stream_id = client.get_next_available_stream_id()
                end = bool(action[2]) and not arg
                client.send_headers(stream_id, request_fields(b"/r", b"POST"), end_stream=end)
                if not end:
                    size = min(
                        int(arg), client.local_flow_control_window(stream_id), client.max_outbound_frame_size
                    )
                    client.send_data(stream_id, b"b" * size, end_stream=bool(action[2]))
            elif kind == "body" and target is not None and _can_send(client, target):
                size = min(int(arg), client.local_flow_control_window(target), client.max_outbound_frame_size)
                client.send_data(target, b"b" * size, end_stream=bool(action[2]))
            elif kind == "client_reset" and target is not None and _can_send(client, target):
                client.reset_stream(target)
            elif kind == "ack":
                client.increment_flow_control_window(int(arg) + 1)
            elif kind == "window":
                client.update_settings({settings_codes.INITIAL_WINDOW_SIZE: int(arg)})
            elif kind == "frame_size":
                client.update_settings({settings_codes.MAX_FRAME_SIZE: int(arg)})
            elif kind == "ping":
                client.ping(b"12345678")
            elif kind == "hold":
                hold = bool(arg)
        except h2.exceptions.ProtocolError:
            pass
        if (
            target is not None
            and kind in ("respond", "big_head", "trailers", "push")
            and target not in responded
        ):
            responded.add(target)
            if kind == "respond":
                server.send_response(target, 200, [(b"content-length", b"%d" % int(arg))])
                server.send_body(target, b"r" * int(arg), True)
            elif kind == "big_head":
                server.send_response(target, 200, [(b"x-big", b"h" * (int(arg) % 40_000))])
                server.send_body(target, b"r" * (int(arg) % 3), True)
            elif kind == "trailers":
                server.send_response(target, 200, [])
                server.send_body(target, b"r" * int(arg), False)
                server.send_trailers(target, [(b"x-t", b"1")])
            else:
                pushed = server.push(target, b"/pushed", [], b"https", b"example.com")
                if pushed is not None:
                    server.send_response(pushed.stream_id, 200, [])
                    server.send_body(pushed.stream_id, b"p" * (int(arg) % 1000), True)
                server.send_response(target, 204, [])
                server.send_body(target, b"", True)
        elif target is not None and kind == "server_reset":
            server.reset_stream(target)
        elif target is not None and kind == "hint":
            server.send_early_hint(target, [b"</x>; rel=preload"])
        elif target is not None and kind == "pause":
            server.pause_stream(target)
        elif target is not None and kind == "resume":
            server.resume_stream(target)
        elif kind == "timer":
            pair.clock.advance(20)
            server.handle_timer(pair.clock.now)
        server_events, client_events = pair.pump()  # h2 raises if the core's output breaks the protocol
        assert not any(isinstance(e, ConnectionTerminated) and e.error for e in server_events), server_events
        ended = [e for e in client_events if isinstance(e, h2.events.ConnectionTerminated)]
        assert all(e.error_code == ErrorCode.NO_ERROR for e in ended), ended
        if ended:
            break  # the idle timeout (the timers moved the clock past it)
        requests += [e.stream_id for e in server_events if isinstance(e, Request)]
        for e in client_events:
            if isinstance(e, h2.events.DataReceived) and not hold:
                client.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
    assert set(server.blocked) <= set(server.streams)
