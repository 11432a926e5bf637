"""HTTP/2 connection timers on the fake driver: the idle timeout, the preface timeout after ALPN, and the peer's
EOF."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fakeio import FakeServer, FakeTLS, H2Peer, h2_response
from zonda.protocols.http2 import GOAWAY, ErrorCode

Serve = Callable[..., FakeServer]
GET = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"test")]


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200})
    await send({"type": "http.response.body", "body": b"ok"})


def test_an_idle_http2_connection_gets_goaway_at_the_idle_timeout(serve: Serve) -> None:
    server = serve(ok, timeout_h2_idle=20)
    peer = H2Peer(server.connect(tls=FakeTLS()))
    peer.send(peer.preface(), peer.headers(1, GET))
    assert h2_response(peer.read(), 1).body == b"ok"
    server.loop.advance(19.9)
    assert peer.read() == [] and not peer.stream.is_closing()
    server.loop.advance(0.1)
    [goaway] = peer.read()
    assert (goaway.kind, goaway.code, goaway.last_stream_id) == (GOAWAY, ErrorCode.NO_ERROR, 1)
    assert peer.stream.closed and not server.connections


def test_a_request_moves_the_idle_timeout_on(serve: Serve) -> None:
    server = serve(ok, timeout_h2_idle=20)
    peer = H2Peer(server.connect(tls=FakeTLS()))
    peer.send(peer.preface())
    peer.read()
    server.loop.advance(15)
    peer.send(peer.headers(1, GET))
    peer.read()
    server.loop.advance(15)
    assert not peer.stream.is_closing()
    server.loop.advance(5)
    assert peer.stream.closed


def test_a_client_that_never_sends_the_preface_after_alpn_is_dropped(serve: Serve) -> None:
    server = serve(ok, timeout_request_header=10)
    stream = server.connect(tls=FakeTLS())
    stream.take()  # our SETTINGS
    server.loop.advance(9.9)
    assert not stream.is_closing()
    server.loop.advance(0.1)
    assert stream.closed and not server.connections


def test_the_peers_eof_closes_an_http2_connection(serve: Serve) -> None:
    server = serve(ok)
    peer = H2Peer(server.connect(tls=FakeTLS()))
    peer.send(peer.preface())
    peer.stream.feed_eof()
    assert peer.stream.closed and peer.stream.lost and not server.connections


def test_the_answers_to_one_reads_requests_go_out_in_one_write(serve: Serve) -> None:
    """Ten requests in one read: their apps take their turns (queued tasks or eager starts) and the ten
    responses, with the SETTINGS acknowledgement, leave in one write, not one a stream."""
    server = serve(ok)
    peer = H2Peer(server.connect(tls=FakeTLS()))
    peer.send(peer.preface())
    peer.read()
    writes = peer.stream.writes
    peer.send(*(peer.headers(stream_id, GET) for stream_id in range(1, 21, 2)))
    assert peer.stream.writes == writes + 1
    frames = peer.read()
    assert all(h2_response(frames, stream_id).body == b"ok" for stream_id in range(1, 21, 2))


def test_a_response_sent_outside_a_read_goes_out_on_the_same_loop_turn(serve: Serve) -> None:
    """An app that answers later (after an await of its own) still gets its frames written before the loop
    waits for I/O again: the deferred write is a ready callback, not a timer."""
    release = []

    async def later(scope: dict[str, Any], receive: Any, send: Any) -> None:
        waiter = server.loop.create_waiter()
        release.append(waiter)
        await waiter
        await ok(scope, receive, send)

    server = serve(later)
    peer = H2Peer(server.connect(tls=FakeTLS()))
    peer.send(peer.preface(), peer.headers(1, GET))
    peer.read()
    release[0].set_result(None)
    server.loop.run()
    assert h2_response(peer.read(), 1).body == b"ok"
