"""Size limits (ws_max_size): whole messages, reassembled fragments and inflated payloads over the limit all
fail with 1009, before the rest is read; and many messages in flight are all answered."""

from __future__ import annotations

import os
import zlib

import pytest

from wsframes import BINARY, CONT, RSV1, SMALL, TEXT, WSClient, deflate, frame, inflate, text


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_message_at_the_limit(small: WSClient, opcode: int) -> None:
    small.send(frame(opcode, b"x" * SMALL))
    assert small.recv_frame().payload == b"x" * SMALL
    small.close_handshake()


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
def test_message_over_the_limit(small: WSClient, opcode: int) -> None:
    small.send(frame(opcode, b"x" * (SMALL + 1)))
    small.expect_close(1009)


@pytest.mark.parametrize("length", [SMALL + 200, 2**16, 2**63 - 1])
def test_refused_from_the_header(small: WSClient, length: int) -> None:
    """Only the header is sent: the server does not wait for a payload it will not take."""
    small.send(frame(BINARY, b"", length=length))
    small.expect_close(1009)


def test_fragments_at_the_limit(small: WSClient) -> None:
    quarter = SMALL // 4
    small.send(*(frame(TEXT if i == 0 else CONT, b"y" * quarter, fin=i == 3) for i in range(4)))
    assert small.recv_frame().payload == b"y" * SMALL
    small.close_handshake()


def test_fragments_over_the_limit(small: WSClient) -> None:
    """The fifth quarter goes over: closed at once, though the message never ends."""
    quarter = SMALL // 4
    small.send(*(frame(TEXT if i == 0 else CONT, b"y" * quarter, fin=False) for i in range(5)))
    small.expect_close(1009)


def test_zip_bomb(small_port: int) -> None:
    """A few hundred bytes that would inflate to 1 MiB: refused once the inflated size passes the limit."""
    with WSClient(small_port, extensions="permessage-deflate") as ws:
        assert ws.header("sec-websocket-extensions") == "permessage-deflate"
        bomb = deflate(b"\x00" * 2**20)
        assert len(bomb) < 2000
        ws.send(frame(BINARY, bomb, rsv=RSV1))
        ws.expect_close(1009)


def test_zip_bomb_in_fragments(small_port: int) -> None:
    with WSClient(small_port, extensions="permessage-deflate") as ws:
        compressor = zlib.compressobj(wbits=-15)
        first = compressor.compress(os.urandom(SMALL - 10)) + compressor.flush(zlib.Z_SYNC_FLUSH)
        second = deflate(b"\x00" * 20, compressor)  # together 10 bytes over
        ws.send(frame(BINARY, first, fin=False, rsv=RSV1), frame(CONT, second))
        ws.expect_close(1009)


def test_compressed_message_at_the_limit(small_port: int) -> None:
    with WSClient(small_port, extensions="permessage-deflate") as ws:
        ws.send(frame(BINARY, deflate(b"\x00" * SMALL), rsv=RSV1))
        assert inflate(ws.recv_frame().payload) == b"\x00" * SMALL
        ws.close_handshake()


def test_many_messages_in_flight(ws: WSClient) -> None:
    """9.x in small: 2000 messages written at once are all echoed, in order."""
    ws.send(*(text(b"%d" % i) for i in range(2000)))
    assert [ws.recv_frame().payload for _ in range(2000)] == [b"%d" % i for i in range(2000)]
    ws.close_handshake()


def test_large_message(ws: WSClient) -> None:
    """9.1.x/9.2.x in small: a 4 MiB binary message in one frame."""
    payload = bytes(range(256)) * 16384
    ws.send(frame(BINARY, payload))
    assert ws.recv_frame().payload == payload
    ws.close_handshake()
