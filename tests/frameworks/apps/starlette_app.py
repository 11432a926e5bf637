"""A Starlette app as its docs write one: a lifespan that yields state, path and query parameters, JSON bodies,
a background task, StreamingResponse from async and sync iterators, StaticFiles, and sse-starlette's
EventSourceResponse. The static directory comes from STATIC_DIR (the test fills a temporary one). Served by
tests/frameworks/test_starlette.py in a real zonda process; the journal of what ran goes to the log at the
end."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

journal: list[str] = []  # what ran, in order: lifespan, background tasks


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    journal.append("startup")
    yield {"greeting": "hello from lifespan"}
    journal.append("shutdown")
    print("journal:", json.dumps(journal), flush=True)


async def item(request: Request) -> Response:
    return JSONResponse(
        {
            "id": request.path_params["item_id"],
            "q": request.query_params.get("q"),
            "tags": request.query_params.getlist("tag"),
            "greeting": request.state.greeting,
        }
    )


async def echo(request: Request) -> Response:
    data = await request.json()
    return JSONResponse({"received": data, "method": request.method}, status_code=201)


gates: dict[str, anyio.Event] = {}


async def record_when_released(name: str) -> None:
    """Waits for the test's go-ahead: it can only come in a later request, so the response came first."""
    with anyio.fail_after(30):
        await gates[name].wait()
    journal.append(f"background {name}")


async def background(request: Request) -> Response:
    name = request.query_params["name"]
    gates[name] = anyio.Event()
    return PlainTextResponse("queued", background=BackgroundTask(record_when_released, name))


async def release(request: Request) -> Response:
    gates[request.query_params["name"]].set()
    return PlainTextResponse("released")


async def show_journal(request: Request) -> Response:
    return JSONResponse(journal)


async def countdown(count: int) -> AsyncIterator[str]:
    for number in range(count, 0, -1):
        yield f"{number}...\n"
        await anyio.sleep(0.01)
    yield "liftoff\n"


def csv_rows(count: int) -> Iterator[bytes]:
    yield b"id,square\n"
    for number in range(count):
        yield f"{number},{number * number}\n".encode()


async def stream(request: Request) -> Response:
    return StreamingResponse(countdown(int(request.query_params.get("from", "5"))), media_type="text/plain")


async def report(request: Request) -> Response:
    return StreamingResponse(
        csv_rows(int(request.query_params.get("rows", "1000"))),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="report.csv"'},
    )


async def events(request: Request) -> Response:
    count = int(request.query_params.get("count", "5"))

    async def generate() -> AsyncIterator[ServerSentEvent]:
        for number in range(count):
            if await request.is_disconnected():
                return
            yield ServerSentEvent(data=json.dumps({"n": number}), event="tick", id=str(number))
            await anyio.sleep(0.01)
        yield ServerSentEvent(data="bye", event="end")

    return EventSourceResponse(generate(), ping=1)


app = Starlette(
    lifespan=lifespan,
    routes=[
        Route("/items/{item_id:int}", item),
        Route("/echo", echo, methods=["POST"]),
        Route("/background", background),
        Route("/release", release, methods=["POST"]),
        Route("/journal", show_journal),
        Route("/stream", stream),
        Route("/report.csv", report),
        Route("/events", events),
        Mount("/static", app=StaticFiles(directory=os.environ["STATIC_DIR"]), name="static"),
    ],
)
