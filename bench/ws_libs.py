"""Which sans-io WebSocket layer to build on: wsproto vs websockets, on the echo workload.

Each library parses masked client frames (1 KiB and 64 KiB, text and binary) and serialises the echo, with
permessage-deflate off and on, all in memory. Prints microseconds per echoed message. Run:
    .venv/bin/python bench/ws_libs.py
"""

from __future__ import annotations

import os
import platform
import sys
import time
from importlib.metadata import version

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import BINARY as OP_BINARY
from websockets.frames import TEXT as OP_TEXT
from websockets.frames import Frame
from websockets.protocol import OPEN, Protocol, Side
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage
from wsproto.extensions import PerMessageDeflate as WsprotoDeflate


def client_frames(payload: bytes, text: bool, deflate: bool, count: int) -> bytes:
    """``count`` masked client frames, as a browser would send them."""
    extensions = [PerMessageDeflate(False, False, 15, 15)] if deflate else []
    out = bytearray()
    for _ in range(count):
        frame = Frame(OP_TEXT if text else OP_BINARY, payload)
        out += frame.serialize(mask=True, extensions=extensions)
    return bytes(out)


def bench_websockets(data: bytes, count: int, deflate: bool) -> float:
    extensions = [PerMessageDeflate(False, False, 15, 15)] if deflate else []
    proto = Protocol(Side.SERVER, state=OPEN, max_size=2**24)
    proto.extensions = extensions
    start = time.perf_counter()
    proto.receive_data(data)
    for frame in proto.events_received():
        if frame.opcode is OP_TEXT:
            proto.send_text(frame.data)
        else:
            proto.send_binary(frame.data)
    proto.data_to_send()
    return time.perf_counter() - start


def bench_wsproto(data: bytes, count: int, deflate: bool) -> float:
    extensions = []
    if deflate:
        ext = WsprotoDeflate()
        ext.accept("permessage-deflate")
        extensions = [ext]
    conn = Connection(ConnectionType.SERVER, extensions=extensions)
    start = time.perf_counter()
    conn.receive_data(data)
    out = []
    for event in conn.events():
        if isinstance(event, TextMessage):
            out.append(conn.send(TextMessage(data=event.data)))
        elif isinstance(event, BytesMessage):
            out.append(conn.send(BytesMessage(data=event.data)))
    b"".join(out)
    return time.perf_counter() - start


def main() -> None:
    rows = []
    for size in (1024, 65536):
        for text in (True, False):
            for deflate in (False, True):
                count = 2000 if size == 1024 else 200
                payload = (b"x" * size) if text else os.urandom(size)
                data = client_frames(payload, text, deflate, count)
                results = {}
                for name, fn in (("websockets", bench_websockets), ("wsproto", bench_wsproto)):
                    best = min(fn(data, count, deflate) for _ in range(5))
                    results[name] = best / count * 1e6
                rows.append((size, "text" if text else "binary", deflate, results))
    sys.stdout.write(
        f"Python {platform.python_implementation()} {platform.python_version()},"
        f" websockets {version('websockets')}, wsproto {version('wsproto')}\n"
    )
    sys.stdout.write(
        f"{'size':>6} {'kind':>6} {'deflate':>7} {'websockets us':>14} {'wsproto us':>11} {'ratio':>6}\n"
    )
    for size, kind, deflate, r in rows:
        ratio = r["wsproto"] / r["websockets"]
        sys.stdout.write(
            f"{size:>6} {kind:>6} {deflate!s:>7} {r['websockets']:>14.2f} {r['wsproto']:>11.2f} {ratio:>6.2f}\n"
        )


if __name__ == "__main__":
    main()
