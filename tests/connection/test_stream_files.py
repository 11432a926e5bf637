"""Files as an HTTP/2 stream's body on the fake driver (``StreamChannel.send_file``): read a loop turn later in
blocks (``Loop.read_file``), sent as the client's window allows, never more than about one block held by the
core while the window is shut, whatever the file's size; a reset ends the app's send with ClientDisconnected."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fakeio import FakeServer, FakeStream, H2Peer, h2_response
from h2wire import rst, settings_payload, window_update
from zonda.connection.http2 import HTTP2Connection
from zonda.connection.streams import FILE_BLOCK
from zonda.errors import ClientDisconnected
from zonda.protocols.http2 import DATA, HEADERS, RST_STREAM

Serve = Callable[..., FakeServer]
SIZE = 1_000_003


def fields(method: bytes = b"GET") -> list[tuple[bytes, bytes]]:
    return [(b":method", method), (b":scheme", b"http"), (b":path", b"/file"), (b":authority", b"test")]


def file_app(path: Path, outcome: list[str]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"%d" % path.stat().st_size)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            await send({"type": "http.response.pathsend", "path": str(path)})
        except ClientDisconnected:
            outcome.append("disconnected")
            raise
        outcome.append("sent")

    return app


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


def open_h2(server: FakeServer, window: int) -> tuple[FakeStream, H2Peer, HTTP2Connection]:
    stream = server.connect()
    peer = H2Peer(stream)
    peer.send(peer.preface(settings_payload(initial_window_size=window)))
    peer.read()
    conn = stream.protocol
    assert isinstance(conn, HTTP2Connection)
    return stream, peer, conn


def test_a_file_goes_as_the_window_opens_holding_one_block_at_most(serve: Serve, big: Path) -> None:
    outcome: list[str] = []
    server = serve(file_app(big, outcome))
    _, peer, conn = open_h2(server, window=1000)
    peer.send(peer.headers(1, fields()))
    server.loop.run()
    received = h2_response(peer.read(), 1).body
    assert len(received) == 1000 and outcome == []  # the window's worth, the app waiting
    while True:
        held = conn.core.streams[1].pending_size if 1 in conn.core.streams else 0
        assert held <= FILE_BLOCK, f"{held} bytes held for a shut window"
        if outcome:
            break
        peer.send(window_update(1, 150_000), window_update(0, 150_000))
        server.loop.run()
        received += h2_response(peer.read(), 1).body
    assert received == big.read_bytes()
    assert outcome == ["sent"]


def test_head_sends_the_head_alone(serve: Serve, big: Path) -> None:
    outcome: list[str] = []
    server = serve(file_app(big, outcome))
    _, peer, _ = open_h2(server, window=65535)
    peer.send(peer.headers(1, fields(b"HEAD")))
    server.loop.run()
    frames = peer.read()
    response = h2_response(frames, 1)
    assert response.ended and response.body == b""
    assert dict(response.headers)[b"content-length"] == b"%d" % SIZE
    assert [f.kind for f in frames if f.stream_id == 1] == [HEADERS]
    assert outcome == ["sent"]


def test_a_reset_mid_file_ends_the_send(serve: Serve, big: Path) -> None:
    outcome: list[str] = []
    server = serve(file_app(big, outcome))
    _, peer, conn = open_h2(server, window=1000)
    peer.send(peer.headers(1, fields()))
    server.loop.run()
    assert [f.kind for f in peer.read() if f.stream_id == 1] == [HEADERS, DATA]
    peer.send(rst(1))
    server.loop.run()
    assert outcome == ["disconnected"]
    assert not [f for f in peer.read() if f.stream_id == 1 and f.kind != RST_STREAM]
    assert 1 not in conn.core.streams
