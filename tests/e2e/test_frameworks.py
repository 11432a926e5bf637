"""Starlette and FastAPI apps served for real by zonda and exercised with httpx: lifespan state, path and
query parameters, JSON bodies, streaming responses and background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi import Request as FastAPIRequest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from helpers import run_server


class Journal:
    """What the apps did, readable from the test thread."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.background_ran = threading.Event()
        self.response_sent_first: bool | None = None

    def reset(self) -> None:
        self.events.clear()
        self.background_ran.clear()


journal = Journal()


async def background_job(name: str) -> None:
    await asyncio.sleep(0.2)  # the client has its response well before this ends
    journal.events.append(f"background {name}")
    journal.background_ran.set()


async def numbers(count: int) -> AsyncIterator[bytes]:
    for i in range(count):
        yield f"chunk {i}\n".encode()
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------ Starlette


@contextlib.asynccontextmanager
async def starlette_lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    journal.events.append("starlette startup")
    yield {"greeting": "hello from lifespan"}
    journal.events.append("starlette shutdown")


async def st_item(request: Request) -> Response:
    return JSONResponse(
        {
            "id": request.path_params["item_id"],
            "q": request.query_params.get("q"),
            "tags": request.query_params.getlist("tag"),
            "greeting": request.state.greeting,
        }
    )


async def st_echo(request: Request) -> Response:
    data = await request.json()
    return JSONResponse({"received": data, "method": request.method}, status_code=201)


async def st_stream(request: Request) -> Response:
    return StreamingResponse(numbers(5), media_type="text/plain")


async def st_background(request: Request) -> Response:
    return PlainTextResponse("queued", background=BackgroundTask(background_job, "starlette"))


starlette_app = Starlette(
    routes=[
        Route("/items/{item_id:int}", st_item),
        Route("/echo", st_echo, methods=["POST"]),
        Route("/stream", st_stream),
        Route("/background", st_background),
    ],
    lifespan=starlette_lifespan,
)


# ------------------------------------------------------------------ FastAPI


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@contextlib.asynccontextmanager
async def fastapi_lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    journal.events.append("fastapi startup")
    yield {"db": "fake-db"}
    journal.events.append("fastapi shutdown")


fastapi_app = FastAPI(lifespan=fastapi_lifespan)


@fastapi_app.get("/items/{item_id}")
async def fa_read_item(item_id: int, request: FastAPIRequest, q: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "q": q, "db": request.state.db}


@fastapi_app.post("/items", status_code=201)
async def fa_create_item(item: Item) -> dict[str, Any]:
    return {"name": item.name, "price_with_tax": round(item.price * 1.1, 2), "tags": item.tags}


@fastapi_app.get("/stream")
async def fa_stream() -> StreamingResponse:
    return StreamingResponse(numbers(4), media_type="text/plain")


@fastapi_app.post("/notify")
async def fa_notify(background_tasks: BackgroundTasks) -> dict[str, bool]:
    background_tasks.add_task(background_job, "fastapi")
    return {"queued": True}


# ------------------------------------------------------------------ tests


@pytest.fixture(autouse=True)
def fresh_journal() -> None:
    journal.reset()


def assert_background_runs_after_response(client: httpx.Client, method: str, path: str) -> httpx.Response:
    response = client.request(method, path)
    assert response.status_code == 200
    assert not journal.background_ran.is_set(), "the response came before the background task finished"
    assert journal.background_ran.wait(5), "the background task ran"
    return response


def test_starlette() -> None:
    with run_server(starlette_app, lifespan="on") as server, httpx.Client(base_url=server.url) as client:
        assert journal.events == ["starlette startup"]
        item = client.get("/items/42", params=[("q", "caf\u00e9 au lait"), ("tag", "a"), ("tag", "b")]).json()
        assert item == {
            "id": 42,
            "q": "caf\u00e9 au lait",
            "tags": ["a", "b"],
            "greeting": "hello from lifespan",
        }
        assert client.get("/items/not-a-number").status_code == 404

        echo = client.post("/echo", json={"a": [1, 2, 3], "b": None})
        assert echo.status_code == 201
        assert echo.json() == {"received": {"a": [1, 2, 3], "b": None}, "method": "POST"}

        with client.stream("GET", "/stream") as stream:
            assert stream.headers["transfer-encoding"] == "chunked"
            assert stream.read() == b"".join(f"chunk {i}\n".encode() for i in range(5))

        response = assert_background_runs_after_response(client, "GET", "/background")
        assert response.text == "queued"
        assert client.get("/items/7").json()["id"] == 7  # the connection still serves after the task
    assert journal.events == ["starlette startup", "background starlette", "starlette shutdown"]


def test_fastapi() -> None:
    with run_server(fastapi_app, lifespan="on") as server, httpx.Client(base_url=server.url) as client:
        assert journal.events == ["fastapi startup"]
        assert client.get("/items/5", params={"q": "x y"}).json() == {
            "item_id": 5,
            "q": "x y",
            "db": "fake-db",
        }
        assert client.get("/items/5").json()["q"] is None
        assert client.get("/items/five").status_code == 422

        created = client.post("/items", json={"name": "widget", "price": 10.0, "tags": ["new"]})
        assert created.status_code == 201
        assert created.json() == {"name": "widget", "price_with_tax": 11.0, "tags": ["new"]}
        invalid = client.post("/items", json={"name": "widget"})
        assert invalid.status_code == 422
        assert invalid.json()["detail"][0]["loc"] == ["body", "price"]
        big = client.post("/items", json={"name": "n" * 200_000, "price": 1})
        assert big.status_code == 201
        assert len(big.json()["name"]) == 200_000

        with client.stream("GET", "/stream") as stream:
            assert b"".join(stream.iter_bytes()) == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n"

        response = assert_background_runs_after_response(client, "POST", "/notify")
        assert response.json() == {"queued": True}
        assert client.get("/openapi.json").json()["paths"]["/items"]["post"]
    assert journal.events == ["fastapi startup", "background fastapi", "fastapi shutdown"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_fastapi_on_each_loop(loop: str) -> None:
    with run_server(fastapi_app, lifespan="on", loop=loop) as server:
        assert httpx.get(server.url + "/items/1").json()["db"] == "fake-db"
