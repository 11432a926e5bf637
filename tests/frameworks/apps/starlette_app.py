"""A Starlette app as its docs write one: StreamingResponse from async and sync iterators, StaticFiles, and
sse-starlette's EventSourceResponse. The static directory comes from STATIC_DIR (the test fills a temporary
one). Served by tests/frameworks/test_starlette.py in a real zonda process."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles


async def countdown(count: int) -> AsyncIterator[str]:
    for number in range(count, 0, -1):
        yield f"{number}...\n"
        await asyncio.sleep(0.01)
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
            await asyncio.sleep(0.01)
        yield ServerSentEvent(data="bye", event="end")

    return EventSourceResponse(generate(), ping=1)


app = Starlette(
    routes=[
        Route("/stream", stream),
        Route("/report.csv", report),
        Route("/events", events),
        Mount("/static", app=StaticFiles(directory=os.environ["STATIC_DIR"]), name="static"),
    ]
)
