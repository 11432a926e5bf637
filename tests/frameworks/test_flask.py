"""Flask (apps/flask_app.py) over WSGI on a real zonda: a page with a session cookie, a form POST with a
redirect, a JSON route; over HTTP/1.1 and HTTP/2, on asyncio and uvloop."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from framework_clients import ClientFor
from framework_servers import EVERY_LOOP, serve
from helpers import ZondaProcess, raw_request, status_of


@pytest.fixture(scope="module", params=EVERY_LOOP)
def server(request: pytest.FixtureRequest) -> Iterator[ZondaProcess]:
    yield from serve("flask_app:app", request.param, "--interface", "wsgi")


def test_page_and_session_cookie(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    first = client.get("/")
    assert first.status_code == 200
    assert first.headers["content-type"] == "text/html; charset=utf-8"
    assert first.text == "Hello from Flask, visit 1"
    assert client.cookies.get("session")
    assert client.get("/").text == "Hello from Flask, visit 2"  # the cookie came back and was read


def test_form_post(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    assert "<form" in client.get("/signup").text
    posted = client.post("/signup", data={"name": "Grace Hopper"})
    assert posted.status_code == 302
    assert posted.headers["location"] == "/welcome/Grace%20Hopper"
    assert client.get(posted.headers["location"]).text == "Welcome, Grace Hopper!"
    assert client.post("/signup", data={"name": " "}).status_code == 400


def test_json_route(server: ZondaProcess, client_for: ClientFor) -> None:
    response = client_for(server).post("/api/sum", json={"numbers": list(range(10_000))})
    assert response.status_code == 200
    assert response.json() == {"sum": 49_995_000, "count": 10_000}
    assert client_for(server).get("/api/sum").status_code == 405


def test_set_cookie_on_the_wire(server: ZondaProcess) -> None:
    response = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200
    head = response.partition(b"\r\n\r\n")[0]
    assert re.search(rb"\r\nset-cookie: session=[^ ]", head, re.IGNORECASE), head
