"""A FastAPI app as its docs write one: an ``@app.middleware("http")`` adding a header, a lifespan that
yields state, pydantic bodies and responses, a StreamingResponse, BackgroundTasks, and a WebSocket that runs an
anyio task group after ``accept()``. Served by tests/frameworks/test_fastapi.py in a real zonda process; what
the background tasks did goes to the log at shutdown."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import BackgroundTasks, Depends, FastAPI, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

# What the background tasks did, and the gates that let them finish: one process serves every test.
notifications: list[str] = []
gates: dict[str, anyio.Event] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "hello from lifespan", "started": time.time()}
    print("notifications at shutdown:", json.dumps(notifications), flush=True)


app = FastAPI(lifespan=lifespan)


@app.middleware("http")
async def add_process_time_header(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    start = time.perf_counter()
    response = await call_next(request)
    response.headers["X-Process-Time"] = f"{time.perf_counter() - start:.6f}"
    return response


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


class PricedItem(BaseModel):
    name: str
    price_with_tax: float
    tags: list[str]


@app.get("/")
async def root(request: Request) -> dict[str, str]:
    return {"greeting": request.state.greeting}


class Session:
    """What a database session dependency hands out: opened before the endpoint, closed after it."""

    opened = 0
    closed = 0

    def __init__(self) -> None:
        Session.opened += 1
        self.open = True

    def close(self) -> None:
        self.open = False
        Session.closed += 1


async def get_session() -> AsyncIterator[Session]:
    session = Session()
    try:
        yield session
    finally:
        session.close()


@app.get("/sessions")
async def sessions(session: Session = Depends(get_session)) -> dict[str, int | bool]:  # noqa: B008
    return {"open": session.open, "opened": Session.opened, "closed": Session.closed}


@app.get("/blocking")
def blocking(n: int = 10) -> dict[str, int | str]:
    """A plain ``def`` endpoint: FastAPI runs it in its thread pool."""
    time.sleep(0.01)
    return {"squares": sum(i * i for i in range(n)), "thread": threading.current_thread().name}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "q": q}


@app.post("/items/", status_code=201)
async def create_item(item: Item) -> PricedItem:
    return PricedItem(name=item.name, price_with_tax=round(item.price * 1.2, 2), tags=item.tags)


async def numbers(count: int) -> AsyncIterator[bytes]:
    for number in range(count):
        yield f"chunk {number}\n".encode()
        await anyio.sleep(0.01)


@app.get("/stream")
async def stream() -> StreamingResponse:
    return StreamingResponse(numbers(4), media_type="text/plain")


async def write_notification(email: str, message: str) -> None:
    """Waits for the test's go-ahead: it can only come in a later request, so the response came first."""
    with anyio.fail_after(30):
        await gates[email].wait()
    notifications.append(f"notification for {email}: {message}")


@app.post("/send-notification/{email}")
async def send_notification(email: str, background_tasks: BackgroundTasks) -> dict[str, str]:
    gates[email] = anyio.Event()
    background_tasks.add_task(write_notification, email, message="some notification")
    return {"message": "Notification sent in the background"}


@app.post("/release/{email}")
async def release(email: str) -> dict[str, bool]:
    gates[email].set()
    return {"released": True}


@app.get("/notifications")
async def list_notifications() -> list[str]:
    return notifications


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    """Echoes each text message while a second task sends ``ticks`` ticks; "bye" ends both."""
    await websocket.accept()
    ticks = int(websocket.query_params.get("ticks", "3"))

    async def tick() -> None:
        for number in range(ticks):
            await websocket.send_json({"tick": number})
            await anyio.sleep(0.01)

    disconnected = False

    async def echo(scope: anyio.CancelScope) -> None:
        nonlocal disconnected
        try:
            while (text := await websocket.receive_text()) != "bye":
                await websocket.send_json({"echo": text, "greeting": websocket.state.greeting})
        except WebSocketDisconnect:
            disconnected = True
        scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(tick)
        group.start_soon(echo, group.cancel_scope)
    if not disconnected:
        await websocket.close(code=1000)
