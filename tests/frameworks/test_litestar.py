"""Litestar (apps/litestar_app.py) on a real zonda: typed HTTP routes and a WebSocket listener, over HTTP/1.1
and HTTP/2, on asyncio and uvloop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from framework_clients import ClientFor, WebSocketOpener
from framework_servers import EVERY_LOOP, serve
from helpers import ZondaProcess


@pytest.fixture(scope="module", params=EVERY_LOOP)
def server(request: pytest.FixtureRequest) -> Iterator[ZondaProcess]:
    yield from serve("litestar_app:app", request.param)


def test_http_routes(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    book = client.get("/books/7", params={"fmt": "long"})
    assert book.status_code == 200
    assert book.json() == {"id": 7, "title": "Book 7", "format": "long"}
    assert client.get("/books/seven").status_code == 404

    order = client.post("/orders", json={"item": "tea", "quantity": 3})
    assert order.status_code == 201
    assert order.headers["content-type"] == "application/json"
    assert order.json() == {"item": "tea", "quantity": 3, "total": 7.5}
    invalid = client.post("/orders", json={"item": "tea"})
    assert invalid.status_code == 400
    assert "quantity" in invalid.text


def test_websocket(server: ZondaProcess, open_websocket: WebSocketOpener) -> None:
    assert server.url is not None
    with open_websocket(server.url, "/ws") as ws:
        for word in ("hello", "zonda", "x" * 70_000):
            ws.send_text(word)
            assert ws.recv_text() == word.upper()
