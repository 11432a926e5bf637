"""The real-app workload of bench/run.py: an idiomatic FastAPI app with one ``@app.middleware("http")`` and a
route that returns a pydantic model, served the same way by every server (and called in-process by
bench/inprocess.py to see what the app costs without a server).

``GET /orders/{order_id}`` answers an order: a few scalar fields and a nested list of line items, validated
and serialised by FastAPI through the route's response model. The middleware times the call and adds
``X-Process-Time``, the example FastAPI's documentation gives for ``@app.middleware("http")``.

``GET /asgi`` is not part of the workload: bench/run.py asks it once per server which ASGI spec_version the
server announces, since some of Starlette's responses do more work below 2.4 (see bench/inprocess.py). It
comes after the order route, so requests for an order never try it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel


class LineItem(BaseModel):
    sku: str
    name: str
    quantity: int
    unit_price: float


class Order(BaseModel):
    id: int
    customer: str
    status: str
    total: float
    items: list[LineItem]


app = FastAPI()


@app.middleware("http")
async def add_process_time(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    start = time.perf_counter()
    response = await call_next(request)
    response.headers["X-Process-Time"] = f"{time.perf_counter() - start:.6f}"
    return response


@app.get("/orders/{order_id}", response_model=Order)
async def read_order(order_id: int) -> Order:
    items = [
        LineItem(sku=f"SKU-{order_id}-{n}", name=f"Item {n}", quantity=n + 1, unit_price=9.99 + n)
        for n in range(3)
    ]
    return Order(
        id=order_id,
        customer="Ada Lovelace",
        status="paid",
        total=round(sum(i.quantity * i.unit_price for i in items), 2),
        items=items,
    )


@app.get("/asgi")
async def asgi_version(request: Request) -> dict[str, str]:
    return {str(k): str(v) for k, v in request.scope.get("asgi", {}).items()}
