"""The compiled access-log lines without a server: every field, JSON escaping of whatever a client can send,
the millisecond clock, the batched writer and a line that cannot be built. (A real server's lines:
e2e/test_access_log.py.)"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonda import accesslog
from zonda import logging as zonda_logging
from zonda.accesslog import JSON_KEYS, AccessLogWriter, compile_format
from zonda.errors import ConfigError


class FakeCycle:
    def __init__(
        self,
        path: bytes = b"/a",
        query: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        request_id: Any = "0123456789abcdef0123456789abcdef",
        status: int = 200,
        bytes_sent: int = 13,
        started_at: float | None = None,
    ) -> None:
        self.scope: dict[str, Any] = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "client": ("10.0.0.1", 4321),
            "server": ("127.0.0.1", 8000),
            "path": path.decode("latin-1"),
            "raw_path": path,
            "query_string": query,
            "headers": headers or [(b"host", b"example.test")],
            "state": {"request_id": request_id},
            "extensions": {},
        }
        self.status = status
        self.bytes_sent = bytes_sent
        self.started_at = accesslog.perf_counter() - 0.0125 if started_at is None else started_at
        self.response_headers = [(b"content-type", b"text/plain")]


ALL_FIELDS = (
    "{time}|{client}|{remote}|{method}|{path}|{query}|{target}|{status}|{bytes}|{duration_ms:.1f}|"
    "{duration_us}|{protocol}|{scheme}|{host}|{tls_version}|{pid}|{request_id}|"
    "{request_header:user-agent}|{response_header:content-type}|{{braces}}"
)


def test_every_plain_field() -> None:
    line = compile_format(ALL_FIELDS)(FakeCycle(b"/p", b"x=1", [(b"host", b"h"), (b"user-agent", b"ua/1")]))
    assert line.endswith("\n") and line.count("\n") == 1
    fields = line[:-1].split("|")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", fields[0])
    assert fields[1:9] == ["10.0.0.1:4321", "10.0.0.1", "GET", "/p", "x=1", "/p?x=1", "200", "13"]
    assert 12.4 <= float(fields[9]) < 1000 and re.fullmatch(r"\d+\.\d", fields[9])
    assert 12_400 <= int(fields[10]) < 1_000_000
    assert fields[11:] == [
        "HTTP/1.1",
        "http",
        "h",
        "-",
        str(os.getpid()),
        "0123456789abcdef0123456789abcdef",
        "ua/1",
        "text/plain",
        "{braces}",
    ]


def test_missing_values_are_dashes_and_nulls() -> None:
    cycle = FakeCycle(request_id=None)
    cycle.scope["client"] = None
    fmt = "{client} {remote} {host} {request_id} {request_header:x-nope}"
    assert compile_format(fmt)(cycle) == "- - example.test - -\n"
    assert json.loads(compile_format(fmt, as_json=True)(cycle)) == {
        "client": None,
        "remote": None,
        "host": "example.test",
        "request_id": None,
        "request_header:x-nope": None,
    }


def test_json_default_keys_and_types() -> None:
    record = json.loads(compile_format(None, as_json=True)(FakeCycle(b"/j", b"a=b")))
    assert list(record) == list(JSON_KEYS)
    assert record["path"] == "/j" and record["query"] == "a=b" and record["protocol"] == "HTTP/1.1"
    assert (record["status"], record["bytes"], record["client"]) == (200, 13, "10.0.0.1:4321")
    assert isinstance(record["duration_ms"], float) and record["duration_ms"] >= 12.5
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])


# What a client controls (path, query, header values, a trusted proxy's request id), byte for byte; the line
# holds their latin-1 reading, as the plain format does.
NASTY = [
    b'/q"uote',
    b"/back\\slash",
    b"/ctl\x00\x01\x1f\x7f",
    b"/tab\there\rcr\nlf",
    b"/latin\xe9\xff",
    "/utf8-é-😀".encode(),
    b"/\xed\xa0\x80",  # a UTF-8-encoded surrogate
    b'/</script>{"x":1}',
    b"",
]


@pytest.mark.parametrize("raw", NASTY)
def test_json_escapes_what_clients_send(raw: bytes) -> None:
    text = raw.decode("latin-1")
    cycle = FakeCycle(raw, raw, [(b"user-agent", raw)], request_id=text)
    for fmt in (None, "{path} {query} {target} {request_header:user-agent} {request_id} {method}"):
        line = compile_format(fmt, as_json=True)(cycle)
        assert line.endswith("\n") and "\n" not in line[:-1] and line.isascii()
        record = json.loads(line)
        assert record["path"] == text and record["query"] == text and record["request_id"] == text
        if fmt is not None:
            assert record["request_header:user-agent"] == text
            assert record["target"] == (f"{text}?{text}" if raw else "")


@settings(max_examples=300, deadline=None)
@given(
    path=st.binary(max_size=40),
    query=st.binary(max_size=40),
    agent=st.binary(max_size=40),
    request_id=st.one_of(st.none(), st.text(max_size=40)),
    method=st.text(min_size=1, max_size=12),
)
def test_json_lines_always_parse_back(
    path: bytes, query: bytes, agent: bytes, request_id: str | None, method: str
) -> None:
    cycle = FakeCycle(path, query, [(b"user-agent", agent)], request_id=request_id)
    cycle.scope["method"] = method
    fmt = "{method} {path} {query} {request_header:user-agent} {request_id} {status} {duration_ms}"
    line = compile_format(fmt, as_json=True)(cycle)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line) == {
        "method": method,
        "path": path.decode("latin-1"),
        "query": query.decode("latin-1"),
        "request_header:user-agent": agent.decode("latin-1"),
        "request_id": request_id,
        "status": 200,
        "duration_ms": json.loads(line)["duration_ms"],
    }


def test_duration_formats() -> None:
    cycle = FakeCycle(started_at=accesslog.perf_counter() - 1.5)
    ms, tenth, us = compile_format("{duration_ms} {duration_ms:.1f} {duration_us}")(cycle).split()
    assert re.fullmatch(r"15\d\d\.\d{3}", ms) and re.fullmatch(r"15\d\d\.\d", tenth)
    assert 1_500_000 <= int(us) < 2_000_000


def test_a_number_field_takes_a_number_spec() -> None:
    """The status is a number like bytes and pid; its line used the cached digits, text, so "{status:d}"
    failed on every line (the first failure logged, all access lines lost)."""
    line = compile_format("{status:d} {status:>5} {status:03d} {bytes:,d} {pid:d} {status}")(
        FakeCycle(status=200)
    )
    assert line.split() == ["200", "200", "200", "13", str(os.getpid()), "200"]


@pytest.mark.parametrize(
    "fmt",
    ["{client:d}", "{duration_ms:,d}", "{bytes:.2}", "{time:=10}", "{path:%}", "{pid:s}", "{status:,s}"],
)
def test_a_spec_that_does_not_suit_the_field_is_a_config_error(fmt: str) -> None:
    """The spec pattern alone took these; each then failed on every line, after start-up had succeeded."""
    with pytest.raises(ConfigError, match=re.escape(f"access_log_format: {fmt}: ")):
        accesslog.parse_format(fmt)


@pytest.mark.parametrize("fmt", ["{a\nb}", "{status!\n}", "{status:d\n}", "{request_header:a\n}"])
def test_a_format_with_a_newline_in_a_field_is_refused_in_one_line(fmt: str) -> None:
    """Errors are one line: the field and conversion were shown raw, and the spec and header-name patterns,
    anchored with "$", took a final newline (the spec then failed on every line)."""
    with pytest.raises(ConfigError) as raised:
        accesslog.parse_format(fmt)
    assert "\n" not in str(raised.value) and "\\n" in str(raised.value)


@pytest.mark.parametrize(
    "seconds", [0.0, 0.00004, 0.00006, 0.0123, 0.04449, 0.09994, 0.09996, 0.1, 0.25, 7.0, 12345.678]
)
def test_tenths_of_a_millisecond_match_the_float_format(
    monkeypatch: pytest.MonkeyPatch, seconds: float
) -> None:
    monkeypatch.setattr(accesslog, "perf_counter", lambda: 1000.0)  # the hook's clock, bound when compiled
    cycle = FakeCycle(started_at=1000.0 - seconds)
    elapsed = 1000.0 - cycle.started_at
    assert compile_format("{duration_ms:.1f}")(cycle) == f"{elapsed * 1000.0:.1f}\n"


def test_clock_text_follows_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    wall = [1_700_000_000.1234]
    monkeypatch.setattr(accesslog, "time", lambda: wall[0])
    namespace: dict[str, Any] = {}
    clock = accesslog._Clock(namespace)
    assert namespace["_time"] == "2023-11-14T22:13:20.123Z"
    assert namespace["_jtime"] == '"2023-11-14T22:13:20.123Z"'
    wall[0] = 1_700_000_001.9999
    clock.tick(100.0)
    assert namespace["_time"] == "2023-11-14T22:13:21.999Z"
    # cached until the wall clock reaches the next millisecond, measured on perf_counter's scale
    assert namespace["_until"] == pytest.approx(100.0001, abs=1e-6)


def test_a_line_that_cannot_be_built_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        writer = AccessLogWriter(str(tmp_path / "access.log"), asyncio.get_running_loop())
        hook = compile_format("{request_id}", as_json=True, writer=writer)
        with caplog.at_level(logging.ERROR, logger="zonda.error"):
            hook(FakeCycle(request_id=12345))  # an app replaced the id with an int
            hook(FakeCycle(request_id=12345))
            hook(FakeCycle(request_id="fine"))
        writer.close()

    asyncio.run(main())
    failures = [r for r in caplog.records if "could not be built" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert (tmp_path / "access.log").read_text() == '{"request_id":"fine"}\n'


def test_writer_batches_lines_by_time_and_writes_the_rest_at_close(tmp_path: Path) -> None:
    path = tmp_path / "access.log"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        writer = AccessLogWriter(str(path), loop, interval=0.05)
        hook = compile_format("{status}", writer=writer)
        for _ in range(3):
            hook(FakeCycle())
            await asyncio.sleep(0)  # loop iterations pass; the batch waits for its timer
        assert writer.scheduled and path.read_text() == ""
        await asyncio.sleep(0.1)
        assert path.read_text() == "200\n" * 3 and not writer.scheduled
        hook(FakeCycle(status=404))
        assert writer.scheduled
        writer.close()  # shutdown: written at once, the timer cancelled
        assert path.read_text() == "200\n" * 3 + "404\n"
        await asyncio.sleep(0.1)

    asyncio.run(main())
    assert path.read_text() == "200\n" * 3 + "404\n"


@pytest.mark.parametrize("datefmt", [None, "%d/%b/%Y %H:%M:%S"])
@pytest.mark.parametrize("converter", [time.localtime, time.gmtime])
def test_cached_formatter_writes_what_logging_writes(datefmt: str | None, converter: Any) -> None:
    fmt = zonda_logging.DEFAULT_FORMAT
    ours, theirs = zonda_logging.Formatter(fmt, datefmt), logging.Formatter(fmt, datefmt)
    ours.converter = theirs.converter = converter  # type: ignore[method-assign]
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_001.001, 1_600_000_000.25):
        record = logging.LogRecord("zonda.access", logging.INFO, __file__, 1, "line %d", (7,), None)
        record.created, record.msecs = created, int((created - int(created)) * 1000)
        assert ours.format(record) == theirs.format(record)


def test_default_line_is_the_record_info_would_make(caplog: pytest.LogCaptureFixture) -> None:
    cycle = FakeCycle(b"/d", b"q=1")
    cycle.scope["path"] = "/d"
    websocket = FakeCycle(b"/ws")
    websocket.scope["type"] = "websocket"
    with caplog.at_level(logging.INFO, logger="zonda.access"):
        accesslog.log_default(cycle)
        accesslog.log_default(websocket)
    plain, ws = (r for r in caplog.records if r.name == "zonda.access")
    assert re.fullmatch(r'10\.0\.0\.1:4321 - "GET /d\?q=1 HTTP/1\.1" 200 13 1\d\.\dms', plain.getMessage())
    assert re.fullmatch(r'10\.0\.0\.1:4321 - "WebSocket /ws" 200 1\d\.\dms', ws.getMessage())
    assert plain.levelno == logging.INFO and plain.funcName == "log_default"
    assert plain.pathname == accesslog.__file__ and plain.module == "accesslog"
    with caplog.at_level(logging.WARNING, logger="zonda.access"):  # a level raised at run time still counts
        caplog.clear()
        accesslog.log_default(cycle)
    assert not caplog.records


def test_writes_to_a_pipe_are_whole_lines_of_at_most_pipe_buf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers share stderr: the kernel keeps a pipe write of up to PIPE_BUF bytes in one piece."""
    read_end, write_end = os.pipe()
    writes: list[bytes] = []
    real_write = os.write

    def recording_write(fd: int, data: Any) -> int:
        if fd == write_end:
            writes.append(bytes(data))
        return real_write(fd, data)

    class Stderr:
        def fileno(self) -> int:
            return write_end

    monkeypatch.setattr(accesslog.sys, "stderr", Stderr())
    monkeypatch.setattr(accesslog.os, "write", recording_write)
    lines = [f"{i:05d} {'x' * (i % 97)}\n" for i in range(300)] + ["y" * 9000 + "\n", "last\n"]

    async def main() -> None:
        writer = AccessLogWriter(None, asyncio.get_running_loop())
        assert writer.piece == accesslog._PIPE_BUF
        writer.lines.extend(lines)
        writer.close()

    try:
        asyncio.run(main())
    finally:
        os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        assert pipe.read() == "".join(lines).encode()
    assert len(writes) > 3 and all(w.endswith(b"\n") for w in writes)
    assert all(len(w) <= accesslog._PIPE_BUF for w in writes if not w.startswith(b"y"))
    assert b"y" * 9000 + b"\n" in writes  # longer than PIPE_BUF: alone, whole
