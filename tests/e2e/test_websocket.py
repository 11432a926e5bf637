"""WebSocket end to end: a real zonda on loopback, driven by the ``websockets`` client and by raw sockets.

Messages, compression, subprotocols, close codes both ways, denial (403 and websocket.http.response), handshake
errors, ``--ws none``, the scope, app errors, abrupt loss, keep-alive pings, back-pressure both ways, shutdown
and access log lines.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from helpers import (
    Record,
    count_when_told,
    echo_messages,
    rst_close,
    run_server,
    send_denial,
    until_disconnect,
)
from wire import Wire
from wsframes import BINARY, CLOSE, PING, PONG, WSClient, close, frame, handshake_request, text

Scope = dict[str, Any]


def make_app(record: Record) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["db"] = "connected"
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path, query = scope["path"], parse_qs(scope["query_string"].decode())
        key = query.get("key", [path])[0]
        if scope["type"] == "http":
            body = f"http {scope['method']} {path}".encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        connect_message = await receive()
        assert connect_message == {"type": "websocket.connect"}
        await route(path, key, scope, receive, send)

    async def accept(send: Any, **extra: Any) -> None:
        await send({"type": "websocket.accept", **extra})

    async def route(path: str, key: str, scope: Scope, receive: Any, send: Any) -> None:
        if path == "/echo":
            offered = scope["subprotocols"]
            await accept(send, subprotocol=offered[-1] if offered else None, headers=[(b"x-extra", b"yes")])
            record.add(key, await echo_messages(receive, send))
        elif path.endswith("/scope"):
            record.add(key, dict(scope))
            await accept(send)
            await until_disconnect(receive, record, key + "-end")
        elif path in ("/app-close", "/app-close-later"):
            await accept(send)
            if path == "/app-close-later":
                await receive()  # closes from a later task step, not the one that accepted
            await send({"type": "websocket.close", "code": 4001, "reason": "bye from app"})
            await until_disconnect(receive, record, key)
        elif path == "/deny":
            await send({"type": "websocket.close"})
        elif path == "/denial":
            await send_denial(send)
        elif path == "/raise-before":
            raise RuntimeError("boom before accept")
        elif path == "/raise-after":
            await accept(send)
            await receive()
            raise RuntimeError("boom after accept")
        elif path == "/wait":
            await accept(send)
            await until_disconnect(receive, record, key)
        elif path == "/slow-reader":
            await accept(send)
            await count_when_told(receive, record, key)
        elif path == "/flood":  # sends 100 x 256 KiB, noting each send that returned
            await accept(send)
            for i in range(100):
                await send({"type": "websocket.send", "bytes": b"%03d" % i + b"z" * 262141})
                record.add(key, i)
            await until_disconnect(receive, record, key + "-end")

    return app


@pytest.fixture(scope="module")
def record() -> Record:
    return Record()


@pytest.fixture(scope="module")
def server(driver: str, record: Record) -> Iterator[Any]:
    with run_server(make_app(record), loop=driver) as running:
        yield running


def ws_url(server: Any, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


def client(server: Any, path: str, **kwargs: Any) -> connect:
    kwargs.setdefault("max_size", None)
    kwargs.setdefault("ping_interval", None)
    return connect(ws_url(server, path), proxy=None, open_timeout=5, close_timeout=5, **kwargs)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 20))


# ---------------------------------------------------------------------------- messages


@pytest.mark.parametrize("compression", ["deflate", None])
def test_messages(server: Any, record: Record, compression: str | None) -> None:
    big_text, big_binary = "é" * (2**19), bytes(range(256)) * 4096  # 1 MiB each

    async def talk() -> ClientConnection:
        async with client(server, "/echo?key=messages", compression=compression) as ws:
            for message in ["hello", b"\x00\x01\xff", "", b"", big_text, big_binary]:
                await ws.send(message)
                assert await ws.recv() == message
            return ws

    ws = run(talk())
    assert [type(e).__name__ for e in ws.protocol.extensions] == (
        ["PerMessageDeflate"] if compression else []
    )
    assert ws.response is not None and ws.response.headers["x-extra"] == "yes"


def test_compression_off() -> None:
    with run_server(make_app(Record()), ws_per_message_deflate=False) as server:

        async def talk() -> None:
            async with client(server, "/echo") as ws:
                assert ws.protocol.extensions == []
                await ws.send("x" * 1000)
                assert await ws.recv() == "x" * 1000

        run(talk())


def test_subprotocols(server: Any, record: Record) -> None:
    async def talk() -> None:
        async with client(server, "/echo", subprotocols=["chat", "superchat"]) as ws:
            assert ws.subprotocol == "superchat"
        async with client(server, "/echo") as ws:
            assert ws.subprotocol is None

    run(talk())


# ---------------------------------------------------------------------------- closing


def test_client_closes_with_code(server: Any, record: Record) -> None:
    async def talk() -> None:
        async with client(server, "/echo?key=client-close") as ws:
            await ws.send("hi")
            await ws.recv()
            await ws.close(4000, "bye")
            assert ws.close_code == 4000

    run(talk())
    assert record.wait("client-close")[-1] == {"type": "websocket.disconnect", "code": 4000, "reason": "bye"}


def test_client_closes_without_code(server: Any, record: Record) -> None:
    with WSClient(server.port, "/echo?key=no-code") as ws:
        ws.send(frame(CLOSE))
        ws.expect_close(None)
    assert record.wait("no-code")[-1] == {"type": "websocket.disconnect", "code": 1005, "reason": ""}


def test_app_closes_with_code(server: Any, record: Record) -> None:
    async def talk() -> None:
        async with client(server, "/app-close?key=app-close") as ws:
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (4001, "bye from app")

    run(talk())
    assert record.wait("app-close")[-1]["code"] == 4001  # the client echoed it


def test_close_before_accept_is_403(server: Any) -> None:
    async def talk() -> None:
        with pytest.raises(InvalidStatus) as info:
            async with client(server, "/deny"):
                pass
        assert info.value.response.status_code == 403

    run(talk())


def test_denial_response(server: Any) -> None:
    with Wire(server.port) as wire:
        wire.send(handshake_request("/denial"))
        response = wire.read_response()
    assert response.status == 418
    assert response.header("x-denied") == "yes"
    assert response.body == b"no websockets here"


# ---------------------------------------------------------------------------- handshake


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (handshake_request("/echo").replace(b"Sec-WebSocket-Key", b"X-Not-The-Key"), 400),
        (handshake_request("/echo").replace(b"Version: 13", b"Version: 8"), 426),
        (handshake_request("/echo").replace(b"GET", b"POST"), 400),
    ],
    ids=["missing-key", "version-8", "post"],
)
def test_handshake_errors(server: Any, request_bytes: bytes, status: int) -> None:
    with Wire(server.port) as wire:
        wire.send(request_bytes)
        response = wire.read_response()
    assert response.status == status
    if status == 426:
        assert response.header("sec-websocket-version") == "13"


def test_handshake_tokens_any_case_and_frames_with_the_request(server: Any) -> None:
    """Firefox's "Connection: keep-alive, Upgrade"; a frame written with the request is read after the 101."""
    request = handshake_request("/echo").replace(b"Connection: Upgrade", b"Connection: keep-alive, Upgrade")
    with Wire(server.port) as wire:
        wire.send(request.replace(b"Upgrade: websocket", b"Upgrade: WebSocket") + text("early bird"))
        status, _, _ = wire.read_head()
        assert status == 101
        while len(wire.buffer) < 12:
            wire._fill()
        assert wire.buffer == b"\x81\x0aearly bird"


def test_plain_http_to_the_same_path(server: Any) -> None:
    with Wire(server.port) as wire:
        wire.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        response = wire.read_response()
    assert (response.status, response.body) == (200, b"http GET /echo")


def test_ws_none_serves_plain_http() -> None:
    with run_server(make_app(Record()), ws="none") as server, Wire(server.port) as wire:
        wire.send(handshake_request("/echo"))
        response = wire.read_response()
        assert (response.status, response.body) == (200, b"http GET /echo")


# ---------------------------------------------------------------------------- scope


def test_scope(server: Any, record: Record) -> None:
    with WSClient(
        server.port, "/caf%C3%A9/scope?key=scope&a=1", headers=["Sec-WebSocket-Protocol: p1, p2"]
    ) as ws:
        scope = record.wait("scope")[-1]
        ws.close_handshake()
        client_port = ws.sock.getsockname()[1]
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["asgi"]["version"] == "3.0" and scope["http_version"] == "1.1"
    assert scope["path"] == "/café/scope" and scope["raw_path"] == b"/caf%C3%A9/scope"
    assert scope["query_string"] == b"key=scope&a=1"
    assert scope["subprotocols"] == ["p1", "p2"]
    assert (b"sec-websocket-protocol", b"p1, p2") in scope["headers"]
    assert (b"upgrade", b"websocket") in scope["headers"]
    assert scope["client"] == ("127.0.0.1", client_port)
    assert scope["server"] == ("127.0.0.1", server.port)
    assert scope["root_path"] == ""
    assert scope["state"] == {"db": "connected"}
    assert "websocket.http.response" in scope["extensions"]
    assert "method" not in scope


def test_scope_root_path(record: Record) -> None:
    with run_server(make_app(record), root_path="/mount") as server:
        with WSClient(server.port, "/scope?key=root") as ws:
            ws.close_handshake()
        scope = record.wait("root")[-1]
        assert (scope["root_path"], scope["path"], scope["raw_path"]) == (
            "/mount",
            "/mount/scope",
            b"/mount/scope",
        )


# ---------------------------------------------------------------------------- failures


def test_app_raises_after_accept(server: Any, logs: pytest.LogCaptureFixture) -> None:
    async def talk() -> None:
        async with client(server, "/raise-after") as ws:
            await ws.send("trigger")
            with pytest.raises(ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1011

    run(talk())
    time.sleep(0.1)
    errors = [r for r in logs.records if r.name == "zonda.error" and r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert errors[0].exc_info is not None and "boom after accept" in str(errors[0].exc_info[1])


def test_app_raises_before_accept(server: Any, logs: pytest.LogCaptureFixture) -> None:
    async def talk() -> None:
        with pytest.raises(InvalidStatus) as info:
            async with client(server, "/raise-before"):
                pass
        assert info.value.response.status_code == 500

    run(talk())
    errors = [r for r in logs.records if r.name == "zonda.error" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "boom before accept" in str(errors[0].exc_info[1])  # type: ignore[index]


@pytest.mark.parametrize("how", ["close", "reset"])
def test_abrupt_client_loss(server: Any, record: Record, how: str) -> None:
    key = f"abrupt-{how}-{id(server)}"
    ws = WSClient(server.port, f"/wait?key={key}")
    ws.send(frame(BINARY, b"half a message", fin=False))
    time.sleep(0.05)
    if how == "reset":
        rst_close(ws.sock)
    else:
        ws.sock.close()
    assert record.wait(key)[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


def test_protocol_error_reaches_the_app(server: Any, record: Record) -> None:
    key = f"proto-{id(server)}"
    with WSClient(server.port, f"/wait?key={key}") as ws:
        ws.send(frame(PING, b"x" * 126))
        ws.expect_close(1002)
    assert record.wait(key)[-1]["code"] == 1002


# ---------------------------------------------------------------------------- keep-alive


@pytest.fixture(scope="module")
def pinging(record: Record) -> Iterator[Any]:
    with run_server(make_app(record), ws_ping_interval=0.2, ws_ping_timeout=0.2) as server:
        yield server


def test_keepalive_peer_that_never_answers(pinging: Any, record: Record) -> None:
    with WSClient(pinging.port, "/wait?key=silent") as ws:
        started = time.monotonic()
        assert ws.recv_frame().opcode == PING  # never answered
        ws.expect_close(1011)
        assert 0.3 <= time.monotonic() - started < 2.0
    assert record.wait("silent")[-1]["code"] == 1006


def test_keepalive_healthy_idle_peer_stays(pinging: Any, record: Record) -> None:
    async def talk() -> None:
        async with client(pinging, "/echo") as ws:  # the client answers pings on its own
            await asyncio.sleep(1.0)  # idle: five ping intervals, nothing else to flush the pings
            await ws.send("still here")
            assert await ws.recv() == "still here"

    run(talk())


def test_keepalive_raw_peer_answers(pinging: Any) -> None:
    with WSClient(pinging.port, "/echo") as ws:
        for _ in range(3):
            ping = ws.recv_frame()
            assert ping.opcode == PING
            ws.send(frame(PONG, ping.payload))
        ws.close_handshake()


def test_app_close_unanswered(record: Record) -> None:
    """The app closes; a peer that never answers is cut off after ws_ping_timeout, even with no pings."""
    with (
        run_server(make_app(record), ws_ping_interval=None, ws_ping_timeout=0.3) as server,
        WSClient(server.port, "/app-close-later?key=unanswered") as ws,
    ):
        ws.send(text("close now"))
        assert ws.recv_frame().close_code == 4001
        started = time.monotonic()
        assert ws.closed_by_server(timeout=3)
        assert 0.2 < time.monotonic() - started < 2
        assert record.wait("unanswered")[-1]["code"] == 1006


# ---------------------------------------------------------------------------- back-pressure


def flood(sock: socket.socket, message: bytes, stall: float = 0.5, limit: float = 10.0) -> tuple[int, bytes]:
    """Write ``message`` until the socket takes nothing for ``stall`` seconds: the number of messages begun,
    and the rest of the last one, cut short."""
    sock.setblocking(False)
    sent, pending = 0, b""
    stalled_since: float | None = None
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not pending:
            pending, sent = message, sent + 1
        try:
            n = sock.send(pending)
        except BlockingIOError:
            n = 0
        if n:
            pending, stalled_since = pending[n:], None
            continue
        stalled_since = stalled_since or time.monotonic()
        if time.monotonic() - stalled_since > stall:
            sock.setblocking(True)
            return (sent, pending) if pending is not message else (sent - 1, b"")
        time.sleep(0.005)
    raise AssertionError("the server kept reading a peer whose app does not receive")


def test_reading_stops_when_the_app_does_not_receive(record: Record) -> None:
    record.go.clear()
    with (
        run_server(make_app(record), ws_max_queue=4, ws_ping_interval=None) as server,
        WSClient(server.port, "/slow-reader?key=slow") as ws,
    ):
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        sent, rest = flood(ws.sock, frame(BINARY, b"m" * 65536))
        assert sent * 65536 < 32 * 2**20  # the kernel's buffers and a few queued messages, no more
        (connection,) = server.server.shared.connections
        assert connection.reading_paused
        assert len(connection.handler._inbox) <= 4 + 8  # max_queue, plus what one read brought
        record.go.set()  # the app reads now: reading resumes and every message arrives
        ws.sock.settimeout(10)
        ws.send(rest, close(1000))
        ws.expect_close(1000)
        assert record.wait("slow")[-1] == sent


def test_send_waits_while_the_client_does_not_read(record: Record) -> None:
    with (
        run_server(make_app(record), ws_ping_interval=None) as server,
        WSClient(server.port, "/flood?key=flood") as ws,
    ):
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        time.sleep(0.5)
        stalled = len(record.data["flood"])
        assert stalled < 60, "send() did not wait for the client"  # at most ~16 MiB went out
        for i in range(100):
            got = ws.recv_frame()
            assert got.payload[:3] == b"%03d" % i and len(got.payload) == 262144
        assert len(record.wait("flood", 100)) == 100
        ws.close_handshake()


# ---------------------------------------------------------------------------- shutdown and logs


def test_server_shutdown_sends_going_away(record: Record) -> None:
    server_cm = run_server(make_app(record), timeout_graceful_shutdown=5)
    server = server_cm.__enter__()
    try:

        async def talk() -> None:
            async with client(server, "/wait?key=shutdown") as ws:
                stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
                with pytest.raises(ConnectionClosed) as info:
                    await ws.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 1001
                await stopping

        started = time.monotonic()
        run(talk())
        assert time.monotonic() - started < 3
    finally:
        server_cm.__exit__(None, None, None)
    assert record.wait("shutdown")[-1]["code"] == 1001


def test_access_log(record: Record, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="zonda.access")
    with run_server(make_app(record)) as server:
        with WSClient(server.port, "/echo") as ws:
            ws.send(text("x"))
            ws.recv_frame()
            ws.close_handshake()
        for path in ("/deny", "/denial"):
            with Wire(server.port) as wire:
                wire.send(handshake_request(path))
                wire.read_response()
        time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "zonda.access"]
    assert any('"WebSocket /echo" 101' in line for line in lines), lines
    assert any('"WebSocket /deny" 403' in line for line in lines), lines
    assert any('"WebSocket /denial" 418' in line for line in lines), lines
