"""WebSocket over HTTP/2 (RFC 8441) end to end: a real zonda on loopback, an ``h2`` client with prior knowledge.

The settings, the extended CONNECT handshake and its errors, the scope, messages (text, binary, larger than the
windows), subprotocols, permessage-deflate, the size limit, denial (403 and websocket.http.response), closing
both ways, END_STREAM and RST_STREAM from the client, several WebSockets and requests on one connection,
back-pressure through the stream window, keep-alive pings, idle WebSockets past the stall timeout, and the
graceful shutdown's Going Away.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest

from h2ws import ENABLE_CONNECT_PROTOCOL, H2Client, raw_frames, server_settings
from helpers import (
    Record,
    assert_still_serving,
    count_when_told,
    echo_messages,
    run_server,
    send_denial,
    until_disconnect,
)
from wsframes import BINARY, CLOSE, PING, PONG, RSV1, TEXT, close, deflate, frame, inflate, text

Scope = dict[str, Any]


def make_app(record: Record) -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return
        path, query = scope["path"], parse_qs(scope["query_string"].decode())
        key = query.get("key", [path])[0]
        if scope["type"] == "http":
            body = f"http {scope['method']} {path} {scope['http_version']}".encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        assert await receive() == {"type": "websocket.connect"}
        await route(path, key, scope, receive, send)

    async def route(path: str, key: str, scope: Scope, receive: Any, send: Any) -> None:
        if path == "/echo":
            offered = scope["subprotocols"]
            accept = {"type": "websocket.accept", "headers": [(b"x-extra", b"yes")]}
            if offered:
                accept["subprotocol"] = offered[-1]
            await send(accept)
            record.add(key, await echo_messages(receive, send))
        elif path == "/scope":
            record.add(key, dict(scope))
            await send({"type": "websocket.accept"})
            await until_disconnect(receive, record, key + "-end")
        elif path == "/app-close":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 4001, "reason": "bye from app"})
            await until_disconnect(receive, record, key)
        elif path == "/deny":
            await send({"type": "websocket.close"})
        elif path == "/denial":
            await send_denial(send)
        elif path == "/wait":
            await send({"type": "websocket.accept"})
            await until_disconnect(receive, record, key)
        elif path == "/slow-reader":
            await send({"type": "websocket.accept"})
            await count_when_told(receive, record, key)
        elif path == "/flood":  # sends 50 x 64 KiB, noting each send that returned
            await send({"type": "websocket.accept"})
            for i in range(50):
                await send({"type": "websocket.send", "bytes": b"%03d" % i + b"z" * 65533})
                record.add(key, i)
            await until_disconnect(receive, record, key + "-end")
        elif path == "/raise-after":
            await send({"type": "websocket.accept"})
            await receive()
            raise RuntimeError("boom after accept")

    return app


@pytest.fixture(scope="module")
def server(driver: str) -> Iterator[Any]:
    record = Record()
    with run_server(make_app(record), loop=driver, ws_max_size=1 << 21) as running:
        running.record = record  # type: ignore[attr-defined]
        yield running


@pytest.fixture
def record(server: Any) -> Record:
    """What this server's apps saw (one Record per server, so each loop's run waits for its own)."""
    return server.record  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------- settings and handshake


def test_settings_enable_connect_protocol(server: Any) -> None:
    assert server_settings(server.port).get(ENABLE_CONNECT_PROTOCOL) == 1


def test_no_connect_protocol_without_websocket() -> None:
    with run_server(make_app(Record()), ws="none") as server, H2Client(server.port) as client:
        assert client.server_settings.get(ENABLE_CONNECT_PROTOCOL, 0) == 0
        ws = client.open_websocket("/echo")  # the client breaks the rule: a stream error, not the app
        assert ws.state.reset == 0x1  # PROTOCOL_ERROR
        assert client.request("GET", "/after").data == b"http GET /after 2"


def test_accept_response(server: Any) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/echo")
        assert ws.status == 200
        names = [name for name, _ in ws.state.headers]
        for absent in (b"sec-websocket-accept", b"upgrade", b"connection", b"sec-websocket-protocol"):
            assert absent not in names
        assert ws.header(b"x-extra") == b"yes"
        assert not ws.state.ended
        ws.close_handshake()


@pytest.mark.parametrize(("version", "status"), [(b"8", 426), (None, 426)], ids=["version-8", "no-version"])
def test_handshake_errors(server: Any, version: bytes | None, status: int) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/echo", version=version)
        assert ws.status == status
        assert ws.header(b"sec-websocket-version") == b"13"
        client.wait_for(lambda: ws.state.ended, "the error body")
        assert bytes(ws.state.data).startswith(b"Upgrade Required")
        assert client.request("GET", "/still").data == b"http GET /still 2"


def test_scope(server: Any, record: Record) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket(
            "/scope?key=h2-scope&a=1",
            subprotocols=["p1", "p2"],
            headers=[(b"origin", b"http://example.com")],
        )
        scope = record.wait("h2-scope")[-1]
        ws.close_handshake()
        client_port = client.sock.getsockname()[1]
    assert scope["type"] == "websocket" and scope["scheme"] == "ws"
    assert scope["http_version"] == "2"
    assert "method" not in scope
    assert scope["path"] == "/scope" and scope["raw_path"] == b"/scope"
    assert scope["query_string"] == b"key=h2-scope&a=1"
    assert scope["subprotocols"] == ["p1", "p2"]
    headers = scope["headers"]
    assert (b"host", f"127.0.0.1:{server.port}".encode()) in headers  # from :authority
    assert (b"origin", b"http://example.com") in headers
    assert (b"sec-websocket-version", b"13") in headers
    assert scope["client"] == ("127.0.0.1", client_port)
    assert "websocket.http.response" in scope["extensions"]
    assert record.wait("h2-scope-end")[-1]["code"] == 1000


# ---------------------------------------------------------------------------- messages


def test_echo_text_and_binary(server: Any, record: Record) -> None:
    big_text, big_binary = "é" * (2**19), bytes(range(256)) * 4096  # 1 MiB each: past both windows
    with H2Client(server.port) as client:
        ws = client.open_websocket("/echo?key=h2-echo")
        for opcode, payload in [
            (TEXT, b"hello"),
            (BINARY, b"\x00\x01\xff"),
            (TEXT, b""),
            (BINARY, b""),
            (TEXT, big_text.encode()),
            (BINARY, big_binary),
        ]:
            ws.send(frame(opcode, payload))
            got = ws.recv_frame()
            assert (got.opcode, got.fin, got.rsv) == (opcode, True, 0)
            assert got.payload == payload
        ws.close_handshake(4000)
    assert record.wait("h2-echo")[-1] == {"type": "websocket.disconnect", "code": 4000, "reason": ""}


def test_frames_sent_with_the_request_wait_for_the_accept(server: Any) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/echo", wait=False)
        ws.send(text("early bird"), frame(PING, b"p"))
        ws.wait_response()
        assert ws.status == 200
        got = {(f.opcode, f.payload) for f in (ws.recv_frame(), ws.recv_frame())}
        assert got == {(TEXT, b"early bird"), (PONG, b"p")}  # the pong may overtake the app's echo
        ws.close_handshake()


def test_subprotocols(server: Any) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/echo", subprotocols=["chat", "superchat"])
        assert ws.header(b"sec-websocket-protocol") == b"superchat"
        ws.close_handshake()
        ws = client.open_websocket("/echo")
        assert ws.header(b"sec-websocket-protocol") is None
        ws.close_handshake()


def test_permessage_deflate(server: Any) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/echo", extensions="permessage-deflate; client_max_window_bits")
        agreed = ws.header(b"sec-websocket-extensions")
        assert agreed is not None and agreed.startswith(b"permessage-deflate")
        compressor, decompressor = zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15)
        for message in [b"hello " * 100, b"hello " * 100, bytes(range(256)) * 64]:
            opcode = TEXT if message.startswith(b"hello") else BINARY
            ws.send(frame(opcode, deflate(message, compressor), rsv=RSV1))
            got = ws.recv_frame()
            assert (got.opcode, got.rsv) == (opcode, RSV1)
            assert inflate(got.payload, decompressor) == message
        ws.close_handshake()


def test_compression_off() -> None:
    with (
        run_server(make_app(Record()), ws_per_message_deflate=False) as server,
        H2Client(server.port) as client,
    ):
        ws = client.open_websocket("/echo", extensions="permessage-deflate")
        assert ws.header(b"sec-websocket-extensions") is None
        ws.send(text("x" * 1000))
        assert ws.recv_frame().payload == b"x" * 1000
        ws.close_handshake()


def test_max_size_closes_with_1009() -> None:
    record = Record()
    with run_server(make_app(record), ws_max_size=1000) as server, H2Client(server.port) as client:
        ws = client.open_websocket("/echo?key=h2-too-big")
        ws.send(frame(BINARY, b"x" * 1000))
        assert ws.recv_frame().payload == b"x" * 1000
        ws.send(frame(BINARY, b"x" * 1001))
        ws.expect_close(1009)
        assert record.wait("h2-too-big")[-1]["code"] == 1009
        assert client.request("GET", "/after").data == b"http GET /after 2"  # the connection lives on


# ---------------------------------------------------------------------------- denial


def test_close_before_accept_is_403(server: Any) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/deny")
        assert ws.status == 403
        client.wait_for(lambda: ws.state.ended, "the 403 body")
        assert bytes(ws.state.data) == b"Forbidden\n"
        assert client.request("GET", "/after").data == b"http GET /after 2"


def test_denial_response(server: Any) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/denial")
        assert ws.status == 418
        assert ws.header(b"x-denied") == b"yes"
        client.wait_for(lambda: ws.state.ended, "the denial body")
        assert bytes(ws.state.data) == b"no websockets here"
        assert client.request("GET", "/after").data == b"http GET /after 2"


# ---------------------------------------------------------------------------- closing


def test_client_closes_with_code_and_reason(server: Any, record: Record) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/echo?key=h2-client-close")
        ws.send(close(4000, b"bye"))
        ws.expect_close(4000)
    assert record.wait("h2-client-close")[-1] == {
        "type": "websocket.disconnect",
        "code": 4000,
        "reason": "bye",
    }


def test_app_closes(server: Any, record: Record) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/app-close?key=h2-app-close")
        got = ws.recv_frame()
        assert (got.opcode, got.close_code, got.close_reason) == (CLOSE, 4001, "bye from app")
        assert not ws.state.ended  # the server waits for the client's close frame
        ws.send(close(4001))
        ws.wait_ended()
    assert record.wait("h2-app-close")[-1]["code"] == 4001


def test_client_end_stream_without_close_is_1006(server: Any, record: Record) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/wait?key=h2-eof")
        ws.end()
        ws.wait_ended()
        assert record.wait("h2-eof")[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


def test_two_websockets_and_a_request_on_one_connection(server: Any, record: Record) -> None:
    with H2Client(server.port) as client:
        first = client.open_websocket("/echo?key=h2-first")
        second = client.open_websocket("/echo?key=h2-second")
        assert first.stream_id != second.stream_id
        first.send(text("one"))
        second.send(text("two"))
        response = client.request("GET", "/plain")
        assert (response.status, bytes(response.data)) == (200, b"http GET /plain 2")
        assert second.recv_frame().payload == b"two"
        assert first.recv_frame().payload == b"one"
        for i in range(20):  # interleaved
            first.send(frame(BINARY, b"%d" % i))
            second.send(frame(BINARY, b"-%d" % i))
        for i in range(20):
            assert first.recv_frame().payload == b"%d" % i
            assert second.recv_frame().payload == b"-%d" % i
        first.close_handshake(4010)
        second.send(text("still here"))
        assert second.recv_frame().payload == b"still here"
        second.close_handshake(4020)
    assert record.wait("h2-first")[-1]["code"] == 4010
    assert record.wait("h2-second")[-1]["code"] == 4020


def test_client_reset_disconnects_that_websocket_only(server: Any, record: Record) -> None:
    with H2Client(server.port) as client:
        doomed = client.open_websocket("/echo?key=h2-reset")
        survivor = client.open_websocket("/echo?key=h2-survivor")
        doomed.send(text("before"))
        assert doomed.recv_frame().payload == b"before"
        doomed.reset()
        assert record.wait("h2-reset")[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        survivor.send(text("after"))
        assert survivor.recv_frame().payload == b"after"
        assert client.request("GET", "/after").status == 200
        survivor.close_handshake()
    assert record.wait("h2-survivor")[-1]["code"] == 1000
    with H2Client(server.port) as client:  # a new connection
        assert client.request("GET", "/new").data == b"http GET /new 2"
    assert_still_serving(server.port)


def test_connection_loss_disconnects_every_websocket(server: Any, record: Record) -> None:
    client = H2Client(server.port)
    client.open_websocket("/wait?key=h2-lost-1")
    client.open_websocket("/wait?key=h2-lost-2")
    client.sock.close()
    for key in ("h2-lost-1", "h2-lost-2"):
        assert record.wait(key)[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}


# ---------------------------------------------------------------------------- limits and time


def test_reading_stops_when_the_app_does_not_receive() -> None:
    """--ws-max-queue: with the queue full the stream's window stays closed; it reopens as the app reads."""
    record = Record()
    options = {"ws_max_queue": 4, "h2_initial_window_size": 65536}
    with run_server(make_app(record), **options) as server, H2Client(server.port) as client:
        ws = client.open_websocket("/slow-reader?key=h2-slow")
        conn = client.conn
        message = frame(BINARY, b"m" * 1000)
        sent = 0
        while True:  # send while the server returns window; it stops once the app's queue is full
            while conn.local_flow_control_window(ws.stream_id) >= len(message):
                ws.send(message)
                sent += 1
            client.pump(0.3)
            if conn.local_flow_control_window(ws.stream_id) < len(message):
                break
            assert sent < 1000, "the server never stopped reading"
        # What the server had acknowledged before it paused, and one window more: not the app's 200 messages.
        assert sent * len(message) < 2 * 65536 + 4 * len(message)
        client.pump(0.5)
        assert conn.local_flow_control_window(ws.stream_id) < len(message), "the window reopened"
        record.go.set()
        sent_after = 0
        for _ in range(200):  # blocks on the window until the app has read
            ws.send(message)
            sent_after += 1
        ws.send(close(1000))
        ws.expect_close(1000)
        assert record.wait("h2-slow")[-1] == sent + sent_after


def test_send_waits_for_the_client_window(server: Any, record: Record) -> None:
    """The app's send() waits while the stream's window (65535 bytes from this client) is used up."""
    key = f"h2-flood-{server.port}"
    with H2Client(server.port) as client:
        ws = client.open_websocket(f"/flood?key={key}")
        time.sleep(0.3)  # not reading: no WINDOW_UPDATE goes back
        assert len(record.data[key]) <= 2, record.data[key]
        for i in range(50):
            got = ws.recv_frame()
            assert got.payload[:3] == b"%03d" % i and len(got.payload) == 65536
        assert record.wait(key, 50)[-1] == 49
        ws.close_handshake()
    assert record.wait(key + "-end")[-1]["code"] == 1000


def test_app_raises_after_accept(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/raise-after")
        ws.send(text("go"))
        got = ws.recv_frame()
        assert (got.opcode, got.close_code) == (CLOSE, 1011)
        ws.send(close(1011))
        ws.wait_ended()
        assert client.request("GET", "/after").status == 200
    assert any("boom after accept" in str(r.exc_info) for r in caplog.records if r.exc_info)


def test_keepalive_ping_unanswered() -> None:
    record = Record()
    options = {"ws_ping_interval": 0.2, "ws_ping_timeout": 0.3}
    with run_server(make_app(record), **options) as server, H2Client(server.port) as client:
        ws = client.open_websocket("/wait?key=h2-no-pong")
        ping = ws.recv_frame()
        assert ping.opcode == PING
        got = ws.recv_frame(timeout=3)
        assert (got.opcode, got.close_code) == (CLOSE, 1011)
        ws.wait_ended()
        assert record.wait("h2-no-pong")[-1]["code"] == 1006


def test_keepalive_ping_answered_and_idle_past_the_stall_timeout() -> None:
    """An idle WebSocket is not a stalled request body: it outlives timeout_request_body while pongs come."""
    record = Record()
    options = {"ws_ping_interval": 0.2, "ws_ping_timeout": 0.5, "timeout_request_body": 0.3}
    with run_server(make_app(record), **options) as server, H2Client(server.port) as client:
        ws = client.open_websocket("/echo")
        deadline = time.monotonic() + 1.5
        pings = 0
        while time.monotonic() < deadline:
            got = ws.recv_frame()
            assert got.opcode == PING, got
            masked = frame(PONG, got.payload)
            ws.send(masked)
            pings += 1
        assert pings >= 3
        ws.send(text("alive"))
        while (got := ws.recv_frame()).opcode == PING:
            ws.send(frame(PONG, got.payload))
        assert got.payload == b"alive"
        ws.close_handshake()


def test_server_shutdown_sends_going_away() -> None:
    record = Record()
    with run_server(make_app(record), timeout_graceful_shutdown=5) as server, H2Client(server.port) as client:
        ws = client.open_websocket("/wait?key=h2-shutdown")
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        got = ws.recv_frame()
        assert (got.opcode, got.close_code) == (CLOSE, 1001)
        assert client.terminated is not None  # GOAWAY came with it: h2 then refuses to send, so raw bytes
        ws.send_raw(frame(CLOSE, struct.pack("!H", 1001)))
        after = raw_frames(client.read_until_closed())  # then the server closes the connection
        assert (0x0, 0x1, ws.stream_id, b"") in after  # END_STREAM: the WebSocket is over
        stopper.join(10)
        assert not stopper.is_alive()
        assert record.wait("h2-shutdown")[-1]["code"] == 1001


def test_access_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="zonda.access")
    with run_server(make_app(Record())) as server, H2Client(server.port) as client:
        ws = client.open_websocket("/echo")
        ws.close_handshake()
        for path in ("/deny", "/denial"):
            denied = client.open_websocket(path)
            client.wait_for(lambda: denied.state.ended, f"the answer to {path}")  # noqa: B023
        time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "zonda.access"]
    assert any('"WebSocket /echo" 200' in line for line in lines), lines
    assert any('"WebSocket /deny" 403' in line for line in lines), lines
    assert any('"WebSocket /denial" 418' in line for line in lines), lines
