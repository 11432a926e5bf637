"""Graceful shutdown on the fake driver, as ``Server._drain_connections`` starts it (``connection.shutdown()``):
idle connections close, requests in flight finish with ``Connection: close`` or under GOAWAY, and WebSockets
get Going Away (1001), over HTTP/1.1 and in an HTTP/2 tunnel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fakeio import FakeServer, FakeWaiter, H2Peer, Replies, h2_response, responses
from h2wire import data
from wire import get
from wsframes import CLOSE, close, handshake_request, parse_frames
from zonda.protocols.http2 import DATA, GOAWAY, ErrorCode

Serve = Callable[..., FakeServer]
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"test")]
CONNECT = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"http"),
    (b":path", b"/chat"),
    (b":authority", b"test"),
    (b"sec-websocket-version", b"13"),
]


def gated(gates: list[FakeWaiter], events: list[dict[str, Any]]) -> Any:
    """HTTP: answers once the test sets the request's gate. WebSocket: accepts, notes what it receives."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            while (message := await receive())["type"] != "websocket.disconnect":
                pass
            events.append(message)
            return
        if gates:
            await gates.pop(0)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def test_http1_an_idle_connection_closes_and_one_in_flight_finishes_first(serve: Serve) -> None:
    gates: list[FakeWaiter] = []
    server = serve(gated(gates, []))
    idle = server.connect()
    idle.feed(get("/"))
    assert responses(idle.take())[0].header("connection") is None
    busy = server.connect()
    gate = server.loop.create_waiter()
    gates.append(gate)
    busy.feed(get("/slow"))

    server.shutdown()
    assert idle.closed and idle.take() == b""
    assert not busy.is_closing()
    gate.set_result(None)
    server.loop.run()
    [response] = responses(busy.take())
    assert (response.body, response.header("connection")) == (b"ok", "close")
    assert busy.closed and not server.connections


def test_http2_shutdown_sends_goaway_and_closes_once_the_streams_are_done(serve: Serve) -> None:
    gates: list[FakeWaiter] = []
    server = serve(gated(gates, []))
    peer = H2Peer(server.connect())
    peer.send(peer.preface())
    peer.read()
    gate = server.loop.create_waiter()
    gates.append(gate)
    peer.send(peer.headers(1, GET))

    server.shutdown()
    [goaway] = peer.read()
    assert (goaway.kind, goaway.code, goaway.last_stream_id) == (GOAWAY, ErrorCode.NO_ERROR, 1)
    assert not peer.stream.is_closing()
    gate.set_result(None)
    server.loop.run()
    assert h2_response(peer.read(), 1).body == b"ok"
    assert peer.stream.closed and not server.connections


def test_a_websocket_over_http1_gets_going_away_and_closes_when_the_peer_answers(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(gated([], events), ws_ping_interval=None)
    stream = server.connect()
    stream.feed(handshake_request())
    assert Replies(stream.take()).read_response().status == 101

    server.shutdown()
    [going_away] = parse_frames(stream.take())
    assert (going_away.opcode, going_away.close_code) == (CLOSE, 1001)
    assert not stream.is_closing()
    stream.feed(close(1001))
    assert stream.closed
    assert events == [{"type": "websocket.disconnect", "code": 1001, "reason": ""}]


def test_a_websocket_tunnel_gets_going_away_then_goaway_follows_its_stream(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(gated([], events), ws_ping_interval=None)
    peer = H2Peer(server.connect())
    peer.send(peer.preface(), peer.headers(1, CONNECT, end_stream=False))
    assert h2_response(peer.read(), 1).status == 200

    server.shutdown()
    frames = peer.read()
    payload = b"".join(f.payload for f in frames if f.kind == DATA)
    [going_away] = parse_frames(payload)
    assert (going_away.opcode, going_away.close_code) == (CLOSE, 1001)
    assert [f.kind for f in frames if f.kind == GOAWAY] == [GOAWAY]
    peer.send(data(1, close(1001)))
    assert events == [{"type": "websocket.disconnect", "code": 1001, "reason": ""}]
    assert h2_response(peer.read(), 1).ended
    assert peer.stream.closed and not server.connections


def test_the_going_away_wait_runs_out_on_a_silent_peer(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(gated([], events), ws_ping_interval=None, ws_ping_timeout=4)
    stream = server.connect()
    stream.feed(handshake_request())
    stream.take()
    server.shutdown()
    assert parse_frames(stream.take())[0].close_code == 1001
    server.loop.advance(3.9)
    assert not stream.is_closing()
    server.loop.advance(0.1)
    assert stream.closed
    assert events[0]["code"] == 1006
