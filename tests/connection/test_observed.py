"""``ObservedHTTP1Connection`` on the fake driver: a PROXY protocol v1 header setting the client's address (before
HTTP/1.1 and across a switch to HTTP/2), and byte counts in the metrics ``Tally`` on every kind of connection."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fakeio import FakeServer, FakeStream, FakeTLS, H2Peer, Replies, h2_response, responses
from wire import get
from wsframes import CLOSE, TEXT, close, handshake_request, parse_frames, text
from zonda.connection.http2 import HTTP2Connection
from zonda.connection.observed import ObservedHTTP1Connection

Serve = Callable[..., FakeServer]
BALANCER = ("127.0.0.1", 61000)  # the peer zonda sees: a trusted proxy (forwarded_allow_ips' default)
PROXY_LINE = b"PROXY TCP4 198.51.100.7 203.0.113.1 56324 443\r\n"
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"test")]


async def addresses(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers with the scope's client, server and scheme; echoes WebSocket text."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message["text"]})
        return
    body = json.dumps([scope["client"], scope["server"], scope["scheme"]]).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


def answer(stream: FakeStream) -> list[Any]:
    [response] = responses(stream.take())
    assert response.status == 200, response
    return list(json.loads(response.body))


def test_a_proxy_v1_header_sets_the_client_and_server_addresses(serve: Serve) -> None:
    server = serve(addresses, proxy_protocol="v1")
    stream = server.connect(client=BALANCER)
    assert isinstance(stream.protocol, ObservedHTTP1Connection)
    stream.feed(PROXY_LINE[:20])  # the header may come in pieces, the request right after it
    assert stream.take() == b"" and not stream.is_closing()
    stream.feed(PROXY_LINE[20:] + get("/"))
    assert answer(stream) == [["198.51.100.7", 56324], ["203.0.113.1", 443], "http"]
    stream.feed(get("/again"))  # the whole connection is the proxied client's
    assert answer(stream) == [["198.51.100.7", 56324], ["203.0.113.1", 443], "http"]


def test_a_proxy_header_before_the_http2_preface_reaches_the_http2_requests(serve: Serve) -> None:
    server = serve(addresses, proxy_protocol="v1")
    stream = server.connect(client=BALANCER)
    peer = H2Peer(stream)
    peer.send(PROXY_LINE + peer.preface() + peer.headers(1, GET))
    assert isinstance(stream.protocol, HTTP2Connection)
    response = h2_response(peer.read(), 1)
    assert json.loads(response.body) == [["198.51.100.7", 56324], ["203.0.113.1", 443], "http"]


def test_a_trusted_peer_without_a_proxy_header_is_closed_unanswered(serve: Serve) -> None:
    server = serve(addresses, proxy_protocol="v1")
    stream = server.connect(client=BALANCER)
    stream.feed(get("/"))
    assert stream.take() == b""
    assert stream.closed and stream.lost and not server.connections


def test_an_untrusted_peer_is_not_asked_for_a_header(serve: Serve) -> None:
    server = serve(addresses, proxy_protocol="v1")
    stream = server.connect(client=("192.0.2.99", 5000))
    stream.feed(get("/"))
    assert answer(stream) == [["192.0.2.99", 5000], ["127.0.0.1", 8000], "http"]
    stream.feed(PROXY_LINE)  # from anyone else, a PROXY line is no HTTP request
    [response] = responses(stream.take())
    assert response.status == 400


def test_the_tally_counts_the_bytes_of_http1_requests_and_responses(serve: Serve) -> None:
    server = serve(addresses, metrics=True)
    tally = server.shared.tally
    assert tally is not None
    stream = server.connect()
    assert isinstance(stream.protocol, ObservedHTTP1Connection)
    requests = [get("/one"), get("/two") + get("/three")]  # the second read pipelines two
    written = b""
    for request in requests:
        stream.feed(request)
        written += stream.take()
    assert len(responses(written)) == 3
    assert (tally.bytes_in, tally.bytes_out) == (sum(map(len, requests)), len(written))


def test_the_tally_counts_every_byte_once_across_the_switch_to_http2(serve: Serve) -> None:
    server = serve(addresses, metrics=True)
    tally = server.shared.tally
    assert tally is not None
    peer = H2Peer(server.connect())
    preface = peer.preface()
    # 30 bytes read by the HTTP/1.1 object, then handed over with the rest; then a read of HTTP/2's own
    chunks = [preface[:30], preface[30:] + peer.headers(1, GET), peer.headers(3, GET)]
    written = b""
    for chunk in chunks:
        peer.send(chunk)
        written += peer.stream.take()
    assert isinstance(peer.stream.protocol, HTTP2Connection)
    frames = peer.read(written)
    assert [h2_response(frames, n).status for n in (1, 3)] == [200, 200]
    assert (tally.bytes_in, tally.bytes_out) == (sum(map(len, chunks)), len(written))


def test_the_tally_counts_an_alpn_h2_connection(serve: Serve) -> None:
    server = serve(addresses, metrics=True)
    tally = server.shared.tally
    assert tally is not None
    stream = server.connect(tls=FakeTLS("h2"))
    peer = H2Peer(stream)
    sent = peer.preface() + peer.headers(1, GET)
    written = stream.take()  # our SETTINGS, before the client says anything
    peer.send(sent)
    written += stream.take()
    assert h2_response(peer.read(written), 1).status == 200
    assert (tally.bytes_in, tally.bytes_out) == (len(sent), len(written))


def test_the_tally_counts_a_websocket_after_its_upgrade(serve: Serve) -> None:
    server = serve(addresses, metrics=True, ws_ping_interval=None)
    tally = server.shared.tally
    assert tally is not None
    stream = server.connect()
    sent = [handshake_request(), text("hi"), close(1000)]
    written = b""
    for chunk in sent:
        stream.feed(chunk)
        written += stream.take()
    replies = Replies(written)
    assert replies.read_response().status == 101
    frames = parse_frames(replies.buffer)
    assert [(f.opcode, f.payload) for f in frames] == [(TEXT, b"hi"), (CLOSE, (1000).to_bytes(2, "big"))]
    assert (tally.bytes_in, tally.bytes_out) == (sum(map(len, sent)), len(written))
