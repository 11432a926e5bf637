"""Test helpers: real servers on loopback ports, raw sockets, tool checks, small ASGI apps and app pieces."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from zonda import Config, Server
from zonda.server import run_in_loop

LISTENING = re.compile(r"Listening on (https?://\S+|unix:\S+)")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def require_tool(name: str) -> str:
    """Path of an external tool; skip the test if it is missing (fail instead in CI)."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed"
        if os.environ.get("ZONDA_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{reason} (ZONDA_REQUIRE_TOOLS=1)")
        pytest.skip(reason)
    return path


class RunningServer:
    """A zonda Server running in a background thread with its own event loop."""

    def __init__(self, server: Server, thread: threading.Thread) -> None:
        self.server = server
        self.thread = thread
        self.host = "127.0.0.1"

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        scheme = "https" if self.server.config.ssl_certfile else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.shutdown()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "server thread did not stop"


@contextmanager
def run_server(app: Any = None, **options: Any) -> Iterator[RunningServer]:
    """Start a real zonda on 127.0.0.1:0 in a thread; yield it once it listens; stop it after."""
    options.setdefault("port", 0)
    options.setdefault("lifespan", "auto")
    options.setdefault("loop", os.environ.get("ZONDA_LOOP", "uvloop"))
    config = Config(app=app, **options)
    server = Server(config)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run_in_loop(config.loop, server.serve(install_signal_handlers=False))
        except BaseException as exc:  # surfaced to the test below
            errors.append(exc)
            server.started.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    if not server.started.wait(10):
        raise RuntimeError("zonda did not start within 10s")
    if errors:
        raise errors[0]
    running = RunningServer(server, thread)
    try:
        yield running
    finally:
        if thread.is_alive():
            running.stop()
        if errors:
            raise errors[0]


class ZondaProcess:
    """``python -m zonda`` as a child process; ``url`` is read back from its start-up log line."""

    def __init__(
        self,
        args: list[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "zonda", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=cwd or REPO,
            text=True,
            pass_fds=pass_fds,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._listening = threading.Event()
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            match = LISTENING.search(line)
            if match and self.url is None:
                self.url = match.group(1)
                self._listening.set()
        self._listening.set()

    def wait_listening(self, timeout: float = 10.0) -> str:
        self._listening.wait(timeout)
        if self.url is None:
            raise RuntimeError("zonda did not start:\n" + self.output)
        return self.url

    @property
    def port(self) -> int:
        assert self.url is not None
        return int(self.url.rsplit(":", 1)[1])

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(2)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m zonda ARGS`` for commands that exit on their own (help, bad flags, start-up errors)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ZONDA_", "UVICORN_"))}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "zonda", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=20,
    )


@contextmanager
def zonda_process(*args: str, **kwargs: Any) -> Iterator[ZondaProcess]:
    process = ZondaProcess(list(args), **kwargs)
    try:
        yield process
    finally:
        process.kill()


class Clock:
    """A clock the test moves by hand, for the sans-io cores' timers."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def raw_request(port: int, data: bytes, timeout: float = 5.0, host: str = "127.0.0.1") -> bytes:
    """Send raw bytes, read until the server closes (or the timeout passes); return all it sent."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_closed(sock, timeout)


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    chunks = []
    deadline = time.monotonic() + timeout
    sock.settimeout(timeout)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def read_response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read one response with a content-length or chunked body from a keep-alive socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lower = head.lower()
    match = re.search(rb"content-length: (\d+)", lower)
    if match:
        length = int(match.group(1))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body
    if b"transfer-encoding: chunked" in lower:
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    return head + b"\r\n\r\n" + body


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def rst_close(sock: socket.socket) -> None:
    """Close with a TCP reset instead of a FIN (SO_LINGER 0): a client that vanishes rather than hangs up."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def download_partly(port: int, request: bytes, at_least: int) -> socket.socket:
    """Send ``request`` and read ``at_least`` bytes of a large response, then hand the socket over to be
    dropped mid-body; the small receive buffer keeps the server from having already written it all."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(request)
    received = 0
    while received < at_least:
        received += len(sock.recv(65536))
    return sock


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll until ``condition()`` holds, for what another thread or process does; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


async def read_body(receive: Any) -> bytes:
    """The whole request body (a disconnect ends it, as far as it came)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def respond(send: Any, body: bytes, content_type: bytes = b"text/plain", status: int = 200) -> None:
    """A whole response with a content-length."""
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def simple_app(scope: Any, receive: Any, send: Any) -> None:
    """Answers every request with 200 and the method and path."""
    if scope["type"] != "http":
        return
    body = f"{scope['method']} {scope['path']}".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def echo_scope(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers HTTP and WebSocket alike with the scope fields a proxy-aware app reads, as JSON."""
    if scope["type"] not in ("http", "websocket"):
        return
    fields = proxy_fields(scope)
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(fields)})
        await send({"type": "websocket.close"})
        return
    body = json.dumps(fields).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


def proxy_fields(scope: dict[str, Any]) -> dict[str, Any]:
    """What forwarded headers and the PROXY protocol can change, plus what a proxy passed along."""
    headers = dict(scope["headers"])
    return {
        "client": scope["client"],
        "server": scope["server"],
        "scheme": scope["scheme"],
        "root_path": scope["root_path"],
        "path": scope["path"],
        "host": headers.get(b"host", b"").decode(),
        "request_id": scope["state"].get("request_id"),
        "x_forwarded_for": headers.get(b"x-forwarded-for", b"").decode(),
    }


def assert_still_serving(port: int) -> None:
    """The server answers a good request after whatever the test did to it."""
    response = raw_request(port, b"GET /alive HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200, response


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (for tools that must be told their port up front)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def child_process(argv: list[str], port: int, log: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run an external tool (haproxy, nginx) in the foreground until ``port`` listens; stop it by pid after."""
    with open(log or os.devnull, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_port(port)
        except OSError:
            proc.poll()
            text = Path(log).read_text() if log else ""
            raise RuntimeError(
                f"{argv[0]} did not listen on {port} (exit {proc.returncode}):\n{text}"
            ) from None
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


class Record:
    """What the apps saw, by key; the tests wait on it from their own thread."""

    def __init__(self) -> None:
        self.data: dict[str, list[Any]] = defaultdict(list)
        self.go = threading.Event()

    def add(self, key: str, value: Any) -> None:
        self.data[key].append(value)

    def wait(self, key: str, count: int = 1, timeout: float = 5.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.data[key]) < count:
            assert time.monotonic() < deadline, f"{key}: only {self.data[key]!r} after {timeout}s"
            time.sleep(0.01)
        return self.data[key]


# WebSocket app pieces shared by the HTTP/1.1 and HTTP/2 WebSocket tests (run after the accept).


async def echo_messages(receive: Any, send: Any) -> dict[str, Any]:
    """Echo each message as it came (text as text, bytes as bytes); return the disconnect that ends it."""
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")})
    return message  # type: ignore[no-any-return]


async def until_disconnect(receive: Any, record: Record, key: str) -> None:
    """Ignore messages until the client goes; record its disconnect under ``key``."""
    while (message := await receive())["type"] != "websocket.disconnect":
        pass
    record.add(key, message)


async def count_when_told(receive: Any, record: Record, key: str) -> None:
    """Read nothing until the test sets ``record.go`` (back-pressure piles up meanwhile), then count the
    messages until the client goes and record the count under ``key``."""
    while not record.go.is_set():
        await anyio.sleep(0.01)
    count = 0
    while (await receive())["type"] == "websocket.receive":
        count += 1
    record.add(key, count)


async def send_denial(send: Any) -> None:
    """Refuse a handshake with a whole HTTP response of the app's own (websocket.http.response), in two parts."""
    headers = [(b"content-type", b"text/plain"), (b"x-denied", b"yes")]
    await send({"type": "websocket.http.response.start", "status": 418, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": b"no web", "more_body": True})
    await send({"type": "websocket.http.response.body", "body": b"sockets here"})


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """A chunked body's payload, and whether it ended with the last chunk (``0\\r\\n\\r\\n``) rather than a cut."""
    payload = bytearray()
    while True:
        size_line, found, rest = body.partition(b"\r\n")
        if not found:
            return bytes(payload), False
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return bytes(payload), rest.startswith(b"\r\n")
        if len(rest) < size + 2:
            return bytes(payload + rest[:size]), False
        payload += rest[:size]
        body = rest[size + 2 :]
