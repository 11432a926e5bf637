"""Autobahn section 4: reserved opcodes fail the connection with 1002."""

from __future__ import annotations

import pytest

from wsframes import PING, WSClient, frame, text


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
@pytest.mark.parametrize("payload", [b"", b"reserved opcode payload"], ids=["empty", "payload"])
def test_reserved_opcode(ws: WSClient, opcode: int, payload: bytes) -> None:
    """4.1.1-4.1.2, 4.2.1-4.2.2"""
    ws.send(frame(opcode, payload))
    ws.expect_close(1002)


@pytest.mark.parametrize("opcode", [5, 13])
def test_nothing_after_the_bad_frame(ws: WSClient, opcode: int) -> None:
    """4.1.3, 4.2.3: a message, the reserved opcode, then a ping that is never answered."""
    ws.send(text("hello"), frame(opcode, b"x"), frame(PING, b"ping"))
    # the echo may lose the race with the failure (Autobahn's NON-STRICT); the ping is never answered
    assert [f.payload for f in ws.frames_before_close(1002)] in ([], [b"hello"])
