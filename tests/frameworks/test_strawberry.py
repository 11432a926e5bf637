"""Strawberry GraphQL (apps/strawberry_app.py) on a real zonda: queries and a mutation over HTTP/1.1 and HTTP/2,
and a subscription over a WebSocket that negotiates the graphql-transport-ws subprotocol; on asyncio and uvloop
(Strawberry's WebSocket handlers are asyncio code)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from websockets.sync.client import connect

from framework_clients import ClientFor, ws_url
from framework_servers import ASYNCIO_LOOPS, serve
from helpers import ZondaProcess

pytest.importorskip("strawberry")


@pytest.fixture(scope="module", params=ASYNCIO_LOOPS)
def server(request: pytest.FixtureRequest) -> Iterator[ZondaProcess]:
    yield from serve("strawberry_app:app", request.param)


def test_query_and_mutation(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    hello = client.post("/graphql", json={"query": 'query { hello(name: "zonda") }'})
    assert hello.status_code == 200
    assert hello.json() == {"data": {"hello": "Hello, zonda!"}}
    by_get = client.get("/graphql", params={"query": "{ hello }"}, headers={"Accept": "application/json"})
    assert by_get.json() == {"data": {"hello": "Hello, world!"}}
    added = client.post("/graphql", json={"query": 'mutation { addBook(title: "Emma") }'})
    assert "Emma" in added.json()["data"]["addBook"]
    wrong = client.post("/graphql", json={"query": "{ nosuchfield }"})
    assert wrong.json()["errors"][0]["message"].startswith("Cannot query field 'nosuchfield'")


def test_subscription_over_graphql_transport_ws(server: ZondaProcess) -> None:
    assert server.url is not None
    url = ws_url(server.url, "/graphql")
    with connect(url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "graphql-transport-ws"
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(10)) == {"type": "connection_ack"}
        query = "subscription { count(to: 3) }"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        received = [json.loads(ws.recv(10)) for _ in range(4)]
        assert [m["payload"]["data"]["count"] for m in received[:3]] == [1, 2, 3]
        assert received[3] == {"id": "1", "type": "complete"}
        ws.send(json.dumps({"type": "ping"}))
        assert json.loads(ws.recv(10)) == {"type": "pong"}
