"""A Flask app mounted in a FastAPI app with a2wsgi (apps/mounted_app.py): the WSGI app's pages, forms, JSON and
cookies under its mount path beside a FastAPI route, over HTTP/1.1 and HTTP/2, on asyncio and uvloop (a2wsgi
waits on asyncio)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from framework_clients import ClientFor
from framework_servers import ASYNCIO_LOOPS, serve
from helpers import ZondaProcess


@pytest.fixture(scope="module", params=ASYNCIO_LOOPS)
def server(request: pytest.FixtureRequest) -> Iterator[ZondaProcess]:
    yield from serve("mounted_app:app", request.param)


def test_both_apps_answer_under_their_paths(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    assert client.get("/api/status").json() == {"status": "ok", "served_by": "fastapi"}
    first = client.get("/legacy/")
    assert first.status_code == 200
    assert first.text == "Hello from Flask, visit 1"
    assert client.get("/legacy/").text == "Hello from Flask, visit 2"  # Flask's session cookie came back


def test_form_redirect_keeps_the_mount_path(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    posted = client.post("/legacy/signup", data={"name": "Ada Lovelace"})
    assert posted.status_code == 302
    assert posted.headers["location"] == "/legacy/welcome/Ada%20Lovelace"  # SCRIPT_NAME from root_path
    assert client.get(posted.headers["location"]).text == "Welcome, Ada Lovelace!"


def test_json_body_through_the_mount(server: ZondaProcess, client_for: ClientFor) -> None:
    response = client_for(server).post("/legacy/api/sum", json={"numbers": list(range(50_000))})
    assert response.status_code == 200
    assert response.json() == {"sum": 1_249_975_000, "count": 50_000}
