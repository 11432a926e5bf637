"""Falcon (apps/falcon_app.py) on a real zonda: its ASGI app (JSON media, streaming, Server-Sent Events, a
WebSocket, lifespan middleware) on asyncio and uvloop, and its WSGI app on every loop; over HTTP/1.1 and
HTTP/2."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from framework_clients import ClientFor, WebSocketOpener, assert_echo_conversation, read_events
from framework_servers import ASYNCIO_LOOPS, EVERY_LOOP, serve
from helpers import ZondaProcess


@pytest.fixture(scope="module", params=ASYNCIO_LOOPS)
def server(request: pytest.FixtureRequest) -> Iterator[ZondaProcess]:
    stopped = yield from serve("falcon_app:app", request.param, "--lifespan", "on")
    assert "journal: ['startup', 'shutdown']" in stopped.output


@pytest.fixture(scope="module", params=EVERY_LOOP)
def wsgi_server(request: pytest.FixtureRequest) -> Iterator[ZondaProcess]:
    yield from serve("falcon_app:wsgi_app", request.param, "--interface", "wsgi")


def test_json_media_and_headers(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    things = client.get("/things", headers={"x-TRACE-id": "abc123"})
    assert things.status_code == 200
    assert things.headers["content-type"].startswith("application/json")
    assert things.json() == {
        "things": [{"id": n, "name": f"thing {n}"} for n in range(3)],
        "trace": "abc123",
        "task": True,
    }
    created = client.post("/things", json={"name": "caf\u00e9", "tags": list(range(1000))})
    assert created.status_code == 201
    assert created.json() == {
        "created": {"name": "caf\u00e9", "tags": list(range(1000))},
        "length": len(created.request.content),
    }
    assert client.get("/missing").status_code == 404
    assert client.delete("/things").status_code == 405


def test_streamed_body(server: ZondaProcess, client_for: ClientFor) -> None:
    response = client_for(server).get("/stream", params={"count": "200"})
    assert response.status_code == 200
    assert response.text == "".join(f"line {n}\n" for n in range(200))


def test_server_sent_events(server: ZondaProcess, client_for: ClientFor) -> None:
    with client_for(server).stream("GET", "/events", params={"count": "3"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(read_events(response))
    assert [event["id"] for event in events] == ["0", "1", "2"]
    assert {event["event"] for event in events} == {"tick"}
    assert [event["data"] for event in events] == ['{"n": 0}', '{"n": 1}', '{"n": 2}']


def test_websocket(server: ZondaProcess, open_websocket: WebSocketOpener) -> None:
    assert server.url is not None
    with open_websocket(server.url, "/ws") as ws:
        assert_echo_conversation(ws)


def test_wsgi_json_and_stream(wsgi_server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(wsgi_server)
    things = client.get("/things", headers={"X-Trace-ID": "t-1"})
    assert things.status_code == 200
    assert things.json() == {"things": [{"id": n} for n in range(3)], "trace": "t-1"}
    created = client.post("/things", json={"n": 1})
    assert created.status_code == 201
    assert created.json() == {"created": {"n": 1}, "length": len(created.request.content)}
    streamed = client.get("/stream", params={"count": "100"})
    assert streamed.text == "".join(f"line {n}\n" for n in range(100))
