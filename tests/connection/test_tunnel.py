"""The WebSocket tunnel over an HTTP/2 stream (RFC 8441) on the fake driver: extended CONNECT, frames in DATA
frames both ways, the tunnel's own timer as time is moved by hand, and END_STREAM as the end of the byte stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fakeio import FakeServer, FakeWaiter, H2Peer, ServerFrame, h2_response
from h2wire import data, rst
from wsframes import CLOSE, PING, PONG, TEXT, close, frame, parse_frames, text
from zonda.connection.http2 import HTTP2Connection
from zonda.protocols.http2 import DATA, END_STREAM, HEADERS, RST_STREAM, SETTINGS, WINDOW_UPDATE, ErrorCode

Serve = Callable[..., FakeServer]
CONNECT = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"http"),
    (b":path", b"/chat"),
    (b":authority", b"test"),
    (b"sec-websocket-version", b"13"),
]
ENABLE_CONNECT_PROTOCOL = 0x8


def ws_echo(events: list[dict[str, Any]], close_after: str | None = None) -> Any:
    """Echoes text messages; sends a close of its own after the message ``close_after``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204})
            await send({"type": "http.response.body"})
            return
        assert scope["http_version"] == "2"
        assert await receive() == {"type": "websocket.connect"}
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            events.append(message)
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message["text"]})
            if message["text"] == close_after:
                await send({"type": "websocket.close", "code": 1000})

    return app


def open_tunnel(server: FakeServer) -> tuple[H2Peer, list[ServerFrame]]:
    """An HTTP/2 connection (prior knowledge) with an accepted WebSocket on stream 1: the peer, and the frames
    the server sent since its SETTINGS."""
    stream = server.connect()
    peer = H2Peer(stream)
    peer.send(peer.preface())
    [settings] = [f for f in peer.read() if f.kind == SETTINGS and not f.flags]
    assert settings.settings[ENABLE_CONNECT_PROTOCOL] == 1  # RFC 8441 §3: extended CONNECT is on offer
    peer.send(peer.headers(1, CONNECT, end_stream=False))
    return peer, peer.read()


def ws_frames(frames: list[ServerFrame], stream_id: int = 1) -> list[tuple[int, bytes]]:
    """The WebSocket frames the DATA frames of ``stream_id`` carried."""
    payload = b"".join(f.payload for f in frames if f.kind == DATA and f.stream_id == stream_id)
    return [(f.opcode, f.payload) for f in parse_frames(payload)]


def ended(frames: list[ServerFrame], stream_id: int = 1) -> bool:
    return any(f.flags & END_STREAM for f in frames if f.kind in (HEADERS, DATA) and f.stream_id == stream_id)


def test_an_accepted_extended_connect_echoes_a_frame_in_a_data_frame(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(ws_echo(events), ws_ping_interval=None)
    peer, frames = open_tunnel(server)
    response = h2_response(frames, 1)
    assert response.status == 200 and not response.ended  # the stream stays open for the frames
    assert not peer.stream.is_closing()

    peer.send(data(1, text("hello")))
    frames = peer.read()
    assert ws_frames(frames) == [(TEXT, b"hello")]  # unmasked, from the server
    assert not ended(frames)
    assert events == [{"type": "websocket.receive", "text": "hello"}]


def test_frames_that_come_with_the_connect_wait_for_the_accept(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(ws_echo(events), ws_ping_interval=None)
    stream = server.connect()
    peer = H2Peer(stream)
    peer.send(peer.preface(), peer.headers(1, CONNECT, end_stream=False), data(1, text("early")))
    frames = peer.read()
    assert h2_response(frames, 1).status == 200
    assert ws_frames(frames) == [(TEXT, b"early")]


def test_the_tunnels_own_timer_sends_the_keep_alive_ping_and_fails_a_silent_peer(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(ws_echo(events), ws_ping_interval=5, ws_ping_timeout=3)
    peer, _ = open_tunnel(server)
    server.loop.advance(4.9)
    assert peer.read() == []
    server.loop.advance(0.1)
    [(opcode, payload)] = ws_frames(frames := peer.read())
    assert opcode == PING and not ended(frames)

    peer.send(data(1, frame(PONG, payload)))  # answered in time: the next ping 5 s on
    assert ws_frames(peer.read()) == []
    server.loop.advance(5)
    [(opcode, _)] = ws_frames(peer.read())
    assert opcode == PING
    server.loop.advance(2.9)
    assert peer.read() == []
    server.loop.advance(0.1)  # no pong within ws_ping_timeout: 1011, and the stream ends
    frames = peer.read()
    [(opcode, payload)] = ws_frames(frames)
    assert (opcode, payload[:2]) == (CLOSE, (1011).to_bytes(2, "big"))
    assert ended(frames)
    assert events[-1]["type"] == "websocket.disconnect" and events[-1]["code"] == 1006

    # the connection lives on: the tunnel was one stream of it
    assert isinstance(peer.stream.protocol, HTTP2Connection) and not peer.stream.is_closing()
    peer.send(peer.headers(3, [(b":method", b"GET"), *CONNECT[2:5]]))
    assert h2_response(peer.read(), 3).status == 204


def test_the_tunnels_timer_ends_the_stream_when_the_peer_never_answers_the_apps_close(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(ws_echo(events, close_after="bye"), ws_ping_interval=None, ws_ping_timeout=3)
    peer, _ = open_tunnel(server)
    peer.send(data(1, text("bye")))
    frames = peer.read()
    assert ws_frames(frames) == [(TEXT, b"bye"), (CLOSE, (1000).to_bytes(2, "big"))]
    assert not ended(frames)  # waiting for the peer's close
    assert server.loop.next_timer() == server.loop.now + 3
    server.loop.advance(2.9)
    assert peer.read() == []
    server.loop.advance(0.1)
    frames = peer.read()
    assert ended(frames) and ws_frames(frames) == []


def test_a_close_frame_is_answered_and_ends_the_stream(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(ws_echo(events), ws_ping_interval=None)
    peer, _ = open_tunnel(server)
    peer.send(data(1, close(1000)))
    frames = peer.read()
    assert ws_frames(frames) == [(CLOSE, (1000).to_bytes(2, "big"))]
    assert ended(frames)
    assert events == [{"type": "websocket.disconnect", "code": 1000, "reason": ""}]


def test_end_stream_without_a_close_is_an_abrupt_end(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(ws_echo(events), ws_ping_interval=None)
    peer, _ = open_tunnel(server)
    peer.send(data(1, text("last")))
    assert ws_frames(peer.read()) == [(TEXT, b"last")]
    peer.send(data(1, b"", end_stream=True))
    frames = peer.read()
    assert ended(frames)  # our side ends at once, as the server closes TCP on a peer's EOF
    assert ws_frames(frames) == []
    assert events == [
        {"type": "websocket.receive", "text": "last"},
        {"type": "websocket.disconnect", "code": 1006, "reason": ""},
    ]


def test_a_reset_stream_tells_the_app_1006_and_stops_the_tunnels_timer(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(ws_echo(events), ws_ping_interval=5, ws_ping_timeout=3, timeout_h2_idle=600)
    peer, _ = open_tunnel(server)
    peer.send(rst(1, ErrorCode.CANCEL))
    assert events == [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
    server.loop.advance(5)
    assert [f for f in peer.read() if f.kind in (DATA, RST_STREAM)] == []  # no ping on a reset stream


def test_a_tunnel_whose_app_lags_closes_its_window_and_replays_what_it_held(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    gates: list[FakeWaiter] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        gates.append(server.loop.create_waiter())
        await gates[0]  # not reading yet: messages queue up
        while (message := await receive())["type"] == "websocket.receive":
            events.append(message)

    server = serve(app, ws_ping_interval=None, ws_max_queue=2)
    peer, _ = open_tunnel(server)
    peer.send(*(data(1, text(f"m{n}")) for n in range(6)))
    assert events == []
    frames = peer.read()
    assert not [
        f for f in frames if f.kind == WINDOW_UPDATE and f.stream_id == 1
    ]  # the stream's window stays shut
    gates[0].set_result(None)
    server.loop.run()
    assert [e["text"] for e in events] == [f"m{n}" for n in range(6)]  # none lost, in order
    peer.send(data(1, text("after")))
    assert events[-1]["text"] == "after"
