"""The sans-io HTTP/1.1 core: bytes in, events out, bytes out; no sockets, no event loop, a fake clock."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import Clock, status_of
from zonda.errors import (
    AppProtocolError,
    BadRequest,
    BodyTooLarge,
    HeadersTooLarge,
    ProtocolError,
    RequestLineTooLong,
    RequestTimeout,
    UnsupportedTransferCoding,
)
from zonda.protocols import http1
from zonda.protocols.events import ConnectionTerminated, Data, Event, Request, StreamReset
from zonda.protocols.http1 import DefaultHeaders, H1Connection, H1Limits, ReadState

Header = tuple[bytes, bytes]


def make(
    clock: Clock | None = None,
    server: bytes | None = b"zonda",
    extra: Iterable[Header] = (),
    date: bytes | None = None,
    **limits: float,
) -> H1Connection:
    defaults = DefaultHeaders(server, extra)
    defaults.set_date(date)
    return H1Connection(H1Limits(**limits), defaults, clock=clock or Clock())  # type: ignore[arg-type]


def respond(
    conn: H1Connection, stream_id: int, status: int = 200, headers: Iterable[Header] = (), body: bytes = b""
) -> bytes:
    conn.send_response(stream_id, status, headers)
    conn.send_body(stream_id, body, True)
    return conn.data_to_send()


def split_response(data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Status, header dict and whatever follows the head."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    assert sep, data
    status_line, *lines = head.split(b"\r\n")
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b": ")
        assert name not in headers, f"duplicate header {name!r}"
        headers[name] = value
    return int(status_line.split(b" ")[1]), headers, rest


def request_head(path: bytes = b"/", method: bytes = b"GET", version: bytes = b"1.1", *lines: bytes) -> bytes:
    """A request head; a ``Host: x`` line comes first unless ``lines`` hold a Host of their own."""
    if not any(line[:5].lower() == b"host:" for line in lines):
        lines = (b"Host: x", *lines)
    return b"%s %s HTTP/%s\r\n%s\r\n" % (method, path, version, b"".join(line + b"\r\n" for line in lines))


def only_error(events: Sequence[Event]) -> ProtocolError:
    """The error of the ConnectionTerminated that ends ``events``."""
    assert events, "expected a ConnectionTerminated"
    last = events[-1]
    assert isinstance(last, ConnectionTerminated), events
    assert last.error is not None
    return last.error


def stream_ids(events: Iterable[Event]) -> list[int]:
    ids = []
    for event in events:
        assert not isinstance(event, ConnectionTerminated), event
        ids.append(event.stream_id)
    return ids


def body_of(events: Iterable[Event], stream_id: int = 1) -> tuple[bytes, bool]:
    """The body bytes and whether the stream ended, from Request/Data events."""
    body = b""
    ended = False
    for event in events:
        if isinstance(event, Data) and event.stream_id == stream_id:
            assert not ended, "data after end_stream"
            body += event.data
            ended = event.end_stream
        elif isinstance(event, Request) and event.stream_id == stream_id:
            ended = event.end_stream
    return body, ended


def feed_in_pieces(conn: H1Connection, data: bytes, cuts: Iterable[int]) -> list[Event]:
    events: list[Event] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        events += conn.receive_data(data[start:cut])
        start = cut
    return events


# ------------------------------------------------------------------ requests and keep-alive


def test_simple_get() -> None:
    conn = make()
    events = conn.receive_data(b"GET /path?a=1&b=2 HTTP/1.1\r\nHost: example.com\r\nX-Thing: One\r\n\r\n")
    assert events == [
        Request(
            1,
            b"GET",
            b"/path",
            b"a=1&b=2",
            [(b"host", b"example.com"), (b"x-thing", b"One")],
            "1.1",
            end_stream=True,
        )
    ]
    assert conn.data_to_send() == b""
    out = respond(conn, 1, 200, [(b"content-type", b"text/plain")], b"hello")
    assert out == (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nserver: zonda\r\ncontent-length: 5\r\n\r\nhello"
    )
    assert not conn.closing
    assert conn.read_state is ReadState.IDLE


def test_absolute_form_and_asterisk_targets() -> None:
    conn = make()
    events = conn.receive_data(
        b"GET http://example.com/a/b?x=y HTTP/1.1\r\nHost: example.com\r\n\r\n"
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    assert [(e.path, e.query_string) for e in events if isinstance(e, Request)] == [
        (b"/a/b", b"x=y"),
        (b"*", b""),
    ]


# ---------------------------------------------------------------- Host (RFC 9112 §3.2)


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Host: x\r\nHosts: x\r\n\r\n",
        b"GET http://example.com/ HTTP/1.1\r\n\r\n",  # the client MUST send Host with absolute-form too
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\nhOST: b\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
    ],
    ids=["none", "lookalikes", "absolute-form", "twice-same", "twice-any-case", "http10-twice", "with-body"],
)
def test_missing_or_repeated_host_is_400(head: bytes) -> None:
    conn = make()
    events = conn.receive_data(head)
    assert_rejected(conn, events, 400, BadRequest)
    assert not any(isinstance(e, Request) for e in events)
    assert "Host" in only_error(events).detail


def test_missing_host_after_a_good_request_is_answered_in_turn() -> None:
    conn = make()
    events = conn.receive_data(request_head(b"/1") + b"GET /2 HTTP/1.1\r\n\r\n")
    assert stream_ids(events[:-1]) == [1]
    assert only_error(events).detail == "no Host header"
    assert not conn.closing  # the 400 waits behind the first response
    status, _, rest = split_response(respond(conn, 1, body=b"one"))
    assert status == 200 and rest.startswith(b"one")
    assert split_response(rest[3:])[0] == 400
    assert conn.closing


def test_http10_without_host_is_fine() -> None:
    conn = make()
    request = conn.receive_data(b"GET /old HTTP/1.0\r\n\r\n")[0]
    assert isinstance(request, Request)
    assert request.headers == []


def test_host_split_across_reads_is_counted_once() -> None:
    conn = make()
    assert conn.receive_data(b"GET / HTTP/1.1\r\nHo") == []
    assert conn.receive_data(b"st: exam") == []
    request = conn.receive_data(b"ple.com\r\n\r\n")[0]
    assert isinstance(request, Request)
    assert request.headers == [(b"host", b"example.com")]


def test_host_in_chunked_trailers_is_not_a_second_host() -> None:
    conn = make()
    events = conn.receive_data(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nHost: y\r\n\r\n"
    )
    assert body_of(events) == (b"x", True)
    assert not any(isinstance(e, ConnectionTerminated) for e in events)


@pytest.mark.parametrize(
    ("target", "host_line", "authority", "path", "query"),
    [
        (b"http://example.com/a?b=c", b"Host: other.example\r\n", b"example.com", b"/a", b"b=c"),
        (b"http://example.com:8080/a", b"Host: example.com\r\n", b"example.com:8080", b"/a", b""),
        (b"https://EXAMPLE.com", b"Host: x\r\n", b"EXAMPLE.com", b"/", b""),
        (b"http://example.com?q", b"Host: x\r\n", b"example.com", b"/", b"q"),
        (b"http://[::1]:8000/v6", b"Host: x\r\n", b"[::1]:8000", b"/v6", b""),
    ],
)
def test_absolute_form_authority_replaces_host(
    target: bytes, host_line: bytes, authority: bytes, path: bytes, query: bytes
) -> None:
    """RFC 9112 §3.2.2: the server MUST ignore the received Host and use the target's authority."""
    conn = make()
    request = conn.receive_data(b"GET %s HTTP/1.1\r\nX-A: 1\r\n%sX-B: 2\r\n\r\n" % (target, host_line))[0]
    assert isinstance(request, Request)
    assert request.headers == [(b"x-a", b"1"), (b"host", authority), (b"x-b", b"2")]
    assert (request.path, request.query_string) == (path, query)


def test_absolute_form_gives_an_http10_request_its_host() -> None:
    conn = make()
    request = conn.receive_data(b"GET http://example.com/a HTTP/1.0\r\nX-A: 1\r\n\r\n")[0]
    assert isinstance(request, Request)
    assert request.headers == [(b"x-a", b"1"), (b"host", b"example.com")]


def test_absolute_form_with_userinfo_is_400() -> None:
    conn = make()
    events = conn.receive_data(b"GET http://user:pw@example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert_rejected(conn, events, 400, BadRequest)


def test_default_headers_date_server_and_extra() -> None:
    conn = make(server=b"zonda", extra=[(b"X-A", b"b")], date=b"Sun, 06 Nov 1994 08:49:37 GMT")
    conn.receive_data(request_head())
    _, headers, _ = split_response(respond(conn, 1, body=b"x"))
    assert headers[b"server"] == b"zonda"
    assert headers[b"date"] == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert headers[b"x-a"] == b"b"
    # The app's own Server and Date win over the defaults.
    conn.receive_data(request_head())
    _, headers, _ = split_response(respond(conn, 2, headers=[(b"server", b"mine"), (b"date", b"today")]))
    assert headers[b"server"] == b"mine"
    assert headers[b"date"] == b"today"


def test_default_headers_switched_off() -> None:
    conn = make(server=None, date=None)
    conn.receive_data(request_head())
    assert respond(conn, 1, body=b"x") == b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx"


def test_http11_keeps_alive_between_requests() -> None:
    clock = Clock()
    conn = make(clock, keep_alive_timeout=5)
    assert conn.deadline == 1005.0  # idle before the first request too
    for stream_id in (1, 2, 3):
        events = conn.receive_data(request_head(b"/%d" % stream_id))
        assert stream_ids(events) == [stream_id]
        assert conn.deadline is None  # the server owes a response
        clock.now += 1
        _, headers, _ = split_response(respond(conn, stream_id, body=b"ok"))
        assert b"connection" not in headers
        assert not conn.closing
        assert conn.deadline == clock.now + 5


def test_request_connection_close_is_honoured() -> None:
    conn = make()
    events = conn.receive_data(
        request_head(b"/", b"GET", b"1.1", b"Connection: close") + b"GET /ignored HTTP/1.1\r\nHost: x\r\n"
    )
    assert len(events) == 1
    assert conn.read_state is ReadState.STOPPED
    assert conn.receive_data(request_head(b"/more")) == []
    _, headers, _ = split_response(respond(conn, 1, body=b"bye"))
    assert headers[b"connection"] == b"close"
    assert conn.closing


@pytest.mark.parametrize("connection", [b"Close", b"keep-alive, close", b"close, TE"])
def test_connection_close_token_forms(connection: bytes) -> None:
    conn = make()
    conn.receive_data(request_head(b"/", b"GET", b"1.1", b"Connection: " + connection))
    respond(conn, 1)
    assert conn.closing


def test_http10_closes_by_default() -> None:
    conn = make()
    events = conn.receive_data(b"GET / HTTP/1.0\r\n\r\n")
    assert isinstance(events[0], Request)
    assert events[0].http_version == "1.0"
    _, headers, _ = split_response(respond(conn, 1, body=b"hi"))
    assert headers[b"connection"] == b"close"
    assert headers[b"content-length"] == b"2"
    assert conn.closing


def test_http10_keep_alive_when_asked() -> None:
    conn = make()
    conn.receive_data(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    _, headers, _ = split_response(respond(conn, 1, body=b"hi"))
    assert headers[b"connection"] == b"keep-alive"
    assert not conn.closing
    events = conn.receive_data(b"GET /2 HTTP/1.0\r\n\r\n")
    assert stream_ids(events) == [2]
    _, headers, _ = split_response(respond(conn, 2, body=b"hi"))
    assert headers[b"connection"] == b"close"
    assert conn.closing


def test_app_connection_close_header_ends_the_connection() -> None:
    conn = make()
    conn.receive_data(request_head())
    _, headers, _ = split_response(respond(conn, 1, headers=[(b"connection", b"close")], body=b"x"))
    assert headers[b"connection"] == b"close"
    assert conn.closing
    assert conn.receive_data(request_head()) == []


def test_app_connection_close_on_http10_keep_alive() -> None:
    conn = make()
    conn.receive_data(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    out = respond(conn, 1, headers=[(b"connection", b"close")], body=b"x")
    assert out.count(b"connection:") == 1
    assert split_response(out)[1][b"connection"] == b"close"
    assert conn.closing


# ------------------------------------------------------------------ pipelining


def test_pipelined_requests_in_one_feed_answer_in_order() -> None:
    conn = make()
    data = (
        request_head(b"/1")
        + b"POST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        + request_head(b"/3")
    )
    events = conn.receive_data(data)
    assert [(type(e).__name__, stream_ids([e])[0]) for e in events] == [
        ("Request", 1),
        ("Request", 2),
        ("Data", 2),
        ("Request", 3),
    ]
    assert body_of(events, 2) == (b"abc", True)
    with pytest.raises(AppProtocolError):
        conn.send_response(2, 200, [])  # stream 1 is still owed
    outs = [respond(conn, stream_id, body=b"r%d" % stream_id) for stream_id in (1, 2, 3)]
    assert [split_response(out)[2] for out in outs] == [b"r1", b"r2", b"r3"]
    assert not conn.closing


def test_pipelined_after_connection_close_is_ignored() -> None:
    conn = make()
    events = conn.receive_data(
        request_head(b"/1", b"GET", b"1.1", b"Connection: close") + request_head(b"/2")
    )
    assert stream_ids(events) == [1]
    respond(conn, 1)
    assert conn.closing


def test_bad_request_after_good_one_waits_for_the_owed_response() -> None:
    conn = make()
    events = conn.receive_data(request_head(b"/1") + b"NOT A REQUEST\r\n\r\n")
    assert isinstance(events[0], Request)
    assert only_error(events).status == 400
    assert conn.data_to_send() == b""  # the 400 may not overtake response 1
    assert not conn.closing
    out = respond(conn, 1, body=b"one")
    first, _, second = out.partition(b"one")
    assert status_of(first) == 200
    assert status_of(second) == 400
    assert conn.closing


# ------------------------------------------------------------------ request bodies

CHUNKED_BODY = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n"


def test_content_length_body_split_at_every_byte() -> None:
    data = b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world" + request_head(b"/next")
    for cut in range(1, len(data)):
        conn = make()
        events = feed_in_pieces(conn, data, [cut])
        assert body_of(events, 1) == (b"hello world", True), cut
        assert [e.stream_id for e in events if isinstance(e, Request)] == [1, 2]


def test_chunked_body_split_at_every_byte_and_byte_by_byte() -> None:
    data = (
        b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + CHUNKED_BODY
        + request_head(b"/n")
    )
    splits = [[cut] for cut in range(1, len(data))] + [list(range(1, len(data)))]
    for cuts in splits:
        conn = make()
        events = feed_in_pieces(conn, data, cuts)
        assert body_of(events, 1) == (b"hello 0123456789", True), cuts
        request = events[0]
        assert isinstance(request, Request)
        assert (b"transfer-encoding", b"chunked") in request.headers
        assert [e.stream_id for e in events if isinstance(e, Request)] == [1, 2]
        assert not any(isinstance(e, ConnectionTerminated) for e in events)


def test_body_arriving_in_a_later_feed_ends_the_stream_on_its_last_data() -> None:
    conn = make()
    events = conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
    assert events == [Request(1, b"POST", b"/", b"", [(b"host", b"x"), (b"content-length", b"4")], "1.1")]
    assert conn.receive_data(b"ab") == [Data(1, b"ab")]
    assert conn.receive_data(b"cd") == [Data(1, b"cd", True)]


def test_empty_chunked_body_ends_with_empty_data() -> None:
    conn = make()
    events = conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert len(events) == 1
    assert not events[0].end_stream  # type: ignore[union-attr]
    assert conn.receive_data(b"0\r\n\r\n") == [Data(1, b"", True)]


# ------------------------------------------------------------------ response framing


def test_response_with_declared_content_length_streams_as_is() -> None:
    conn = make()
    conn.receive_data(request_head())
    conn.send_response(1, 200, [(b"content-length", b"6")])
    conn.send_body(1, b"abc", False)
    conn.send_body(1, b"def", True)
    assert conn.data_to_send() == b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nserver: zonda\r\n\r\nabcdef"
    assert not conn.closing


def test_single_final_body_gets_a_computed_content_length() -> None:
    conn = make()
    conn.receive_data(request_head())
    _, headers, body = split_response(respond(conn, 1, body=b"0123456789"))
    assert headers[b"content-length"] == b"10"
    assert b"transfer-encoding" not in headers
    assert body == b"0123456789"


def test_empty_final_body_gets_content_length_zero() -> None:
    conn = make()
    conn.receive_data(request_head())
    _, headers, body = split_response(respond(conn, 1))
    assert headers[b"content-length"] == b"0"
    assert body == b""


def test_streaming_body_is_chunked_on_http11() -> None:
    conn = make()
    conn.receive_data(request_head())
    conn.send_response(1, 200, [(b"transfer-encoding", b"identity")])  # the server frames, not the app
    conn.send_body(1, b"hello", False)
    conn.send_body(1, b"", False)  # an empty piece must not end the chunked body
    conn.send_body(1, b" world!", False)
    conn.send_body(1, b"", True)
    _, headers, body = split_response(conn.data_to_send())
    assert headers[b"transfer-encoding"] == b"chunked"
    assert b"content-length" not in headers
    assert body == b"5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n"
    assert not conn.closing


def test_streaming_body_is_close_delimited_on_http10() -> None:
    conn = make()
    conn.receive_data(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    conn.send_response(1, 200, [])
    conn.send_body(1, b"hello", False)
    conn.send_body(1, b" world", True)
    _, headers, body = split_response(conn.data_to_send())
    assert headers[b"connection"] == b"close"
    assert b"transfer-encoding" not in headers
    assert b"content-length" not in headers
    assert body == b"hello world"
    assert conn.closing


def test_head_response_has_no_body() -> None:
    conn = make()
    conn.receive_data(request_head(b"/", b"HEAD") + request_head(b"/", b"HEAD"))
    out = respond(conn, 1, headers=[(b"content-length", b"5")], body=b"hello")
    assert out == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nserver: zonda\r\n\r\n"
    conn.send_response(2, 200, [])
    conn.send_body(2, b"streamed", False)
    conn.send_body(2, b"", True)
    _, headers, body = split_response(conn.data_to_send())
    assert b"transfer-encoding" not in headers
    assert body == b""
    assert not conn.closing


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    conn = make()
    conn.receive_data(request_head() + request_head())
    _, headers, body = split_response(respond(conn, 1, status, body=b"ignored"))
    assert body == b""
    assert b"transfer-encoding" not in headers
    assert b"content-length" not in headers
    conn.send_response(2, status, [])
    conn.send_body(2, b"", False)
    conn.send_body(2, b"", True)
    _, headers, body = split_response(conn.data_to_send())
    assert body == b""
    assert b"transfer-encoding" not in headers
    assert not conn.closing


def test_unknown_status_gets_a_status_line() -> None:
    conn = make()
    conn.receive_data(request_head())
    assert respond(conn, 1, 599).startswith(b"HTTP/1.1 599 \r\n")


# ------------------------------------------------------------------ 100-continue


def test_expect_100_continue() -> None:
    conn = make()
    events = conn.receive_data(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )
    request = events[0]
    assert isinstance(request, Request)
    assert request.expect_continue
    assert conn.data_to_send() == b""  # nothing until the app asks for the body
    conn.send_continue()
    assert conn.data_to_send() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.receive_data(b"ok") == [Data(1, b"ok", True)]
    assert status_of(respond(conn, 1)) == 200


def test_expect_100_continue_is_ignored_on_http10() -> None:
    conn = make()
    events = conn.receive_data(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert isinstance(events[0], Request)
    assert not events[0].expect_continue


def test_no_100_continue_once_the_response_started() -> None:
    conn = make()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    conn.send_response(1, 417, [])
    conn.send_continue()
    conn.send_body(1, b"", True)
    assert conn.data_to_send().startswith(b"HTTP/1.1 417 ")


# ------------------------------------------------------------------ limits and bad input


def assert_rejected(
    conn: H1Connection, events: Sequence[Event], status: int, kind: type[ProtocolError]
) -> None:
    error = only_error(events)
    assert isinstance(error, kind), error
    assert error.status == status
    assert not any(isinstance(e, Request) for e in events), events
    out = conn.data_to_send()
    assert status_of(out) == status
    _, headers, body = split_response(out)
    assert headers[b"connection"] == b"close"
    assert int(headers[b"content-length"]) == len(body)
    assert conn.closing
    assert conn.read_state is ReadState.ERROR
    assert conn.receive_data(request_head()) == []  # nothing more is parsed
    assert conn.data_to_send() == b""


def test_request_line_too_long_414() -> None:
    conn = make(max_request_line=100)
    events = conn.receive_data(b"GET /" + b"a" * 100 + b" HTTP/1.1\r\n\r\n")
    assert_rejected(conn, events, 414, RequestLineTooLong)


def test_request_line_too_long_414_trickled() -> None:
    conn = make(max_request_line=100)
    events = conn.receive_data(b"GET /")
    for _ in range(20):
        assert not events
        events = conn.receive_data(b"a" * 10)
        if events:
            break
    assert_rejected(conn, events, 414, RequestLineTooLong)


def test_request_line_at_the_limit_is_fine() -> None:
    conn = make(max_request_line=100)
    events = conn.receive_data(b"GET /" + b"a" * 99 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(events[0], Request)


def test_too_many_headers_431() -> None:
    lines = [b"Host: x", *(b"h%d: v" % i for i in range(3))]
    assert isinstance(
        make(max_header_count=4).receive_data(request_head(b"/", b"GET", b"1.1", *lines))[0], Request
    )
    conn = make(max_header_count=3)
    events = conn.receive_data(request_head(b"/", b"GET", b"1.1", *lines))
    assert_rejected(conn, events, 431, HeadersTooLarge)


def test_header_block_too_large_431() -> None:
    conn = make(max_header_bytes=1000)
    events = conn.receive_data(
        request_head(b"/", b"GET", b"1.1", *[b"h%d: %s" % (i, b"v" * 100) for i in range(10)])
    )
    assert_rejected(conn, events, 431, HeadersTooLarge)


@pytest.mark.parametrize("prefix", [b"X-Long: ", b"X-Long"], ids=["value", "name"])
def test_header_trickled_in_pieces_431(prefix: bytes) -> None:
    """A single header that never ends is cut off at the limit, not buffered whole inside httptools."""
    conn = make(max_header_bytes=1000)
    events = conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n" + prefix)
    for _ in range(30):
        assert not events
        events = conn.receive_data(b"a" * 100)
        if events:
            break
    assert_rejected(conn, events, 431, HeadersTooLarge)


def test_head_over_the_limit_in_reads_each_under_it_431() -> None:
    """The head's size is measured when it completes if it came in several reads, none of them over the limit."""
    conn = make(max_header_bytes=1000)
    half = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(5))
    assert conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n" + half) == []
    events = conn.receive_data(half.replace(b"X-", b"Y-") + b"\r\n")
    assert_rejected(conn, events, 431, HeadersTooLarge)


def test_chunked_trailers_are_dropped_unjudged() -> None:
    """Trailers reach neither the request's headers nor the checks meant for its head."""
    conn = make()
    events = conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n")
    request = events[0]
    assert isinstance(request, Request)
    events = conn.receive_data(
        b"0\r\nExpect: 100-continue\r\nConnection: close\r\nUpgrade: x\r\nX-T: 1\r\n\r\n"
    )
    assert events == [Data(1, b"", True)]
    assert request.headers == [(b"host", b"x"), (b"transfer-encoding", b"chunked")]
    assert request.keep_alive


def test_the_shared_placeholder_lists_stay_empty() -> None:
    """Between feeds and after the head, the core's events and headers are module-level empty lists, shared
    by every connection: trailers, pipelined requests and a timer's 408 must leave them empty."""
    conn = make()
    chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nX-T: 1\r\n\r\n"
    conn.receive_data(chunked * 3 + b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\n")
    assert conn.handle_timer(10**9)  # the last head stalled: 408

    assert http1._BETWEEN_FEEDS == [] and http1._NO_HEADERS == []


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        (b"1.1", None, True),
        (b"1.0", None, False),
        (b"1.1", b"keep-alive", True),
        (b"1.0", b"keep-alive", True),
        (b"1.1", b"close", False),
        (b"1.0", b"close", False),
    ],
)
def test_http_version_and_keep_alive(version: bytes, connection: bytes | None, keep_alive: bool) -> None:
    conn = make()
    lines = [b"Host: x"] + ([b"Connection: " + connection] if connection else [])
    request = conn.receive_data(request_head(b"/", b"GET", version, *lines))[0]
    assert isinstance(request, Request)
    assert (request.http_version, request.keep_alive) == (version.decode(), keep_alive)


def test_pipelined_body_after_a_split_head_is_not_counted_as_header_bytes() -> None:
    conn = make(max_header_bytes=1000)
    assert conn.receive_data(b"POST /1 HTTP/1.1\r\nHo") == []
    events = conn.receive_data(
        b"st: x\r\nContent-Length: 2000\r\n\r\n" + b"x" * 2000 + b"GET /2 HTTP/1.1\r\n"
    )
    assert body_of(events) == (b"x" * 2000, True)
    assert not any(isinstance(e, ConnectionTerminated) for e in events)
    events = conn.receive_data(b"Host: x\r\n\r\n")
    assert stream_ids(events) == [2]


@pytest.mark.parametrize(
    "trailers",
    [[b"X-T: ", *[b"a" * 100] * 30], [b"X-T: %d\r\n" % i for i in range(200)]],
    ids=["one-endless-trailer", "many-trailers"],
)
def test_chunked_trailers_are_bounded_by_the_header_limit(trailers: list[bytes]) -> None:
    conn = make(max_header_bytes=1000)
    events = conn.receive_data(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n"
    )
    assert body_of(events) == (b"x", False)
    for piece in trailers:
        events = conn.receive_data(piece)
        if events:
            break
    assert events[0] == StreamReset(1, "request trailers are too large")
    assert isinstance(only_error(events), HeadersTooLarge)
    assert status_of(conn.data_to_send()) == 431
    assert conn.closing


def test_small_chunks_fed_one_at_a_time_are_not_mistaken_for_trailers() -> None:
    conn = make(max_header_bytes=100)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    body = b""
    for i in range(500):
        for piece in (b"1;some-extension=%d\r\n" % i, b"y", b"\r\n"):
            for event in conn.receive_data(piece):
                assert isinstance(event, Data)
                body += event.data
    assert conn.receive_data(b"0\r\nA: b\r\n\r\n") == [Data(1, b"", True)]
    assert body == b"y" * 500


def test_headers_trickled_one_byte_at_a_time_within_limits_are_fine() -> None:
    conn = make(max_header_bytes=1000)
    data = request_head(b"/", b"GET", b"1.1", b"Host: x", b"X-A: " + b"v" * 500)
    events = feed_in_pieces(conn, data, range(1, len(data)))
    assert isinstance(events[0], Request)


@pytest.mark.parametrize(
    ("lines", "status", "kind"),
    [
        ([b"Content-Length: 3", b"Transfer-Encoding: chunked"], 400, BadRequest),
        ([b"Transfer-Encoding: chunked", b"Content-Length: 3"], 400, BadRequest),
        ([b"Content-Length: 3", b"Content-Length: 3"], 400, BadRequest),
        ([b"Content-Length: 3", b"Content-Length: 4"], 400, BadRequest),
        ([b"Content-Length: abc"], 400, BadRequest),
        ([b"Content-Length: -3"], 400, BadRequest),
        ([b"Content-Length: +3"], 400, BadRequest),
        ([b"Content-Length: 3 3"], 400, BadRequest),
        ([b"Content-Length: 99999999999999999999999999"], 400, BadRequest),
        ([b"Transfer-Encoding: gzip"], 501, UnsupportedTransferCoding),
        ([b"Transfer-Encoding: gzip, chunked"], 501, UnsupportedTransferCoding),
        ([b"Transfer-Encoding: identity"], 501, UnsupportedTransferCoding),
        ([b"X\x01Bad: v"], 400, BadRequest),
        ([b"X\x7fBad: v"], 400, BadRequest),
        ([b"X\tBad: v"], 400, BadRequest),
        ([b"X\xc3\xa9: v"], 400, BadRequest),
        ([b"X Bad: v"], 400, BadRequest),
        ([b"Host : x"], 400, BadRequest),
        ([b": empty-name"], 400, BadRequest),
        ([b"X-Value: a\x00b"], 400, BadRequest),
        ([b"X-Value: a\x01b"], 400, BadRequest),
    ],
    ids=lambda value: repr(value)[:40] if isinstance(value, list) else None,
)
def test_bad_headers(lines: list[bytes], status: int, kind: type[ProtocolError]) -> None:
    conn = make(max_body=1000)
    events = conn.receive_data(request_head(b"/", b"POST", b"1.1", *lines) + b"abc")
    assert_rejected(conn, events, status, kind)


@pytest.mark.parametrize(
    "data",
    [
        b"G(T / HTTP/1.1\r\n\r\n",
        b"FOO / HTTP/1.1\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"garbage\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        b"GET / HTTP/1.2\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n Host: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
    ],
)
def test_malformed_request_400(data: bytes) -> None:
    conn = make()
    assert_rejected(conn, conn.receive_data(data), 400, BadRequest)


def test_unsupported_http_version_505() -> None:
    conn = make()
    events = conn.receive_data(b"GET / HTTP/2.0\r\n\r\n")
    assert only_error(events).status == 505
    assert status_of(conn.data_to_send()) == 505


def test_body_too_large_by_content_length_is_refused_before_the_body() -> None:
    conn = make(max_body=100)
    events = conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
    assert_rejected(conn, events, 413, BodyTooLarge)


def test_body_at_the_limit_is_fine() -> None:
    conn = make(max_body=100)
    events = conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)
    assert body_of(events) == (b"x" * 100, True)


def test_body_limit_zero_means_none() -> None:
    conn = make(max_body=0)
    events = conn.receive_data(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n" + b"x" * 200000
    )
    assert body_of(events) == (b"x" * 200000, True)


def test_chunked_body_too_large_413() -> None:
    conn = make(max_body=100)
    events = conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert len(events) == 1
    events = conn.receive_data(b"40\r\n" + b"x" * 64 + b"\r\n")
    assert body_of(events) == (b"x" * 64, False)
    events = conn.receive_data(b"40\r\n" + b"x" * 64 + b"\r\n")
    assert events[0] == StreamReset(1, "request body exceeds 100 bytes")
    error = only_error(events)
    assert isinstance(error, BodyTooLarge)
    out = conn.data_to_send()
    assert status_of(out) == 413
    assert conn.closing


def test_error_mid_body_after_the_app_started_responding_closes_without_an_error_response() -> None:
    conn = make(max_body=100)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    conn.send_response(1, 200, [])
    conn.send_body(1, b"partial", False)
    head = conn.data_to_send()
    assert status_of(head) == 200
    events = conn.receive_data(b"80\r\n" + b"x" * 128 + b"\r\n")
    assert isinstance(events[0], StreamReset)
    assert only_error(events).status == 413
    assert conn.closing
    assert conn.data_to_send() == b""


def test_body_error_after_the_app_answered_in_full_just_closes() -> None:
    conn = make(max_body=100)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert status_of(respond(conn, 1, body=b"early")) == 200
    events = conn.receive_data(b"80\r\n" + b"x" * 128 + b"\r\n")
    assert events[0] == StreamReset(1, "request body exceeds 100 bytes")
    assert isinstance(only_error(events), BodyTooLarge)
    assert conn.data_to_send() == b""  # no unsolicited 413 after a complete response
    assert conn.closing


def test_body_stall_after_the_app_answered_in_full_just_closes() -> None:
    clock = Clock()
    conn = make(clock, body_timeout=1)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    assert status_of(respond(conn, 1, body=b"early")) == 200
    events = conn.handle_timer(clock.now + 1)
    assert isinstance(events[0], StreamReset)
    assert isinstance(only_error(events), RequestTimeout)
    assert conn.data_to_send() == b""
    assert conn.closing


# ------------------------------------------------------------------ deadlines


def test_keep_alive_idle_close() -> None:
    clock = Clock()
    conn = make(clock, keep_alive_timeout=2)
    conn.receive_data(request_head())
    respond(conn, 1)
    assert conn.deadline == 1002.0
    assert conn.handle_timer(1001.9) == []
    assert not conn.closing
    assert conn.handle_timer(1002.0) == [ConnectionTerminated("keep-alive timeout")]
    assert conn.closing
    assert conn.data_to_send() == b""  # an idle connection just closes
    assert conn.deadline is None
    assert conn.receive_data(request_head()) == []


def test_idle_before_the_first_request_closes() -> None:
    clock = Clock()
    conn = make(clock, keep_alive_timeout=2)
    clock.now = 1002.5
    events = conn.handle_timer(clock.now)
    assert events == [ConnectionTerminated("keep-alive timeout")]
    assert conn.closing


def test_header_timeout_408_from_the_first_byte() -> None:
    clock = Clock()
    conn = make(clock, header_timeout=3, keep_alive_timeout=1)
    clock.now = 1000.5
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert conn.deadline == 1003.5
    clock.now = 1002.0
    conn.receive_data(b"Host: x\r\n")  # trickling does not push the deadline back
    assert conn.deadline == 1003.5
    assert conn.handle_timer(1003.0) == []
    events = conn.handle_timer(1003.5)
    error = only_error(events)
    assert isinstance(error, RequestTimeout)
    assert error.status == 408
    assert status_of(conn.data_to_send()) == 408
    assert conn.closing


def test_body_stall_408() -> None:
    clock = Clock()
    conn = make(clock, body_timeout=4, min_body_rate=0)  # the stall alone
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    assert conn.deadline == 1004.0
    clock.now = 1003.0
    conn.receive_data(b"abc")  # progress moves the deadline
    assert conn.deadline == 1007.0
    assert conn.handle_timer(1006.0) == []
    events = conn.handle_timer(1007.0)
    assert events[0] == StreamReset(1, "request body stalled for 4s")
    assert isinstance(only_error(events), RequestTimeout)
    assert status_of(conn.data_to_send()) == 408
    assert conn.closing


def test_body_stall_after_the_response_started_just_closes() -> None:
    clock = Clock()
    conn = make(clock, body_timeout=4)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    conn.send_response(1, 200, [])
    conn.send_body(1, b"x", False)
    conn.data_to_send()
    events = conn.handle_timer(1004.0)
    assert isinstance(events[0], StreamReset)
    assert conn.closing
    assert conn.data_to_send() == b""


def test_no_body_stall_while_the_client_waits_for_100_continue() -> None:
    clock = Clock()
    conn = make(clock, body_timeout=2)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    clock.now = 1002.0
    assert conn.handle_timer(clock.now) == []  # the app has not asked for the body yet
    assert not conn.closing
    assert conn.deadline == 1004.0
    clock.now = 1003.0
    conn.send_continue()
    assert conn.data_to_send() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.deadline == 1005.0  # the client gets the whole body timeout from the 100 on
    assert conn.handle_timer(1004.0) == []
    events = conn.handle_timer(1005.0)  # asked, and the client still sends nothing: its stall
    assert isinstance(only_error(events), RequestTimeout)
    assert status_of(conn.data_to_send()) == 408


def test_body_stall_after_answering_an_expect_request_without_100_just_closes() -> None:
    clock = Clock()
    conn = make(clock, body_timeout=2)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    assert status_of(respond(conn, 1, 413)) == 413
    events = conn.handle_timer(1002.0)
    assert isinstance(events[0], StreamReset)
    assert isinstance(only_error(events), RequestTimeout)
    assert conn.data_to_send() == b""
    assert conn.closing


def test_no_deadline_while_the_server_owes_a_response() -> None:
    clock = Clock()
    conn = make(clock, keep_alive_timeout=1, header_timeout=1, body_timeout=1)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
    assert conn.deadline is None
    clock.now += 1000
    assert conn.handle_timer(clock.now) == []
    assert not conn.closing
    assert status_of(respond(conn, 1)) == 200
    assert conn.deadline == clock.now + 1


def test_deadline_paused_while_the_server_stops_reading() -> None:
    clock = Clock()
    conn = make(clock, body_timeout=2, header_timeout=3)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n")
    conn.set_reading_paused(True)
    assert conn.deadline is None
    assert conn.receive_data(b"abc") == [Data(1, b"abc")]
    assert conn.deadline is None  # still paused: the server is the slow one
    clock.now = 1100.0
    assert conn.handle_timer(clock.now) == []
    conn.set_reading_paused(False)
    assert conn.deadline == 1102.0
    assert conn.receive_data(b"defghij") == [Data(1, b"defghij", True)]
    # Paused while the next request's headers arrive.
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert conn.deadline == 1103.0
    conn.set_reading_paused(True)
    assert conn.deadline is None
    conn.set_reading_paused(False)
    assert conn.deadline == 1103.0


# ------------------------------------------------------------------ app-side errors


def test_response_header_names_in_any_case_go_out_lowercase_with_values_trimmed() -> None:
    # RFC 9110 §5.1: names are case-insensitive (Django sends Content-Type); §5.5: surrounding OWS is not
    # part of the value (Django's WSGI Set-Cookie comes with a leading space)
    conn = make(server=None)
    conn.receive_data(request_head())
    headers = [(b"Content-Type", b"text/plain"), (b"Set-Cookie", b"  a=b\t"), (b"CONTENT-LENGTH", b" 2 ")]
    conn.send_response(1, 200, headers)
    conn.send_body(1, b"ok", True)
    head, _, body = conn.data_to_send().partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[1:] == [b"content-type: text/plain", b"set-cookie: a=b", b"content-length: 2"]
    assert body == b"ok"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"bad name", b"x")],
        [(b"Bad:Name", b"x")],
        [(b"", b"x")],
        [(b"x:y", b"x")],
        [(b"caf\xc3\xa9", b"x")],
        [(b"x-a", b"a\r\nx-injected: 1")],
        [(b"x-a", b"a\nb")],
        [(b"x-a", b"a\rb")],
        [(b"x-a", b"a\x00b")],
        [(b"content-length", b"abc")],
        [(b"content-length", b"-1")],
        [(b"content-length", b"3"), (b"content-length", b"5")],
        [(b"content-length", b"9" * 5000)],  # int() refuses over 4300 digits: still the app's error
        [("x-a", "str")],
        [(b"x-a",)],
        [(b"x-a", b"1", b"2")],
        [(b"x-a", None)],
    ],
    ids=repr,
)
def test_bad_response_headers_raise(headers: list[tuple[object, ...]]) -> None:
    conn = make()
    conn.receive_data(request_head())
    with pytest.raises(AppProtocolError, match=r"header|content-length"):
        conn.send_response(1, 200, headers)  # type: ignore[arg-type]
    assert conn.data_to_send() == b""
    # The slot stays open: a 500 can still be sent.
    assert status_of(respond(conn, 1, 500, body=b"oops")) == 500


@pytest.mark.parametrize("status", [0, 99, 1000, -1])
def test_invalid_status_raises(status: int) -> None:
    conn = make()
    conn.receive_data(request_head())
    with pytest.raises(AppProtocolError, match="status"):
        conn.send_response(1, status, [])


def test_more_body_than_content_length_raises_and_closes() -> None:
    conn = make()
    conn.receive_data(request_head() + request_head())
    conn.send_response(1, 200, [(b"content-length", b"3")])
    conn.send_body(1, b"ab", False)
    with pytest.raises(AppProtocolError, match="more body than"):
        conn.send_body(1, b"cd", False)
    out = conn.data_to_send()
    assert out.endswith(b"\r\n\r\nab")  # the excess never reaches the wire
    assert conn.closing


def test_less_body_than_content_length_raises_and_closes() -> None:
    conn = make()
    conn.receive_data(request_head())
    conn.send_response(1, 200, [(b"content-length", b"3")])
    with pytest.raises(AppProtocolError, match="1 of 3"):
        conn.send_body(1, b"a", True)
    assert conn.closing


def test_content_length_mismatch_on_head_is_fine() -> None:
    conn = make()
    conn.receive_data(request_head(b"/", b"HEAD"))
    assert respond(conn, 1, headers=[(b"content-length", b"100")]).endswith(
        b"content-length: 100\r\nserver: zonda\r\n\r\n"
    )
    assert not conn.closing


# ------------------------------------------------------------------ graceful shutdown


def test_finish_and_close_when_idle_closes_now() -> None:
    conn = make()
    conn.receive_data(request_head())
    respond(conn, 1)
    conn.finish_and_close()
    assert conn.closing
    assert conn.deadline is None


def test_finish_and_close_lets_owed_responses_finish() -> None:
    conn = make()
    conn.receive_data(request_head(b"/1") + request_head(b"/2"))
    conn.finish_and_close()
    assert not conn.closing
    _, headers, _ = split_response(respond(conn, 1))
    assert not conn.closing
    _, headers, _ = split_response(respond(conn, 2))
    assert headers[b"connection"] == b"close"
    assert conn.closing
    assert conn.receive_data(request_head()) == []


def test_finish_and_close_mid_body_finishes_the_body_first() -> None:
    conn = make()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    conn.finish_and_close()
    events = conn.receive_data(b"cd" + request_head(b"/later"))
    assert events == [Data(1, b"cd", True)]
    _, headers, _ = split_response(respond(conn, 1))
    assert headers[b"connection"] == b"close"
    assert conn.closing


def test_finish_and_close_mid_headers_closes() -> None:
    conn = make()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost:")
    conn.finish_and_close()
    assert conn.closing


# ------------------------------------------------------------------ properties


def normalise(events: Iterable[Event]) -> list[tuple[object, ...]]:
    """Events with the body re-chunked away: what any split of the same bytes must produce."""
    out: list[tuple[object, ...]] = []
    for event in events:
        if isinstance(event, Request):
            out.append(
                (
                    "request",
                    event.stream_id,
                    event.method,
                    event.path,
                    event.query_string,
                    tuple(event.headers),
                    event.http_version,
                )
            )
            if event.end_stream:
                out.append(("end", event.stream_id))
        elif isinstance(event, Data):
            if event.data:
                if out and out[-1][0] == "data" and out[-1][1] == event.stream_id:
                    out[-1] = ("data", event.stream_id, out[-1][2] + event.data)  # type: ignore[operator]
                else:
                    out.append(("data", event.stream_id, event.data))
            if event.end_stream:
                out.append(("end", event.stream_id))
        elif isinstance(event, ConnectionTerminated):
            out.append(("terminated", type(event.error).__name__, event.reason))
        else:
            out.append(("reset", event.stream_id))
    return out


request_strategy = st.one_of(
    st.builds(
        lambda p: b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n" % p,
        st.binary(max_size=8).map(bytes.hex).map(str.encode),
    ),
    st.builds(
        lambda body: b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body),
        st.binary(max_size=40),
    ),
    st.builds(
        lambda chunks: (
            b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
            + b"0\r\n\r\n"
        ),
        st.lists(st.binary(min_size=1, max_size=20), max_size=4),
    ),
    st.just(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"),
)


@settings(max_examples=200, deadline=None)
@given(
    requests=st.lists(request_strategy, min_size=1, max_size=5),
    tail=st.sampled_from([b"", b"GET /bad HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n", b"GET /par"]),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=12),
)
def test_any_split_of_a_pipelined_stream_gives_the_same_events(
    requests: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    data = b"".join(requests) + tail
    whole = normalise(make().receive_data(data))
    split = normalise(feed_in_pieces(make(), data, [c for c in cuts if c < len(data)]))
    assert split == whole
    assert [e[1] for e in whole if e[0] == "request"] == list(range(1, len(requests) + 1))


@settings(max_examples=100, deadline=None)
@given(
    bodies=st.lists(
        st.tuples(st.lists(st.binary(max_size=30), max_size=4), st.booleans()), min_size=1, max_size=4
    )
)
def test_any_response_sequence_is_framed_parseably(bodies: list[tuple[list[bytes], bool]]) -> None:
    """Responses the core frames can be parsed back by a client parser into the same bodies."""
    import httptools

    conn = make()
    conn.receive_data(b"".join(request_head(b"/%d" % i) for i in range(len(bodies))))
    wire = b""
    for stream_id, (pieces, declare) in enumerate(bodies, start=1):
        body = b"".join(pieces)
        headers = [(b"content-length", b"%d" % len(body))] if declare else []
        conn.send_response(stream_id, 200, headers)
        for piece in pieces:
            conn.send_body(stream_id, piece, False)
        conn.send_body(stream_id, b"", True)
        wire += conn.data_to_send()
    got: list[bytes] = []

    class Client:
        def on_message_begin(self) -> None:
            got.append(b"")

        def on_body(self, body: bytes) -> None:
            got[-1] += body

    httptools.HttpResponseParser(Client()).feed_data(wire)
    assert got == [b"".join(pieces) for pieces, _ in bodies]
    assert re.findall(rb"HTTP/1.1 200 OK", wire) == [b"HTTP/1.1 200 OK"] * len(bodies)


@pytest.mark.parametrize(
    ("connection", "keep_alive"),
    [(b"x-not-closed", True), (b"keep-alive, close", False), (b"Upgrade,  CLOSE ", False), (b"closed", True)],
)
def test_connection_header_is_a_token_list(connection: bytes, keep_alive: bool) -> None:
    conn = make()
    events = conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: " + connection + b"\r\n\r\n")
    request = events[0]
    assert isinstance(request, Request)
    assert request.keep_alive is keep_alive


# ------------------------------------------------------------------ file bodies the driver sends (zerocopysend, pathsend)


def send_file(conn: H1Connection, count: int, end_stream: bool, file_byte: bytes = b"F") -> bytes:
    """What reaches the wire for one file piece: the core's bytes, the file's (faked), the core's again."""
    to_send = conn.send_file(1, count, end_stream)
    out = conn.data_to_send() + file_byte * to_send
    conn.file_sent(1, to_send, end_stream)
    return out + conn.data_to_send()


def test_file_with_a_declared_content_length() -> None:
    conn = make()
    conn.receive_data(request_head())
    conn.send_response(1, 200, [(b"content-length", b"7")])
    conn.send_body(1, b"ab", False)
    out = conn.data_to_send() + send_file(conn, 5, True)
    assert out == b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nserver: zonda\r\n\r\nabFFFFF"
    assert not conn.closing and conn.deadline is not None  # kept alive, waiting for the next request


def test_single_final_file_gets_a_computed_content_length() -> None:
    conn = make()
    conn.receive_data(request_head())
    conn.send_response(1, 200, [])
    _, headers, body = split_response(send_file(conn, 4, True))
    assert headers[b"content-length"] == b"4" and b"transfer-encoding" not in headers
    assert body == b"FFFF"


def test_files_and_bodies_mixed_in_a_chunked_response() -> None:
    conn = make()
    conn.receive_data(request_head())
    conn.send_response(1, 200, [])
    out = send_file(conn, 3, False) + send_file(conn, 0, False)
    conn.send_body(1, b"xy", False)
    out += conn.data_to_send() + send_file(conn, 2, True, b"G")
    _, headers, body = split_response(out)
    assert headers[b"transfer-encoding"] == b"chunked"
    assert body == b"3\r\nFFF\r\n2\r\nxy\r\n2\r\nGG\r\n0\r\n\r\n"
    assert not conn.closing


def test_file_on_http10_is_close_delimited() -> None:
    conn = make()
    conn.receive_data(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    conn.send_response(1, 200, [])
    _, headers, body = split_response(send_file(conn, 3, False) + send_file(conn, 2, True))
    assert headers[b"connection"] == b"close" and body == b"FFFFF"
    assert conn.closing


def test_file_past_the_declared_content_length_is_an_app_error() -> None:
    conn = make()
    conn.receive_data(request_head())
    conn.send_response(1, 200, [(b"content-length", b"4")])
    with pytest.raises(AppProtocolError, match=r"a file of 5 bytes .* content-length \(4\)"):
        conn.send_file(1, 5, True)
    assert conn.data_to_send().endswith(b"\r\n\r\n")  # the head only, then the connection closes
    assert conn.closing


def test_file_short_of_the_declared_content_length_is_an_app_error() -> None:
    conn = make()
    conn.receive_data(request_head())
    conn.send_response(1, 200, [(b"content-length", b"10")])
    assert conn.send_file(1, 6, True) == 6
    with pytest.raises(AppProtocolError, match="after 6 of 10"):
        conn.file_sent(1, 6, True)
    assert conn.closing


@pytest.mark.parametrize(("method", "status"), [(b"HEAD", 200), (b"GET", 304)])
def test_no_file_bytes_for_responses_without_a_body(method: bytes, status: int) -> None:
    conn = make()
    conn.receive_data(request_head(b"/", method))
    conn.send_response(1, status, [(b"content-length", b"100")])
    assert conn.send_file(1, 100, False) == 0
    conn.file_sent(1, 0, False)
    conn.send_body(1, b"", True)
    assert conn.data_to_send() == b"HTTP/1.1 %d %s\r\ncontent-length: 100\r\nserver: zonda\r\n\r\n" % (
        status,
        b"OK" if status == 200 else b"Not Modified",
    )
    assert not conn.closing


PIPELINED_UPGRADE = (
    b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
    b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nEARLY"
)


def test_an_upgrade_pipelined_behind_a_request_stays_pending_through_the_earlier_response() -> None:
    conn = make()
    requests = [e for e in conn.receive_data(PIPELINED_UPGRADE) if isinstance(e, Request)]
    assert [(r.stream_id, r.upgrade) for r in requests] == [(1, None), (2, b"websocket")]
    assert respond(conn, 1, body=b"ok").endswith(b"\r\n\r\nok")
    assert not conn.has_held_data  # the bytes after the upgrade request wait for its answer, not this one
    assert conn.receive_data(b"MORE") == []
    assert conn.accept_upgrade(2, [(b"upgrade", b"websocket")]) == b"EARLYMORE"
    assert conn.data_to_send().startswith(b"HTTP/1.1 101 ")


def test_a_pipelined_upgrade_declined_in_its_turn_reads_what_followed_as_http1() -> None:
    conn = make()
    conn.receive_data(PIPELINED_UPGRADE.replace(b"EARLY", b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"))
    respond(conn, 1)
    assert not conn.has_held_data
    respond(conn, 2, status=403)
    assert conn.has_held_data
    [after] = [e for e in conn.receive_data(b"") if isinstance(e, Request)]
    assert (after.stream_id, after.path) == (3, b"/after")
