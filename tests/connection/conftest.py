from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fakeio import FakeServer


@pytest.fixture(params=["queued", "eager"])
def serve(request: pytest.FixtureRequest) -> Iterator[Callable[..., FakeServer]]:
    """``serve(app, **options)``: a ``FakeServer``. Every test runs twice: app calls start on the loop's next
    turn (asyncio before Python 3.12) and at once (3.12's ``eager_start``). An error that escapes an app task
    fails the test."""
    servers: list[FakeServer] = []

    def make(app: Any, **options: Any) -> FakeServer:
        server = FakeServer(app, eager=request.param == "eager", **options)
        servers.append(server)
        return server

    yield make
    try:
        for server in servers:
            server.loop.check()
    finally:
        for server in servers:
            server.close()
