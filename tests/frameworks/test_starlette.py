"""Starlette (apps/starlette_app.py) on a real zonda: streaming responses, static files and sse-starlette's
Server-Sent Events, over HTTP/1.1 and HTTP/2, on asyncio and uvloop."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from framework_clients import ClientFor, read_events
from framework_servers import EVERY_LOOP, serve
from helpers import ZondaProcess, wait_for

BLOB = bytes(range(256)) * 4096 + b"the end"  # 1 MiB and a bit: past HTTP/2's initial windows


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("static")
    (directory / "blob.bin").write_bytes(BLOB)
    (directory / "css").mkdir()
    (directory / "css" / "site.css").write_text("body { color: #222; }\n")
    return directory


@pytest.fixture(scope="module", params=EVERY_LOOP)
def server(request: pytest.FixtureRequest, static_dir: Path) -> Iterator[ZondaProcess]:
    stopped = yield from serve(
        "starlette_app:app", request.param, "--lifespan", "on", env={"STATIC_DIR": str(static_dir)}
    )
    journal = json.loads(stopped.output.split("journal: ", 1)[1].splitlines()[0])
    assert journal[0] == "startup" and journal[-1] == "shutdown", journal  # background tasks in between
    assert all(entry.startswith("background ") for entry in journal[1:-1]), journal


# ------------------------------------------------------------------ lifespan, parameters, JSON, background


def test_path_query_and_lifespan_state(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    item = client.get("/items/42", params=[("q", "caf\u00e9 au lait"), ("tag", "a"), ("tag", "b")]).json()
    assert item == {"id": 42, "q": "caf\u00e9 au lait", "tags": ["a", "b"], "greeting": "hello from lifespan"}
    assert client.get("/items/not-a-number").status_code == 404


def test_json_body(server: ZondaProcess, client_for: ClientFor) -> None:
    echo = client_for(server).post("/echo", json={"a": [1, 2, 3], "b": None})
    assert echo.status_code == 201
    assert echo.json() == {"received": {"a": [1, 2, 3], "b": None}, "method": "POST"}


def test_background_task_runs_after_the_response(
    server: ZondaProcess, client_for: ClientFor, http_version: str
) -> None:
    """The task waits for a later request to release it: the response to the first must come without it."""
    client = client_for(server)
    response = client.get("/background", params={"name": http_version})
    assert response.status_code == 200
    assert response.text == "queued"
    journal = client.get("/journal").json()
    assert journal[0] == "startup" and f"background {http_version}" not in journal
    assert client.post("/release", params={"name": http_version}).text == "released"
    wait_for(
        lambda: f"background {http_version}" in client.get("/journal").json(),
        timeout=10,
        what="the background task",
    )
    assert client.get("/items/7").json()["id"] == 7  # the connection still serves after the task


# ------------------------------------------------------------------ StreamingResponse


def test_streaming_response(server: ZondaProcess, client_for: ClientFor, http_version: str) -> None:
    with client_for(server).stream("GET", "/stream", params={"from": "3"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert "content-length" not in response.headers
        if http_version == "http1":
            assert response.headers["transfer-encoding"] == "chunked"
        assert list(response.iter_lines()) == ["3...", "2...", "1...", "liftoff"]


def test_streaming_response_from_a_sync_iterator(server: ZondaProcess, client_for: ClientFor) -> None:
    response = client_for(server).get("/report.csv", params={"rows": "1000"})
    assert response.status_code == 200
    assert response.headers["content-disposition"] == 'attachment; filename="report.csv"'
    lines = response.text.splitlines()
    assert lines[0] == "id,square"
    assert len(lines) == 1001
    assert lines[-1] == "999,998001"


# ------------------------------------------------------------------ StaticFiles


def test_static_file(server: ZondaProcess, client_for: ClientFor) -> None:
    response = client_for(server).get("/static/blob.bin")
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(BLOB)
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(BLOB).digest()
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"] and response.headers["last-modified"]

    css = client_for(server).get("/static/css/site.css")
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    assert css.text == "body { color: #222; }\n"


def test_static_file_conditional_and_range(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    etag = client.head("/static/blob.bin").headers["etag"]
    unchanged = client.get("/static/blob.bin", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""

    part = client.get("/static/blob.bin", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(BLOB)}"
    assert part.content == BLOB[1000:2000]
    tail = client.get("/static/blob.bin", headers={"Range": "bytes=-7"})
    assert tail.content == b"the end"


def test_static_head_and_missing(server: ZondaProcess, client_for: ClientFor) -> None:
    client = client_for(server)
    head = client.head("/static/blob.bin")
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == len(BLOB)
    assert head.content == b""
    assert client.get("/static/nope.txt").status_code == 404
    assert client.get("/static/../starlette_app.py").status_code == 404


# ------------------------------------------------------------------ sse-starlette


def test_server_sent_events(server: ZondaProcess, client_for: ClientFor) -> None:
    with client_for(server).stream("GET", "/events", params={"count": "5"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-store"
        events = list(read_events(response))
    assert events[:5] == [{"event": "tick", "id": str(n), "data": json.dumps({"n": n})} for n in range(5)]
    assert events[5:] == [{"event": "end", "data": "bye"}]


def test_server_sent_events_client_leaves(server: ZondaProcess, client_for: ClientFor) -> None:
    """A client that goes after two events of many: the stream ends, and the connection serves on."""
    client = client_for(server)
    with client.stream("GET", "/events", params={"count": "1000"}) as response:
        events = read_events(response)
        assert next(events)["id"] == "0"
        assert next(events)["id"] == "1"
    assert client.get("/stream").status_code == 200
