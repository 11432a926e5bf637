"""Autobahn section 5: fragmented messages are reassembled; control frames may come between fragments but are
never fragmented themselves; fragments out of order fail with 1002."""

from __future__ import annotations

import time
from typing import Any

import pytest

from helpers import wait_for
from wsframes import (
    BINARY,
    CLOSE,
    CONT,
    PING,
    PONG,
    SMALL,
    TEXT,
    WSClient,
    assert_still_echoing,
    close,
    frame,
)


@pytest.mark.parametrize("opcode", [PING, 0xA], ids=["ping", "pong"])
def test_fragmented_control_frame(ws: WSClient, opcode: int) -> None:
    """5.1, 5.2"""
    ws.send(frame(opcode, b"frag1", fin=False), frame(CONT, b"frag2"))
    ws.expect_close(1002)


@pytest.mark.parametrize("opcode", [TEXT, BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("chop", [0, 1])
def test_two_fragments(ws: WSClient, opcode: int, chop: int) -> None:
    """5.3-5.5: one message back, in one frame."""
    data = frame(opcode, b"fragment1", fin=False) + frame(CONT, b"fragment2")
    if chop:
        ws.send_in_chops(data, chop)
    else:
        ws.send(data)
    assert ws.recv_raw(20) == frame(opcode, b"fragment1fragment2", mask=False)
    ws.close_handshake()


@pytest.mark.parametrize("control", [PING, PONG], ids=["ping", "pong"])
def test_control_frame_between_fragments(ws: WSClient, control: int) -> None:
    """5.6-5.8: a ping is answered at once, a pong ignored; the message comes back whole."""
    ws.send(frame(TEXT, b"fragment1", fin=False), frame(control, b"ctl"), frame(CONT, b"fragment2"))
    if control == PING:
        assert ws.recv_raw(5) == b"\x8a\x03ctl"
    assert ws.recv_raw(20) == frame(TEXT, b"fragment1fragment2", mask=False)
    ws.close_handshake()


@pytest.mark.parametrize(
    "frames",
    [
        [frame(CONT, b"fragment1")],  # 5.9
        [frame(CONT, b"fragment1", fin=False), frame(CONT, b"fragment2")],  # 5.12
        [frame(TEXT, b"fragment1", fin=False), frame(TEXT, b"fragment2")],  # 5.18
        [frame(BINARY, b"fragment1", fin=False), frame(TEXT, b"fragment2", fin=False)],
        [frame(TEXT, b"fragment1", fin=False), frame(BINARY, b"fragment2")],
    ],
    ids=["lone-continuation", "continuations-only", "text-in-text", "text-in-binary", "binary-in-text"],
)
def test_fragments_out_of_order(ws: WSClient, frames: list[bytes]) -> None:
    ws.send(*frames)
    ws.expect_close(1002)


def test_new_message_after_a_complete_one(echo_port: int, seen: dict[str, list[tuple[str, Any]]]) -> None:
    """5.15: the first message is fine and echoed before the close (Autobahn "OK", not "NON-STRICT"); the
    stray continuation after it fails the connection with 1002."""
    with WSClient(echo_port, "/?seen=5.15") as ws:
        ws.send(
            frame(TEXT, b"fragment1", fin=False),
            frame(CONT, b"fragment2"),
            frame(CONT, b"fragment3", fin=False),
            frame(TEXT, b"fragment4"),
        )
        got = ws.frames_before_close(1002)
        assert [(f.opcode, f.fin, f.payload) for f in got] == [(TEXT, True, b"fragment1fragment2")]
    wait_for(lambda: ("disconnect", 1002) in seen.get("5.15", []), what="the app's disconnect")
    assert seen["5.15"] == [("receive", "fragment1fragment2"), ("disconnect", 1002)]
    assert_still_echoing(echo_port)


def test_pings_between_fragments_with_pauses(ws: WSClient) -> None:
    """5.19, 5.20: fragments and pings trickle in; each ping is answered as it arrives."""
    parts = [frame(TEXT, b"frag1", fin=False), frame(PING, b"pongme 1!"), frame(CONT, b"frag2", fin=False)]
    parts += [frame(PING, b"pongme 2!"), frame(CONT, b"frag3")]
    for part in parts:
        ws.send(part)
        time.sleep(0.01)
        if part[0] & 0xF == PING:
            assert ws.recv_frame().opcode == PONG
    assert ws.recv_frame().payload == b"frag1frag2frag3"
    ws.close_handshake()


def test_many_small_and_empty_fragments(ws: WSClient) -> None:
    data = frame(BINARY, b"", fin=False) + b"".join(frame(CONT, bytes([i]), fin=False) for i in range(100))
    ws.send(data + frame(CONT, b""), frame(TEXT, b"", fin=False), frame(CONT, b""))
    assert ws.recv_frame().payload == bytes(range(100))
    assert ws.recv_raw(2) == b"\x81\x00"
    ws.close_handshake()


def test_ping_between_fragments_at_the_size_limit(small: WSClient) -> None:
    """A 125-byte ping inside a message one byte short of ws_max_size is still just a ping."""
    small.send(frame(BINARY, b"a" * (SMALL - 1), fin=False), frame(PING, b"p" * 125), frame(CONT, b"b"))
    assert small.recv_frame().payload == b"p" * 125
    assert small.recv_frame().payload == b"a" * (SMALL - 1) + b"b"
    small.close_handshake()


def test_close_between_fragments(ws: WSClient) -> None:
    """RFC 6455 §5.4: a close frame may come between fragments; the unfinished message is dropped."""
    ws.send(frame(TEXT, b"fragment1", fin=False), close(1000))
    got = ws.expect_close(1000)
    assert got.opcode == CLOSE
