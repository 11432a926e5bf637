"""The default access log lines built in C (``zonda._accesslog``) are exactly the lines built in Python.

The Python line functions (``compile_format`` without a writer) are the reference; the C functions must give
the same text, or decline with TypeError so that the hook builds the line in Python.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonda import accesslog
from zonda.accesslog import DEFAULT_FORMAT, AccessLogWriter, compile_format

if accesslog.accelerated is None:
    reason = "zonda._accesslog is not built (no C compiler at install time)"
    if os.environ.get("ZONDA_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{reason} (ZONDA_REQUIRE_TOOLS=1)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

fast = accesslog.accelerated
python_json = compile_format(None, as_json=True)
python_plain = compile_format(DEFAULT_FORMAT)


class Cycle:
    def __init__(self, scope: dict[str, Any], status: Any = 200, bytes_sent: Any = 13) -> None:
        self.scope = scope
        self.status = status
        self.bytes_sent = bytes_sent
        self.started_at = 0.0


def scope_of(**changes: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "client": ("127.0.0.1", 5555),
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "state": {"request_id": "0123456789abcdef0123456789abcdef"},
    }
    scope.update(changes)
    return scope


def expected(line: Any, cycle: Cycle, seconds: float, time_text: str, time_json: str) -> str:
    """The Python line for ``cycle``, its clock and duration pinned to ``seconds`` and the given time."""
    namespace = line.__globals__
    saved = namespace["_perf"], namespace["_until"], namespace["_time"], namespace["_jtime"]
    namespace["_perf"] = lambda: cycle.started_at + seconds
    namespace["_until"] = float("inf")
    namespace["_time"], namespace["_jtime"] = time_text, time_json
    try:
        text: str = line(cycle)
        return text
    finally:
        namespace["_perf"], namespace["_until"], namespace["_time"], namespace["_jtime"] = saved


def both(cycle: Cycle, seconds: float = 0.000123) -> tuple[str, str]:
    args = (cycle.scope, cycle.status, cycle.bytes_sent, seconds)
    time_text = "2026-11-21T16:00:00.123Z"
    json_c = fast.json_line(*args, f'"{time_text}"')
    plain_c = fast.plain_line(*args, time_text)
    assert json_c == expected(python_json, cycle, seconds, time_text, f'"{time_text}"')
    assert plain_c == expected(python_plain, cycle, seconds, time_text, f'"{time_text}"')
    return json_c, plain_c


def test_the_usual_request() -> None:
    json_line, plain_line = both(Cycle(scope_of()))
    assert json_line == (
        '{"time":"2026-11-21T16:00:00.123Z","client":"127.0.0.1:5555","method":"GET","path":"/","query":"",'
        '"status":200,"bytes":13,"duration_ms":0.123,"protocol":"HTTP/1.1",'
        '"request_id":"0123456789abcdef0123456789abcdef"}\n'
    )
    assert plain_line == '2026-11-21T16:00:00.123Z 127.0.0.1:5555 - "GET / HTTP/1.1" 200 13 0.1ms\n'


@pytest.mark.parametrize(
    "changes",
    [
        {"raw_path": b'/a"b\\c\x01\x7f\xe9\xff', "query_string": b"q=\n\t\r\b\x0c"},
        {"client": None, "state": {}},
        {"state": {"request_id": None}},
        {"state": {"request_id": '\u00e9\u2603\U0001f600"\\'}},
        {"client": ("::1", 0)},
        {"http_version": "2", "method": "PROPFIND"},
        {"method": "M\u00e9"},
    ],
)
def test_odd_values_give_the_python_line(changes: dict[str, Any]) -> None:
    scope = scope_of(**changes)
    if changes.get("method") == "PROPFIND":
        del scope["method"]  # a WebSocket scope: no method, logged as GET
    both(Cycle(scope))


@pytest.mark.parametrize(
    "seconds", [0.0, 0.0000004, 0.0000005, 0.000999, 0.0009996, 0.00123, 0.0999, 0.09996, 12.3456789]
)
def test_durations(seconds: float) -> None:
    both(Cycle(scope_of()), seconds)


@pytest.mark.parametrize(
    ("cycle", "function"),
    [
        (Cycle(scope_of(), status=True), "both"),  # a bool is not the int the line expects
        (Cycle(scope_of(), bytes_sent=2**70), "both"),
        (Cycle(scope_of(client=["127.0.0.1", 1])), "both"),
        (Cycle(scope_of(raw_path="/")), "both"),
        (Cycle(scope_of(state={"request_id": 7})), "json_line"),
        (Cycle(scope_of(state=None)), "json_line"),
        (Cycle(scope_of(method="\u2603")), "plain_line"),  # beyond Latin-1
        (Cycle({"type": "http"}), "both"),
    ],
)
def test_unusual_types_are_declined(cycle: Cycle, function: str) -> None:
    names = ["json_line", "plain_line"] if function == "both" else [function]
    for name in names:
        with pytest.raises(TypeError):
            getattr(fast, name)(cycle.scope, cycle.status, cycle.bytes_sent, 0.001, "T")


def test_declined_lines_are_built_in_python(tmp_path: Any) -> None:
    """The hook falls back to the Python line for a line the C code declines, and logs both kinds."""
    import asyncio

    async def run() -> list[str]:
        writer = AccessLogWriter(str(tmp_path / "access.log"), asyncio.get_running_loop())
        hook = compile_format(None, as_json=True, writer=writer)
        hook(Cycle(scope_of()))
        hook(Cycle(scope_of(), bytes_sent=2**70))  # beyond a C long long: declined by C, fine in Python
        writer.close()
        return (tmp_path / "access.log").read_text().splitlines()

    lines = asyncio.run(run())
    assert len(lines) == 2
    assert f'"bytes":{2**70},' in lines[1]


latin1_text = st.text(st.characters(max_codepoint=255), max_size=20)
any_text = st.text(max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    raw_path=st.binary(max_size=40),
    query=st.binary(max_size=20),
    host=latin1_text,
    port=st.integers(0, 65535),
    method=latin1_text,
    version=latin1_text,
    request_id=st.none() | any_text,
    status=st.integers(-1000, 10**6),
    bytes_sent=st.integers(0, 2**62),
    seconds=st.floats(0, 1e6, allow_nan=False),
)
def test_any_values_give_the_python_line(
    raw_path: bytes,
    query: bytes,
    host: str,
    port: int,
    method: str,
    version: str,
    request_id: str | None,
    status: int,
    bytes_sent: int,
    seconds: float,
) -> None:
    scope = scope_of(
        raw_path=raw_path,
        query_string=query,
        client=(host, port),
        method=method,
        http_version=version,
        state={"request_id": request_id},
    )
    both(Cycle(scope, status, bytes_sent), seconds)


@pytest.mark.parametrize("position", range(17))
def test_every_byte_at_every_position_of_a_path(position: int) -> None:
    """The eight-at-a-time scan for characters JSON escapes finds each of them wherever it sits."""
    for byte in range(256):
        raw_path = bytearray(b"/abcdefghijklmnop")
        raw_path[position] = byte
        both(Cycle(scope_of(raw_path=bytes(raw_path))))


def test_request_ids_count_on_through_every_digit() -> None:
    try:
        fast.seed_request_ids(0x0123456789ABCDEF, 0x8F)
        assert [fast.next_request_id()[16:] for _ in range(2)] == ["000000000000008f", "0000000000000090"]
        fast.seed_request_ids(0x0123456789ABCDEF, 0x99)
        assert fast.next_request_id()[16:] == "0000000000000099"
        assert fast.next_request_id()[16:] == "000000000000009a"
        fast.seed_request_ids(0x0123456789ABCDEF, 2**64 - 2)
        ids = [fast.next_request_id() for _ in range(3)]
        assert ids == [
            "0123456789abcdef" + "fffffffffffffffe",
            "0123456789abcdef" + "ffffffffffffffff",
            "0123456789abcdef" + "0000000000000000",  # wraps within its half: the prefix stays
        ]
    finally:
        from zonda import proxy

        proxy.reseed_request_ids()


def test_the_hook_reads_perf_counters_clock() -> None:
    from time import perf_counter

    before = perf_counter()
    reading = fast.monotonic()
    after = perf_counter()
    assert reading is not None and before <= reading <= after


class SlottedCycle:
    __slots__ = ("bytes_sent", "scope", "started_at", "status")

    def __init__(self, scope: dict[str, Any], status: Any = 200) -> None:
        self.scope = scope
        self.status = status
        self.bytes_sent = 13
        self.started_at = 0.0


class PropertyStatus(SlottedCycle):
    __slots__ = ()

    @property  # type: ignore[override]
    def status(self) -> int:
        return 404

    @status.setter
    def status(self, value: int) -> None:
        pass


class Recorder:
    def __init__(self) -> None:
        self.scheduled = 0
        self.failures: list[tuple[Any, BaseException | None]] = []

    def schedule(self) -> None:
        self.scheduled += 1

    def failed(self, cycle: Any, exc: BaseException | None) -> None:
        self.failures.append((cycle, exc))


def make_hook(as_json: bool = True) -> tuple[Any, Recorder]:
    from time import perf_counter

    recorder = Recorder()
    fallback = compile_format(None, as_json) if as_json else compile_format(DEFAULT_FORMAT)
    return fast.Hook(as_json, recorder.schedule, fallback, recorder.failed, perf_counter), recorder


def started_now(cycle: Any) -> Any:
    from time import perf_counter

    cycle.started_at = perf_counter()
    return cycle


def test_the_hook_collects_lines_until_taken() -> None:
    import json
    from datetime import datetime, timezone

    hook, recorder = make_hook()
    for cycle in (Cycle(scope_of()), SlottedCycle(scope_of()), PropertyStatus(scope_of())):
        hook(started_now(cycle))
    assert recorder.scheduled == 1 and not recorder.failures  # once per batch: the first line schedules
    assert hook.pending > 0
    lines = [json.loads(line) for line in hook.take().decode().splitlines()]
    assert hook.pending == 0 and hook.take() == b""
    # slots read in place, a property through getattr
    assert [line["status"] for line in lines] == [200, 200, 404]
    for line in lines:
        assert 0 <= line["duration_ms"] < 1000
        logged = datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert abs(logged - datetime.now(timezone.utc)).total_seconds() < 5
    hook(started_now(Cycle(scope_of())))
    assert recorder.scheduled == 2  # the next batch


def test_the_hook_builds_a_declined_line_in_python_and_reports_failures() -> None:
    hook, recorder = make_hook(as_json=False)
    hook(started_now(Cycle(scope_of(method="\u2603"))))  # beyond Latin-1: declined, built by the fallback
    unset = SlottedCycle(scope_of())
    del unset.status  # an unset slot: AttributeError, as getattr gives
    hook(unset)
    hook(object())
    lines = hook.take().decode().splitlines()
    assert len(lines) == 1 and '"\u2603 / HTTP/1.1" 200 13' in lines[0]
    assert [type(exc) for _, exc in recorder.failures] == [AttributeError, AttributeError]
    assert recorder.failures[0][0] is unset
    with pytest.raises(TypeError):
        hook()


def test_a_line_that_cannot_be_built_is_logged_once(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Through compile_format: the C hook hands the exception to the same report the Python hook uses."""
    import asyncio

    async def run() -> list[str]:
        writer = AccessLogWriter(str(tmp_path / "access.log"), asyncio.get_running_loop())
        hook = compile_format(None, as_json=True, writer=writer)
        assert isinstance(hook, fast.Hook)
        broken = Cycle(scope_of())
        del broken.started_at
        hook(broken)
        hook(broken)
        hook(started_now(Cycle(scope_of())))
        writer.close()
        return (tmp_path / "access.log").read_text().splitlines()

    with caplog.at_level("ERROR", logger="zonda.error"):
        lines = asyncio.run(run())
    assert len(lines) == 1
    failures = [record for record in caplog.records if "could not be built" in record.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info and failures[0].exc_info[0] is AttributeError


def test_ids_before_any_seed_are_hex() -> None:
    """The module loaded alone (zonda.proxy seeds it at import): its first ids are still 32 hex digits."""
    import subprocess
    import sys

    code = (
        "import sys, types; package = types.ModuleType('zonda'); package.__path__ = [sys.argv[1]];"
        "sys.modules['zonda'] = package; from zonda import _accesslog;"
        "print(_accesslog.next_request_id(), _accesslog.next_request_id())"
    )
    directory = os.path.dirname(fast.__file__)
    output = subprocess.run(
        [sys.executable, "-c", code, directory], capture_output=True, text=True, check=True
    )
    assert output.stdout.split() == ["0" * 32, "0" * 31 + "1"]
