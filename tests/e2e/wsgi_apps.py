"""WSGI apps that tests/e2e/test_wsgi.py serves in a real ``python -m zonda`` child (``--app-dir tests/e2e``).

``app`` is found by ``--interface auto``; ``checked`` is the same app under ``wsgiref.validate.validator``,
whose ``lint_app(*args, **kw)`` hides its signature, so it needs ``--interface wsgi``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs
from wsgiref.validate import validator

CHUNK = b"z" * (256 * 1024)


def app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path == "/sink":
        return sink(environ, start_response)
    if path == "/stream":
        return stream(environ, start_response)
    if path == "/file":
        return file(environ, start_response)
    body = f"hello from {environ['REQUEST_METHOD']} {path}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def sink(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Read the whole body in 64 KiB reads, keep none of it, answer how many bytes came."""
    stream = environ["wsgi.input"]
    total = 0
    while True:
        data = stream.read(65536)
        if not data:
            break
        total += len(data)
    body = str(total).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def stream(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    """``?mib=N``: N MiB from a generator, 256 KiB at a time, with a Content-Length."""
    mib = int(parse_qs(environ["QUERY_STRING"]).get("mib", ["1"])[0])
    count = mib * 4
    start_response(
        "200 OK",
        [("Content-Type", "application/octet-stream"), ("Content-Length", str(count * len(CHUNK)))],
    )
    for _ in range(count):
        yield CHUNK


def file(environ: dict[str, Any], start_response: Any) -> Any:
    """``?path=P``: the file through ``wsgi.file_wrapper`` (zerocopysend on plaintext), with its length."""
    path = parse_qs(environ["QUERY_STRING"])["path"][0]
    filelike = open(path, "rb")  # noqa: SIM115  # the wrapper's close() closes it
    size = os.fstat(filelike.fileno()).st_size
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
    return environ["wsgi.file_wrapper"](filelike)


checked = validator(app)
