"""An ASGI app's own CPU cost per request, with no server: call it in-process on uvloop with a scope like a
server's and a receive() and send() that do as little as a callable can, from ``--concurrency`` callers at
once (like wrk's connections: with many requests in flight the app costs more than one at a time, with more
live objects for the garbage collector and colder caches), and divide this thread's CPU time by the calls.

bench/run.py runs this beside the ``fastapi`` workload and subtracts the result from each server's CPU per
request on the wire: what is left is the server's share (HTTP parsing, socket I/O and its system calls, the
task per request, building the scope and messages, the event loop's own work). Run by hand::

    .venv/bin/python -m bench.inprocess                                  # the FastAPI app, spec_version 2.5
    .venv/bin/python -m bench.inprocess --spec-version 2.3               # as uvicorn and granian announce it
    .venv/bin/python -m bench.inprocess bench.apps:hello --path /        # what the driver itself costs

What it leaves out, so that the server's share it gives is if anything a little large: nothing else runs
between the app's steps here to cool its caches; and the fake receive()/send() cost a fraction of a
microsecond that a server's own callables replace (the hello line shows the driver with a trivial app).

The ASGI spec_version can matter for Starlette-based apps: below 2.4 (uvicorn and granian announce 2.3) a
``StreamingResponse`` runs a task group with a second task listening for the client's disconnect on every
response; from 2.4 on (zonda announces 2.5) it just sends. So this script measures an app per version. For
bench/fastapi_app.py it makes no difference with Starlette 1.10: ``@app.middleware("http")``'s ``call_next``
returns the middleware's own ``_StreamingResponse``, whose ``__call__`` never reads the version.

The app's own cost also depends on how many requests a server keeps alive in its loop at once (the garbage
collector examines the live ones: bench/RESULTS.md, issue 17), so wire minus in-process is only roughly the
server's share: ``--concurrency`` as wrk's connections matches a server that starts every request it reads.

Output: one ``INPROCESS {...}`` JSON line (calls, seconds, thread CPU seconds, non-2xx answers), plus a
readable line on stderr; the exit status is 1 if any call was not answered 2xx.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

import uvloop

from bench.harness import python_build

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

BATCH = 200  # calls between two looks at the clock, shared by the callers


def load_app(target: str) -> ASGIApp:
    module, _, attr = target.partition(":")
    app: ASGIApp = getattr(importlib.import_module(module), attr or "app")
    return app


def scope_template(path: str, spec_version: str) -> dict[str, Any]:
    """The HTTP scope a server builds for wrk's ``GET path`` (wrk sends only a Host header)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "state": {},
        "extensions": {},
    }


class Exchange:
    """One request's receive() and send(): the request (no body) first; a later receive() waits until the
    response is complete and then reports the client gone, as a server does."""

    __slots__ = ("complete", "request_given", "status", "waiter")

    def __init__(self) -> None:
        self.request_given = False
        self.complete = False
        self.status = 0
        self.waiter: asyncio.Future[None] | None = None

    async def receive(self) -> Message:
        if not self.request_given:
            self.request_given = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if not self.complete:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.complete = True
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)


async def call_once(app: ASGIApp, template: dict[str, Any]) -> bool:
    """One request through the app; True if it answered a complete 2xx response."""
    scope = template.copy()
    scope["asgi"] = template["asgi"].copy()
    scope["state"] = {}
    scope["extensions"] = {}
    exchange = Exchange()
    await app(scope, exchange.receive, exchange.send)
    return exchange.complete and 200 <= exchange.status <= 299


async def measure(
    app: ASGIApp, template: dict[str, Any], seconds: float, warmup: int, concurrency: int
) -> dict[str, Any]:
    """``concurrency`` callers, each calling the app in a loop until ``seconds`` are up; the thread's CPU
    time over the whole."""
    for _ in range(warmup):
        if not await call_once(app, template):
            raise RuntimeError("the app did not answer 2xx during the warm-up")
    gc.collect()
    counts = [0, 0]  # calls, not 2xx
    batch = max(1, BATCH // concurrency)

    async def caller(deadline: float) -> None:
        while True:
            for _ in range(batch):
                if not await call_once(app, template):
                    counts[1] += 1
            counts[0] += batch
            if time.perf_counter() >= deadline:
                return

    wall_start, cpu_start = time.perf_counter(), time.thread_time()
    await asyncio.gather(*(caller(wall_start + seconds) for _ in range(concurrency)))
    cpu, wall = time.thread_time() - cpu_start, time.perf_counter() - wall_start
    return {
        "calls": counts[0],
        "seconds": wall,
        "cpu_s": cpu,
        "non_2xx": counts[1],
        "concurrency": concurrency,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    p.add_argument("app", nargs="?", default="bench.fastapi_app:app", help="module:attr (the FastAPI app)")
    p.add_argument("--path", default="/orders/42", help="the request path (/orders/42)")
    p.add_argument("--spec-version", default="2.5", help="scope['asgi']['spec_version'] (2.5, as zonda's)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds (10)")
    p.add_argument("--warmup", type=int, default=2000, help="unmeasured calls first (2000)")
    p.add_argument("--concurrency", type=int, default=64, help="callers at once, like wrk's connections (64)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    app = load_app(args.app)
    template = scope_template(args.path, args.spec_version)
    result = uvloop.run(measure(app, template, args.seconds, args.warmup, args.concurrency))
    print("INPROCESS " + json.dumps(result), flush=True)
    print(
        f"{args.app} {args.path} spec_version {args.spec_version} on {python_build()}, "
        f"{args.concurrency} at once: {result['calls']:,} calls, "
        f"{result['cpu_s'] * 1e6 / result['calls']:.1f} µs thread CPU per call, {result['non_2xx']} not 2xx",
        file=sys.stderr,
    )
    return 1 if result["non_2xx"] else 0


if __name__ == "__main__":
    sys.exit(main())
