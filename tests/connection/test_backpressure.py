"""Back-pressure on the fake driver: a stream past its high-water mark (``pause_writing``) makes a streaming app's
``send()`` wait until ``resume_writing``, over HTTP/1.1 and HTTP/2; HTTP/2 flow control holds one stream alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fakeio import FakeServer, H2Peer, h2_response
from h2wire import settings_payload, window_update
from helpers import dechunk
from wire import get
from zonda.errors import ClientDisconnected

Serve = Callable[..., FakeServer]
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"test")]


def streaming(progress: list[str]) -> Any:
    """Streams three parts, noting each ``send()`` that returned."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        try:
            for part in (b"one", b"two"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
                progress.append(part.decode())
            await send({"type": "http.response.body", "body": b"three"})
            progress.append("done")
        except ClientDisconnected:
            progress.append("disconnected")
            raise

    return app


def test_http1_send_waits_while_writing_is_paused_and_goes_on_at_resume(serve: Serve) -> None:
    progress: list[str] = []
    server = serve(streaming(progress))
    stream = server.connect()
    stream.pause_writing()
    stream.feed(get("/"))
    head, _, body = stream.take().partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert dechunk(body) == (b"one", False)  # the part went to the stream; its send() waits
    assert progress == []
    server.loop.advance(20)  # no timer wakes it within --timeout-write (30 s): only the stream can
    assert progress == [] and stream.take() == b""

    stream.resume_writing()
    assert progress == ["one", "two", "done"]
    assert dechunk(stream.take()) == (b"twothree", True)


def test_http1_a_send_waiting_on_a_paused_stream_raises_when_the_peer_goes(serve: Serve) -> None:
    progress: list[str] = []
    server = serve(streaming(progress))
    stream = server.connect()
    stream.pause_writing()
    stream.feed(get("/"))
    assert progress == []
    stream.reset()
    assert progress == ["disconnected"]
    assert not server.connections


def test_http2_send_waits_while_the_connection_is_paused(serve: Serve) -> None:
    progress: list[str] = []
    server = serve(streaming(progress))
    peer = H2Peer(server.connect())
    peer.send(peer.preface())
    peer.read()
    peer.stream.pause_writing()  # the HTTP/2 connection has the stream's callbacks now
    peer.send(peer.headers(1, GET))
    assert progress == []
    response = h2_response(peer.read(), 1)
    assert response.status == 200 and response.body == b"one" and not response.ended

    peer.stream.resume_writing()
    assert progress == ["one", "two", "done"]
    response = h2_response(peer.read(), 1)
    assert response.body == b"twothree" and response.ended


def test_http2_a_closed_stream_window_holds_that_stream_until_window_update(serve: Serve) -> None:
    progress: list[str] = []
    server = serve(streaming(progress))
    peer = H2Peer(server.connect())
    peer.send(peer.preface(settings_payload(initial_window_size=4)))  # 4 bytes per stream
    peer.read()
    peer.send(peer.headers(1, GET), peer.headers(3, GET))
    frames = peer.read()
    # "one" and the first byte of "two" fill each window; "two"'s send() waits for the rest to go
    assert [h2_response(frames, n).body for n in (1, 3)] == [b"onet", b"onet"]
    assert progress == ["one", "one"]

    peer.send(window_update(1, 100))  # stream 1 only
    assert progress == ["one", "one", "two", "done"]
    frames = peer.read()
    assert h2_response(frames, 1).body == b"wothree" and h2_response(frames, 1).ended
    assert h2_response(frames, 3).body == b""  # stream 3 still waits

    peer.send(window_update(3, 100))
    assert progress.count("done") == 2
    assert h2_response(peer.read(), 3).body == b"wothree"
