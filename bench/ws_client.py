"""The load generator bench/ws.py starts (``python -m bench.ws_client``, from the repo root): one uvloop
process driving ``--connections`` WebSocket connections to 127.0.0.1 in a closed echo loop, each with the
``websockets`` sans-io ``ClientProtocol`` straight from ``asyncio.Protocol`` callbacks (no coroutine per
message).

It connects, prints ``READY``, reads ``GO <start> <end>`` (time.monotonic) on stdin, sends from then on,
counts the echoes between the two instants and prints ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("bench.ws")


# --------------------------------------------------------------------------- payloads


def make_payload(size: int) -> bytes:
    """ASCII (valid as text), JSON-like so permessage-deflate has something to do, same for every server."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += b'{"id":%d,"name":"item-%d","price":%d.%02d,"tags":["a","b%d"]},' % (
            i, i * 7919 % 10007, i * 31 % 997, i % 100, i % 13,
        )  # fmt: skip
        i += 1
    return bytes(out[:size])


# --------------------------------------------------------------------------- client mode


class EchoConnection(asyncio.Protocol):
    """One WebSocket connection of the load generator: a closed send/echo loop over ClientProtocol."""

    def __init__(self, load: LoadGen) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        self.load = load
        self.proto = ClientProtocol(
            parse_uri(f"ws://127.0.0.1:{load.port}/"), extensions=load.extension_factories(), max_size=None
        )
        self.transport: asyncio.Transport | None = None
        self.open = False
        self.parts: list[bytes] = []
        self.lost = load.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        self.proto.send_request(self.proto.connect())
        self.flush()

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Frame, Opcode

        proto = self.proto
        proto.receive_data(data)
        for event in proto.events_received():
            if type(event) is not Frame:
                self.on_handshake()
            elif event.opcode is Opcode.TEXT or event.opcode is Opcode.BINARY or event.opcode is Opcode.CONT:
                if not event.fin:
                    self.parts.append(bytes(event.data))
                    continue
                message = event.data
                if self.parts:
                    message = b"".join([*self.parts, message])
                    self.parts = []
                self.on_echo(message)
        self.flush()

    def on_handshake(self) -> None:
        exc = self.proto.handshake_exc
        if exc is not None:
            self.load.fail(f"handshake failed: {exc!r}")
            return
        self.open = True
        self.load.negotiated = ", ".join(ext.name for ext in self.proto.extensions) or "none"
        self.load.on_open(self)

    def on_echo(self, data: Any) -> None:
        load = self.load
        if load.verify and data != load.payload:
            load.errors += 1
            log.error("echo mismatch: got %d bytes, sent %d", len(data), len(load.payload))
        load.count += 1
        if load.running:
            self.send()
        else:
            self.proto.send_close()

    def send(self) -> None:
        if self.load.text:
            self.proto.send_text(self.load.payload)
        else:
            self.proto.send_binary(self.load.payload)

    def flush(self) -> None:
        transport = self.transport
        assert transport is not None
        for chunk in self.proto.data_to_send():
            if chunk:
                transport.write(chunk)
            else:
                transport.close()  # websockets' EOF marker: the closing handshake is done

    def connection_lost(self, exc: Exception | None) -> None:
        if self.load.running and not self.lost.done():
            self.load.fail(f"connection lost during the run: {exc!r}")
        if not self.lost.done():
            self.lost.set_result(None)


class LoadGen:
    """All connections of one client process, and the counters of the measured window."""

    def __init__(self, args: argparse.Namespace, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.port: int = args.port
        self.payload = make_payload(args.size)
        self.text = args.kind == "text"
        self.deflate = args.deflate == "on"
        self.verify = not args.no_verify
        self.conns = [EchoConnection(self) for _ in range(args.connections)]
        self.opened = 0
        self.all_open = loop.create_future()
        self.running = False
        self.count = 0
        self.errors = 0
        self.negotiated = "none"
        self.failure: str | None = None

    def extension_factories(self) -> list[Any]:
        if not self.deflate:
            return []
        from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

        # What websockets' own clients offer by default.
        return [
            ClientPerMessageDeflateFactory(
                server_max_window_bits=12, client_max_window_bits=12, compress_settings={"memLevel": 5}
            )
        ]

    def on_open(self, conn: EchoConnection) -> None:
        self.opened += 1
        if self.opened == len(self.conns) and not self.all_open.done():
            self.all_open.set_result(None)

    def fail(self, reason: str) -> None:
        self.failure = self.failure or reason
        if not self.all_open.done():
            self.all_open.set_exception(RuntimeError(reason))

    def start(self) -> None:
        self.running = True
        for conn in self.conns:
            conn.send()
            conn.flush()

    async def connect(self) -> None:
        for conn in self.conns:
            await self.loop.create_connection(lambda c=conn: c, "127.0.0.1", self.port)  # type: ignore[misc]
        await asyncio.wait_for(self.all_open, 30)

    async def close(self) -> None:
        """Stop sending: each connection closes once its last echo is back; abort what is left after 5 s."""
        self.running = False
        lost = [conn.lost for conn in self.conns]
        _, pending = await asyncio.wait(lost, timeout=5)
        for conn in self.conns:
            if not conn.lost.done() and conn.transport is not None:
                conn.transport.abort()
        if pending:
            await asyncio.wait(pending, timeout=1)


def cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def client_main(args: argparse.Namespace) -> dict[str, Any]:
    """Connect, say READY, read ``GO <start> <end>`` (time.monotonic) on stdin, count echoes in between."""
    loop = asyncio.get_running_loop()
    load = LoadGen(args, loop)
    await load.connect()
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    _, start_at, end_at = line.split()
    load.start()  # the warm-up runs from here to start_at
    marks: list[tuple[float, int, float]] = []

    def mark() -> None:
        marks.append((time.monotonic(), load.count, cpu_now()))

    for at in (float(start_at), float(end_at)):
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        mark()
    await load.close()
    (t0, n0, c0), (t1, n1, c1) = marks
    return {
        "round_trips": n1 - n0,
        "seconds": t1 - t0,
        "cpu_s": c1 - c0,
        "errors": load.errors,
        "failure": load.failure,
        "negotiated": load.negotiated,
    }


def run_client(args: argparse.Namespace) -> int:
    import uvloop

    result = uvloop.run(client_main(args))
    sys.stdout.write("RESULT " + json.dumps(result) + "\n")
    return 0


def parse_client_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="the load generator bench/ws.py starts")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--kind", choices=("binary", "text"), default="binary")
    p.add_argument("--deflate", choices=("off", "on"), default="off")
    p.add_argument("--no-verify", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run_client(parse_client_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
