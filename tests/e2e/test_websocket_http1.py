"""WebSocket over HTTP/1.1 only: the ``websockets`` library's own client against zonda, and the Upgrade
handshake on the wire (its errors, any-case tokens, frames sent with the request, plain HTTP to the same path,
``--ws none``). Behaviours both HTTP versions have are in test_websocket.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from helpers import Record, RunningServer, run_server
from websocket_e2e import make_app, unique
from wire import Wire
from wsframes import handshake_request, text


@pytest.fixture(scope="module")
def record() -> Record:
    return Record()


@pytest.fixture(scope="module")
def server(driver: str, record: Record) -> Iterator[RunningServer]:
    with run_server(make_app(record), loop=driver) as running:
        yield running


@pytest.mark.parametrize("compression", ["deflate", None])
def test_websockets_client(server: RunningServer, record: Record, compression: str | None) -> None:
    """Messages both ways with its permessage-deflate (or none), a subprotocol, and closes both ways."""
    key, closed_key = unique("client"), unique("app-close")
    big_text, big_binary = "é" * (2**19), bytes(range(256)) * 4096
    options = {
        "compression": compression,
        "max_size": None,
        "open_timeout": 5,
        "close_timeout": 5,
        "proxy": None,
    }
    url = f"ws://127.0.0.1:{server.port}"
    with connect(f"{url}/echo?key={key}", subprotocols=["chat", "superchat"], **options) as ws:
        assert [type(e).__name__ for e in ws.protocol.extensions] == (
            ["PerMessageDeflate"] if compression else []
        )
        assert ws.subprotocol == "superchat" and ws.response.headers["x-extra"] == "yes"
        for message in ["hello", b"\x00\x01\xff", "", b"", big_text, big_binary]:
            ws.send(message)
            assert ws.recv(5) == message
        ws.close(4000, "bye")
    assert record.wait(key)[-1] == {"type": "websocket.disconnect", "code": 4000, "reason": "bye"}
    with (
        connect(f"{url}/app-close?key={closed_key}", **options) as ws,
        pytest.raises(ConnectionClosed) as info,
    ):
        ws.recv(5)
    assert info.value.rcvd is not None and (info.value.rcvd.code, info.value.rcvd.reason) == (
        4001,
        "bye from app",
    )
    assert record.wait(closed_key)[-1]["code"] == 4001  # the client echoed it


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (handshake_request("/echo").replace(b"Sec-WebSocket-Key", b"X-Not-The-Key"), 400),
        (handshake_request("/echo").replace(b"Version: 13", b"Version: 8"), 426),
        (handshake_request("/echo").replace(b"GET", b"POST"), 400),
    ],
    ids=["missing-key", "version-8", "post"],
)
def test_handshake_errors(server: RunningServer, request_bytes: bytes, status: int) -> None:
    with Wire(server.port) as wire:
        wire.send(request_bytes)
        response = wire.read_response()
    assert response.status == status
    if status == 426:
        assert response.header("sec-websocket-version") == "13"


def test_handshake_tokens_any_case_and_frames_with_the_request(server: RunningServer) -> None:
    """Firefox's "Connection: keep-alive, Upgrade"; a frame written with the request is read after the 101."""
    request = handshake_request("/echo").replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade")
    with Wire(server.port) as wire:
        wire.send(request.replace(b"Upgrade: websocket", b"Upgrade: WebSocket") + text("early bird"))
        status, _, _ = wire.read_head()
        assert status == 101
        while len(wire.buffer) < 12:
            wire._fill()
        assert wire.buffer == b"\x81\x0aearly bird"


def test_plain_http_to_the_same_path(server: RunningServer) -> None:
    with Wire(server.port) as wire:
        wire.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        response = wire.read_response()
    assert (response.status, response.body) == (200, b"http GET /echo 1.1")


def test_ws_none_serves_plain_http() -> None:
    with run_server(make_app(Record()), ws="none") as server, Wire(server.port) as wire:
        wire.send(handshake_request("/echo"))
        response = wire.read_response()
        assert (response.status, response.body) == (200, b"http GET /echo 1.1")
