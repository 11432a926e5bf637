"""WebSocket over HTTP/2 only (RFC 8441), with an ``h2`` client with prior knowledge:
SETTINGS_ENABLE_CONNECT_PROTOCOL, the extended CONNECT's answer and errors, frames sent before the accept,
and a WebSocket being one stream among others: beside requests and other WebSockets, reset alone, lost with
its connection. Behaviours both HTTP versions have are in test_websocket.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from h2ws import ENABLE_CONNECT_PROTOCOL, H2Client, server_settings
from helpers import Record, RunningServer, assert_still_serving, run_server
from websocket_e2e import make_app, unique
from wsframes import BINARY, PING, PONG, TEXT, frame, text


@pytest.fixture(scope="module")
def record() -> Record:
    return Record()


@pytest.fixture(scope="module")
def server(driver: str, record: Record) -> Iterator[RunningServer]:
    with run_server(make_app(record), loop=driver) as running:
        yield running


def test_settings_enable_connect_protocol(server: RunningServer) -> None:
    assert server_settings(server.port).get(ENABLE_CONNECT_PROTOCOL) == 1


def test_no_connect_protocol_without_websocket() -> None:
    with run_server(make_app(Record()), ws="none") as server, H2Client(server.port) as client:
        assert client.server_settings.get(ENABLE_CONNECT_PROTOCOL, 0) == 0
        ws = client.open_websocket("/echo")  # the client breaks the rule: a stream error, not the app
        assert ws.state.reset == 0x1  # PROTOCOL_ERROR
        assert client.request("GET", "/after").data == b"http GET /after 2"


def test_accept_response(server: RunningServer) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/echo")
        assert ws.status == 200
        names = [name for name, _ in ws.state.headers]
        for absent in (b"sec-websocket-accept", b"upgrade", b"connection", b"sec-websocket-protocol"):
            assert absent not in names
        assert not ws.state.ended
        ws.close_handshake()


@pytest.mark.parametrize("version", [b"8", None], ids=["version-8", "no-version"])
def test_handshake_errors(server: RunningServer, version: bytes | None) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/echo", version=version)
        assert ws.status == 426
        assert ws.header(b"sec-websocket-version") == b"13"
        client.wait_for(lambda: ws.state.ended, "the error body")
        assert bytes(ws.state.data).startswith(b"Upgrade Required")
        assert client.request("GET", "/still").data == b"http GET /still 2"


def test_frames_sent_with_the_request_wait_for_the_accept(server: RunningServer) -> None:
    with H2Client(server.port) as client:
        ws = client.open_websocket("/echo", wait=False)
        ws.send(text("early bird"), frame(PING, b"p"))
        ws.wait_response()
        assert ws.status == 200
        got = {(f.opcode, f.payload) for f in (ws.recv_frame(), ws.recv_frame())}
        assert got == {(TEXT, b"early bird"), (PONG, b"p")}  # the pong may overtake the app's echo
        ws.close_handshake()


def test_two_websockets_and_a_request_on_one_connection(server: RunningServer, record: Record) -> None:
    first_key, second_key = unique("first"), unique("second")
    with H2Client(server.port) as client:
        first = client.open_websocket(f"/echo?key={first_key}")
        second = client.open_websocket(f"/echo?key={second_key}")
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
    assert record.wait(first_key)[-1]["code"] == 4010
    assert record.wait(second_key)[-1]["code"] == 4020


def test_client_reset_disconnects_that_websocket_only(server: RunningServer, record: Record) -> None:
    doomed_key, survivor_key = unique("reset"), unique("survivor")
    with H2Client(server.port) as client:
        doomed = client.open_websocket(f"/echo?key={doomed_key}")
        survivor = client.open_websocket(f"/echo?key={survivor_key}")
        doomed.send(text("before"))
        assert doomed.recv_frame().payload == b"before"
        doomed.reset()
        assert record.wait(doomed_key)[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        survivor.send(text("after"))
        assert survivor.recv_frame().payload == b"after"
        assert client.request("GET", "/after").status == 200
        survivor.close_handshake()
    assert record.wait(survivor_key)[-1]["code"] == 1000
    with H2Client(server.port) as client:  # a new connection
        assert client.request("GET", "/new").data == b"http GET /new 2"
    assert_still_serving(server.port)


def test_connection_loss_disconnects_every_websocket(server: RunningServer, record: Record) -> None:
    keys = [unique("lost"), unique("lost")]
    client = H2Client(server.port)
    for key in keys:
        client.open_websocket(f"/wait?key={key}")
    client.sock.close()
    for key in keys:
        assert record.wait(key)[-1] == {"type": "websocket.disconnect", "code": 1006, "reason": ""}
