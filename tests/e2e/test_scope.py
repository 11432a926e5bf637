"""The HTTP connection scope a real zonda hands the app (ASGI HTTP spec 2.5), over real loopback sockets."""

from __future__ import annotations

import os
import socket
from typing import Any

import httpx
import pytest

from helpers import raw_request, read_response, run_server, status_of

Scope = dict[str, Any]


class Recorder:
    """An app that records each HTTP scope and answers 200."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            scope["state"]["pool"] = ["conn"]
            scope["state"]["name"] = "startup"
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    @property
    def last(self) -> Scope:
        return self.scopes[-1]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def get(port: int, target: bytes, extra: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    request = (
        b"GET "
        + target
        + b" "
        + version
        + b"\r\nHost: example.test\r\n"
        + extra
        + b"Connection: close\r\n\r\n"
    )
    return raw_request(port, request)


def test_basic_scope(recorder: Recorder) -> None:
    with run_server(recorder) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            client_port = sock.getsockname()[1]
            sock.sendall(b"GET /hello?name=zonda HTTP/1.1\r\nHost: example.test\r\n\r\n")
            assert status_of(read_response(sock)) == 200
        scope = recorder.last
        assert scope["type"] == "http"
        assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
        assert scope["http_version"] == "1.1"
        assert scope["method"] == "GET"
        assert scope["scheme"] == "http"
        assert scope["path"] == "/hello"
        assert scope["raw_path"] == b"/hello"
        assert scope["query_string"] == b"name=zonda"
        assert scope["root_path"] == ""
        assert scope["headers"] == [(b"host", b"example.test")]
        assert tuple(scope["client"]) == ("127.0.0.1", client_port)
        assert type(scope["client"][1]) is int
        assert tuple(scope["server"]) == ("127.0.0.1", server.port)
        assert type(scope["server"][1]) is int
        assert isinstance(scope["extensions"], dict)
        assert scope["state"] == {"pool": ["conn"], "name": "startup"}


def test_http_10(recorder: Recorder) -> None:
    with run_server(recorder) as server:
        response = get(server.port, b"/old", version=b"HTTP/1.0")
    assert status_of(response) == 200
    assert recorder.last["http_version"] == "1.0"


def test_http_10_without_host(recorder: Recorder) -> None:
    """RFC 9112 §3.2: only HTTP/1.1 requires Host; an HTTP/1.0 request without one is served as it came."""
    with run_server(recorder) as server:
        response = raw_request(server.port, b"GET /old HTTP/1.0\r\nX-A: 1\r\n\r\n")
        assert status_of(response) == 200
        assert status_of(get(server.port, b"/after")) == 200  # and the server goes on serving
    first, second = recorder.scopes
    assert (first["http_version"], first["path"], first["headers"]) == ("1.0", "/old", [(b"x-a", b"1")])
    assert second["path"] == "/after"


@pytest.mark.parametrize(
    ("target", "version", "authority", "path", "query"),
    [
        (b"http://app.example/a/b?c=d", b"HTTP/1.1", b"app.example", "/a/b", b"c=d"),
        (b"http://app.example:8443/", b"HTTP/1.1", b"app.example:8443", "/", b""),
        (b"http://[2001:db8::1]:81/v6", b"HTTP/1.1", b"[2001:db8::1]:81", "/v6", b""),
        (b"http://app.example/old", b"HTTP/1.0", b"app.example", "/old", b""),
    ],
)
def test_absolute_form_target_wins_over_host(
    recorder: Recorder, target: bytes, version: bytes, authority: bytes, path: str, query: bytes
) -> None:
    """RFC 9112 §3.2.2: the server MUST ignore the received Host and use the target's authority, so the app's
    ``host`` header (from which frameworks build the request URL) is the target's; ``server`` stays the
    listening socket's, as ever."""
    with run_server(recorder) as server:
        response = get(server.port, target, b"X-A: 1\r\n", version=version)
        assert status_of(response) == 200
        port = server.port
    scope = recorder.last
    assert scope["headers"] == [(b"host", authority), (b"x-a", b"1"), (b"connection", b"close")]
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (path, path.encode(), query)
    assert tuple(scope["server"]) == ("127.0.0.1", port)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
def test_method(recorder: Recorder, method: str) -> None:
    with run_server(recorder) as server:
        request = f"{method} /m HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        assert status_of(raw_request(server.port, request.encode())) == 200
    assert recorder.last["method"] == method


@pytest.mark.parametrize(
    ("target", "path", "raw_path", "query"),
    [
        (b"/caf%C3%A9", "/caf\u00e9", b"/caf%C3%A9", b""),
        (b"/a%20b/c%2Fd", "/a b/c/d", b"/a%20b/c%2Fd", b""),
        (b"/search?q=caf%C3%A9&x=%20+y", "/search", b"/search", b"q=caf%C3%A9&x=%20+y"),
        (b"/empty?", "/empty", b"/empty", b""),
        (b"/plus+sign", "/plus+sign", b"/plus+sign", b""),
    ],
)
def test_path_and_query(recorder: Recorder, target: bytes, path: str, raw_path: bytes, query: bytes) -> None:
    with run_server(recorder) as server:
        assert status_of(get(server.port, target)) == 200
    scope = recorder.last
    assert scope["path"] == path
    assert scope["raw_path"] == raw_path
    assert scope["query_string"] == query
    assert type(scope["raw_path"]) is bytes
    assert type(scope["query_string"]) is bytes


def test_root_path_prefixes_path_and_raw_path(recorder: Recorder) -> None:
    with run_server(recorder, root_path="/api") as server:
        assert status_of(get(server.port, b"/users/caf%C3%A9?x=1")) == 200
    scope = recorder.last
    assert scope["root_path"] == "/api"
    assert scope["path"] == "/api/users/caf\u00e9"
    assert scope["raw_path"] == b"/api/users/caf%C3%A9"
    assert scope["query_string"] == b"x=1"


def test_headers_lowercased_in_order_with_duplicates(recorder: Recorder) -> None:
    extra = b"X-Dup: one\r\nX-Mixed-CASE: Value Kept\r\nx-dup: two\r\nAccept: */*\r\nX-DUP: three\r\n"
    with run_server(recorder) as server:
        assert status_of(get(server.port, b"/", extra)) == 200
    assert recorder.last["headers"] == [
        (b"host", b"example.test"),
        (b"x-dup", b"one"),
        (b"x-mixed-case", b"Value Kept"),
        (b"x-dup", b"two"),
        (b"accept", b"*/*"),
        (b"x-dup", b"three"),
        (b"connection", b"close"),
    ]
    for name, value in recorder.last["headers"]:
        assert type(name) is bytes and type(value) is bytes


def test_each_request_gets_its_own_scope_on_a_keep_alive_connection(recorder: Recorder) -> None:
    with (
        run_server(recorder) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        for path in (b"/one", b"/two"):
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_of(read_response(sock)) == 200
    first, second = recorder.scopes
    assert (first["path"], second["path"]) == ("/one", "/two")
    assert first["client"] == second["client"]
    assert first["state"] is not second["state"]


def test_state_is_a_copy_per_request() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            scope["state"]["shared"] = {"hits": 0}
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        state = scope["state"]
        seen.append(dict(state))
        state["request_only"] = True
        state["shared"]["hits"] += 1
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    with run_server(app, lifespan="on") as server:
        for _ in range(3):
            assert httpx.get(server.url + "/").status_code == 204
    assert [sorted(state) for state in seen] == [["shared"]] * 3
    assert seen[-1]["shared"] == {"hits": 3}


@pytest.fixture
def uds_path(short_dir: str) -> str:
    return os.path.join(short_dir, "s.sock")


def test_unix_socket_scope(recorder: Recorder, uds_path: str) -> None:
    with run_server(recorder, uds=uds_path):
        transport = httpx.HTTPTransport(uds=uds_path)
        with httpx.Client(transport=transport) as client:
            response = client.get("http://localhost/via-unix?x=1")
        assert response.status_code == 200
    scope = recorder.last
    assert scope["server"] is not None
    assert list(scope["server"]) == [uds_path, None]
    assert scope["client"] is None or isinstance(scope["client"], list | tuple)
    assert scope["path"] == "/via-unix"
    assert scope["query_string"] == b"x=1"
