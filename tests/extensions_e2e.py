"""The app and the clients of the ASGI extension tests (e2e/test_extensions_files.py, test_extensions_responses.py):
one app answering every extension, and one ``fetch`` per HTTP version returning the same ``Fetched`` shape, so a
test is written once and run over HTTP/1.1 (raw socket), HTTP/2 (the ``h2`` package, prior knowledge) and
HTTP/3 (aioquic's client).

App routes (query parameters in brackets):
- ``/path`` pathsend [name, offset, count, cl: Content-Length (empty: the span's), trailers: announce and send]
- ``/zc`` ``<``, zerocopysend, ``>`` [name, offset, count, cl]
- ``/trailers`` two body pieces then two trailer messages [cl: Content-Length]
- ``/hint`` early hints [at=before|after|late: before the start, after it, after the head went out]
- ``/bad_hint``, ``/bad_trailer``: a link, a trailer value with CR LF in it [name: a trailer not allowed]
- ``/extensions`` the scope's extensions (but tls) as JSON
- ``/watch`` pathsend of the big file; ``record`` gets "sent" or "disconnected" under the query string
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from h2socket import INITIAL_WINDOW_SIZE, H2Client
from h3client import h3_connect
from helpers import Record, run_server
from tlsutil import make_tls_files
from wire import Wire
from zonda.errors import ClientDisconnected

MIB = 1024 * 1024
LINKS = [b"</style.css>; rel=preload; as=style", b"</app.js>; rel=preload; as=script"]


def make_files(directory: Path) -> dict[str, Path]:
    """Random files: small (sent with the head), medium, and a 10 MiB one for flow control."""
    made = {}
    for name, size in (("small", 5000), ("medium", 300_001), ("big", 10 * MIB)):
        made[name] = directory / name
        made[name].write_bytes(os.urandom(size))
    return made


def span(data: bytes, offset: int | None = None, count: int | None = None) -> bytes:
    start = offset or 0
    return data[start:] if count is None else data[start : start + count]


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


class ExtensionApp:
    def __init__(self, files: dict[str, Path], record: Record) -> None:
        self.files = files
        self.record = record

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        query = {
            key: values[0]
            for key, values in parse_qs(scope["query_string"].decode(), keep_blank_values=True).items()
        }
        handler = getattr(self, scope["path"].strip("/"), None)
        if handler is None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"no such route"})
            return
        await handler(scope, query, send)

    def _span_length(self, query: dict[str, str]) -> int:
        size = self.files[query.get("name", "medium")].stat().st_size
        offset = int(query.get("offset", 0))
        left = max(0, size - offset)
        return min(int(query["count"]), left) if "count" in query else left

    def _file_message(self, kind: str, query: dict[str, str]) -> dict[str, Any]:
        message: dict[str, Any] = {"type": kind}
        for key in ("offset", "count"):
            if key in query:
                message[key] = int(query[key])
        return message

    async def path(self, scope: dict[str, Any], query: dict[str, str], send: Any) -> None:
        headers = [(b"content-type", b"application/octet-stream")]
        if "cl" in query:
            length = int(query["cl"]) if query["cl"] else self._span_length(query)
            headers.append((b"content-length", b"%d" % length))
        trailers = "trailers" in query
        await send({"type": "http.response.start", "status": 200, "headers": headers, "trailers": trailers})
        message = self._file_message("http.response.pathsend", query)
        message["path"] = str(self.files[query.get("name", "medium")])
        await send(message)
        if trailers:
            await send({"type": "http.response.trailers", "headers": [(b"x-file", b"sent")]})

    async def zc(self, scope: dict[str, Any], query: dict[str, str], send: Any) -> None:
        headers = []
        if "cl" in query:
            headers.append((b"content-length", b"%d" % (self._span_length(query) + 2)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"<", "more_body": True})
        with self.files[query.get("name", "medium")].open("rb") as file:
            message = self._file_message("http.response.zerocopysend", query)
            await send({**message, "file": file, "more_body": True})
        await send({"type": "http.response.body", "body": b">"})

    async def trailers(self, scope: dict[str, Any], query: dict[str, str], send: Any) -> None:
        headers = [(b"trailer", b"x-checksum, x-count")]
        if "cl" in query:
            headers.append((b"content-length", b"10"))
        await send({"type": "http.response.start", "status": 200, "headers": headers, "trailers": True})
        await send({"type": "http.response.body", "body": b"hello", "more_body": True})
        await send({"type": "http.response.body", "body": b"world"})
        checksum = sha(b"helloworld").encode()
        await send(
            {"type": "http.response.trailers", "headers": [(b"X-Checksum", checksum)], "more_trailers": True}
        )
        await send({"type": "http.response.trailers", "headers": [(b"x-count", b"2")]})

    async def hint(self, scope: dict[str, Any], query: dict[str, str], send: Any) -> None:
        at = query.get("at", "before")
        hint = {"type": "http.response.early_hint", "links": LINKS}
        if at == "before":
            await send(hint)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"link", LINKS[0])]})
        if at == "after":
            await send(hint)
        elif at == "late":  # the final head has gone out: too late for a 1xx
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            await send(hint)
        await send({"type": "http.response.body", "body": b"ok"})

    async def bad_hint(self, scope: dict[str, Any], query: dict[str, str], send: Any) -> None:
        await send({"type": "http.response.early_hint", "links": [b"</a>\r\nset-cookie: x=1"]})

    async def bad_trailer(self, scope: dict[str, Any], query: dict[str, str], send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"x"})
        field = (b"transfer-encoding", b"chunked") if "name" in query else (b"x-sum", b"a\r\nset-cookie: x=1")
        await send({"type": "http.response.trailers", "headers": [field]})

    async def extensions(self, scope: dict[str, Any], query: dict[str, str], send: Any) -> None:
        offers = {name: offer for name, offer in scope["extensions"].items() if name != "tls"}
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(offers).encode()})

    async def watch(self, scope: dict[str, Any], query: dict[str, str], send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await send({"type": "http.response.pathsend", "path": str(self.files["big"])})
        except ClientDisconnected:
            self.record.add(scope["query_string"].decode(), "disconnected")
            raise
        self.record.add(scope["query_string"].decode(), "sent")


@dataclass
class Fetched:
    """One response, whatever carried it: headers lowercased without pseudo-headers, interim 1xx heads in
    order as (status, headers)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    interim: list[tuple[int, list[tuple[bytes, bytes]]]] = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)


class Servers:
    """A plaintext server (HTTP/1.1, HTTP/2 by prior knowledge) and a TLS one with HTTP/3, both on the app."""

    def __init__(self, plain: Any, tls: Any, ca_pem: Path) -> None:
        self.plain = plain
        self.tls = tls
        self.ca_pem = ca_pem

    def fetch(
        self,
        protocol: str,
        path: str,
        method: str = "GET",
        headers: list[tuple[bytes, bytes]] | None = None,
        small_window: bool = False,
    ) -> Fetched:
        if protocol == "1.1":
            return fetch_h1(self.plain.port, path, method, headers or [])
        if protocol == "2":
            return fetch_h2(self.plain.port, path, method, headers or [], small_window)
        return asyncio.run(
            fetch_h3(self.tls.server.quic_port, self.ca_pem, path, method, headers or [], small_window)
        )


@contextmanager
def serve_both(app: Any, driver: str, tls_dir: Path) -> Iterator[Servers]:
    """The plaintext server and the TLS + HTTP/3 one, on ``driver``."""
    tls = make_tls_files(tls_dir)
    with (
        run_server(app, loop=driver) as plain,
        run_server(app, loop=driver, http3=True, **tls.server_options()) as secure,
    ):
        yield Servers(plain, secure, tls.ca_pem)


def _split(fields: list[tuple[bytes, bytes]]) -> tuple[int, list[tuple[bytes, bytes]]]:
    status = int(dict(fields)[b":status"])
    return status, [(key, value) for key, value in fields if not key.startswith(b":")]


def fetch_h1(
    port: int, path: str, method: str, headers: list[tuple[bytes, bytes]], version: str = "1.1"
) -> Fetched:
    lines = "".join(f"{name.decode()}: {value.decode()}\r\n" for name, value in headers)
    with Wire(port, timeout=20) as wire:
        wire.send(f"{method} {path} HTTP/{version}\r\nHost: test\r\n{lines}\r\n".encode())
        interim = []
        while True:
            response = wire.read_response(head_request=method == "HEAD")
            fields = [(key.encode(), value.encode()) for key, value in response.headers]
            if response.status >= 200:
                trailers = [(key.encode(), value.encode()) for key, value in response.trailers]
                return Fetched(response.status, fields, response.body, trailers, interim)
            interim.append((response.status, fields))


def fetch_h2(
    port: int, path: str, method: str, headers: list[tuple[bytes, bytes]], small_window: bool = False
) -> Fetched:
    settings = {INITIAL_WINDOW_SIZE: 16384} if small_window else None
    with H2Client(port, settings=settings, timeout=20) as client:
        state = client.get(path, method=method, headers=headers, timeout=30)
        assert state.reset_code is None, f"stream reset: {state.reset_code!r}"
        status, fields = _split(state.headers or [])
        interim = [_split(head) for head in state.informational]
        return Fetched(status, fields, bytes(state.data), list(state.trailers or []), interim)


async def fetch_h3(
    port: int,
    ca_pem: Path,
    path: str,
    method: str,
    headers: list[tuple[bytes, bytes]],
    small_window: bool = False,
) -> Fetched:
    options = {"max_stream_data": 65536, "max_data": 4 * 65536} if small_window else {}
    async with h3_connect(port, ca_pem, **options) as client:
        response = await client.request(method, path, headers, timeout=30)
    assert response.reset is None, f"stream reset: {response.reset:#x}"
    interim = [_split(head) for head in response.interim]
    return Fetched(response.status, response.headers, bytes(response.body), list(response.trailers), interim)
