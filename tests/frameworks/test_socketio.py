"""python-socketio (apps/socketio_app.py) on a real zonda, with python-socketio's own client: Engine.IO's
long-polling transport (many plain HTTP requests, some held open), its WebSocket transport and the upgrade from
one to the other (the default), events with acknowledgements, a room broadcast and a disconnect by the server;
on asyncio and uvloop (python-socketio's ASGI server is asyncio code).

Each session ends with the server's disconnect: when the client closes a long-polling session itself, its next
poll may already be waiting in the server, and Engine.IO answers that only at its ping timeout (45 s; the same
on uvicorn, whenever the poll wins the race with the close)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from framework_servers import ASYNCIO_LOOPS, serve
from helpers import ZondaProcess, wait_for

socketio = pytest.importorskip("socketio")


@pytest.fixture(scope="module", params=ASYNCIO_LOOPS)
def server(request: pytest.FixtureRequest) -> Iterator[ZondaProcess]:
    yield from serve("socketio_app:app", request.param)


def leave(client: Any) -> None:
    """Ask the server to end the session, and wait until the client has seen it end."""
    client.emit("leave")
    wait_for(lambda: not client.connected, timeout=10, what="the server's disconnect to reach the client")


@pytest.mark.parametrize("transports", [["polling"], ["websocket"], ["polling", "websocket"]])
def test_events_and_acknowledgements(server: ZondaProcess, transports: list[str]) -> None:
    assert server.url is not None
    with socketio.SimpleClient() as client:
        client.connect(server.url, transports=transports, wait_timeout=10)
        event, welcome = client.receive(timeout=10)
        assert event == "welcome"
        assert welcome["sid"] == client.sid
        assert (
            welcome["transport"] in transports
        )  # with both, the upgrade may come before the namespace's connect
        assert client.call("echo", {"text": "caf\u00e9", "n": [1, 2, 3]}, timeout=10) == {
            "ack": {"text": "caf\u00e9", "n": [1, 2, 3]}
        }
        assert client.receive(timeout=10) == ["echoed", {"text": "caf\u00e9", "n": [1, 2, 3]}]
        big = "x" * 200_000  # more than one polling response's worth on some clients
        client.emit("echo", big)
        assert client.receive(timeout=10) == ["echoed", big]
        assert client.transport == transports[-1]
        leave(client)


def test_room_broadcast_reaches_both_transports(server: ZondaProcess) -> None:
    assert server.url is not None
    with socketio.SimpleClient() as polling, socketio.SimpleClient() as websocket:
        polling.connect(server.url, transports=["polling"], wait_timeout=10)
        websocket.connect(server.url, transports=["websocket"], wait_timeout=10)
        assert polling.receive(timeout=10)[0] == "welcome"
        assert websocket.receive(timeout=10)[0] == "welcome"
        polling.emit("join", "lobby")
        assert polling.receive(timeout=10) == ["joined", {"room": "lobby", "who": polling.sid}]
        websocket.emit("join", "lobby")
        expected = ["joined", {"room": "lobby", "who": websocket.sid}]
        assert websocket.receive(timeout=10) == expected
        assert polling.receive(timeout=10) == expected  # the broadcast reached the long-polling client too
        leave(polling)
        leave(websocket)
