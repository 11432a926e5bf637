"""The WSGI adapter driven as an ASGI app with hand-written ``receive``/``send``: the PEP 3333 environ,
``wsgi.input`` streaming, ``start_response`` rules, ``close()``, back-pressure, ``wsgi.file_wrapper`` (chunked
and zero-copy), the bounded thread pool, lifespan, and WSGI detection. Test apps run under
``wsgiref.validate.validator`` wherever the checker allows what the test does."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.validate import validator

import pytest

from zonda.asgi._wsgi_threads import HIGH_WATER
from zonda.asgi.wsgi import DEFAULT_THREADS, ZEROCOPY, FileWrapper, WSGIAdapter, build_environ
from zonda.config import Config
from zonda.errors import AppProtocolError, ClientDisconnected, ConfigError
from zonda.loading import ASGI2Adapter, is_wsgi, load_app

Environ = dict[str, Any]
DISCONNECT = object()


def make_scope(
    method: str = "GET",
    raw_path: bytes = b"/",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    root_path: str = "",
    **changes: Any,
) -> dict[str, Any]:
    path = root_path + raw_path.decode("latin-1")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.5"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50123),
        "scheme": "http",
        "method": method,
        "root_path": root_path,
        "path": path,
        "raw_path": root_path.encode() + raw_path,
        "query_string": query,
        "headers": [(b"host", b"testserver:8000"), *(headers or [])],
        "state": {},
        "extensions": {},
    }
    scope.update(changes)
    return scope


class Exchange:
    """One request through the adapter: what it sent, how often it asked for body, what it raised."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.receive_calls = 0
        self.error: BaseException | None = None

    @property
    def status(self) -> int | None:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    @property
    def headers(self) -> dict[bytes, bytes]:
        start = next(m for m in self.messages if m["type"] == "http.response.start")
        return dict(start["headers"])

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")

    @property
    def complete(self) -> bool:
        last = self.messages[-1] if self.messages else {}
        return last.get("type") in ("http.response.body", ZEROCOPY) and not last.get("more_body", False)


async def _drive(
    adapter: WSGIAdapter,
    scope: dict[str, Any],
    body: list[Any],
    send_hook: Callable[[dict[str, Any]], Any] | None,
    exchange: Exchange,
) -> None:
    chunks = list(body)

    async def receive() -> dict[str, Any]:
        exchange.receive_calls += 1
        if not chunks:
            await asyncio.sleep(3600)  # like a real server: nothing more until the client leaves
        chunk = chunks.pop(0)
        if chunk is DISCONNECT:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        if send_hook is not None:
            result = send_hook(message)
            if asyncio.iscoroutine(result):
                await result
        exchange.messages.append(message)

    try:
        await asyncio.wait_for(adapter(scope, receive, send), 20)
    except Exception as exc:
        exchange.error = exc


def call(
    app: Any,
    scope: dict[str, Any] | None = None,
    body: list[Any] = (),  # type: ignore[assignment]
    send_hook: Callable[[dict[str, Any]], Any] | None = None,
    threads: int = 4,
) -> Exchange:
    """Run one request through a fresh adapter on a fresh event loop."""
    adapter = app if isinstance(app, WSGIAdapter) else WSGIAdapter(app, threads)
    exchange = Exchange()
    try:
        asyncio.run(_drive(adapter, scope or make_scope(), list(body), send_hook, exchange))
    finally:
        adapter.shutdown(wait=True)
    return exchange


def body_headers(length: int, content_type: bytes = b"application/octet-stream") -> list[tuple[bytes, bytes]]:
    return [(b"content-type", content_type), (b"content-length", str(length).encode())]


def hello(environ: Environ, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


# ------------------------------------------------------------------ the environ


def capture_environ(seen: list[Environ]) -> Any:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        seen.append(dict(environ))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return validator(app)


def test_environ_has_every_pep3333_key() -> None:
    seen: list[Environ] = []
    scope = make_scope(
        "POST",
        b"/items/42",
        b"a=1&b=%20",
        [(b"content-type", b"text/plain"), (b"content-length", b"3"), (b"x-request-id", b"abc")],
    )
    exchange = call(capture_environ(seen), scope, [b"abc"])
    assert exchange.error is None and exchange.status == 200 and exchange.body == b"ok"
    environ = seen[0]
    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["SCRIPT_NAME"] == ""
    assert environ["PATH_INFO"] == "/items/42"
    assert environ["QUERY_STRING"] == "a=1&b=%20"
    assert environ["CONTENT_TYPE"] == "text/plain"
    assert environ["CONTENT_LENGTH"] == "3"
    assert "HTTP_CONTENT_TYPE" not in environ and "HTTP_CONTENT_LENGTH" not in environ
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("127.0.0.1", "8000")
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert (environ["REMOTE_ADDR"], environ["REMOTE_PORT"]) == ("127.0.0.1", "50123")
    assert environ["HTTP_HOST"] == "testserver:8000"
    assert environ["HTTP_X_REQUEST_ID"] == "abc"
    assert environ["wsgi.version"] == (1, 0)
    assert environ["wsgi.url_scheme"] == "http"
    assert environ["wsgi.multithread"] is True
    assert environ["wsgi.multiprocess"] is False
    assert environ["wsgi.run_once"] is False
    assert environ["wsgi.input_terminated"] is True
    assert environ["wsgi.file_wrapper"] is FileWrapper
    for attr in ("read", "readline", "readlines", "__iter__"):
        assert hasattr(environ["wsgi.input"], attr)
    for attr in ("write", "writelines", "flush"):
        assert hasattr(environ["wsgi.errors"], attr)
    assert all(type(v) is str for k, v in environ.items() if "." not in k)


def test_script_name_and_path_info_round_trip_latin1() -> None:
    """PEP 3333: PATH_INFO carries the URL-decoded bytes, each byte as one latin-1 character."""
    seen: list[Environ] = []
    scope = make_scope(raw_path=b"/caf%C3%A9/%E9/plain-\xc3\xa9", root_path="/mount")
    exchange = call(capture_environ(seen), scope)
    assert exchange.status == 200
    environ = seen[0]
    assert environ["SCRIPT_NAME"] == "/mount"
    assert environ["PATH_INFO"].encode("latin-1") == b"/caf\xc3\xa9/\xe9/plain-\xc3\xa9"
    assert environ["PATH_INFO"].encode("latin-1").decode("utf-8", "replace") == "/café/\ufffd/plain-é"


def test_header_joining_cookies_and_underscores() -> None:
    seen: list[Environ] = []
    headers = [
        (b"accept", b"text/html"),
        (b"accept", b"application/json"),
        (b"cookie", b"a=1"),
        (b"cookie", b"b=2"),
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"x_forwarded_for", b"6.6.6.6"),  # would collide with the proxy's header: dropped
    ]
    call(capture_environ(seen), make_scope(headers=headers))
    environ = seen[0]
    assert environ["HTTP_ACCEPT"] == "text/html, application/json"
    assert environ["HTTP_COOKIE"] == "a=1; b=2"
    assert environ["HTTP_X_FORWARDED_FOR"] == "10.0.0.1"


def test_header_values_are_latin1_decoded() -> None:
    seen: list[Environ] = []
    call(capture_environ(seen), make_scope(headers=[(b"x-name", b"caf\xe9")]))
    assert seen[0]["HTTP_X_NAME"] == "café"


def test_server_name_from_host_on_a_unix_socket() -> None:
    scope = make_scope(server=("/run/app.sock", None), client=None)
    scope["headers"] = [(b"host", b"example.com:8443")]
    environ = build_environ(scope, None, True, False)
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("example.com", "8443")
    assert "REMOTE_ADDR" not in environ
    scope["headers"] = [(b"host", b"[::1]")]
    scope["scheme"] = "https"
    environ = build_environ(scope, None, True, False)
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("[::1]", "443")
    assert environ["wsgi.url_scheme"] == "https"


def test_multithread_follows_the_pool_size() -> None:
    seen: list[Environ] = []
    call(capture_environ(seen), threads=1)
    assert seen[0]["wsgi.multithread"] is False


# ------------------------------------------------------------------ wsgi.input


def test_input_read_readline_readlines_and_iteration() -> None:
    results: dict[str, Any] = {}

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        results["first"] = stream.read(3)
        results["line"] = stream.readline()
        results["limited"] = stream.readline(4)
        results["lines"] = stream.readlines(1)
        results["iterated"] = list(stream)
        results["after"] = stream.read(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]

    body = [b"abcdef\nline-", b"two\nthree\nfo", b"", b"ur\nfive\nsix"]
    total = sum(len(chunk) for chunk in body)
    exchange = call(validator(app), make_scope("POST", headers=body_headers(total)), body)
    assert exchange.error is None and exchange.body == b"done"
    assert results["first"] == b"abc"
    assert results["line"] == b"def\n"
    assert results["limited"] == b"line"
    assert results["lines"] == [b"-two\n"]
    assert results["iterated"] == [b"three\n", b"four\n", b"five\n", b"six"]
    assert results["after"] == b""


def test_input_read_sizes_cross_message_boundaries() -> None:
    got: list[bytes] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        while True:
            data = stream.read(7)
            if not data:
                break
            got.append(data)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b""]

    body = [b"0123456789", b"abc", b"defghijklmnopqrstuvwxyz"]
    call(validator(app), make_scope("PUT", headers=body_headers(36)), body)
    assert all(len(part) == 7 for part in got[:-1]) and b"".join(got) == b"".join(body)


def test_input_read_all_and_chunked_requests() -> None:
    got: list[bytes] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        got.append(environ["wsgi.input"].read())
        assert "CONTENT_LENGTH" not in environ
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    scope = make_scope("POST", headers=[(b"transfer-encoding", b"chunked")])
    call(app, scope, [b"one,", b"two,", b"three"])
    assert got == [b"one,two,three"]


def test_input_streams_one_message_at_a_time() -> None:
    """The app sees the first chunk before the rest is received: the body is never buffered whole."""
    calls_at_read: list[int] = []
    exchange_holder: list[Exchange] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        while stream.read(1000):
            calls_at_read.append(exchange_holder[0].receive_calls)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    adapter = WSGIAdapter(app, 2)
    exchange = Exchange()
    exchange_holder.append(exchange)
    body = [bytes([65 + i]) * 1000 for i in range(10)]
    scope = make_scope("POST", headers=body_headers(10_000))
    try:
        asyncio.run(_drive(adapter, scope, body, None, exchange))
    finally:
        adapter.shutdown(wait=True)
    assert exchange.error is None and exchange.body == b"ok"
    assert calls_at_read == list(range(1, 11))


def test_expect_continue_body_is_only_asked_for_when_read() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("413 Too Large", [("Content-Type", "text/plain")])
        return [b"no thanks"]

    headers = [*body_headers(1000), (b"expect", b"100-continue")]
    exchange = call(validator(app), make_scope("POST", headers=headers), [b"x" * 1000])
    assert exchange.status == 413 and exchange.receive_calls == 0


def test_client_gone_mid_body_raises_in_the_app() -> None:
    raised: list[BaseException] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        try:
            environ["wsgi.input"].read()
        except OSError as exc:
            raised.append(exc)
            raise
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"unreachable"]

    exchange = call(app, make_scope("POST", headers=body_headers(100)), [b"x" * 10, DISCONNECT])
    assert len(raised) == 1 and isinstance(raised[0], ClientDisconnected)
    assert exchange.error is None  # the client is gone: nothing to answer, nothing to log as an error
    assert exchange.messages == []


# ------------------------------------------------------------------ start_response and the response


def test_validator_apps_list_generator_and_write() -> None:
    def listed(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Thing", "1")])
        return [b"a", b"", b"b"]

    def generated(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        yield b"x"
        yield b"y"

    def written(environ: Environ, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"legacy-")
        write(b"write-")
        return [b"then-iterable"]

    exchange = call(validator(listed))
    assert (exchange.status, exchange.body, exchange.complete) == (201, b"ab", True)
    assert exchange.headers[b"x-thing"] == b"1"
    exchange = call(validator(generated))
    assert (exchange.status, exchange.body, exchange.complete) == (200, b"xy", True)
    exchange = call(validator(written))
    assert (exchange.body, exchange.complete) == (b"legacy-write-then-iterable", True)


def test_headers_are_lowercased_latin1_bytes() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Name", "café")])
        return [b"ok"]

    exchange = call(validator(app))
    assert exchange.headers[b"x-name"] == "café".encode("latin-1")
    assert exchange.headers[b"content-type"] == b"text/plain"


@pytest.mark.parametrize(
    ("status", "headers", "match"),
    [
        ("200 OK", [("Connection", "close")], "hop-by-hop"),
        ("200 OK", [("Transfer-Encoding", "chunked")], "hop-by-hop"),
        ("200 OK", [("Keep-Alive", "timeout=5")], "hop-by-hop"),
        ("200 OK", [("X-Snowman", "\u2603")], "latin-1"),
        ("200 OK", [("X-Split", "a\r\nSet-Cookie: evil=1")], "CR, LF"),
        ("200 OK", [("Bad Name", "x")], "token"),
        ("200 OK", [("X-Bytes", b"x")], "must be a str"),
        ("200 OK", "not a list", "list of"),
        ("OK", [], "status"),
        (200, [], "status"),
        ("200 \u2603", [], "latin-1"),
    ],
)
def test_start_response_rejects_bad_headers_and_status(status: Any, headers: Any, match: str) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response(status, headers)
        return [b"unreachable"]

    exchange = call(app)
    assert isinstance(exchange.error, AppProtocolError) and match in str(exchange.error)
    assert exchange.messages == []  # nothing went out: the bridge answers 500


def test_checked_header_pairs_are_remembered_and_bad_ones_never() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        size = environ["QUERY_STRING"]
        headers: list[Any] = [("Content-Type", "text/plain"), ["X-List", "pair"], ("Content-Length", size)]
        if environ["PATH_INFO"] == "/bad":
            headers.append(("X-Split", "a\r\nb"))
        start_response("200 OK", headers)
        return [b"abcdef"[: int(size)]]

    for _ in range(2):  # the second time from the remembered pairs
        for size in ("3", "6"):
            exchange = call(app, make_scope(query=size.encode()))
            assert exchange.body == b"abcdef"[: int(size)]
            assert exchange.headers[b"content-length"] == size.encode()
            assert exchange.headers[b"x-list"] == b"pair"
        exchange = call(app, make_scope(raw_path=b"/bad", query=b"3"))
        assert isinstance(exchange.error, AppProtocolError) and "CR, LF" in str(exchange.error)


@pytest.mark.parametrize(
    ("method", "result", "headers", "body"),
    [
        ("GET", [bytearray(b"bytes-like")], [], b"bytes-like"),
        ("GET", [b""], [], b""),
        ("GET", [b"cut to five"], [("Content-Length", "5")], b"cut t"),
        ("GET", [b"cut to nothing"], [("Content-Length", "0")], b""),
        ("HEAD", [b"not sent"], [], b""),
    ],
)
def test_single_chunk_results(method: str, result: list[Any], headers: list[Any], body: bytes) -> None:
    def app(environ: Environ, start_response: Any) -> list[Any]:
        start_response("200 OK", [("Content-Type", "text/plain"), *headers])
        return result

    exchange = call(app, make_scope(method))
    assert exchange.status == 200 and exchange.body == body and exchange.complete and exchange.error is None


def test_start_response_twice_without_exc_info_is_an_error() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("404 Not Found", [])
        return [b""]

    exchange = call(app)
    assert isinstance(exchange.error, AppProtocolError) and "second time" in str(exchange.error)


def test_exc_info_before_headers_replaces_the_response() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("boom")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]

    exchange = call(validator(app))
    assert (exchange.status, exchange.body, exchange.error) == (500, b"sorry", None)


def test_exc_info_after_headers_reraises() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"first"
            try:
                raise KeyError("late")
            except KeyError:
                self.start_response("500 Internal Server Error", [], sys.exc_info())
            yield b"unreachable"

        def close(self) -> None:
            closed.append(True)

    def app(environ: Environ, start_response: Any) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        body = Body()
        body.start_response = start_response  # type: ignore[attr-defined]
        return body

    exchange = call(app)
    assert isinstance(exchange.error, KeyError)  # re-raised: the bridge aborts the connection
    assert exchange.status == 200 and exchange.body == b"first" and not exchange.complete
    assert closed == [True]


def test_exception_before_the_first_chunk_sends_nothing() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            raise RuntimeError("no body for you")

        def close(self) -> None:
            closed.append(True)

    def app(environ: Environ, start_response: Any) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    exchange = call(app)
    assert isinstance(exchange.error, RuntimeError) and exchange.messages == []
    assert closed == [True]


@pytest.mark.parametrize(
    ("result", "match"),
    [("a str", "not a bare bytes"), (b"bytes", "not a bare bytes"), (["text"], "must yield bytes")],
)
def test_bad_results_are_errors(result: Any, match: str) -> None:
    def app(environ: Environ, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return result

    exchange = call(app)
    assert isinstance(exchange.error, TypeError) and match in str(exchange.error)


def test_returning_without_start_response_is_an_error() -> None:
    exchange = call(lambda environ, start_response: [b"hi"])
    assert isinstance(exchange.error, AppProtocolError) and "start_response" in str(exchange.error)


def test_sys_exit_in_the_app_does_not_stop_the_server() -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        raise SystemExit(3)

    exchange = call(app)
    assert isinstance(exchange.error, RuntimeError) and "SystemExit" in str(exchange.error)


def test_content_length_caps_the_body_and_stops_iterating(caplog: pytest.LogCaptureFixture) -> None:
    pulled: list[int] = []

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        for i in range(100):
            pulled.append(i)
            yield b"hello world"

    with caplog.at_level(logging.WARNING, "zonda.error"):
        exchange = call(validator(app))
    assert exchange.body == b"hello" and exchange.complete
    assert pulled == [0]
    assert "more than its Content-Length" in caplog.text


def test_head_stops_after_the_headers() -> None:
    pulled: list[int] = []

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        for i in range(100):
            pulled.append(i)
            yield b"x" * 1000

    exchange = call(validator(app), make_scope("HEAD"))
    assert exchange.status == 200 and exchange.body == b"" and exchange.complete
    assert pulled == [0]


# ------------------------------------------------------------------ close(), disconnects, back-pressure


class Tracked:
    """An iterable with close(), as many frameworks return."""

    def __init__(self, chunks: list[bytes], delay: float = 0.0) -> None:
        self.chunks = chunks
        self.delay = delay
        self.closed = threading.Event()
        self.yielded = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            if self.delay:
                time.sleep(self.delay)
            self.yielded += 1
            yield chunk

    def close(self) -> None:
        self.closed.set()


def test_close_is_called_after_a_normal_response() -> None:
    body = Tracked([b"a", b"b"])

    def app(environ: Environ, start_response: Any) -> Tracked:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    exchange = call(validator(app))
    assert exchange.body == b"ab" and body.closed.is_set()


def test_close_is_called_when_the_client_disconnects() -> None:
    body = Tracked([b"chunk"] * 1000, delay=0.001)

    def app(environ: Environ, start_response: Any) -> Tracked:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    def send_hook(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            raise ClientDisconnected("gone")

    exchange = call(app, send_hook=send_hook)
    assert exchange.error is None
    assert body.closed.is_set()
    assert body.yielded < 50  # the app thread stopped soon after the client left


def test_back_pressure_blocks_the_app_thread() -> None:
    chunk = b"x" * 65536
    produced: list[int] = []
    release = asyncio.Event()
    observed: list[int] = []

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for i in range(200):  # 12.5 MiB in all
            produced.append(i)
            yield chunk

    async def send_hook(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not release.is_set():
            await asyncio.sleep(0.3)  # a client that stopped reading: send() waits for drain
            observed.append(len(produced))
            release.set()

    exchange = call(app, send_hook=send_hook)
    assert exchange.error is None and len(exchange.body) == 200 * 65536 and exchange.complete
    bound = HIGH_WATER // len(chunk) + 3
    assert observed[0] <= bound, f"the app thread ran {observed[0]} chunks ahead of a stalled client"


# ------------------------------------------------------------------ wsgi.file_wrapper


def file_app(path: str, offset: int = 0, length: int | None = None) -> Any:
    def app(environ: Environ, start_response: Any) -> Any:
        filelike = open(path, "rb")  # noqa: SIM115  # closed through the wrapper's close()
        filelike.seek(offset)
        headers = [("Content-Type", "application/octet-stream")]
        if length is not None:
            headers.append(("Content-Length", str(length)))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](filelike, 4096)

    return app


@pytest.fixture
def data_file(tmp_path: Any) -> tuple[str, bytes]:
    data = os.urandom(300_000)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return str(path), data


def test_file_wrapper_chunked_fallback(data_file: tuple[str, bytes]) -> None:
    path, data = data_file
    exchange = call(validator(file_app(path)))
    assert exchange.body == data and exchange.complete
    exchange = call(file_app(path, offset=1000, length=5000))
    assert exchange.body == data[1000:6000] and exchange.complete
    assert all(m["type"] != ZEROCOPY for m in exchange.messages)


def test_file_wrapper_uses_zerocopysend_when_offered(data_file: tuple[str, bytes]) -> None:
    path, data = data_file
    sent: list[bytes] = []

    def send_hook(message: dict[str, Any]) -> None:
        if message["type"] == ZEROCOPY:
            file = message["file"]
            assert not file.closed  # the server may read it until send() returns
            sent.append(os.pread(file.fileno(), message["count"], message["offset"]))

    scope = make_scope(extensions={ZEROCOPY: {}})
    exchange = call(file_app(path, offset=1000), scope, send_hook=send_hook)
    zerocopy = [m for m in exchange.messages if m["type"] == ZEROCOPY]
    assert len(zerocopy) == 1 and zerocopy[0]["offset"] == 1000 and zerocopy[0]["more_body"] is False
    assert sent == [data[1000:]] and exchange.complete
    assert zerocopy[0]["file"].closed  # the wrapper's close() ran after the send

    sent.clear()
    exchange = call(
        file_app(path, offset=10, length=100), make_scope(extensions={ZEROCOPY: {}}), send_hook=send_hook
    )
    assert sent == [data[10:110]]


def test_file_wrapper_with_a_non_file_falls_back(data_file: tuple[str, bytes]) -> None:
    def app(environ: Environ, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"in memory"))

    exchange = call(app, make_scope(extensions={ZEROCOPY: {}}))
    assert exchange.body == b"in memory" and exchange.complete


# ------------------------------------------------------------------ the thread pool and lifespan


def test_pool_is_bounded_and_the_loop_stays_free() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(10)
        with lock:
            running -= 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    adapter = WSGIAdapter(app, threads=2)

    async def main() -> tuple[list[Exchange], int]:
        exchanges = [Exchange() for _ in range(6)]
        tasks = [asyncio.ensure_future(_drive(adapter, make_scope(), [], None, ex)) for ex in exchanges]
        ticks = 0
        while peak < 2 or ticks < 20:  # the loop keeps running while both threads block
            await asyncio.sleep(0.005)
            ticks += 1
        release.set()
        await asyncio.gather(*tasks)
        return exchanges, ticks

    try:
        exchanges, ticks = asyncio.run(main())
    finally:
        adapter.shutdown(wait=True)
    assert peak == 2
    assert all(ex.status == 200 and ex.body == b"ok" for ex in exchanges)
    assert ticks >= 20


def test_blocked_threads_make_room_for_more() -> None:
    """A pool thread stuck in the app does not hold up queued requests while threads are spare."""
    release = threading.Event()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/slow":
            release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    adapter = WSGIAdapter(app, threads=4)

    async def main() -> float:
        slow = asyncio.ensure_future(_drive(adapter, make_scope(raw_path=b"/slow"), [], None, Exchange()))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        await asyncio.gather(*(_drive(adapter, make_scope(), [], None, Exchange()) for _ in range(3)))
        elapsed = time.monotonic() - started
        release.set()
        await slow
        return elapsed

    try:
        assert asyncio.run(main()) < 1.0
    finally:
        adapter.shutdown(wait=True)


def test_lifespan_creates_and_stops_the_pool() -> None:
    adapter = WSGIAdapter(hello, threads=3)
    sent: list[str] = []

    async def main() -> None:
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

        async def receive() -> dict[str, Any]:
            return inbox.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])
            if message["type"] == "lifespan.startup.complete":
                await _drive(adapter, make_scope(), [], None, Exchange())  # a request starts a pool thread
                assert adapter.pool.threads == 1

        await adapter({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)

    asyncio.run(main())
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    deadline = time.monotonic() + 5
    while adapter.pool.threads and time.monotonic() < deadline:  # the parked thread leaves
        time.sleep(0.01)
    assert adapter.pool.threads == 0


def test_websocket_scopes_are_refused() -> None:
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await WSGIAdapter(hello)({"type": "websocket", "path": "/"}, receive, send)

    asyncio.run(main())
    assert sent[0]["type"] == "websocket.close"


# ------------------------------------------------------------------ detection and configuration


def test_detection_tells_wsgi_apps() -> None:
    from django.core.handlers.wsgi import WSGIHandler
    from flask import Flask

    class AppClass:  # PEP 3333's class-based app
        def __init__(self, environ: Environ, start_response: Any) -> None: ...

        def __iter__(self) -> Iterator[bytes]:
            yield b""

    class Callable2:
        def __call__(self, environ: Environ, start_response: Any) -> list[bytes]:
            return []

    async def asgi3(scope: Any, receive: Any, send: Any) -> None: ...

    def asgi2(scope: Any) -> Any: ...

    class Asgi3Object:
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...

    handler = object.__new__(WSGIHandler)  # an instance, without needing Django settings
    for app in (hello, Callable2(), AppClass, Flask("detect"), handler):
        assert is_wsgi(app), app
    for app in (asgi3, asgi2, Asgi3Object(), ASGI2Adapter(asgi2)):
        assert not is_wsgi(app), app
    assert isinstance(load_app(hello), WSGIAdapter)
    assert isinstance(load_app(Flask("detect")), WSGIAdapter)
    assert load_app(asgi3) is asgi3
    assert isinstance(load_app(asgi2), ASGI2Adapter)


def test_interface_flag_wins() -> None:
    checked = validator(hello)  # lint_app(*args, **kw) hides its signature: a documented limit of detection
    assert not isinstance(load_app(checked), WSGIAdapter)
    adapter = load_app(checked, interface="wsgi", wsgi_threads=3)
    assert isinstance(adapter, WSGIAdapter) and adapter.threads == 3
    assert load_app(hello, interface="asgi3") is hello


def test_config_options() -> None:
    assert Config().wsgi_threads == DEFAULT_THREADS
    assert Config(interface="wsgi", wsgi_threads=4).wsgi_threads == 4
    assert Config.load(env={"ZONDA_WSGI_THREADS": "7", "ZONDA_INTERFACE": "wsgi"}).wsgi_threads == 7
    with pytest.raises(ConfigError, match="wsgi_threads"):
        Config(wsgi_threads=0)
