"""HTTP/1.1 connections on the fake driver: keep-alive, pipelining, the keep-alive and header timeouts as time is
moved by hand, and the 503 refusal over ``limit_connections``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fakeio import FakeServer, FakeWaiter, responses
from wire import get
from zonda.connection.http1 import HTTP1Connection

Serve = Callable[..., FakeServer]


async def hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers every request with its path."""
    body = scope["path"].encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


def test_keep_alive_answers_requests_one_after_another_on_one_connection(serve: Serve) -> None:
    server = serve(hello)
    stream = server.connect()
    [conn] = server.connections
    assert stream.protocol is conn and isinstance(conn, HTTP1Connection)
    for path in ("/one", "/two", "/three"):
        stream.feed(get(path))
        [response] = responses(stream.take())
        assert (response.status, response.body) == (200, path.encode())
        assert response.header("date") == "Mon, 01 Jan 2024 00:00:00 GMT"
        assert response.header("connection") is None  # kept alive
    assert not stream.is_closing()
    assert server.connections == {conn}


def test_a_pipelined_request_is_answered_after_the_first_and_reading_pauses_meanwhile(serve: Serve) -> None:
    gates: dict[str, FakeWaiter] = {}
    started: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        started.append(scope["path"])
        gate = gates[scope["path"]] = server.loop.create_waiter()
        await gate  # answered when the test says so
        await hello(scope, receive, send)

    server = serve(app)
    stream = server.connect()
    stream.feed(get("/first") + get("/second"))
    assert started == ["/first"]  # the second waits its turn
    assert stream.take() == b""
    assert stream.reading_paused  # no further reading while a request is queued

    gates["/first"].set_result(None)
    server.loop.run()
    [first] = responses(stream.take())
    assert first.body == b"/first"
    assert started == ["/first", "/second"]
    gates["/second"].set_result(None)
    server.loop.run()
    [second] = responses(stream.take())
    assert second.body == b"/second"
    assert not stream.reading_paused  # the queue is empty: reading resumed
    stream.feed(get("/third"))
    gates["/third"].set_result(None)
    server.loop.run()
    assert [r.body for r in responses(stream.take())] == [b"/third"]


def test_the_keep_alive_timeout_closes_an_idle_connection_when_it_is_due_and_not_before(serve: Serve) -> None:
    server = serve(hello, timeout_keep_alive=5)
    stream = server.connect()
    stream.feed(get("/"))
    assert responses(stream.take())[0].status == 200
    assert server.loop.next_timer() == server.loop.now + 5
    server.loop.advance(4.99)
    assert not stream.is_closing()
    server.loop.advance(0.01)
    assert stream.closed and stream.lost
    assert stream.take() == b""  # an idle close says nothing
    assert not server.connections
    assert server.loop.next_timer() is None


def test_each_request_moves_the_keep_alive_deadline_on(serve: Serve) -> None:
    server = serve(hello, timeout_keep_alive=5)
    stream = server.connect()
    for _ in range(3):
        server.loop.advance(4)
        stream.feed(get("/"))
        assert responses(stream.take())[0].status == 200
    server.loop.advance(4.9)  # 16.9 s after the connection opened, 4.9 s after the last response
    assert not stream.is_closing()
    server.loop.advance(0.1)
    assert stream.closed


def test_a_head_that_stalls_past_the_header_timeout_gets_408_and_the_connection_closes(serve: Serve) -> None:
    server = serve(hello, timeout_request_header=10, timeout_keep_alive=30)
    stream = server.connect()
    stream.feed(b"GET /slow HTTP/1.1\r\nHost: test\r\n")  # no blank line: the head is not complete
    server.loop.advance(9.9)
    assert stream.take() == b"" and not stream.is_closing()
    server.loop.advance(0.1)
    [response] = responses(stream.take())
    assert response.status == 408
    assert response.header("connection") == "close"
    assert stream.closed and stream.lost
    assert server.shared.rejections == {"RequestTimeout": 1}


def test_over_limit_connections_a_new_connection_gets_503_and_is_closed(serve: Serve) -> None:
    server = serve(hello, limit_connections=2)
    first, second = server.connect(), server.connect()
    refused = server.connect()
    [response] = responses(refused.take())
    assert response.status == 503
    assert response.header("retry-after") == "1"
    assert refused.closed and refused.lost
    assert server.shared.stats_refused == 1
    assert len(server.connections) == 2
    assert refused.protocol not in server.connections

    first.feed_eof()  # one goes: room for another
    assert first.lost and len(server.connections) == 1
    third = server.connect()
    third.feed(get("/third"))
    assert responses(third.take())[0].body == b"/third"
    second.feed(get("/second"))
    assert responses(second.take())[0].body == b"/second"


def test_the_peer_going_away_tells_a_waiting_app_http_disconnect(serve: Serve) -> None:
    messages: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        messages.append(await receive())
        messages.append(await receive())  # waits: the request was read whole

    server = serve(app)
    stream = server.connect()
    stream.feed(get("/"))
    assert messages == [{"type": "http.request", "body": b"", "more_body": False}]
    stream.feed_eof()
    assert messages[1] == {"type": "http.disconnect"}
    assert stream.closed and not server.connections


def test_a_slow_app_is_not_cut_by_the_keep_alive_timeout_which_counts_from_its_response(serve: Serve) -> None:
    gates: list[FakeWaiter] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        gates.append(server.loop.create_waiter())
        await gates[-1]
        await hello(scope, receive, send)

    server = serve(app, timeout_keep_alive=5)
    stream = server.connect()
    stream.feed(get("/slow"))
    server.loop.advance(60)  # the server owes a response: no client deadline meanwhile
    assert not stream.is_closing()
    gates[0].set_result(None)
    server.loop.run()
    assert responses(stream.take())[0].body == b"/slow"
    server.loop.advance(4.9)
    assert not stream.is_closing()
    server.loop.advance(0.1)
    assert stream.closed


def test_a_request_body_that_stalls_past_the_body_timeout_gets_408(serve: Serve) -> None:
    received: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (message := await receive())["type"] == "http.request":
            received.append(message)

    server = serve(app, timeout_request_body=30, limit_request_body_rate=0)  # the stall alone
    stream = server.connect()
    stream.feed(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\n\r\nabc")
    assert received == [{"type": "http.request", "body": b"abc", "more_body": True}]
    server.loop.advance(20)
    stream.feed(b"def")  # progress: the wait starts again
    server.loop.advance(29.9)
    assert stream.take() == b"" and not stream.is_closing()
    server.loop.advance(0.1)
    [response] = responses(stream.take())
    assert response.status == 408
    assert stream.closed
