"""WebSocket over HTTP/3 (RFC 9220: extended CONNECT on a request stream, the stream's DATA carrying the
frames) on every driver, with aioquic's client API and the raw frames of ``wsframes``: the same app, ASGI
messages, compression and limits as over HTTP/1.1 and HTTP/2 (``test_websocket.py`` has the whole set for those
two; these are the ones that show the tunnel works end to end)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from h3client import H3Tunnel, h3_connect
from helpers import Record, run_server
from tlsutil import TLSFiles, make_tls_files
from websocket_e2e import make_app, unique
from wsframes import BINARY, CLOSE, TEXT, Frame, close, deflate, frame, inflate, parse_frame, text


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("wsh3"))


@pytest.fixture(scope="module")
def record() -> Record:
    return Record()


@pytest.fixture(scope="module")
def server(driver: str, tls: TLSFiles, record: Record) -> Iterator[Any]:
    options = {"http3": True, "ws_max_size": 1000, **tls.server_options()}
    with run_server(make_app(record), loop=driver, **options) as running:
        yield running


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def next_frame(tunnel: H3Tunnel) -> Frame:
    return await tunnel.receive(parse_frame)  # type: ignore[no-any-return]


def test_echo_scope_and_closing_handshake(server: Any, tls: TLSFiles, record: Record) -> None:
    key, scope_key = unique("h3-echo"), unique("h3-scope")

    async def go() -> tuple[list[Frame], Frame, int, Any]:
        async with h3_connect(server.server.quic_port, tls.ca_pem) as client:
            scoped = await client.open_tunnel(f"/scope?key={scope_key}")
            tunnel = await client.open_tunnel(
                f"/echo?key={key}", headers=[(b"sec-websocket-protocol", b"chat")]
            )
            tunnel.send(text("hello") + frame(BINARY, b"\x00\x01"))
            echoed = [await next_frame(tunnel), await next_frame(tunnel)]
            tunnel.send(close(1000, b"done"))
            closing = await next_frame(tunnel)
            await tunnel.wait_ended()
            scoped.send(close(1000))
            await next_frame(scoped)
            return echoed, closing, tunnel.status, tunnel.headers

    echoed, closing, status, headers = run(go())
    assert status == 200
    assert (b"sec-websocket-protocol", b"chat") in headers and (b"x-extra", b"yes") in headers
    assert [(f.opcode, f.payload) for f in echoed] == [(TEXT, b"hello"), (BINARY, b"\x00\x01")]
    assert closing.opcode == CLOSE and closing.close_code == 1000
    assert record.wait(key)[0]["code"] == 1000
    scope = record.wait(scope_key)[0]
    assert scope["http_version"] == "3" and scope["scheme"] == "wss" and scope["type"] == "websocket"
    assert scope["subprotocols"] == []


def test_permessage_deflate_over_http3(server: Any, tls: TLSFiles) -> None:
    async def go() -> tuple[H3Tunnel, Frame]:
        async with h3_connect(server.server.quic_port, tls.ca_pem) as client:
            tunnel = await client.open_tunnel(
                f"/echo?key={unique('h3-deflate')}",
                headers=[(b"sec-websocket-extensions", b"permessage-deflate")],
            )
            tunnel.send(frame(TEXT, deflate(b"squeeze me " * 20), rsv=4))
            echoed = await next_frame(tunnel)
            tunnel.send(close(1000))
            await next_frame(tunnel)
            return tunnel, echoed

    tunnel, echoed = run(go())
    assert dict(tunnel.headers)[b"sec-websocket-extensions"].startswith(b"permessage-deflate")
    assert echoed.rsv == 4 and echoed.opcode == TEXT
    assert inflate(echoed.payload) == b"squeeze me " * 20


def test_a_message_over_the_limit_is_closed_with_1009(server: Any, tls: TLSFiles) -> None:
    async def go() -> tuple[Frame, bool]:
        async with h3_connect(server.server.quic_port, tls.ca_pem) as client:
            tunnel = await client.open_tunnel(f"/echo?key={unique('h3-big')}")
            tunnel.send(frame(BINARY, b"x" * 2000))
            closing = await next_frame(tunnel)
            await tunnel.wait_ended()
            after = await client.request("GET", "/still-serving")
            return closing, after.status == 200

    closing, serving = run(go())
    assert closing.opcode == CLOSE and closing.close_code == 1009
    assert serving


def test_a_reset_stream_is_an_abrupt_close_for_the_app(server: Any, tls: TLSFiles, record: Record) -> None:
    key = unique("h3-reset")

    async def go() -> None:
        async with h3_connect(server.server.quic_port, tls.ca_pem) as client:
            tunnel = await client.open_tunnel(f"/wait?key={key}")
            client.reset(tunnel.stream_id)
            await asyncio.sleep(0.1)

    run(go())
    assert record.wait(key)[0]["code"] == 1006


def test_a_denied_handshake_is_a_plain_response(server: Any, tls: TLSFiles) -> None:
    async def go() -> H3Tunnel:
        async with h3_connect(server.server.quic_port, tls.ca_pem) as client:
            tunnel = await client.open_tunnel("/deny")
            await tunnel.wait_ended()
            return tunnel

    assert run(go()).status == 403


def test_without_websocket_extended_connect_is_not_offered(driver: str, tls: TLSFiles) -> None:
    options = {"http3": True, "ws": "none", **tls.server_options()}
    with run_server(make_app(Record()), loop=driver, **options) as running:

        async def go() -> Any:
            async with h3_connect(running.server.quic_port, tls.ca_pem) as client:
                await client.request("GET", "/")  # the server's SETTINGS have arrived by now
                return client.h3.received_settings

        settings = run(go())
    assert settings is not None and 0x8 not in settings  # SETTINGS_ENABLE_CONNECT_PROTOCOL


def test_websocket_http_response_denies_with_the_apps_own_response(server: Any, tls: TLSFiles) -> None:
    """The websocket.http.response extension over HTTP/3: the app's status, headers and body, in parts."""

    async def go() -> H3Tunnel:
        async with h3_connect(server.server.quic_port, tls.ca_pem) as client:
            tunnel = await client.open_tunnel("/denial")
            await tunnel.wait_ended()
            return tunnel

    tunnel = run(go())
    assert tunnel.status == 418
    assert (b"x-denied", b"yes") in tunnel.headers
    assert bytes(tunnel.received) == b"no websockets here"
