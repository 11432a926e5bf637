"""Raw-frame WebSocket conformance cases, laid out like the Autobahn testsuite's sections, against a real zonda
running an echo app on loopback, on every driver. Each case does the handshake by hand (``wsframes.WSClient``)
and asserts the exact bytes or close code RFC 6455 and RFC 7692 require."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from helpers import echo_messages, run_server
from wsframes import SMALL, WSClient

# What the app saw on connections opened with ``/?seen=NAME``: each message's type and payload, then the
# disconnect's code, under NAME (the test thread reads it).
SEEN: dict[str, list[tuple[str, Any]]] = {}


async def echo_app(scope: Any, receive: Any, send: Any) -> None:
    """Echoes every message as it came (text as text, bytes as bytes). ``/slow``: waits a moment before each
    echo, as an app that does some work per message; ``/close``: closes (4000) instead of echoing;
    ``?seen=NAME``: records what it got in ``SEEN[NAME]``."""
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    query = scope["query_string"].decode()
    if not query.startswith("seen=") and scope["path"] == "/":
        await echo_messages(receive, send)
        return
    seen = SEEN.setdefault(query.removeprefix("seen="), [])
    while (message := await receive())["type"] == "websocket.receive":
        seen.append(("receive", message.get("text", message.get("bytes"))))
        if scope["path"] == "/slow":
            await anyio.sleep(0.2)
        if scope["path"] == "/close":
            await send({"type": "websocket.close", "code": 4000})
            continue
        await send({"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")})
    seen.append(("disconnect", message["code"]))


@pytest.fixture(scope="session")
def echo_port(driver: str) -> Iterator[int]:
    with run_server(echo_app, loop=driver, ws_ping_interval=None, lifespan="off") as server:
        yield server.port


@pytest.fixture(scope="session")
def small_port(driver: str) -> Iterator[int]:
    with run_server(
        echo_app, loop=driver, ws_ping_interval=None, ws_max_size=SMALL, lifespan="off"
    ) as server:
        yield server.port


@pytest.fixture(scope="session")
def no_deflate_port(driver: str) -> Iterator[int]:
    with run_server(
        echo_app, loop=driver, ws_per_message_deflate=False, ws_ping_interval=None, lifespan="off"
    ) as server:
        yield server.port


@pytest.fixture
def ws(echo_port: int) -> Iterator[WSClient]:
    """A client with no extensions offered: the server's frames are exactly predictable."""
    with WSClient(echo_port) as client:
        assert client.status == 101
        yield client


@pytest.fixture
def seen() -> Iterator[dict[str, list[tuple[str, Any]]]]:
    """What the app saw on connections opened with ``/?seen=NAME``, by NAME."""
    yield SEEN
    SEEN.clear()


@pytest.fixture
def small(small_port: int) -> Iterator[WSClient]:
    with WSClient(small_port) as client:
        assert client.status == 101
        yield client
