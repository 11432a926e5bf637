"""One WebSocket client interface over HTTP/1.1 (the ``websockets`` client) and HTTP/2 (RFC 8441, tests/h2ws.py),
so each framework's WebSocket test runs unchanged over both; and a Server-Sent Events reader for httpx."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from h2ws import H2Client, H2WebSocket
from helpers import ZondaProcess, raw_request, status_of
from wsframes import CLOSE, CONT, PING, PONG, TEXT, close, frame, text

ClientFor = Callable[[ZondaProcess], httpx.Client]  # the client_for fixture: an httpx client for a server


class ServerClosed(Exception):
    """The server closed the WebSocket (``code`` from its close frame) while a message was awaited."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"the server closed the WebSocket with {code}")
        self.code = code


class WebSocketSession(Protocol):
    def send_text(self, data: str) -> None: ...

    def recv_text(self, timeout: float = 10) -> str:
        """The next text message; ServerClosed if the server closes instead."""
        ...

    def close(self, code: int = 1000) -> None:
        """Close from the client's side and wait for the server's close."""
        ...


class WebSocketOpener(Protocol):
    def __call__(
        self, base_url: str, path: str, origin: bool = False, headers: dict[str, str] | None = None
    ) -> Any: ...


def recv_json(ws: WebSocketSession, timeout: float = 10) -> Any:
    return json.loads(ws.recv_text(timeout))


def expect_server_close(ws: WebSocketSession, timeout: float = 10) -> int | None:
    """Read until the server closes; the code it closed with (messages before it are an error)."""
    try:
        message = ws.recv_text(timeout)
    except ServerClosed as closed:
        return closed.code
    raise AssertionError(f"a message instead of the close: {message!r}")


def assert_echo_conversation(ws: WebSocketSession) -> None:
    """The conversation the "echo: " apps (Quart's, Falcon's) hold: each text back with the prefix, a large
    non-ASCII one too, and a 1000 close from the server on "bye"."""
    ws.send_text("hello")
    assert ws.recv_text() == "echo: hello"
    ws.send_text("caf\u00e9 " * 10_000)
    assert ws.recv_text() == "echo: " + "caf\u00e9 " * 10_000
    ws.send_text("bye")
    assert expect_server_close(ws) == 1000


class H1Session:
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def send_text(self, data: str) -> None:
        self.connection.send(data)

    def recv_text(self, timeout: float = 10) -> str:
        try:
            message = self.connection.recv(timeout)
        except ConnectionClosed as closed:
            raise ServerClosed(closed.rcvd.code if closed.rcvd else None) from None
        assert isinstance(message, str), message
        return message

    def close(self, code: int = 1000) -> None:
        self.connection.close(code)


class H2Session:
    def __init__(self, ws: H2WebSocket) -> None:
        self.ws = ws

    def send_text(self, data: str) -> None:
        self.ws.send(text(data))

    def recv_text(self, timeout: float = 10) -> str:
        parts: list[bytes] = []
        while True:
            got = self.ws.recv_frame(timeout)
            if got.opcode == PING:
                self.ws.send(frame(PONG, got.payload))
            elif got.opcode == CLOSE:
                self.ws.send(close(got.close_code))  # the closing handshake's reply, then the stream ends
                self.ws.wait_ended(timeout)
                raise ServerClosed(got.close_code)
            elif got.opcode in (TEXT, CONT):
                parts.append(got.payload)
                if got.fin:
                    return b"".join(parts).decode()
            else:
                raise AssertionError(f"unexpected frame {got}")

    def close(self, code: int = 1000) -> None:
        self.ws.send(close(code))
        while True:  # messages already on their way come before the server's close
            got = self.ws.recv_frame()
            if got.opcode == CLOSE:
                assert got.close_code == code, got
                break
        self.ws.wait_ended()


def ws_url(base_url: str, path: str) -> str:
    return base_url.replace("http://", "ws://", 1) + path


@contextmanager
def open_h1_websocket(
    base_url: str, path: str, origin: bool = False, headers: dict[str, str] | None = None
) -> Iterator[WebSocketSession]:
    """``origin`` sends the Origin header a browser would (Channels' origin validator wants one)."""
    options: dict[str, Any] = {"open_timeout": 10, "close_timeout": 10, "additional_headers": headers}
    if origin:
        options["origin"] = base_url
    with connect(ws_url(base_url, path), **options) as connection:
        yield H1Session(connection)


@contextmanager
def open_h2_websocket(
    base_url: str, path: str, origin: bool = False, headers: dict[str, str] | None = None
) -> Iterator[WebSocketSession]:
    port = urlsplit(base_url).port
    assert port is not None
    fields = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    if origin:
        fields.append((b"origin", base_url.encode()))
    with H2Client(port, timeout=10) as client:
        ws = client.open_websocket(path, headers=fields)
        assert ws.status == 200, (ws.status, ws.state.headers, bytes(ws.state.data))
        yield H2Session(ws)


def websocket_refusal(http_version: str, base_url: str, path: str) -> int | None:
    """The status of the response to a WebSocket handshake the app refuses (None if it accepted)."""
    if http_version == "http1":
        try:
            with connect(ws_url(base_url, path), open_timeout=10):
                return None
        except InvalidStatus as refused:
            return refused.response.status_code
    port = urlsplit(base_url).port
    assert port is not None
    with H2Client(port, timeout=10) as client:
        ws = client.open_websocket(path)
        return None if ws.status == 200 else ws.status


def read_events(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Server-Sent Events as their fields (``event``, ``data``, ``id``...), as a browser's EventSource reads
    them: lines up to a blank one make an event; comment lines (pings) are skipped."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if fields:
                yield fields
                fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        fields[name] = fields[name] + "\n" + value if name in fields else value
    if fields:
        yield fields


CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def csrf_form_token(page: str) -> str:
    match = CSRF_FIELD.search(page)
    assert match, f"no csrfmiddlewaretoken in the page:\n{page[:2000]}"
    return match.group(1)


def django_admin_login(client: httpx.Client, password: str) -> httpx.Response:
    """Log in to Django's admin as a browser does: GET the form (its csrftoken cookie and hidden field), POST
    the credentials with both; returns the POST's response (a redirect to the admin when it worked)."""
    page = client.get("/admin/login/", params={"next": "/admin/"})
    assert page.status_code == 200, page.text[:2000]
    assert 'id="login-form"' in page.text and 'name="password"' in page.text
    assert client.cookies.get("csrftoken")
    form = {
        "csrfmiddlewaretoken": csrf_form_token(page.text),
        "username": "admin",
        "password": password,
        "next": "/admin/",
    }
    return client.post("/admin/login/?next=/admin/", data=form)


def assert_django_login_works(client: httpx.Client, password: str) -> None:
    """The whole login: CSRF refuses a POST without the token, the right one gets a session and the admin."""
    refused = client.post("/admin/login/", data={"username": "admin", "password": password})
    assert refused.status_code == 403
    assert "CSRF verification failed" in refused.text

    response = django_admin_login(client, password)
    assert response.status_code == 302, response.text[:2000]
    assert response.headers["location"] == "/admin/"
    assert client.cookies.get("sessionid")
    admin = client.get("/admin/")
    assert admin.status_code == 200
    assert "Site administration" in admin.text


def assert_csrf_cookie_on_the_wire(port: int, http_version: str) -> None:
    """GET Django's login page with a client that checks each header line: raw bytes on HTTP/1.1, the ``h2``
    package's validation on HTTP/2 (lowercase names, no whitespace around values). One csrftoken cookie."""
    if http_version == "http2":
        with H2Client(port) as client:
            state = client.request("GET", "/admin/login/")
        assert state.status == 200
        cookies = [value for name, value in state.headers if name == b"set-cookie"]
        assert len(cookies) == 1 and cookies[0].startswith(b"csrftoken="), cookies
        assert (b"content-type", b"text/html; charset=utf-8") in state.headers
        return
    response = raw_request(
        port, b"GET /admin/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert status_of(response) == 200, response
    head = response.partition(b"\r\n\r\n")[0]
    assert len(re.findall(rb"\r\nset-cookie:", head, re.IGNORECASE)) == 1, head
    assert re.search(rb"\r\nset-cookie: csrftoken=\w+; ", head, re.IGNORECASE), head
    assert re.search(rb"\r\ncontent-type: text/html; charset=utf-8\r\n", head, re.IGNORECASE), head


def assert_django_upload_works(client: httpx.Client) -> None:
    """A multipart upload larger than Django keeps in memory (2.5 MB: it goes to a temporary file), with the
    CSRF cookie echoed in the X-CSRFToken header as scripts do; refused without it."""
    client.get("/feedback/")  # sets the csrftoken cookie
    data = bytes(range(256)) * (3 * 4096)  # 3 MiB
    files = {"file": ("data.bin", data, "application/octet-stream")}
    refused = client.post("/upload/", files=files, data={"note": "x"})
    assert refused.status_code == 403
    response = client.post(
        "/upload/",
        files=files,
        data={"note": "caf\u00e9"},
        headers={"X-CSRFToken": client.cookies["csrftoken"]},
    )
    assert response.status_code == 200, response.text[:2000]
    assert response.json() == {
        "name": "data.bin",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "note": "caf\u00e9",
    }
