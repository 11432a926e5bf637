"""Autobahn section 2: the server answers pings with pongs carrying the same payload."""

from __future__ import annotations

import pytest

from wsframes import PING, PONG, WSClient, frame, text


@pytest.mark.parametrize(
    "payload",
    [b"", b"Hello, world!", b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff", b"\xfe" * 125],
    ids=["empty", "text", "binary", "125-bytes"],
)
def test_pong_echoes_payload(ws: WSClient, payload: bytes) -> None:
    """2.1-2.4"""
    ws.send(frame(PING, payload))
    assert ws.recv_raw(2 + len(payload)) == bytes([0x8A, len(payload)]) + payload
    ws.close_handshake()


def test_ping_too_long(ws: WSClient) -> None:
    """2.5: 126 bytes is over the control frame limit."""
    ws.send(frame(PING, b"\xfe" * 126))
    ws.expect_close(1002)


def test_ping_sent_in_chops(ws: WSClient) -> None:
    """2.6"""
    ws.send_in_chops(frame(PING, b"\xfe" * 125), 1)
    got = ws.recv_frame()
    assert (got.opcode, got.payload) == (PONG, b"\xfe" * 125)
    ws.close_handshake()


@pytest.mark.parametrize("payload", [b"", b"unsolicited pong payload"])
def test_unsolicited_pong_ignored(ws: WSClient, payload: bytes) -> None:
    """2.7, 2.8: nothing comes back for a pong."""
    ws.send(frame(PONG, payload), text("after"))
    assert ws.recv_frame().payload == b"after"
    ws.close_handshake()


def test_pong_then_ping(ws: WSClient) -> None:
    """2.9: only the ping is answered."""
    ws.send(frame(PONG, b"unsolicited"), frame(PING, b"ping"))
    got = ws.recv_frame()
    assert (got.opcode, got.payload) == (PONG, b"ping")
    ws.close_handshake()


@pytest.mark.parametrize("chop", [0, 1])
def test_ten_pings(ws: WSClient, chop: int) -> None:
    """2.10, 2.11: ten pings, answered in order."""
    data = b"".join(frame(PING, b"payload-%d" % i) for i in range(10))
    if chop:
        ws.send_in_chops(data, chop)
    else:
        ws.send(data)
    for i in range(10):
        got = ws.recv_frame()
        assert (got.opcode, got.payload) == (PONG, b"payload-%d" % i)
    ws.close_handshake()
