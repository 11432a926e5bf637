"""Django Channels (apps/djangosite/channels_asgi.py: ``ProtocolTypeRouter``) on a real zonda: Django views on
the HTTP side, a chat consumer whose ``group_send`` through the in-memory channel layer reaches every client in
the room, sessions shared between both sides; over HTTP/1.1 and HTTP/2, on asyncio and uvloop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from framework_clients import ClientFor, WebSocketOpener, django_admin_login, recv_json, websocket_refusal
from framework_servers import ADMIN_PASSWORD, ASYNCIO_LOOPS, serve
from helpers import ZondaProcess


@pytest.fixture(scope="module", params=ASYNCIO_LOOPS)
def server(request: pytest.FixtureRequest, django_env: dict[str, str]) -> Iterator[ZondaProcess]:
    yield from serve("djangosite.channels_asgi:application", request.param, env=django_env)


def test_django_view_behind_the_router(server: ZondaProcess, client_for: ClientFor) -> None:
    response = client_for(server).get("/hello/")
    assert response.status_code == 200
    assert response.text.startswith("Hello from Django (GET /hello/")
    assert client_for(server).get("/admin/login/").status_code == 200


def test_group_send_reaches_the_other_client(server: ZondaProcess, open_websocket: WebSocketOpener) -> None:
    assert server.url is not None
    with (
        open_websocket(server.url, "/ws/chat/lobby/", origin=True) as alice,
        open_websocket(server.url, "/ws/chat/lobby/", origin=True) as bob,
        open_websocket(server.url, "/ws/chat/elsewhere/", origin=True) as carol,
    ):
        alice.send_text('{"message": "hello, room"}')
        assert recv_json(bob) == {"message": "hello, room", "user": "anonymous"}
        assert recv_json(alice) == {"message": "hello, room", "user": "anonymous"}  # the sender is in it too
        bob.send_text('{"message": "hi alice"}')
        assert recv_json(alice) == {"message": "hi alice", "user": "anonymous"}
        assert recv_json(bob) == {"message": "hi alice", "user": "anonymous"}
        carol.send_text('{"message": "anyone?"}')
        assert recv_json(carol) == {"message": "anyone?", "user": "anonymous"}  # other rooms heard nothing:
        alice.send_text('{"message": "last"}')
        assert recv_json(bob)["message"] == "last"  # the next thing bob gets is alice's, not carol's
        assert recv_json(alice)["message"] == "last"
        bob.close()
        alice.send_text('{"message": "after bob left"}')
        assert recv_json(alice)["message"] == "after bob left"


def test_websocket_sees_the_http_login(
    server: ZondaProcess, client_for: ClientFor, open_websocket: WebSocketOpener
) -> None:
    """The session cookie from a login on the HTTP side makes the WebSocket's ``scope["user"]``."""
    assert server.url is not None
    client = client_for(server)
    assert django_admin_login(client, ADMIN_PASSWORD).status_code == 302
    cookie = f"sessionid={client.cookies['sessionid']}"
    with open_websocket(server.url, "/ws/chat/staff/", origin=True, headers={"cookie": cookie}) as ws:
        ws.send_text('{"message": "it is me"}')
        assert recv_json(ws) == {"message": "it is me", "user": "admin"}


def test_websocket_without_origin_is_refused(server: ZondaProcess, http_version: str) -> None:
    """AllowedHostsOriginValidator closes before accepting: the handshake gets a 403."""
    assert server.url is not None
    assert websocket_refusal(http_version, server.url, "/ws/chat/lobby/") == 403
