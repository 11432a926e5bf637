"""``--limit-request-body-rate`` in the sans-io cores, on a fake clock: a request body must average the minimum
rate from its first byte once the grace is over (HTTP/1.1: 408; HTTP/2: RST_STREAM CANCEL on that stream), time
the server held the client back does not count, and the check runs only when the core's deadline comes."""

from __future__ import annotations

from typing import Any

from h2wire import RawClient, data
from helpers import Clock, status_of
from zonda.errors import RequestBodyTooSlow, RequestTimeout
from zonda.protocols.events import ConnectionTerminated, Data, StreamReset
from zonda.protocols.http1 import DefaultHeaders, H1Connection, H1Limits
from zonda.protocols.http2 import RST_STREAM, ErrorCode

POST = b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n"


def h1(clock: Clock, **limits: Any) -> H1Connection:
    limits.setdefault("min_body_rate", 100)
    limits.setdefault("body_rate_grace", 5.0)
    limits.setdefault("body_timeout", 30.0)
    return H1Connection(H1Limits(**limits), DefaultHeaders(), clock)


def expire(conn: H1Connection, clock: Clock, until: float) -> list[Any]:
    """Fire the core's deadlines up to ``until`` as a driver's timer would; every event."""
    events: list[Any] = []
    while conn.deadline is not None and conn.deadline <= until and not conn.closing:
        clock.now = max(clock.now, conn.deadline)
        events += conn.handle_timer(clock.now)
    clock.now = until
    return events


def test_h1_a_trickling_body_gets_408_once_the_grace_is_over() -> None:
    clock = Clock()
    start = clock.now
    conn = h1(clock)
    conn.receive_data(POST + b"x" * 50)
    assert conn.deadline == start + 5  # the rate's first check, before the 30 s stall
    for second in range(1, 5):  # 10 bytes a second: each read would have reset a stall timer
        clock.now = start + second
        conn.receive_data(b"x" * 10)
    assert expire(conn, clock, start + 4.99) == []
    events = expire(conn, clock, start + 5)
    assert isinstance(events[0], StreamReset) and events[0].stream_id == 1
    terminated = events[-1]
    assert isinstance(terminated, ConnectionTerminated) and isinstance(terminated.error, RequestBodyTooSlow)
    assert isinstance(terminated.error, RequestTimeout)  # a 408 like the other request timeouts
    assert (
        terminated.error.detail == "request body too slow: 90 bytes in 5.0s, under the minimum of 100 bytes/s"
    )
    assert status_of(conn.data_to_send()) == 408
    assert conn.closing


def test_h1_a_body_at_the_rate_is_checked_again_when_its_average_would_fall_under() -> None:
    clock = Clock()
    start = clock.now
    conn = h1(clock)
    conn.receive_data(POST + b"x" * 1000)  # 10 s worth at 100 bytes/s
    assert expire(conn, clock, start + 5) == []
    assert conn.deadline == start + 10  # 1000 bytes last until then
    clock.now = start + 9
    conn.receive_data(b"x" * 500)
    assert expire(conn, clock, start + 15) == []  # 1500 bytes in 15 s: just at the minimum
    assert conn.deadline == start + 15.25  # the next look comes a little later, not at once
    events = expire(conn, clock, start + 15.25)
    assert isinstance(events[-1], ConnectionTerminated)
    assert isinstance(events[-1].error, RequestBodyTooSlow)


def test_h1_a_fast_body_finishes_without_a_check() -> None:
    clock = Clock()
    conn = h1(clock)
    conn.receive_data(POST[:-4].replace(b"100000", b"10") + b"\r\n\r\n12345")
    clock.advance(1)
    events = conn.receive_data(b"67890")
    assert events == [Data(1, b"67890", True)]
    assert conn.deadline is None  # the server owes a response: no client deadline
    conn.send_response(1, 200, [(b"content-length", b"0")])
    conn.send_body(1, b"", True)
    assert conn.deadline == clock.now + 5.0  # keep-alive: nothing of the body's check is left


def test_h1_time_the_server_held_the_body_back_does_not_count() -> None:
    clock = Clock()
    start = clock.now
    conn = h1(clock)
    conn.receive_data(POST + b"x" * 100)
    conn.set_reading_paused(True)  # the app is behind: the client cannot send
    assert conn.deadline is None
    clock.now = start + 60
    conn.set_reading_paused(False)
    assert conn.deadline == start + 65  # a new grace from the resume
    clock.now = start + 64
    conn.receive_data(b"x" * 1000)
    assert expire(conn, clock, start + 65) == []  # 1000 bytes since the resume: 200 bytes/s
    assert conn.deadline == start + 70  # when the average since the resume would fall under 100 bytes/s


def test_h1_a_client_waiting_for_100_continue_is_not_slow() -> None:
    clock = Clock()
    start = clock.now
    conn = h1(clock)
    conn.receive_data(POST[:-4] + b"\r\nExpect: 100-continue\r\n\r\n")
    assert expire(conn, clock, start + 60) == []  # the app has not asked for the body yet
    conn.send_continue(1)
    assert conn.deadline == start + 65
    events = expire(conn, clock, start + 65)
    assert isinstance(events[-1].error, RequestBodyTooSlow)


def test_h1_rate_zero_leaves_the_stall_timeout_alone() -> None:
    clock = Clock()
    start = clock.now
    conn = h1(clock, min_body_rate=0)
    conn.receive_data(POST + b"x")
    for second in range(1, 100):
        clock.now = start + second
        conn.receive_data(b"x")
        assert conn.deadline == clock.now + 30
    assert expire(conn, clock, start + 128) == []


def test_h1_headers_are_not_a_body() -> None:
    clock = Clock()
    start = clock.now
    conn = h1(clock, header_timeout=10.0)
    conn.receive_data(b"GET / HTTP/1.1\r\n")
    assert conn.deadline == start + 10  # the header timeout, counted from the first byte, never moved
    clock.now = start + 9
    conn.receive_data(b"Host: x\r\n")
    assert conn.deadline == start + 10


# ---------------------------------------------------------------------------------------------- HTTP/2


def h2(**settings: Any) -> RawClient:
    settings.setdefault("min_body_rate", 100)
    settings.setdefault("body_rate_grace", 5.0)
    settings.setdefault("stall_timeout", 30.0)
    return RawClient(**settings)


def h2_expire(client: RawClient, until: float) -> list[Any]:
    server = client.server
    events: list[Any] = []
    while server.deadline is not None and server.deadline <= until and not server.closing:
        client.clock.now = max(client.clock.now, server.deadline)
        events += server.handle_timer(client.clock.now)
    client.clock.now = until
    return events


def test_h2_a_trickling_stream_is_reset_and_the_others_go_on() -> None:
    client = h2()
    start = client.clock.now
    client.request(1, end_stream=False)
    client.request(3, end_stream=False)
    assert client.server.deadline == start + 5  # the first sweep comes with the grace
    for second in range(1, 5):
        client.clock.now = start + second
        client.send(data(1, b"x" * 10), data(3, b"y" * 200))
    client.read()
    events = h2_expire(client, start + 5)
    detail = "request body too slow: 40 bytes in 5.0s, under the minimum of 100 bytes/s"
    assert events == [StreamReset(1, detail)]
    assert [(f.kind, f.stream_id, f.code) for f in client.read()] == [(RST_STREAM, 1, ErrorCode.CANCEL)]
    assert client.server.counters["body_rate"] == 1
    assert client.server.is_open(3)  # 800 bytes in 5 s: fine
    client.send(data(3, b"y", end_stream=True))
    assert not client.server.closing


def test_h2_a_paused_stream_is_not_slow_and_gets_a_new_grace() -> None:
    client = h2()
    start = client.clock.now
    client.request(1, end_stream=False)
    client.server.pause_stream(1)
    assert h2_expire(client, start + 100) == []
    client.server.resume_stream(1)
    assert h2_expire(client, start + 104.9) == []
    events = h2_expire(client, start + 120)
    assert [type(event) for event in events] == [StreamReset]
    assert client.server.counters["body_rate"] == 1


def test_h2_rate_zero_and_tunnels_are_never_checked() -> None:
    client = h2(min_body_rate=0)
    start = client.clock.now
    client.request(1, end_stream=False)
    for second in range(1, 25):
        client.clock.now = start + second
        client.send(data(1, b"x"))
    assert h2_expire(client, start + 25) == []
    tunnel = h2(enable_connect_protocol=True)
    fields = [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"https"),
        (b":path", b"/"),
    ]
    tunnel.request(1, fields, end_stream=False)
    assert h2_expire(tunnel, tunnel.clock.now + 300) == []


def test_h2_the_window_stall_has_its_own_timeout() -> None:
    from h2wire import settings_payload

    client = h2(send_stall_timeout=2.0, client_settings=settings_payload(initial_window_size=0))
    start = client.clock.now
    client.request(1)
    client.respond(1, body=b"z" * 100)
    client.read()
    events = h2_expire(client, start + 3)
    assert events == [StreamReset(1, "client window stayed closed for 2s")]
    assert client.server.counters["send_stall"] == 1

    never = h2(send_stall_timeout=None, client_settings=settings_payload(initial_window_size=0))
    never.request(1)
    never.respond(1, body=b"z" * 100)
    assert h2_expire(never, never.clock.now + 600) == []
    assert never.server.is_blocked(1)
