"""Quart (apps/quart_app.py) on a real zonda: HTTP routes and a WebSocket route, over HTTP/1.1 and HTTP/2, on
asyncio and uvloop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from framework_clients import ClientFor, WebSocketOpener, assert_echo_conversation
from framework_servers import ASYNCIO_LOOPS, serve
from helpers import ZondaProcess


@pytest.fixture(scope="module", params=ASYNCIO_LOOPS)
def server(request: pytest.FixtureRequest) -> Iterator[ZondaProcess]:
    yield from serve("quart_app:app", request.param)


def test_http_routes(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    index = client.get("/")
    assert index.status_code == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert index.text == "Hello from Quart"
    echo = client.post("/echo", json={"a": [1, 2], "b": "caf\u00e9"})
    assert echo.status_code == 200
    assert echo.json() == {
        "received": {"a": [1, 2], "b": "caf\u00e9"},
        "content_length": len(echo.request.content),
    }
    assert client.get("/missing").status_code == 404


def test_websocket(server: ZondaProcess, open_websocket: WebSocketOpener) -> None:
    assert server.url is not None
    with open_websocket(server.url, "/ws") as ws:
        assert_echo_conversation(ws)
