"""A Falcon app, as a team writes one, in both of Falcon's flavours on one set of resources' ideas.

``app`` (falcon.asgi): JSON media in and out, a header read by another case than it was sent in, a response
streamed from an async generator, Server-Sent Events, a WebSocket echo, and the lifespan through Falcon's
middleware hooks (the journal of what ran is printed at shutdown, for the test to read in the log).
``wsgi_app`` (falcon.App): the same JSON and header routes and a streamed body, run in zonda's thread pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import falcon
import falcon.asgi

journal: list[str] = []


class Lifespan:
    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        journal.append("startup")

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        journal.append("shutdown")
        print("journal:", journal, flush=True)


class Things:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {
            "things": [{"id": n, "name": f"thing {n}"} for n in range(3)],
            "trace": req.get_header("X-Trace-Id"),  # sent as "x-TRACE-id": header names are case-insensitive
            "task": asyncio.current_task() is not None,
        }

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        media = await req.get_media()
        resp.status = falcon.HTTP_201
        resp.media = {"created": media, "length": req.content_length}


class Stream:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        count = req.get_param_as_int("count", default=5)

        async def lines() -> AsyncIterator[bytes]:
            for n in range(count):
                yield b"line %d\n" % n
                await asyncio.sleep(0)

        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = lines()


class Events:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        count = req.get_param_as_int("count", default=3)

        async def events() -> AsyncIterator[falcon.asgi.SSEvent]:
            for n in range(count):
                yield falcon.asgi.SSEvent(json={"n": n}, event="tick", event_id=str(n))
                await asyncio.sleep(0.01)

        resp.sse = events()


class Echo:
    async def on_websocket(self, req: falcon.asgi.Request, ws: falcon.asgi.WebSocket) -> None:
        await ws.accept()
        while True:
            message = await ws.receive_text()
            if message == "bye":
                await ws.close(1000)
                return
            await ws.send_text(f"echo: {message}")


app = falcon.asgi.App(middleware=[Lifespan()])
app.add_route("/things", Things())
app.add_route("/stream", Stream())
app.add_route("/events", Events())
app.add_route("/ws", Echo())


class WSGIThings:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"things": [{"id": n} for n in range(3)], "trace": req.get_header("X-Trace-Id")}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.status = falcon.HTTP_201
        resp.media = {"created": req.get_media(), "length": req.content_length}


class WSGIStream:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        count = req.get_param_as_int("count", default=5)

        def lines() -> Iterator[bytes]:
            for n in range(count):
                yield b"line %d\n" % n

        resp.content_type = falcon.MEDIA_TEXT
        resp.stream = lines()


wsgi_app = falcon.App()
wsgi_app.add_route("/things", WSGIThings())
wsgi_app.add_route("/stream", WSGIStream())
