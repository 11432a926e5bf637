"""What bench/run.py compares, apart from how it measures: the HTTP/1.1 servers and their commands, the
workloads and their wrk scripts, the one-request check before each run, and idle keep-alive connections."""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import logging
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.harness import HELLO_BODY, LUA_DONE, LUA_STATUS_TALLY, REPO, ServerProcess, program_of

log = logging.getLogger("bench")

# The event loop each server runs its Python on (a name is PROGRAM or PROGRAM-VARIANT: harness.program_of).
# The report compares zonda with the servers on its own loop, and zonda on another loop with zonda on uvloop
# (harness.ratio_pairs).
SERVER_LOOPS = {
    "zonda": "uvloop",
    "zonda-trio": "trio",
    "zonda-base": "uvloop",  # zonda from another checkout (BASE_SRC): before/after a change, in one run
    "uvicorn": "uvloop",
    "uvicorn-zttp": "uvloop",  # uvicorn's other parser (--http zttp)
    "granian": "uvloop",
    "hypercorn": "uvloop",
    "hypercorn-trio": "trio",
}
SERVERS = tuple(SERVER_LOOPS)
DEFAULT_SERVERS = ("zonda", "uvicorn", "uvicorn-zttp", "granian", "hypercorn")
WORKLOADS = ("hello", "hello-c256", "json", "json-1k", "echo", "echo-1k", "stream", "fastapi")
ECHO_BODY_SIZE = 64 * 1024
STREAM_SIZE = 1024 * 1024
# The ``src`` directory zonda-base imports zonda from (run.py's --base-src), e.g. a git worktree of an older
# commit: its Python files come first on the path; the bench's own venv provides the dependencies.
BASE_SRC: Path | None = None


@dataclass(frozen=True)
class Workload:
    name: str
    app: str
    method: str = "GET"
    body_size: int = 0
    path: str = "/"
    connections: int | None = None  # wrk's connections when not --connections


WORKLOAD_SPECS = {
    "hello": Workload("hello", "bench.apps:hello"),
    "hello-c256": Workload("hello-c256", "bench.apps:hello", connections=256),
    "json": Workload("json", "bench.apps:json_app"),
    "json-1k": Workload("json-1k", "bench.apps:json_list"),
    "echo": Workload("echo", "bench.apps:echo", method="POST", body_size=ECHO_BODY_SIZE),
    "echo-1k": Workload("echo-1k", "bench.apps:echo", method="POST", body_size=1024),
    "stream": Workload("stream", "bench.apps:stream"),
    "fastapi": Workload("fastapi", "bench.fastapi_app:app", path="/orders/42"),
}

LUA_POST = """
wrk.method = "POST"
wrk.body = string.rep("x", {size})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


# --------------------------------------------------------------------------- processes


def server_command(
    server: str,
    app: str,
    port: int | str,
    keep_alive: int | None,
    workdir: Path,
    python: str = sys.executable,
) -> list[str]:
    """The server's argv: one process (or one worker under its parent), HTTP/1.1, its SERVER_LOOPS loop, no
    access log. ``keep_alive`` (seconds) is for the idle-connection section; granian has no idle keep-alive
    timeout to set (its nearest, --http1-header-read-timeout, is 30 s by default, far beyond --idle-settle).
    ``workdir`` holds hypercorn's config file, HYPERCORN_CONFIG (both hypercorn entries use it)."""
    if server == "floor":
        return [python, str(REPO / "bench" / "floor.py"), str(port)]
    if server not in SERVER_LOOPS:
        raise ValueError(f"unknown server {server!r}")
    program, loop = program_of(server), SERVER_LOOPS[server]
    if server == "zonda-base":
        if BASE_SRC is None:
            raise ValueError("zonda-base needs --base-src DIR (the src directory of another checkout)")
        # env execs python: taskset's pid stays the server's
        cmd = ["env", f"PYTHONPATH={BASE_SRC}", python, "-m", "zonda", app, "--loop", loop, "--no-access-log"]
        cmd += ["--log-level", "warning", "--port", str(port)]
        alive_flag = "--timeout-keep-alive"
    elif program == "zonda":
        cmd = [python, "-m", "zonda", app, "--loop", loop, "--no-access-log", "--log-level", "warning"]
        cmd += ["--port", str(port)]
        alive_flag = "--timeout-keep-alive"
    elif program == "uvicorn":
        parser = "zttp" if server == "uvicorn-zttp" else "httptools"
        cmd = [python, "-m", "uvicorn", app, "--http", parser, "--loop", loop, "--no-access-log"]
        cmd += ["--log-level", "warning", "--host", "127.0.0.1", "--port", str(port)]
        alive_flag = "--timeout-keep-alive"
    elif program == "granian":
        cmd = [python, "-m", "granian", app, "--interface", "asgi", "--http", "1", "--loop", loop]
        cmd += ["--workers", "1", "--runtime-threads", "1", "--no-ws", "--no-access-log", "--log-level"]
        cmd += ["warning", "--host", "127.0.0.1", "--port", str(port)]
        alive_flag = ""
    else:  # hypercorn
        cmd = [python, "-m", "hypercorn", app, "--worker-class", loop, "--workers", "1", "--log-level"]
        cmd += ["warning", "--config", str(workdir / "hypercorn.toml"), "--bind", f"127.0.0.1:{port}"]
        alive_flag = "--keep-alive"
    if keep_alive is not None and alive_flag:
        cmd += [alive_flag, str(keep_alive)]
    return cmd


class Http1Server(ServerProcess):
    """A server or the floor serving ``app``; ``keep_alive`` for the idle-connection section. ``logdir``
    also holds hypercorn's config file."""

    def __init__(self, server: str, app: str, cpu: str, logdir: Path, keep_alive: int | None = None):
        super().__init__(server, cpu, logdir)
        self.app = app
        self.keep_alive = keep_alive
        self.workdir = logdir

    def command(self) -> list[str]:
        return server_command(self.name, self.app, self.port, self.keep_alive, self.workdir)


# --------------------------------------------------------------------------- wrk


def write_lua(workdir: Path, workload: Workload) -> Path:
    """The workload's wrk script: every response's status checked (LUA_STATUS_TALLY), the request, the
    summary."""
    path = workdir / f"{workload.name}.lua"
    text = LUA_STATUS_TALLY
    if workload.method == "POST":
        text += LUA_POST.replace("{size}", str(workload.body_size))
    path.write_text(text + LUA_DONE)
    return path


def request(
    port: int, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def check_response(port: int, workload: Workload) -> str:
    """One request before measuring: the server answers 200 with the body the workload expects. For the
    fastapi workload, also ask the app which ASGI spec_version the server announced, and return it."""
    body = b"y" * workload.body_size if workload.method == "POST" else None
    status, headers, data = request(port, workload.method, workload.path, body)
    if status != 200:
        raise RuntimeError(f"{workload.name}: status {status}: {data[:200]!r}")
    if workload.app == "bench.apps:hello" and data != HELLO_BODY:
        raise RuntimeError(f"{workload.name}: unexpected body {data[:80]!r}")
    if workload.name in ("json", "json-1k"):
        json.loads(data)
    if workload.name == "stream" and len(data) != STREAM_SIZE:
        raise RuntimeError(f"stream: got {len(data)} bytes, expected {STREAM_SIZE}")
    if workload.method == "POST" and data != body:
        raise RuntimeError(f"echo: got {len(data)} bytes back, sent {workload.body_size}")
    if workload.name == "fastapi":
        order = json.loads(data)
        if len(order["items"]) != 3 or "x-process-time" not in headers:
            raise RuntimeError(f"fastapi: unexpected answer {headers} {data[:200]!r}")
        status, _, data = request(port, "GET", "/asgi")
        if status != 200:
            raise RuntimeError(f"fastapi: /asgi answered {status}")
        return str(json.loads(data).get("spec_version", "2.0"))  # a server that names none means 2.0
    return ""


# --------------------------------------------------------------------------- idle connections


@dataclass
class IdleRound:
    rss_before_kib: int
    rss_after_kib: int
    opened: int
    still_open: int

    @property
    def kib_per_conn(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) / self.opened if self.opened else float("nan")


def open_idle_connections(port: int, count: int, make_request: bool) -> list[socket.socket]:
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(sock)
            if make_request:
                sock.sendall(request)
                read_hello_response(sock)
    except BaseException:
        close_all(socks)
        raise
    return socks


def read_hello_response(sock: socket.socket) -> None:
    data = b""
    while not (b"\r\n\r\n" in data and data.endswith(HELLO_BODY)):
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"connection closed before a full response: {data[:200]!r}")
        data += chunk
    if not data.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"unexpected response: {data[:200]!r}")


def count_open(socks: Sequence[socket.socket]) -> int:
    """Connections the server has not closed: no EOF (and no error) waiting to be read."""
    alive = 0
    for sock in socks:
        sock.settimeout(None)  # a socket with a timeout turns EAGAIN into TimeoutError
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                alive += 1  # unexpected bytes, but the connection is open
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    return alive


def close_all(socks: Sequence[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()


def measure_idle(server: str, args: argparse.Namespace, workdir: Path) -> IdleRound:
    with Http1Server(server, "bench.apps:hello", args.server_cpu, workdir, keep_alive=60) as srv:
        for _ in range(20):  # warm the code paths a request touches before the baseline
            close_all(open_idle_connections(srv.port, 1, make_request=True))
        time.sleep(args.idle_settle)
        before = srv.rss_kib()
        socks = open_idle_connections(srv.port, args.idle_connections, not args.idle_connect_only)
        try:
            time.sleep(args.idle_settle)
            after = srv.rss_kib()
            alive = count_open(socks)
        finally:
            close_all(socks)
        time.sleep(0.5)  # let the server see the closes before it is asked to stop
    if alive != len(socks):
        log.warning("%s: only %d of %d idle connections were still open", server, alive, len(socks))
    return IdleRound(before, after, len(socks), alive)
