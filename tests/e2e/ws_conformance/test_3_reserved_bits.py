"""Autobahn section 3: a reserved bit no extension gave a meaning fails the connection with 1002."""

from __future__ import annotations

from typing import Any

import pytest

from h2ws import H2Client
from helpers import wait_for
from wsframes import BINARY, CLOSE, PING, TEXT, WSClient, assert_still_echoing, close_payload, frame, text


@pytest.mark.parametrize("rsv", range(1, 8))
@pytest.mark.parametrize(
    ("opcode", "payload"),
    [(TEXT, b"hello"), (BINARY, b"\x00\xff"), (PING, b"ping"), (CLOSE, close_payload(1000))],
    ids=["text", "binary", "ping", "close"],
)
def test_reserved_bits(ws: WSClient, opcode: int, payload: bytes, rsv: int) -> None:
    """3.1-3.7"""
    ws.send(frame(opcode, payload, rsv=rsv))
    ws.expect_close(1002)


@pytest.mark.parametrize("path", ["/", "/slow"], ids=["echo", "slow-echo"])
@pytest.mark.parametrize(("how", "rsv"), [("one-write", 2), ("frame-wise", 3), ("octet-wise", 4)])
def test_message_before_the_bad_frame_is_echoed_first(
    echo_port: int, seen: dict[str, list[tuple[str, Any]]], how: str, rsv: int, path: str
) -> None:
    """3.2-3.4: a message, then one with a reserved bit set, then a ping. The first message reaches the app and
    its echo goes out before the close 1002 (Autobahn "OK", not "NON-STRICT"); the ping is never answered. The
    slow echo answers a moment later, while the bad frame is already in."""
    name = f"rsv-{how}-{path}"
    with WSClient(echo_port, f"{path}?seen={name}") as ws:
        ws.send_as(how, text("Hello, world!"), frame(TEXT, b"Hello, world!", rsv=rsv), frame(PING))
        got = ws.frames_before_close(1002)
        assert [(f.opcode, f.payload) for f in got] == [(TEXT, b"Hello, world!")]
    wait_for(lambda: ("disconnect", 1002) in seen.get(name, []), what="the app's disconnect")
    assert seen[name] == [("receive", "Hello, world!"), ("disconnect", 1002)]
    assert_still_echoing(echo_port)


def test_an_app_closing_after_the_message_sends_the_failure(
    echo_port: int, seen: dict[str, list[tuple[str, Any]]]
) -> None:
    """The app answers the message before the bad frame by closing (4000): the peer's failure, found first, is
    the close that goes out (1002), and the app hears of it."""
    with WSClient(echo_port, "/close?seen=app-close") as ws:
        ws.send(text("Hello, world!"), frame(TEXT, b"Hello, world!", rsv=2), frame(PING))
        assert ws.frames_before_close(1002) == []
    wait_for(lambda: ("disconnect", 1002) in seen.get("app-close", []), what="the app's disconnect")
    assert seen["app-close"] == [("receive", "Hello, world!"), ("disconnect", 1002)]
    assert_still_echoing(echo_port)


def test_message_before_the_bad_frame_is_echoed_first_over_http2(
    echo_port: int, seen: dict[str, list[tuple[str, Any]]]
) -> None:
    """3.2 on a WebSocket over an HTTP/2 stream (RFC 8441): the same order, then the stream ends; the connection
    and its other streams go on."""
    with H2Client(echo_port) as client:
        ws = client.open_websocket("/?seen=h2")
        assert ws.status == 200
        ws.send(text("Hello, world!"), frame(TEXT, b"Hello, world!", rsv=2), frame(PING))
        got = ws.recv_frame()
        assert (got.opcode, got.payload) == (TEXT, b"Hello, world!")
        ws.expect_close(1002)
        wait_for(lambda: ("disconnect", 1002) in seen.get("h2", []), what="the app's disconnect")
        assert seen["h2"] == [("receive", "Hello, world!"), ("disconnect", 1002)]
        other = client.open_websocket("/")
        other.send(text("still here"))
        assert other.recv_frame().payload == b"still here"
        other.close_handshake()
