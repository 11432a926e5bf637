"""The request path compiled by mypyc (``zonda._compiled``) and the same source run as Python.

The whole suite runs compiled on the Pythons CI builds it for, and as Python with ``ZONDA_PURE_PYTHON=1`` on
one (.ci/test-pythons); here: the switch itself, which build a process picks, and the same bytes on the wire
from both for requests good and bad.
"""

from __future__ import annotations

import ast
import importlib.machinery
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tests.helpers import REPO, read_until_closed, zonda_process

from zonda import _compiled

REPORT = (
    "import importlib, zonda, zonda._compiled as c;"
    "print(c.mode, *(importlib.import_module(name).__file__ for name in c.COMPILED))"
)


def modes(env: dict[str, str]) -> list[str]:
    """A fresh interpreter's mode, then the file each compiled module was imported from."""
    clean = {k: v for k, v in os.environ.items() if k != "ZONDA_PURE_PYTHON"}
    done = subprocess.run(
        [sys.executable, "-c", REPORT],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def built() -> bool:
    usable, _ = _compiled.compiled_state(os.path.dirname(os.path.dirname(_compiled.__file__)))
    return usable


def require_build() -> None:
    if built():
        return
    reason = "the request path is not compiled here (ZONDA_COMPILE=0, no C compiler, or edited since)"
    if os.environ.get("ZONDA_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{reason} (ZONDA_REQUIRE_TOOLS=1: CI builds it)", pytrace=False)
    pytest.skip(reason)


def test_compiled_modules_avoid_what_mypyc_compiles_differently() -> None:
    """mypyc 2.4 drops a raise's ``from`` (the chain an app or a log sees would differ): the compiled modules
    use ``zonda.errors.caused_by`` instead. And its ``await`` throws into what it awaits with the three-argument
    ``throw()`` that Python 3.12 deprecates: an app cancelled in an await would see a DeprecationWarning (an
    error under ``-W error``), so nothing in the compiled modules awaits; the app's task runs interpreted."""
    root = Path(_compiled.__file__).parent.parent
    for name in _compiled.COMPILED:
        path = root.joinpath(*name.split(".")).with_suffix(".py")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Raise):
                assert node.cause is None, f"{where}: raise ... from (use caused_by)"
            assert not isinstance(node, ast.Await | ast.AsyncFor | ast.AsyncWith), (
                f"{where}: an await, compiled"
            )


def test_compiled_modules_keep_their_globals_final() -> None:
    """mypyc reads a module-level name from the module's dict at every use (a dict lookup, ~140 instructions),
    unless it is ``Final``: then it is a C static. The compiled modules' globals are constants (or shared
    caches rebound never), so each is declared ``Final`` (type aliases: ``TypeAlias``); rebinding one in a
    test would not reach compiled code anyway."""
    root = Path(_compiled.__file__).parent.parent
    for name in _compiled.COMPILED:
        path = root.joinpath(*name.split(".")).with_suffix(".py")
        for node in ast.parse(path.read_text(), str(path)).body:
            where = f"{path.name}:{node.lineno}"
            assert not isinstance(node, ast.Assign), f"{where}: a module-level name not declared Final"
            if isinstance(node, ast.AnnAssign):
                annotation = ast.unparse(node.annotation)
                assert annotation.startswith(("Final", "TypeAlias")), f"{where}: {annotation}, not Final"


def test_the_events_made_per_request_have_their_own_init() -> None:
    """mypyc leaves a dataclass's ``__init__`` to the dataclasses module (Python code, ~3.7k instructions a
    request as measured): the events every request and body piece makes write theirs, so it compiles."""
    from zonda.protocols.events import Data, Request

    for cls in (Request, Data):
        assert not cls.__dataclass_params__.init, cls  # type: ignore[attr-defined]
        assert "__init__" in vars(cls)
    assert Request(1, b"GET", b"/", b"", [], "1.1") == Request(
        stream_id=1,
        method=b"GET",
        path=b"/",
        query_string=b"",
        headers=[],
        http_version="1.1",
        end_stream=False,
        keep_alive=True,
        expect_continue=False,
        upgrade=None,
    )
    assert Data(3, b"x") == Data(3, b"x", False) != Data(3, b"x", True)


def test_pure_python_switch_imports_every_module_from_its_source() -> None:
    mode, *files = modes({"ZONDA_PURE_PYTHON": "1"})
    assert mode == "source"
    assert files and all(file.endswith(".py") for file in files)


def test_a_current_build_is_what_runs() -> None:
    require_build()
    mode, *files = modes({})
    assert mode == "compiled"
    assert not any(file.endswith(".py") for file in files)


def make_tree(root: Path, built: list[str], library_at: float | None, sources_at: dict[str, float]) -> None:
    """Empty stand-ins for the files: every module's source (100 s old unless ``sources_at`` says), a module
    file for those in ``built`` (50 s old) and the shared library (``library_at`` s old; None: none)."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    now = time.time()

    def touch(path: Path, age: float) -> None:
        path.write_bytes(b"")
        os.utime(path, (now - age, now - age))

    root.mkdir()
    if library_at is not None:
        touch(root / (_compiled.GROUP + suffix), library_at)
    for name in _compiled.COMPILED:
        stem = root.joinpath(*name.split("."))
        stem.parent.mkdir(parents=True, exist_ok=True)
        touch(stem.with_name(stem.name + ".py"), sources_at.get(name, 100))
        if name in built:
            touch(stem.with_name(stem.name + suffix), 50)


def state(
    root: Path, built: list[str], library_at: float | None, sources_at: dict[str, float] | None = None
) -> tuple[bool, str]:
    make_tree(root, built, library_at, sources_at or {})
    return _compiled.compiled_state(str(root))


def test_a_build_is_used_only_whole_and_current(tmp_path: Path) -> None:
    every = list(_compiled.COMPILED)
    assert state(tmp_path / "none", [], None) == (False, "")
    assert state(tmp_path / "all", every, 10) == (True, "")
    usable, why = state(tmp_path / "part", every[1:], 10)
    assert not usable and why.startswith(f"only {len(every) - 1} of the {len(every)}")
    usable, why = state(tmp_path / "no-library", every, None)
    assert not usable and why.startswith(f"only {len(every)} of the {len(every)}")
    # an edit after the build: the library is older than a source
    edited = {"zonda.protocols.http1": 5.0}
    usable, why = state(tmp_path / "edited", every, 10, edited)
    assert not usable and "1 compiled module(s) are older than their source" in why
    # rebuilt after the edit: the library is new, the module files are left as they were (setuptools skips
    # them when their few lines of C did not change)
    assert state(tmp_path / "rebuilt", every, 1, edited) == (True, "")


ECHO_APP = textwrap.dedent(
    """
    import json

    ODD_HEADERS = {
        "bytearray-value": [(b"x-a", bytearray(b" v "))],
        "list-pairs": [[b"x-a", b"v"], [b"X-B", b"w"]],
        "memoryview-name": [(memoryview(b"x-m"), b"v")],
        "bytearray-name": [(bytearray(b"x-b"), b"v")],
        "str-value": [(b"x-s", "v")],
        "none-value": [(b"x-n", None)],
        "three-items": [(b"x-t", b"v", b"extra")],
        "generator": ((b"x-g", value) for value in [b"1"]),
    }

    async def odd(scope, receive, send):
        kind = scope["query_string"].decode()
        start = {"type": "http.response.start", "status": 200, "headers": ODD_HEADERS.get(kind, [])}
        body = {"type": "http.response.body", "body": b"odd"}
        if kind == "status-bool":
            start["status"] = True
        elif kind == "status-str":
            start["status"] = "200"
        elif kind == "bytearray-body":
            body["body"] = bytearray(b"odd")
        elif kind == "memoryview-body":
            body["body"] = memoryview(b"odd")
        elif kind == "str-body":
            body["body"] = "odd"
        elif kind == "more-body-int":
            await send(start)
            await send({"type": "http.response.body", "body": b"o", "more_body": 1})
            await send({"type": "http.response.body", "body": b"dd", "more_body": 0})
            return
        await send(start)
        await send(body)

    async def websocket(scope, receive, send):
        await receive()  # websocket.connect
        kind = scope["query_string"].decode()
        await send({"type": "websocket.accept", "headers": ODD_HEADERS.get(kind, [])})
        await send({"type": "websocket.close", "code": 1000})

    async def app(scope, receive, send):
        if scope["type"] == "websocket":
            await websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["path"] == "/odd":
            await odd(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen = {
            "method": scope["method"], "path": scope["path"], "raw_path": scope["raw_path"].decode("latin-1"),
            "query": scope["query_string"].decode("latin-1"), "version": scope["http_version"],
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
            "body": body.decode("latin-1"),
        }
        answer = json.dumps(seen, sort_keys=True).encode()
        if scope["path"] == "/chunked":
            await send({"type": "http.response.start", "status": 201, "headers": [(b"X-Kind", b"chunked")]})
            await send({"type": "http.response.body", "body": answer[:10], "more_body": True})
            await send({"type": "http.response.body", "body": answer[10:]})
            return
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [(b"Content-Type", b"application/json"), (b"content-length", str(len(answer)).encode())],
        })
        await send({"type": "http.response.body", "body": answer})
    """
)

PIPELINED = (
    b"GET /a%20b?x=1&y=%C3%A9 HTTP/1.1\r\nHost: example.test\r\nX-Mixed-Case: Value\r\nAccept: */*\r\n\r\n"
    b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
    b"POST /chunked HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: dropped\r\n\r\n"
    b"GET http://other.test:8080/abs?q HTTP/1.1\r\nHost: h\r\n\r\n"
    b"GET /last HTTP/1.0\r\n\r\n"
)
BAD = [
    b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n",  # 400: a control byte in the target
    b"GET / HTTP/1.1\r\n\r\n",  # 400: no Host
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",  # 414
    b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n",  # 431
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 999999999\r\n\r\n",  # 413
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",  # 501
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\nHost: h\r\n\r\n",
]
ODD = [
    "bytearray-value", "list-pairs", "memoryview-name", "bytearray-name", "str-value", "none-value", "three-items",
    "generator", "status-bool", "status-str", "bytearray-body", "memoryview-body", "str-body", "more-body-int",
]  # fmt: skip
# the same handshake every time: its Sec-WebSocket-Accept is the same too
HANDSHAKE = (
    b"GET /ws?%s HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
DATE = re.compile(rb"\r\ndate: [^\r]*", re.IGNORECASE)


CLOSE_FRAME = b"\x88\x02\x03\xe8"  # the server's close, code 1000


def handshake(port: int, data: bytes) -> bytes:
    """A WebSocket handshake's answer: up to the server's close frame, or an error response in full."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        answer = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            head, _, body = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: (\d+)", head)
            if answer.endswith(CLOSE_FRAME) or (length and len(body) >= int(length.group(1))):
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return DATE.sub(b"\r\ndate: -", answer)


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)  # no half-close: zonda takes a client's EOF as a disconnect (as uvicorn does)
        return DATE.sub(b"\r\ndate: -", read_until_closed(sock))


PEER = re.compile(r"127\.0\.0\.1:\d+")
STAMP = re.compile(r"^\S+ \S+ \[\d+\] ")  # the time and the pid


def error_summary(output: str) -> list[str]:
    """The log's errors without their frames: messages, exceptions and how each chain was joined."""
    lines = (STAMP.sub("", line) for line in output.splitlines() if not line.startswith((" ", "Traceback")))
    # CPython's unpacking error says how many it expected, mypyc's does not: the one wording that differs, in
    # the cause of an AppProtocolError the app is told about either way
    return [
        PEER.sub("PEER", line).replace("unpack (expected 2)", "unpack")
        for line in lines
        if not line.startswith(("INFO ", "DEBUG "))
    ]


def answers(app_dir: Path, env: dict[str, str]) -> tuple[list[bytes], list[str]]:
    clean_env = {"ZONDA_PURE_PYTHON": ""} | env
    with zonda_process(
        "echo_app:app",
        "--port",
        "0",
        "--app-dir",
        str(app_dir),
        "--limit-request-body",
        "1000000",
        env=clean_env,
    ) as proc:
        proc.wait_listening()
        port = proc.port
        replies = [
            exchange(port, PIPELINED),
            *(exchange(port, bad) for bad in BAD),
            *(
                exchange(port, b"GET /odd?%s HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n" % k.encode())
                for k in ODD
            ),
            *(handshake(port, HANDSHAKE % kind.encode()) for kind in ODD[:8]),
        ]
        proc.signal()
        assert proc.wait() == 0
        return replies, error_summary(proc.output)


def test_compiled_and_source_answer_byte_for_byte_alike(tmp_path: Path) -> None:
    require_build()
    (tmp_path / "echo_app.py").write_text(ECHO_APP)
    compiled, compiled_log = answers(tmp_path, {})
    source, source_log = answers(tmp_path, {"ZONDA_PURE_PYTHON": "1"})
    assert compiled == source
    # the same errors logged, chained the same way ("The above exception was the direct cause ...")
    assert compiled_log == source_log
    assert any("direct cause" in line for line in compiled_log)
    statuses = [int(answer.split(b" ", 2)[1]) if answer else 0 for answer in compiled]
    # 0: a str body after the head was taken, not yet sent: the connection closes without a response
    odd_statuses = [200, 200, 200, 500, 500, 500, 500, 200, 500, 500, 200, 200, 0, 200]
    accepts = [101, 101, 500, 500, 500, 500, 500, 101]  # a memoryview name: 500, unlike in a head
    assert statuses == [200, 400, 400, 414, 431, 413, 501, 200, *odd_statuses, *accepts]
    assert compiled[0].count(b"HTTP/1.1 200 OK") == 4 and b"HTTP/1.1 201 Created" in compiled[0]
    assert b'"X-Mixed-Case"' not in compiled[0] and b'"x-mixed-case", "Value"' in compiled[0]
    assert b"/ignored" not in compiled[len(BAD)]
