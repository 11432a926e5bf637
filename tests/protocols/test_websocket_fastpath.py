"""The WebSocket fast path (``WSConnection`` cutting frames itself) against websockets' own parser.

Random frame streams (messages, control frames, fragments, protocol errors, oversize frames), cut at random
read boundaries, with sends and closes in between: both paths must give the same events and the same bytes.
"""

from __future__ import annotations

import os
import random

import pytest
from websockets.frames import Close, Frame, Opcode

from zonda.protocols.websocket import WSConnection, WSSettings

SMALL = 70000


def frames(rng: random.Random) -> bytes:
    out: list[bytes] = []
    for _ in range(rng.randint(1, 12)):
        r = rng.random()
        size = rng.choice([0, 1, 5, 125, 126, 127, 200, 65535, 65536, 70000])
        if r < 0.35:
            out.append(Frame(Opcode.BINARY, os.urandom(size)).serialize(mask=True, extensions=[]))
        elif r < 0.6:
            text = "é" * (size // 2) if rng.random() < 0.5 else "x" * size
            data = text.encode()
            if rng.random() < 0.08 and data:
                data = data[:-1] if data.endswith(b"\xa9") else data + b"\xff"  # invalid UTF-8
            out.append(Frame(Opcode.TEXT, data).serialize(mask=True, extensions=[]))
        elif r < 0.7:
            out.append(
                Frame(Opcode.PING, os.urandom(rng.randint(0, 125))).serialize(mask=True, extensions=[])
            )
        elif r < 0.75:
            out.append(Frame(Opcode.PONG, b"x").serialize(mask=True, extensions=[]))
        elif r < 0.85:  # fragmented message, maybe with a ping in between
            op = rng.choice([Opcode.TEXT, Opcode.BINARY])
            out.append(Frame(op, b"ab", fin=False).serialize(mask=True, extensions=[]))
            if rng.random() < 0.5:
                out.append(Frame(Opcode.PING, b"p").serialize(mask=True, extensions=[]))
            out.append(Frame(Opcode.CONT, b"cd", fin=True).serialize(mask=True, extensions=[]))
        elif r < 0.88:
            out.append(Frame(Opcode.CONT, b"zz").serialize(mask=True, extensions=[]))  # unexpected
        elif r < 0.91:
            out.append(
                Frame(Opcode.CLOSE, Close(1000, "bye").serialize()).serialize(mask=True, extensions=[])
            )
        elif r < 0.93:
            out.append(Frame(Opcode.BINARY, b"unmasked").serialize(mask=False, extensions=[]))
        elif r < 0.95:
            f = bytearray(Frame(Opcode.BINARY, b"rsv").serialize(mask=True, extensions=[]))
            f[0] |= 0x40
            out.append(bytes(f))
        elif r < 0.97:
            out.append(
                Frame(Opcode.BINARY, os.urandom(SMALL + rng.choice([1, 100, 126, 5000]))).serialize(
                    mask=True, extensions=[]
                )
            )
        else:
            out.append(bytes([0x8B, 0x80, 1, 2, 3, 4]))  # reserved opcode
    return b"".join(out)


def run(stream: bytes, cuts: list[int], fast: bool, seed: int) -> tuple[list[str], bytes, bool, bool]:
    actions = random.Random(seed)
    conn = WSConnection(WSSettings(max_size=SMALL, ping_interval=None), [], lambda: 0.0)
    if not fast:
        conn._fast = False
    events: list[str] = []
    outs: list[bytes] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        events.extend(repr(e) for e in conn.receive_data(stream[prev:cut]))
        outs.append(conn.data_to_send())
        prev = cut
        if conn.open and actions.random() < 0.1:
            message = "reply" if actions.random() < 0.5 else b"r" * actions.choice([3, 300, 70000])
            conn.send_message(message)
            outs.append(conn.data_to_send())
        if conn.open and actions.random() < 0.02:
            conn.send_close(1000)
            outs.append(conn.data_to_send())
    return events, b"".join(outs), conn.closing, conn.open


@pytest.mark.parametrize("seed", range(300))
def test_fast_path_matches_websockets(seed: int) -> None:
    rng = random.Random(seed)
    stream = frames(rng)
    k = rng.choice([0, 1, 3, 10, 50])
    cuts = sorted(rng.sample(range(1, len(stream)), min(k, len(stream) - 1))) if len(stream) > 1 else []
    if rng.random() < 0.05:
        cuts = list(range(1, min(len(stream), 300)))
    assert run(stream, cuts, True, seed) == run(stream, cuts, False, seed)
