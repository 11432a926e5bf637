"""A Litestar app as its docs write one: typed route handlers with a dataclass body, and a WebSocket listener.
Served by tests/frameworks/test_litestar.py in a real zonda process."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Litestar, get, post, websocket_listener


@dataclass
class Order:
    item: str
    quantity: int


@dataclass
class Receipt:
    item: str
    quantity: int
    total: float


@get("/books/{book_id:int}")
async def get_book(book_id: int, fmt: str = "short") -> dict[str, str | int]:
    return {"id": book_id, "title": f"Book {book_id}", "format": fmt}


@post("/orders")
async def place_order(data: Order) -> Receipt:
    return Receipt(item=data.item, quantity=data.quantity, total=round(data.quantity * 2.5, 2))


@websocket_listener("/ws")
async def shout(data: str) -> str:
    return data.upper()


app = Litestar(route_handlers=[get_book, place_order, shout])
