"""WebSocket end to end, each behaviour once for both HTTP versions: a real zonda on loopback and a raw-frame
client over HTTP/1.1 (Upgrade) or HTTP/2 (RFC 8441), the ``ws_client`` parameter (``websocket_e2e``).

Messages (text, binary, empty, 1 MiB, fragmented, permessage-deflate or not), subprotocols, closing both ways,
denial (403 and websocket.http.response), app errors before and after the accept, the size limit, the client
going without a close frame, protocol errors, the scope, keep-alive pings, back-pressure both ways (and none
once the app is done), shutdown and access log lines. What one version only has is in test_websocket_http1.py
and test_websocket_h2.py.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import Record, RunningServer, run_server
from websocket_e2e import HTTP_VERSIONS, HTTP2WebSocket, WebSocketClient, make_app, unique
from wsframes import BINARY, CLOSE, CONT, PING, PONG, RSV1, TEXT, Frame, close, deflate, frame, inflate, text
from zonda.asgi.websocket import WebSocketCycle


@pytest.fixture(scope="module")
def record() -> Record:
    return Record()


@pytest.fixture(scope="module")
def server(driver: str, record: Record) -> Iterator[RunningServer]:
    with run_server(make_app(record), loop=driver) as running:
        yield running


@pytest.fixture(scope="module")
def pinging(driver: str, record: Record) -> Iterator[RunningServer]:
    """Pings every 0.2 s, fails a peer that does not answer in 0.3 s; a stalled request body fails in 0.3 s"""
    options = {"ws_ping_interval": 0.2, "ws_ping_timeout": 0.3, "timeout_request_body": 0.3}
    with run_server(make_app(record), loop=driver, **options) as running:
        yield running


@pytest.fixture(params=HTTP_VERSIONS)
def ws_client(request: pytest.FixtureRequest, server: RunningServer) -> WebSocketClient:
    return WebSocketClient(request.param, server.port)


def disconnect(code: int, reason: str = "") -> dict[str, Any]:
    return {"type": "websocket.disconnect", "code": code, "reason": reason}


def app_errors(logs: pytest.LogCaptureFixture) -> list[str]:
    """The exceptions logged as the app's errors."""
    return [
        str(r.exc_info and r.exc_info[1])
        for r in logs.records
        if r.name == "zonda.error" and r.levelno >= logging.ERROR
    ]


# ---------------------------------------------------------------------------- messages


@pytest.mark.parametrize("compression", [None, "permessage-deflate; client_max_window_bits"])
def test_messages(ws_client: WebSocketClient, record: Record, compression: str | None) -> None:
    key = unique("messages")
    messages = [(TEXT, b"hello"), (BINARY, b"\x00\x01\xff"), (TEXT, b""), (BINARY, b"")]
    messages += [(TEXT, "é".encode() * 2**19), (BINARY, bytes(range(256)) * 4096)]  # 1 MiB: past h2's windows
    compressor, decompressor = zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15)
    rsv = RSV1 if compression else 0

    def echoed() -> Frame:
        got = ws.recv_frame()
        assert (got.fin, got.rsv) == (True, rsv), got
        return Frame(True, 0, got.opcode, inflate(got.payload, decompressor) if compression else got.payload)

    with ws_client.connect(f"/echo?key={key}", extensions=compression) as ws:
        assert ws.status == ws_client.accepted_status
        assert ws.response_header("x-extra") == "yes"
        agreed = ws.response_header("sec-websocket-extensions")
        assert (agreed or "").startswith("permessage-deflate") if compression else agreed is None
        for opcode, payload in messages:
            ws.send(frame(opcode, deflate(payload, compressor) if compression else payload, rsv=rsv))
            assert echoed() == Frame(True, 0, opcode, payload)
        fragments = [text("frag", fin=False), frame(CONT, b"men", fin=False), frame(CONT, b"ted")]
        ws.send(*fragments[:2], frame(PING, b"between"), fragments[2])  # a control frame may come between
        assert ws.recv_frame() == Frame(True, 0, PONG, b"between")
        assert echoed() == Frame(True, 0, TEXT, b"fragmented")
        ws.close_handshake(4000)
    assert record.wait(key)[-1] == disconnect(4000)


def test_compression_off(ws_client: WebSocketClient, record: Record) -> None:
    with (
        run_server(make_app(record), ws_per_message_deflate=False) as server,
        ws_client.connect("/echo", port=server.port, extensions="permessage-deflate") as ws,
    ):
        assert ws.response_header("sec-websocket-extensions") is None
        ws.send(text("x" * 1000))
        assert ws.recv_frame() == Frame(True, 0, TEXT, b"x" * 1000)
        ws.close_handshake()


def test_subprotocols(ws_client: WebSocketClient) -> None:
    with ws_client.connect("/echo", subprotocols=["chat", "superchat"]) as ws:
        assert ws.response_header("sec-websocket-protocol") == "superchat"
        ws.close_handshake()
    with ws_client.connect("/echo") as ws:
        assert ws.response_header("sec-websocket-protocol") is None
        ws.close_handshake()


def test_max_size_closes_with_1009(ws_client: WebSocketClient, record: Record) -> None:
    key = unique("too-big")
    with (
        run_server(make_app(record), ws_max_size=1000) as server,
        ws_client.connect(f"/echo?key={key}", port=server.port) as ws,
    ):
        ws.send(frame(BINARY, b"x" * 1000))
        assert ws.recv_frame().payload == b"x" * 1000
        ws.send(frame(BINARY, b"x" * 1001))
        ws.expect_close(1009)
        ws.assert_still_serving()
        assert record.wait(key)[-1]["code"] == 1009


# ---------------------------------------------------------------------------- closing


@pytest.mark.parametrize(
    ("sent", "answer", "seen"),
    [(close(4000, b"bye"), 4000, disconnect(4000, "bye")), (frame(CLOSE), None, disconnect(1005))],
    ids=["code-and-reason", "no-code"],
)
def test_client_closes(
    ws_client: WebSocketClient, record: Record, sent: bytes, answer: int | None, seen: dict[str, Any]
) -> None:
    key = unique("client-close")
    with ws_client.connect(f"/echo?key={key}") as ws:
        ws.send(text("hi"))
        assert ws.recv_frame().payload == b"hi"
        ws.send(sent)
        ws.expect_close(answer)
    assert record.wait(key)[-1] == seen


def test_app_closes_with_code(ws_client: WebSocketClient, record: Record) -> None:
    key = unique("app-close")
    with ws_client.connect(f"/app-close?key={key}") as ws:
        got = ws.recv_frame()
        assert (got.opcode, got.close_code, got.close_reason) == (CLOSE, 4001, "bye from app")
        assert not ws.closed_by_server(timeout=0.1)  # the server waits for the client's close frame
        ws.send(close(4001))
        assert ws.closed_by_server()
    assert record.wait(key)[-1]["code"] == 4001


def test_app_close_unanswered(ws_client: WebSocketClient, record: Record) -> None:
    """The app closes; a peer that never answers is cut off after ws_ping_timeout, even with no pings."""
    key = unique("unanswered")
    with (
        run_server(make_app(record), ws_ping_interval=None, ws_ping_timeout=0.3) as server,
        ws_client.connect(f"/app-close-later?key={key}", port=server.port) as ws,
    ):
        ws.send(text("close now"))
        assert ws.recv_frame().close_code == 4001
        started = time.monotonic()
        assert ws.closed_by_server(timeout=3)
        assert 0.2 < time.monotonic() - started < 2
        assert record.wait(key)[-1]["code"] == 1006


@pytest.mark.parametrize("how", ["drop", "reset"])
def test_client_goes_without_a_close_frame(ws_client: WebSocketClient, record: Record, how: str) -> None:
    """Mid-message, the client ends its byte stream (TCP FIN; END_STREAM) or resets it (RST; RST_STREAM)."""
    key = unique(f"abrupt-{how}")
    with ws_client.connect(f"/wait?key={key}") as ws:
        ws.send(frame(BINARY, b"half a message", fin=False))
        time.sleep(0.05)
        if how == "drop":
            ws.drop()
            assert ws.closed_by_server()  # the server ends its side too
        else:
            ws.reset()
        assert record.wait(key)[-1] == disconnect(1006)


def test_protocol_error_reaches_the_app(ws_client: WebSocketClient, record: Record) -> None:
    key = unique("protocol-error")
    with ws_client.connect(f"/wait?key={key}") as ws:
        ws.send(frame(PING, b"x" * 126))  # a control frame carries at most 125 bytes
        ws.expect_close(1002)
    assert record.wait(key)[-1]["code"] == 1002


def test_server_shutdown_sends_going_away(ws_client: WebSocketClient, record: Record) -> None:
    key = unique("shutdown")
    with (
        run_server(make_app(record), timeout_graceful_shutdown=5) as server,
        ws_client.connect(f"/wait?key={key}", port=server.port) as ws,
    ):
        started = time.monotonic()
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        got = ws.recv_frame()
        assert (got.opcode, got.close_code) == (CLOSE, 1001)
        if isinstance(ws, HTTP2WebSocket):
            assert ws.client.goaway  # GOAWAY came with it
        ws.send(close(1001))
        assert ws.closed_by_server()
        stopper.join(10)
        assert not stopper.is_alive()
        assert time.monotonic() - started < 3
    assert record.wait(key)[-1]["code"] == 1001


# ---------------------------------------------------------------------------- denial and app errors


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/deny", 403, b"Forbidden\n"),
        ("/denial", 418, b"no websockets here"),
        ("/raise-before", 500, b"Internal Server Error\n"),
        ("/bad-accept-headers", 500, b"Internal Server Error\n"),
        ("/denial-bytearray", 418, b"no websockets here"),
    ],
    ids=[
        "close-before-accept",
        "denial-response",
        "app-raises-before-accept",
        "accept-headers-refused",
        "denial-bytes-like-body",
    ],
)
def test_refused(
    ws_client: WebSocketClient, logs: pytest.LogCaptureFixture, path: str, status: int, body: bytes
) -> None:
    """websocket.close before the accept answers 403, websocket.http.response.* sends the app's response, an
    app that raises first gets a 500, and so does an accept whose headers the server refuses (it waited for a
    close frame that never left, before); the connection (HTTP/2) or the server (HTTP/1.1) serves on."""
    with ws_client.connect(path) as ws:
        assert ws.status == status
        assert ws.refusal_body() == body
        assert ws.response_header("x-denied") == ("yes" if path.startswith("/denial") else None)
        ws.assert_still_serving()
    errors = app_errors(logs)
    if path == "/bad-accept-headers":
        assert len(errors) == 1 and "headers" in errors[0]
    else:
        assert errors == (["boom before accept"] if status == 500 else [])


def test_app_raises_after_accept(ws_client: WebSocketClient, logs: pytest.LogCaptureFixture) -> None:
    with ws_client.connect("/raise-after") as ws:
        ws.send(text("go"))
        got = ws.recv_frame()
        assert (got.opcode, got.close_code) == (CLOSE, 1011)
        ws.send(close(1011))
        assert ws.closed_by_server()
        ws.assert_still_serving()
    time.sleep(0.1)  # time for a second report, if there were one
    assert app_errors(logs) == ["boom after accept"]


# ---------------------------------------------------------------------------- scope


def test_scope(ws_client: WebSocketClient, record: Record, server: RunningServer) -> None:
    key = unique("scope")
    with ws_client.connect(
        f"/caf%C3%A9/scope?key={key}&a=1",
        subprotocols=["p1", "p2"],
        headers=[(b"origin", b"http://example.com")],
    ) as ws:
        scope = record.wait(key)[-1]
        ws.close_handshake()
    assert scope["type"] == "websocket" and scope["scheme"] == "ws" and "method" not in scope
    assert scope["asgi"]["version"] == "3.0" and scope["http_version"] == ws_client.http_version
    assert scope["path"] == "/café/scope" and scope["raw_path"] == b"/caf%C3%A9/scope"
    assert scope["query_string"] == f"key={key}&a=1".encode()
    assert scope["subprotocols"] == ["p1", "p2"]
    headers = scope["headers"]
    assert (b"sec-websocket-protocol", b"p1, p2") in headers
    assert (b"sec-websocket-version", b"13") in headers
    assert (b"origin", b"http://example.com") in headers
    if ws_client.http_version == "2":
        assert (b"host", f"127.0.0.1:{server.port}".encode()) in headers  # from :authority
    else:
        assert (b"upgrade", b"websocket") in headers
    assert scope["client"] == ("127.0.0.1", ws.client_port)
    assert scope["server"] == ("127.0.0.1", server.port)
    assert scope["root_path"] == ""
    assert scope["state"] == {"db": "connected"}
    assert scope["extensions"] == {"websocket.http.response": {}}  # no http.response.* offers (plain: no tls)
    assert record.wait(key + "-end")[-1] == disconnect(1000)


def test_scope_root_path(ws_client: WebSocketClient, record: Record) -> None:
    key = unique("root")
    with (
        run_server(make_app(record), root_path="/mount") as server,
        ws_client.connect(f"/scope?key={key}", port=server.port) as ws,
    ):
        ws.close_handshake()
    scope = record.wait(key)[-1]
    assert scope["root_path"] == "/mount"
    assert (scope["path"], scope["raw_path"]) == ("/mount/scope", b"/mount/scope")


# ---------------------------------------------------------------------------- keep-alive


def test_keepalive_peer_that_never_answers(
    ws_client: WebSocketClient, pinging: RunningServer, record: Record
) -> None:
    key = unique("silent")
    with ws_client.connect(f"/wait?key={key}", port=pinging.port) as ws:
        started = time.monotonic()
        assert ws.recv_frame().opcode == PING  # never answered
        ws.expect_close(1011)
        assert 0.3 <= time.monotonic() - started < 2.0
    assert record.wait(key)[-1]["code"] == 1006


def test_keepalive_peer_that_answers_stays(ws_client: WebSocketClient, pinging: RunningServer) -> None:
    """Answered pings keep an idle WebSocket, past timeout_request_body too: it is not a stalled body."""
    with ws_client.connect("/echo", port=pinging.port) as ws:
        deadline = time.monotonic() + 1.0
        pings = 0
        while time.monotonic() < deadline:
            got = ws.recv_frame()
            assert got.opcode == PING, got
            ws.send(frame(PONG, got.payload))
            pings += 1
        assert pings >= 3
        ws.send(text("alive"))
        while (got := ws.recv_frame()).opcode == PING:
            ws.send(frame(PONG, got.payload))
        assert got.payload == b"alive"
        ws.close_handshake()


# ---------------------------------------------------------------------------- back-pressure


def test_reading_stops_when_the_app_does_not_receive(ws_client: WebSocketClient) -> None:
    """--ws-max-queue: with the app's queue full the server stops reading (HTTP/2: the stream's window stays
    closed, the connection reads on); it reads again as the app catches up, and every message arrives."""
    record = Record()
    options = {"ws_max_queue": 4, "ws_ping_interval": None, "h2_initial_window_size": 65536}
    size = 65536 if ws_client.http_version == "1.1" else 1000
    # Taken before the server stopped reading, besides a few queued messages: the kernel's socket buffers over
    # HTTP/1.1; over HTTP/2 the window acknowledged before the pause, and one more.
    most_taken = 32 * 2**20 if ws_client.http_version == "1.1" else 2 * 65536 + 4 * size
    with (
        run_server(make_app(record), **options) as server,
        ws_client.connect("/slow-reader?key=slow", port=server.port) as ws,
    ):
        message = frame(BINARY, b"m" * size)
        sent, rest = ws.send_until_stalled(message)
        assert sent * size < most_taken
        (connection,) = server.server.shared.connections
        (cycle,) = connection.session.cycles.values()
        assert isinstance(cycle, WebSocketCycle) and cycle._paused
        http1 = ws_client.http_version == "1.1"
        assert connection.reading_paused is http1  # HTTP/2 reads on for its other streams
        assert len(cycle._inbox) <= 4 + 8  # max_queue, plus what one read brought
        record.go.set()  # the app reads now
        ws.send(rest)
        for _ in range(200):  # waits for the server to read again
            ws.send(message)
        ws.send(close(1000))
        ws.expect_close(1000)
        assert record.wait("slow")[-1] == sent + 200


def test_what_comes_after_the_app_is_done_does_not_hold_up_the_close(
    ws_client: WebSocketClient, record: Record
) -> None:
    """The app raised after accepting: nobody receives now, so what the client still sends is dropped rather
    than queued until reading stops, and the client's close frame is read and ends the WebSocket at once."""
    with (
        run_server(make_app(record), ws_max_queue=2) as server,
        ws_client.connect("/raise-after", port=server.port) as ws,
    ):
        ws.send(text("go"))
        assert ws.recv_frame().close_code == 1011
        ws.send(*[text("late")] * 8)
        time.sleep(0.1)  # read apart from the close frame
        ws.send(close(1011))
        assert ws.closed_by_server(timeout=2)  # not after the closing handshake's timeout (ws_ping_timeout)


def test_send_waits_while_the_client_does_not_read(ws_client: WebSocketClient, record: Record) -> None:
    # Against the socket buffers (64 KiB asked for) over HTTP/1.1, the stream's window (65535 bytes) over h2.
    count, size, most_sent = (100, 262144, 60) if ws_client.http_version == "1.1" else (50, 65536, 2)
    key = unique("flood")
    with ws_client.connect(f"/flood?key={key}&count={count}&size={size}") as ws:
        time.sleep(0.3)  # not reading
        assert len(record.data[key]) <= most_sent, "send() did not wait for the client"
        for i in range(count):
            got = ws.recv_frame()
            assert got.payload[:3] == b"%03d" % i and len(got.payload) == size
        assert record.wait(key, count)[-1] == count - 1
        ws.close_handshake()
    assert record.wait(key + "-end")[-1]["code"] == 1000


# ---------------------------------------------------------------------------- access log


def test_access_log(ws_client: WebSocketClient, record: Record, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="zonda.access")
    with run_server(make_app(record)) as server:
        with ws_client.connect("/echo", port=server.port) as ws:
            ws.close_handshake()
        for path in ("/deny", "/denial"):
            with ws_client.connect(path, port=server.port) as ws:
                ws.refusal_body()
        time.sleep(0.05)
    lines = [r.getMessage() for r in caplog.records if r.name == "zonda.access"]
    assert any(f'"WebSocket /echo" {ws_client.accepted_status}' in line for line in lines), lines
    assert any('"WebSocket /deny" 403' in line for line in lines), lines
    assert any('"WebSocket /denial" 418' in line for line in lines), lines
