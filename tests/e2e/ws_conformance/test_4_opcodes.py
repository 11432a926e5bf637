"""Autobahn section 4: reserved opcodes fail the connection with 1002."""

from __future__ import annotations

from typing import Any

import pytest

from helpers import wait_for
from wsframes import PING, TEXT, WSClient, assert_still_echoing, frame, text


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
@pytest.mark.parametrize("payload", [b"", b"reserved opcode payload"], ids=["empty", "payload"])
def test_reserved_opcode(ws: WSClient, opcode: int, payload: bytes) -> None:
    """4.1.1-4.1.2, 4.2.1-4.2.2"""
    ws.send(frame(opcode, payload))
    ws.expect_close(1002)


@pytest.mark.parametrize(
    ("opcode", "payload", "how"),
    [
        (5, b"", "one-write"),  # 4.1.3
        (6, b"reserved opcode payload", "one-write"),  # 4.1.4
        (7, b"reserved opcode payload", "octet-wise"),  # 4.1.5
        (13, b"", "one-write"),  # 4.2.3
        (14, b"reserved opcode payload", "one-write"),  # 4.2.4
        (15, b"reserved opcode payload", "octet-wise"),  # 4.2.5
    ],
    ids=["4.1.3", "4.1.4", "4.1.5", "4.2.3", "4.2.4", "4.2.5"],
)
def test_message_before_the_bad_frame_is_echoed_first(
    echo_port: int, seen: dict[str, list[tuple[str, Any]]], opcode: int, payload: bytes, how: str
) -> None:
    """A message, the reserved opcode, then a ping: the message reaches the app and its echo goes out before
    the close 1002 (Autobahn "OK", not "NON-STRICT"); the ping is never answered."""
    name = f"opcode-{opcode}"
    with WSClient(echo_port, f"/?seen={name}") as ws:
        ws.send_as(how, text("Hello, world!"), frame(opcode, payload), frame(PING))
        got = ws.frames_before_close(1002)
        assert [(f.opcode, f.payload) for f in got] == [(TEXT, b"Hello, world!")]
    wait_for(lambda: ("disconnect", 1002) in seen.get(name, []), what="the app's disconnect")
    assert seen[name] == [("receive", "Hello, world!"), ("disconnect", 1002)]
    assert_still_echoing(echo_port)
