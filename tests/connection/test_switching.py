"""Protocol switching on the fake driver: the HTTP/2 preface (prior knowledge), ``Upgrade: h2c``, ALPN ``h2``, and
the WebSocket upgrade that swaps the frame core in on an HTTP/1.1 connection."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from fakeio import FakeServer, FakeTLS, FakeWaiter, H2Peer, Replies, h2_response, responses
from h2wire import settings_payload
from wire import get
from wsframes import CLOSE, PING, TEXT, close, frame, handshake_request, parse_frames, text
from zonda.connection.http1 import HTTP1Connection
from zonda.connection.http2 import HTTP2Connection
from zonda.protocols.http2 import ACK, DATA, HEADERS, SETTINGS, WINDOW_UPDATE

Serve = Callable[..., FakeServer]
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"test")]


def fields(path: bytes = b"/", method: bytes = b"GET", scheme: bytes = b"http") -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", scheme), (b":path", path), (b":authority", b"test")]


async def describe(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with what the scope says of the connection, and the request body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    tls = scope["extensions"].get("tls")
    answer = json.dumps(
        {
            "path": scope["path"],
            "http_version": scope["http_version"],
            "scheme": scope["scheme"],
            "extensions": sorted(scope["extensions"]),
            "tls": tls and [tls["tls_version"], tls["cipher_suite"]],
            "body": body.decode(),
        }
    ).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": answer})


def test_the_http2_preface_on_a_fresh_connection_hands_the_stream_to_http2(serve: Serve) -> None:
    server = serve(describe)
    stream = server.connect()
    opener = stream.protocol
    assert isinstance(opener, HTTP1Connection)
    peer = H2Peer(stream)
    preface = peer.preface()
    peer.send(preface[:10])  # the preface may come over several reads
    assert stream.protocol is opener and stream.take() == b""
    peer.send(preface[10:])
    h2 = stream.protocol
    assert isinstance(h2, HTTP2Connection)
    assert server.connections == {h2}  # the HTTP/1.1 object left the registry
    frames = peer.read()
    # ours, the connection window opened to its configured size, the client's settings acknowledged
    assert [(f.kind, f.flags) for f in frames] == [(SETTINGS, 0), (WINDOW_UPDATE, 0), (SETTINGS, ACK)]

    peer.send(peer.headers(1, fields(b"/prior")))
    frames = peer.read()
    response = h2_response(frames, 1)
    assert response.status == 200 and response.ended
    answer = json.loads(response.body)
    assert (answer["path"], answer["http_version"], answer["scheme"]) == ("/prior", "2", "http")
    assert sorted(answer["extensions"]) == [
        "http.response.early_hint",
        "http.response.pathsend",
        "http.response.push",
        "http.response.trailers",
        "http.response.zerocopysend",
    ]
    assert [f.kind for f in frames] == [HEADERS, DATA]


def test_upgrade_h2c_answers_101_then_http2_with_the_upgrading_request_on_stream_1(serve: Serve) -> None:
    server = serve(describe)
    stream = server.connect()
    client_settings = base64.urlsafe_b64encode(settings_payload(initial_window_size=65535)).rstrip(b"=")
    body = b"hello"
    upgrade = (
        b"POST /up HTTP/1.1\r\nHost: test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: " + client_settings + b"\r\nContent-Length: 5\r\n\r\n" + body
    )
    peer = H2Peer(stream)
    stream.feed(upgrade)
    replies = Replies(stream.take())
    switching = replies.read_response()
    assert switching.status == 101
    assert (switching.header("connection"), switching.header("upgrade")) == ("Upgrade", "h2c")
    assert isinstance(stream.protocol, HTTP2Connection)
    assert server.connections == {stream.protocol}
    frames = peer.read(replies.buffer)
    assert frames[0].kind == SETTINGS and not frames[0].flags & ACK  # the first HTTP/2 frame after the 101
    response = h2_response(frames, 1)
    assert response.status == 200 and response.ended
    answer = json.loads(response.body)
    assert (answer["path"], answer["http_version"], answer["body"]) == ("/up", "2", "hello")

    peer.send(peer.preface())  # the client's preface follows the upgrade
    assert [(f.kind, f.flags) for f in peer.read()] == [(SETTINGS, ACK)]
    peer.send(peer.headers(3, fields(b"/next")))
    response = h2_response(peer.read(), 3)
    assert json.loads(response.body)["path"] == "/next"


def test_an_h2c_upgrade_without_http2_settings_is_refused_with_400(serve: Serve) -> None:
    server = serve(describe)
    stream = server.connect()
    stream.feed(get("/up", "Connection: Upgrade", "Upgrade: h2c"))
    [response] = responses(stream.take())
    assert response.status == 400
    assert stream.closed and isinstance(stream.protocol, HTTP1Connection)


def test_alpn_h2_starts_http2_before_the_client_says_anything(serve: Serve) -> None:
    server = serve(describe)
    stream = server.connect(tls=FakeTLS("h2"))
    assert isinstance(stream.protocol, HTTP2Connection)
    assert server.connections == {stream.protocol}
    peer = H2Peer(stream)
    assert [(f.kind, f.flags) for f in peer.read()] == [(SETTINGS, 0), (WINDOW_UPDATE, 0)]  # ours, first

    peer.send(peer.preface(), peer.headers(1, fields(b"/tls", scheme=b"https")))
    frames = peer.read()
    assert (frames[0].kind, frames[0].flags) == (SETTINGS, ACK)
    response = h2_response(frames, 1)
    answer = json.loads(response.body)
    assert (answer["http_version"], answer["scheme"]) == ("2", "https")
    assert answer["tls"] == [0x0304, 0x1301]  # TLS 1.3, TLS_AES_128_GCM_SHA256


def test_alpn_http_1_1_stays_http1_with_the_tls_extension(serve: Serve) -> None:
    server = serve(describe)
    stream = server.connect(tls=FakeTLS("http/1.1"))
    assert isinstance(stream.protocol, HTTP1Connection)
    assert stream.take() == b""
    stream.feed(get("/tls"))
    answer = json.loads(responses(stream.take())[0].body)
    assert (answer["http_version"], answer["scheme"], answer["tls"]) == ("1.1", "https", [0x0304, 0x1301])
    # both file extensions, as on every connection: over TLS their bytes are read in blocks
    assert {"http.response.pathsend", "http.response.zerocopysend"} <= set(answer["extensions"])


def test_with_http_1_only_the_preface_is_a_bad_request(serve: Serve) -> None:
    server = serve(describe, http="1")
    stream = server.connect()
    H2Peer(stream).send(H2Peer.preface())
    assert isinstance(stream.protocol, HTTP1Connection)
    [response] = responses(stream.take())
    assert response.status == 400 and stream.closed


# ------------------------------------------------------------------------ WebSocket over HTTP/1.1


def ws_echo(events: list[dict[str, Any]]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204})
            await send({"type": "http.response.body"})
            return
        assert await receive() == {"type": "websocket.connect"}
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            events.append(message)
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message["text"]})

    return app


def test_an_accepted_websocket_swaps_the_frame_core_in_and_echoes_until_the_close(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(ws_echo(events), ws_ping_interval=None)
    stream = server.connect()
    conn = stream.protocol
    stream.feed(handshake_request("/chat", key="dGhlIHNhbXBsZSBub25jZQ=="))
    replies = Replies(stream.take())
    switching = replies.read_response()
    assert switching.status == 101
    assert switching.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455 §1.3
    assert replies.buffer == b""
    assert stream.protocol is conn and conn.handler is not conn.session  # the cycle takes the events now

    stream.feed(text("hello") + text("again"))
    frames = parse_frames(stream.take())
    assert [(f.opcode, f.payload) for f in frames] == [(TEXT, b"hello"), (TEXT, b"again")]

    stream.feed(close(1000))
    [reply] = parse_frames(stream.take())
    assert (reply.opcode, reply.close_code) == (CLOSE, 1000)
    assert stream.closed and stream.lost  # the server closes TCP after the closing handshake
    assert events[-1] == {"type": "websocket.disconnect", "code": 1000, "reason": ""}
    assert not server.connections


def test_frames_sent_with_the_handshake_reach_the_app_once_it_accepts(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(ws_echo(events), ws_ping_interval=None)
    stream = server.connect()
    stream.feed(handshake_request() + text("early"))
    replies = Replies(stream.take())
    assert replies.read_response().status == 101
    assert [(f.opcode, f.payload) for f in parse_frames(replies.buffer)] == [(TEXT, b"early")]


def test_the_connection_timer_follows_the_websocket_cores_keep_alive_ping(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(ws_echo(events), ws_ping_interval=5, ws_ping_timeout=3, timeout_keep_alive=60)
    stream = server.connect()
    stream.feed(handshake_request())
    assert Replies(stream.take()).read_response().status == 101
    server.loop.advance(4.9)
    assert stream.take() == b""
    server.loop.advance(0.1)
    [ping] = parse_frames(stream.take())
    assert ping.opcode == PING
    stream.feed(frame(0xA, ping.payload))  # the pong, in time
    server.loop.advance(4.9)
    assert stream.take() == b"" and not stream.is_closing()
    server.loop.advance(0.1)
    [ping] = parse_frames(stream.take())  # the next keep-alive ping; this one goes unanswered
    server.loop.advance(3)
    [failure] = parse_frames(stream.take())
    assert (failure.opcode, failure.close_code) == (CLOSE, 1011)
    assert events[-1]["type"] == "websocket.disconnect" and events[-1]["code"] == 1006


def test_an_h2c_upgrade_pipelined_behind_a_request_switches_after_its_response(serve: Serve) -> None:
    gates: list[FakeWaiter] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/first":
            gates.append(server.loop.create_waiter())
            await gates[-1]
        await describe(scope, receive, send)

    server = serve(app)
    stream = server.connect()
    client_settings = base64.urlsafe_b64encode(settings_payload()).rstrip(b"=")
    upgrade = get(
        "/up",
        "Connection: Upgrade, HTTP2-Settings",
        "Upgrade: h2c",
        "HTTP2-Settings: " + client_settings.decode(),
    )
    peer = H2Peer(stream)
    stream.feed(get("/first") + upgrade + peer.preface())  # a client that does not wait for the 101
    assert stream.take() == b""
    gates[0].set_result(None)
    server.loop.run()
    replies = Replies(stream.take())
    first = replies.read_response()
    assert json.loads(first.body)["http_version"] == "1.1"
    assert replies.read_response().status == 101
    frames = peer.read(replies.buffer)
    assert (SETTINGS, ACK) in [(f.kind, f.flags) for f in frames]  # the preface that came early was read
    response = h2_response(frames, 1)
    assert json.loads(response.body)["path"] == "/up"
    assert isinstance(stream.protocol, HTTP2Connection)


def test_a_websocket_handshake_pipelined_behind_a_request_is_accepted_in_its_turn(serve: Serve) -> None:
    events: list[dict[str, Any]] = []
    server = serve(ws_echo(events), ws_ping_interval=None)
    stream = server.connect()
    stream.feed(get("/first") + handshake_request() + text("early"))
    replies = Replies(stream.take())
    assert replies.read_response().status == 204
    assert replies.read_response().status == 101
    assert [(f.opcode, f.payload) for f in parse_frames(replies.buffer)] == [(TEXT, b"early")]


def test_an_h2c_upgrade_pipelined_behind_a_connection_close_response_is_dropped(serve: Serve) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"2"), (b"connection", b"close")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})

    server = serve(app)
    stream = server.connect()
    client_settings = base64.urlsafe_b64encode(settings_payload()).rstrip(b"=").decode()
    upgrade = get(
        "/up", "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: " + client_settings
    )
    stream.feed(get("/first") + upgrade)
    [response] = responses(stream.take())
    assert (response.body, response.header("connection")) == (b"ok", "close")
    assert stream.closed and stream.lost
    assert stream.late_writes == []  # no HTTP/2 after the close
    assert isinstance(stream.protocol, HTTP1Connection)
    assert not server.connections  # nothing left behind that a graceful shutdown would wait for


def test_the_preface_after_an_http1_request_is_a_bad_request(serve: Serve) -> None:
    server = serve(describe)
    stream = server.connect()
    stream.feed(get("/"))
    assert responses(stream.take())[0].status == 200
    stream.feed(H2Peer.preface())
    assert isinstance(stream.protocol, HTTP1Connection)
    [response] = responses(stream.take())
    assert response.status == 400 and stream.closed
