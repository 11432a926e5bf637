"""FastAPI (apps/fastapi_app.py) on a real zonda: what its users rely on, over HTTP/1.1 and HTTP/2, on asyncio
and uvloop."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from framework_clients import ClientFor, WebSocketOpener, expect_server_close, recv_json
from framework_servers import EVERY_LOOP, serve
from helpers import ZondaProcess, wait_for


@pytest.fixture(scope="module", params=EVERY_LOOP)
def server(request: pytest.FixtureRequest) -> Iterator[ZondaProcess]:
    stopped = yield from serve("fastapi_app:app", request.param, "--lifespan", "on")
    # Lifespan shutdown ran after every background task had finished.
    done = json.loads(stopped.output.split("notifications at shutdown: ", 1)[1].splitlines()[0])
    assert all(entry.endswith(": some notification") for entry in done), done


def test_middleware_adds_its_header(server: ZondaProcess, client_for: ClientFor) -> None:
    response = client_for(server).get("/items/5", params={"q": "x y"})
    assert response.status_code == 200
    assert response.json() == {"item_id": 5, "q": "x y"}
    assert float(response.headers["x-process-time"]) >= 0
    assert client_for(server).get("/items/5").json()["q"] is None
    assert client_for(server).get("/items/five").status_code == 422  # errors pass the middleware too


def test_lifespan_state_reaches_requests(server: ZondaProcess, client_for: ClientFor) -> None:
    assert client_for(server).get("/").json() == {"greeting": "hello from lifespan"}


def test_pydantic_body_and_response(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    created = client.post("/items/", json={"name": "widget", "price": 10.0, "tags": ["new"]})
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/json"
    assert created.json() == {"name": "widget", "price_with_tax": 12.0, "tags": ["new"]}
    invalid = client.post("/items/", json={"name": "widget"})
    assert invalid.status_code == 422
    assert invalid.json()["detail"][0]["loc"] == ["body", "price"]
    big = client.post("/items/", json={"name": "n" * 300_000, "price": 1})
    assert big.status_code == 201
    assert len(big.json()["name"]) == 300_000


def test_dependency_with_yield(server: ZondaProcess, client_for: ClientFor) -> None:
    """The session a ``yield`` dependency opened is open in the endpoint and closed once the response is out."""
    client = client_for(server)
    first = client.get("/sessions").json()
    assert first["open"] is True
    wait_for(
        lambda: client.get("/sessions").json()["closed"] >= first["opened"],
        timeout=10,
        what="the first request's session to be closed",
    )


def test_sync_endpoint_in_the_thread_pool(server: ZondaProcess, client_for: ClientFor) -> None:
    response = client_for(server).get("/blocking", params={"n": 100})
    assert response.status_code == 200
    assert response.json()["squares"] == 328_350
    assert response.json()["thread"] != "MainThread"
    assert "x-process-time" in response.headers


def test_streaming_response_through_the_middleware(server: ZondaProcess, client_for: ClientFor) -> None:
    with client_for(server).stream("GET", "/stream") as response:
        assert "x-process-time" in response.headers
        assert b"".join(response.iter_bytes()) == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n"


def test_openapi_schema(server: ZondaProcess, client_for: ClientFor) -> None:
    schema = client_for(server).get("/openapi.json").json()
    assert schema["paths"]["/items/"]["post"]
    assert schema["components"]["schemas"]["Item"]["required"] == ["name", "price"]


def test_background_task_runs_after_the_response(
    server: ZondaProcess, client_for: ClientFor, http_version: str
) -> None:
    """The task waits for a later request to release it: the response to the first must come without it."""
    client = client_for(server)
    email = f"user-{http_version}@example.com"
    response = client.post(f"/send-notification/{email}")
    assert response.json() == {"message": "Notification sent in the background"}
    assert f"notification for {email}: some notification" not in client.get("/notifications").json()
    assert client.post(f"/release/{email}").json() == {"released": True}
    wait_for(
        lambda: f"notification for {email}: some notification" in client.get("/notifications").json(),
        timeout=10,
        what="the background task",
    )


def test_websocket_with_a_task_group(server: ZondaProcess, open_websocket: WebSocketOpener) -> None:
    assert server.url is not None
    with open_websocket(server.url, "/ws?ticks=3") as ws:
        ticks, echoes = [], []
        ws.send_text("hello")
        while len(ticks) < 3 or not echoes:
            message = recv_json(ws)
            (ticks if "tick" in message else echoes).append(message)
        assert ticks == [{"tick": 0}, {"tick": 1}, {"tick": 2}]
        assert echoes == [{"echo": "hello", "greeting": "hello from lifespan"}]
        ws.send_text("again")
        assert recv_json(ws) == {"echo": "again", "greeting": "hello from lifespan"}
        ws.send_text("bye")
        assert expect_server_close(ws) == 1000


def test_websocket_client_goes_first(server: ZondaProcess, open_websocket: WebSocketOpener) -> None:
    """A client that closes while both tasks run: the task group ends without an error in the log."""
    assert server.url is not None
    with open_websocket(server.url, "/ws?ticks=1") as ws:
        assert recv_json(ws) == {"tick": 0}
        ws.close()
