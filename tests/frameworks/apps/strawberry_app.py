"""A Strawberry GraphQL app on ASGI: queries and mutations over HTTP POST and GET, and a subscription over a
WebSocket speaking the graphql-transport-ws subprotocol (the one GraphQL clients use today)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import strawberry
from strawberry.asgi import GraphQL

books: list[str] = ["Dune"]


@strawberry.type
class Query:
    @strawberry.field
    def hello(self, name: str = "world") -> str:
        return f"Hello, {name}!"

    @strawberry.field
    def books(self) -> list[str]:
        return books


@strawberry.type
class Mutation:
    @strawberry.mutation
    def add_book(self, title: str) -> list[str]:
        books.append(title)
        return books


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self, to: int = 3) -> AsyncGenerator[int, None]:
        for n in range(1, to + 1):
            yield n
            await asyncio.sleep(0.01)


app = GraphQL(strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription))
