"""A closed connection lets go of its driver's stream at once, not when the cyclic garbage collector next runs.

A connection and its session refer to each other (the session writes through the connection, the connection
hands events to the session), so the pair is freed only by the cyclic collector, which runs rarely for objects
that lived through a few collections: any connection that was open for a while. If the pair still held the
driver's stream, every closed TLS connection would keep its TLS state and buffers (256 KiB of them in asyncio's
and uvloop's SSL protocol) until then: bench/soak.py saw RSS grow by a third over 20,000 TLS connection cycles.
These tests turn the collector off, close connections, and count the server's ``ssl.SSLObject``s still alive.

Not on trio: a ``trio.SSLStream`` is in a reference cycle of its own (its handshake-once helper holds one of its
bound methods), so there every closed TLS stream waits for the collector whatever zonda holds.
"""

from __future__ import annotations

import gc
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from helpers import read_until_closed, run_server, wait_for
from tlsutil import TLSFiles, make_tls_files

CONNECTIONS = 12


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": message.get("text")})
        await receive()  # websocket.disconnect
        return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def server_ssl_objects() -> int:
    """``ssl.SSLObject``s alive in this process, garbage in cycles included: the clients here use
    ``ssl.SSLSocket``s, so each is a server connection's."""
    return sum(1 for obj in gc.get_objects() if type(obj) is ssl.SSLObject)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def http1_close(port: int, files: TLSFiles) -> None:
    """One request with ``Connection: close`` on a new connection; the server answers and closes."""
    context = files.client_context()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 200")


def http2_alpn(port: int, files: TLSFiles) -> None:
    """A connection that ALPN turns into HTTP/2 (the HTTP/1.1 connection object hands its stream over)."""
    with httpx.Client(http2=True, verify=files.client_context(alpn=["h2"]), timeout=10) as client:
        response = client.get(f"https://127.0.0.1:{port}/")
        assert (response.http_version, response.text) == ("HTTP/2", "ok")


def websocket_tls(port: int, files: TLSFiles) -> None:
    with connect(f"wss://127.0.0.1:{port}/", ssl=files.threaded_client_context(), open_timeout=10) as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "hi"


@pytest.mark.drivers("asyncio", "uvloop")
@pytest.mark.parametrize("cycle", [http1_close, http2_alpn, websocket_tls], ids=["http1", "h2", "wss"])
def test_closed_tls_connections_let_go_of_their_streams(
    tmp_path: Path,
    collector_off: None,
    cycle: Callable[[int, TLSFiles], None],
) -> None:
    files = make_tls_files(tmp_path)
    with run_server(app, **files.server_options(http="auto", access_log=False)) as server:
        cycle(server.port, files)  # the first connection warms up what the server keeps for good
        gc.collect()
        before = server_ssl_objects()
        for _ in range(CONNECTIONS):
            cycle(server.port, files)
        # the server sees each close a little after the client: a few may still be on their way out
        wait_for(
            lambda: server_ssl_objects() <= before + 1,
            timeout=10,
            what=f"closed connections to free their TLS objects ({server_ssl_objects() - before} of "
            f"{CONNECTIONS} still alive with the cyclic collector off)",
        )
