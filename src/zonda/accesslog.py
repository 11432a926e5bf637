"""Access logs: one line per response, formatted by a function compiled once at start-up.

Three outputs, decided once when the server starts:

- the default: the ``zonda.access`` logger (stdlib ``logging``), as before, when no custom format, JSON or
  file is asked for;
- ``--access-log-format`` and/or ``--access-log-file``: a line from named fields;
- ``--access-log-json``: one JSON object per line.

The custom outputs skip the ``logging`` machinery: at start-up the format becomes the source of one function,
the per-response hook itself, which builds the line with a single f-string and appends it to a list; the
lines are written with one ``os.write`` per batch (``FLUSH_INTERVAL``, 20 ms, after the first line of the
batch, and at shutdown), to the file or to stderr. The JSON variant is generated the same way (string fields
through the C ``encode_basestring_ascii``) rather than by ``json.dumps`` of a dict per line, which measured
7.2 µs a line against 1.6 µs.

The two default lines (the plain ``DEFAULT_FORMAT`` and the default JSON keys) have a faster hook when the
optional C module ``zonda._accesslog`` is built: ``Hook``, the whole per-response step in one C call, which
appends the line as UTF-8 to a buffer of its own that the writer takes (``AccessLogWriter.collect``), and
hands a line it declines (an unusual type somewhere) to the Python line built here.

What a line costs, and why the Python hook looks the way it does (``bench/observability.py``; instruction
counts under ``valgrind --tool=cachegrind`` of its in-process harness, about 10 instructions a nanosecond
here): the hello request is ~64,000 instructions with the log off; in Python the default plain format adds
~11,600 and the default JSON ~17,700, of which the hook's own bytecode is a third, joining the f-string's
parts a tenth, JSON escaping (path, request id) a tenth and float formatting of the duration a twentieth (the
C hook: plain ~2,600, JSON ~4,800, request id included). One ``perf_counter()`` serves the duration and the
time of day, whose text is cached per millisecond in the hook's globals (a float comparison per line, not a
``time()`` call); ``{duration_ms:.1f}`` and ``{status}`` come from tables; the hook never raises into the
response path (a ``try`` that costs nothing until it catches). What is left is one dict lookup, attribute
load or string part per field: CPython's floor for building the line.
"""

from __future__ import annotations

import logging
import os
import re
import select
import stat
import string
import sys
from collections.abc import Callable
from json.encoder import encode_basestring_ascii
from time import gmtime, perf_counter, strftime, time
from typing import Any

from zonda.errors import ConfigError
from zonda.io.base import Loop, Timer

try:  # the default lines built in C (optional: built when a C compiler was at hand at install time)
    from zonda import _accesslog as accelerated
except ImportError:
    accelerated = None  # type: ignore[assignment]

access_log = logging.getLogger("zonda.access")
error_log = logging.getLogger("zonda.error")

Hook = Callable[[Any], None]  # called with the finished HTTPCycle or WebSocketCycle

DEFAULT_FORMAT = '{time} {client} - "{method} {target} {protocol}" {status} {bytes} {duration_ms:.1f}ms'
JSON_KEYS = (
    "time",
    "client",
    "method",
    "path",
    "query",
    "status",
    "bytes",
    "duration_ms",
    "protocol",
    "request_id",
)
DEFAULT_JSON_FORMAT = " ".join("{" + key + "}" for key in JSON_KEYS)

# field -> (Python expression over c: the cycle, s: its scope, d: seconds since it started; kind)
# kinds: "s" text, "o" text or None, "i" int, "f" float. Header fields are "request_header:NAME" and
# "response_header:NAME". JSON_FIELDS: cheaper expressions that give a field's JSON text directly.
# _time and _jtime are globals of the compiled hook that its clock refreshes once a millisecond.
FIELDS: dict[str, tuple[str, str]] = {
    "time": ("_time", "s"),
    "client": ("_clients.get(s['client']) or _client(s['client'])", "o"),
    "remote": ("s['client'][0] if s['client'] else None", "o"),
    "method": ("s.get('method', 'GET')", "s"),
    "path": ("s['raw_path'].decode('latin-1')", "s"),
    "query": ("s['query_string'].decode('latin-1')", "s"),
    "target": (
        "s['raw_path'].decode('latin-1') + '?' + s['query_string'].decode('latin-1') if s['query_string'] "
        "else s['raw_path'].decode('latin-1')",
        "s",
    ),
    "status": ("_statuses[c.status]", "i"),
    "bytes": ("c.bytes_sent", "i"),
    "duration_ms": ("d * 1000.0", "f"),
    "duration_us": ("int(d * 1000000.0)", "i"),
    "protocol": ("_protocols.get(s['http_version']) or 'HTTP/' + s['http_version']", "s"),
    "scheme": ("s['scheme']", "s"),
    "host": ("_header(s['headers'], b'host')", "o"),
    "tls_version": ("_tls(s)", "o"),
    "pid": ("_pid", "i"),
    "request_id": ("s['state'].get('request_id')", "o"),
}
JSON_FIELDS: dict[str, str] = {
    "time": "_jtime",
    "query": "_e(s['query_string'].decode('latin-1')) if s['query_string'] else '\"\"'",
    "client": "_jclients.get(s['client']) or _jclient(s['client'])",
    "method": "_jmethods.get(s.get('method', 'GET')) or _e(s.get('method', 'GET'))",
    "protocol": "_jprotocols.get(s['http_version']) or _e('HTTP/' + s['http_version'])",
}
HEADER_FIELDS = {
    "request_header": "_header(s['headers'], {name!r})",
    "response_header": "_header(getattr(c, 'response_headers', ()), {name!r})",
}
# Matched whole (fullmatch): "$" would also match before a final newline.
_SPEC = re.compile(r"[<>=^]?[+ -]?#?0?[0-9]*[,_]?(\.[0-9]+)?[dfegs%]?")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")
_SAMPLES: dict[str, object] = {"s": "", "o": "", "i": 0, "f": 0.0}  # a value of each kind of FIELDS
_TLS_VERSIONS = {0x0301: "TLSv1.0", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}


# --------------------------------------------------------------------------- the default: zonda.access


def log_default(cycle: Any) -> None:
    """The ``zonda.access`` line (the default output).

    The record is the one ``access_log.info()`` would make, built without ``Logger.findCaller()``: that walks
    the stack for the caller's file, line and function, which here are always this function's, and it was
    a quarter of the line's cost."""
    if not access_log.isEnabledFor(_INFO):  # as info() asks; cached by logging
        return
    scope = cycle.scope
    client = scope["client"]
    client_text = _log_clients.get(client) or _log_clients.text(client)
    if scope["type"] == "websocket":
        msg = '%s - "WebSocket %s" %d %.1fms'
        args: tuple[Any, ...] = (
            client_text,
            scope["path"],
            cycle.status,
            (perf_counter() - cycle.started_at) * 1000,
        )
    else:
        msg = '%s - "%s %s%s HTTP/%s" %d %d %.1fms'
        query = scope["query_string"]
        args = (
            client_text,
            scope["method"],
            scope["path"],
            "?" + query.decode("latin-1") if query else "",
            scope["http_version"],
            cycle.status,
            cycle.bytes_sent,
            (perf_counter() - cycle.started_at) * 1000,
        )
    access_log.handle(access_log.makeRecord(_ACCESS, _INFO, _SOURCE, _LINE, msg, args, None, "log_default"))


_INFO = logging.INFO
_ACCESS = access_log.name
_SOURCE = log_default.__code__.co_filename
_LINE = log_default.__code__.co_firstlineno


# --------------------------------------------------------------------------- field helpers


def _header(headers: Any, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _tls(scope: Any) -> str | None:
    tls = scope["extensions"].get("tls")
    if not tls or tls.get("tls_version") is None:
        return None
    version = tls["tls_version"]
    return str(_TLS_VERSIONS.get(version, version))


class _ClientCache(dict[Any, str]):
    """``client`` tuple -> "host:port" (or its JSON text): a connection's requests share the tuple."""

    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def text(self, client: tuple[str, int] | None) -> str:
        if client is None:
            return "null" if self.as_json else "-"
        text = f"{client[0]}:{client[1]}"
        if self.as_json:
            text = encode_basestring_ascii(text)
        if len(self) >= 4096:
            self.clear()
        self[client] = text
        return text


_log_clients = _ClientCache(as_json=False)  # for log_default
_PROTOCOLS = {version: "HTTP/" + version for version in ("1.0", "1.1", "2", "3")}


class _StatusTexts(dict[int, str]):
    """status -> its digits: a lookup costs a third of formatting the int (the ``status`` field)."""

    def __missing__(self, status: int) -> str:
        text = str(status)
        if type(status) is int and 100 <= status <= 999:
            self[status] = text
        return text


_STATUSES = _StatusTexts()
_TENTHS = [f"{tenths / 10:.1f}" for tenths in range(1000)]  # "0.0" ... "99.9": {duration_ms:.1f} texts
# "0.000" ... "0.999": the JSON duration_ms of a request under a millisecond, the kind whose line's cost counts
# (formatting a float to three places costs about as much as the rest of the duration's work).
_THOUSANDTHS = [f"{us / 1000:.3f}" for us in range(1000)]
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")


class _Clock:
    """The ``time`` field's text (ISO 8601 UTC with milliseconds, plain and as JSON), kept in the compiled
    hook's globals and rebuilt at most once a millisecond.

    The hook reads ``perf_counter()`` once per line for both the duration and the clock: ``_until`` is the
    perf_counter reading at which the cached millisecond ends, so a line whose millisecond is cached costs one
    float comparison, not a ``time()`` call. Each rebuild reads the wall clock again, so a step of the system
    clock shows within a millisecond."""

    __slots__ = ("namespace", "prefix", "second")

    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.second = -1
        self.prefix = ""
        namespace["_until"] = 0.0
        namespace["_tick"] = self.tick
        self.tick(perf_counter())

    def tick(self, now: float) -> None:
        """``now`` is the perf_counter reading the hook took; refresh the text for this millisecond."""
        wall = time()
        ms = int(wall * 1000)
        second = ms // 1000
        if second != self.second:
            self.second = second
            self.prefix = strftime("%Y-%m-%dT%H:%M:%S", gmtime(second))
        text = f"{self.prefix}.{ms % 1000:03d}Z"
        namespace = self.namespace
        namespace["_time"] = text
        namespace["_jtime"] = f'"{text}"'
        namespace["_until"] = now + ((ms + 1) / 1000 - wall)


# --------------------------------------------------------------------------- compiling a format


def parse_format(fmt: str) -> list[tuple[str, str | None, str]]:
    """Split a format into (literal, field or None, format spec) parts; raise ConfigError naming the fault."""
    parts: list[tuple[str, str | None, str]] = []
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise ConfigError(f"access_log_format: {exc} in {fmt!r}") from None
    for literal, field, spec, conversion in parsed:
        if field is None:
            parts.append((literal, None, ""))
            continue
        if conversion:
            raise ConfigError(f"access_log_format: conversions like !{_shown(conversion)} are not supported")
        spec = spec or ""
        if field in HEADER_FIELDS:
            if not _HEADER_NAME.fullmatch(spec.lower()):
                raise ConfigError(f"access_log_format: {{{field}:NAME}} needs a header name, got {spec!r}")
            parts.append((literal, f"{field}:{spec.lower()}", ""))
            continue
        if field not in FIELDS:
            known = ", ".join([*FIELDS, "request_header:NAME", "response_header:NAME"])
            raise ConfigError(f"access_log_format: unknown field {{{_shown(field)}}}; known: {known}")
        if not _SPEC.fullmatch(spec):
            raise ConfigError(f"access_log_format: bad format spec {spec!r} for {{{field}}}")
        try:  # the pattern takes "{client:d}" and "{bytes:.2}": a spec must also suit the field's type
            format(_SAMPLES[FIELDS[field][1]], spec)
        except ValueError as exc:
            raise ConfigError(f"access_log_format: {{{field}:{spec}}}: {exc}") from None
        parts.append((literal, field, spec))
    return parts


def _shown(text: str) -> str:
    """``text`` for a one-line error message: its control characters escaped, as repr() would."""
    return text if text.isprintable() else repr(text)[1:-1]


def _expression(field: str) -> tuple[str, str]:
    if ":" in field:
        kind, _, name = field.partition(":")
        return HEADER_FIELDS[kind].format(name=name.encode("latin-1")), "o"
    return FIELDS[field]


def compile_format(
    fmt: str | None, as_json: bool = False, writer: AccessLogWriter | None = None
) -> Callable[[Any], Any]:
    """Turn a format into ``line(cycle) -> str`` (newline included). With ``as_json`` the format's fields
    name the keys of a JSON object (its literal text is ignored); without a format, ``JSON_KEYS``.

    With a ``writer``, the function made is the per-response hook itself: it appends the line to the
    writer's list and schedules the write, one Python call per response in all (for a default format with
    the C module built, ``Hook``: one C call)."""
    if fmt is None:
        fmt = DEFAULT_JSON_FORMAT if as_json else DEFAULT_FORMAT
    if writer is not None and _accelerated(fmt, as_json):
        # The whole hook in C; a line it declines (an unusual type somewhere) is built by the Python line.
        hook = accelerated.Hook(
            as_json, writer.schedule, compile_format(fmt, as_json), _Failures().report, perf_counter
        )
        writer.collect = hook.take
        return hook
    parts = parse_format(fmt)
    fields = {field for _, field, _ in parts if field is not None}
    timed = "time" in fields
    measured = "duration_ms" in fields or "duration_us" in fields
    body = ["s = c.scope"]
    if timed or measured:
        body.append("t = _perf()")  # one clock read serves both the duration and the time of day
    if timed:
        body += ["if t >= _until:", "    _tick(t)"]
    if measured:
        body.append("d = t - c.started_at")
    template = []
    if as_json:
        seen: set[str] = set()
        items = []
        for index, (_, field, _) in enumerate(parts):
            if field is None or field in seen:
                continue
            seen.add(field)
            expression, kind = _expression(field)
            if field in JSON_FIELDS:
                expression, kind = JSON_FIELDS[field], "i"  # already JSON text
            if field == "duration_ms":
                body.append(f"v{index} = int(d * 1000000.0 + 0.5)")
                body.append(
                    f"v{index} = _thousandths[v{index}] if 0 <= v{index} < 1000 else f'{{d * 1000.0:.3f}}'"
                )
                kind = "i"
            else:
                body.append(f"v{index} = {expression}")
            if kind == "s":
                body.append(f"v{index} = _e(v{index})")
            elif kind == "o":
                body.append(f"v{index} = 'null' if v{index} is None else _e(v{index})")
            value = f"{{v{index}:.3f}}" if kind == "f" else f"{{v{index}}}"
            items.append(_escape(encode_basestring_ascii(field)) + ":" + value)
        template.append("{{" + ",".join(items) + "}}")
    else:
        index = 0
        for literal, name, spec in parts:
            template.append(_escape(literal))
            if name is None:
                continue
            expression, kind = _expression(name)
            if kind == "o" and name != "client":
                expression = f"({expression}) or '-'"
            if name == "duration_ms" and spec == ".1f":
                # The default format's duration: most are under 100 ms, whose texts are made once (a table
                # lookup is half the cost of formatting the float); int(x + 0.5) rounds as .1f does but at exact ties.
                body.append(f"v{index} = int(d * 10000.0 + 0.5)")
                body.append(
                    f"v{index} = _tenths[v{index}] if 0 <= v{index} < 1000 else f'{{d * 1000.0:.1f}}'"
                )
                template.append(f"{{v{index}}}")
                index += 1
                continue
            if name == "status" and spec:
                expression = "c.status"  # the cached digits are text; a spec formats the number
            body.append(f"v{index} = {expression}")
            if kind == "f" and not spec:
                spec = ".3f"
            template.append(f"{{v{index}:{spec}}}" if spec else f"{{v{index}}}")
            index += 1
    text = "f" + repr("".join(template) + "\n")
    if writer is None:
        body.append("return " + text)
        source = ["def line(c):", *("    " + line for line in body)]
    else:
        body += [f"_append({text})", "if not _writer.scheduled:", "    _writer.schedule()"]
        # A line that cannot be built (say, an app stored a non-text request_id in scope["state"]) must never
        # break the response it describes; the try costs nothing until it catches.
        source = ["def hook(c):", "    try:", *("        " + line for line in body)]
        source += ["    except Exception:", "        _failed(c)"]
    clients, jclients = _ClientCache(as_json=False), _ClientCache(as_json=True)
    namespace: dict[str, Any] = {
        "_clients": clients,
        "_client": clients.text,
        "_jclients": jclients,
        "_jclient": jclients.text,
        "_protocols": _PROTOCOLS,
        "_jprotocols": {version: encode_basestring_ascii(text) for version, text in _PROTOCOLS.items()},
        "_jmethods": {method: encode_basestring_ascii(method) for method in _METHODS},
        "_perf": perf_counter,
        "_header": _header,
        "_tls": _tls,
        "_pid": os.getpid(),
        "_e": encode_basestring_ascii,
        "_tenths": _TENTHS,
        "_thousandths": _THOUSANDTHS,
        "_statuses": _STATUSES,
        "_failed": _Failures().report,
    }
    _Clock(namespace)
    if writer is not None:
        namespace["_append"] = writer.lines.append
        namespace["_writer"] = writer
    exec(compile("\n".join(source), "<zonda access log format>", "exec"), namespace)  # source built above
    function: Callable[[Any], Any] = namespace["hook" if writer is not None else "line"]
    return function


def _accelerated(fmt: str, as_json: bool) -> bool:
    """Does the C module build this format's lines (a default format, and the module built)?"""
    if accelerated is None:
        return False
    return fmt == (DEFAULT_JSON_FORMAT if as_json else DEFAULT_FORMAT)


class _Failures:
    """Reports the first line that could not be built, with its traceback; counts the rest quietly."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def report(self, cycle: Any, exc: BaseException | None = None) -> None:
        """Called in the ``except`` that caught the failure, or with the exception (from the C hook)."""
        self.count += 1
        if self.count == 1:
            scope = getattr(cycle, "scope", None)
            if not isinstance(scope, dict):
                scope = {}
            error_log.error(
                "Access log line for %s %s could not be built; further failures are not logged",
                scope.get("method", "-"),
                scope.get("path", "-"),
                exc_info=exc if exc is not None else True,
            )


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


# --------------------------------------------------------------------------- writing


FLUSH_INTERVAL = 0.02  # seconds a line may wait in memory before it is written
_PIPE_BUF = getattr(select, "PIPE_BUF", 512)  # POSIX: writes of up to this many bytes to a pipe stay whole


class AccessLogWriter:
    """Lines collect in a list; ``os.write`` writes them (to a file opened for appending, or to stderr)
    ``FLUSH_INTERVAL`` after the first of them, and at close.

    Batching by time rather than per event-loop iteration: a callback scheduled every iteration kept uvloop
    from waiting in epoll and cut how many requests each iteration served, which cost 2-3 µs a request under
    ``wrk -c64`` (JSON lines: 14-15 µs user CPU a request against 12 with 2-20 ms batches); the write's own
    fixed cost shrinks too (165 ns a line in batches of 64, 69 in batches of 1000). The buffer stays bounded
    by the lines made in 20 ms (plus one iteration), and graceful shutdown writes what is left (``close()``).

    To a regular file one ``write`` takes the whole batch (``O_APPEND``: workers' batches never mix). To a
    pipe, socket or terminal (stderr under systemd, docker, a shell) it goes in whole lines of at most
    ``PIPE_BUF`` bytes, which the kernel keeps in one piece, so several workers sharing stderr never
    interleave within a line."""

    def __init__(self, path: str | None, loop: Loop, interval: float = FLUSH_INTERVAL) -> None:
        self.loop = loop
        self.path = path
        self.interval = interval
        if path is None:
            try:
                self.fd = sys.stderr.fileno()
            except (AttributeError, OSError, ValueError):
                self.fd = 2
            self.owned = False
        else:
            try:
                self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise ConfigError(f"access_log_file: cannot open {path}: {exc.strerror}") from None
            self.owned = True
        try:
            regular = stat.S_ISREG(os.fstat(self.fd).st_mode)
        except OSError:
            regular = False
        self.piece = 0 if regular else _PIPE_BUF  # the most one write may take (0: all)
        self.lines: list[str] = []  # what a Python hook appends to
        # what the next write takes: the lines above, or (the C hook, which keeps its own) ``Hook.take``
        self.collect: Callable[[], bytes] = self._take_lines
        self.scheduled = False  # a write is due: the hook need not schedule one
        self._timer: Timer | None = None
        self._pending = b""

    def schedule(self) -> None:
        """The first line since the last write: write it, and the lines that follow, shortly."""
        if self.scheduled:  # a retry is already due (the C hook asks whenever its buffer was empty)
            return
        self.scheduled = True
        self._timer = self.loop.call_at(self.loop.time() + self.interval, self.flush)

    def flush(self) -> None:
        self.scheduled = False
        self._timer = None
        data = self._pending + self.collect()
        view, position, size, piece = memoryview(data), 0, len(data), self.piece
        while position < size:
            end = size
            if piece and size - position > piece:  # whole lines up to PIPE_BUF; a longer line alone
                end = (
                    data.rfind(b"\n", position, position + piece) + 1
                    or data.find(b"\n", position) + 1
                    or size
                )
            try:
                written = os.write(self.fd, view[position:end])
            except BlockingIOError:
                self._pending = data[position:]  # a non-blocking stderr that is full: try again shortly
                self.scheduled = True
                self._timer = self.loop.call_at(self.loop.time() + 0.05, self.flush)
                return
            except OSError as exc:
                error_log.error("Access log write failed (%s): %s", self.path or "stderr", exc.strerror)
                break
            position += written
        self._pending = b""

    def _take_lines(self) -> bytes:
        data = "".join(self.lines).encode("utf-8", "backslashreplace")
        self.lines.clear()
        return data

    def close(self) -> None:
        """Write what is buffered now (at shutdown, after the connections have drained)."""
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
        if self.owned:
            os.close(self.fd)
            self.owned = False
            self.fd = -1  # a line made after close fails loudly rather than land in a reused descriptor


def custom_output(config: Any) -> bool:
    """Does the config ask for a custom access log (not the ``zonda.access`` logger)?"""
    return bool(config.access_log_format or config.access_log_json or config.access_log_file)


def build_access_log(
    config: Any, loop: Loop, logger_enabled: bool
) -> tuple[Hook | None, AccessLogWriter | None]:
    """The per-response access log hook for this process, and the writer to close at exit (if any)."""
    if not config.access_log:
        return None, None
    if not custom_output(config):
        return (log_default if logger_enabled else None), None
    writer = AccessLogWriter(config.access_log_file, loop)
    return compile_format(config.access_log_format, config.access_log_json, writer), writer


def uses_request_id(config: Any) -> bool:
    """Request ids cost per request: generated only when asked for or when the access log shows them."""
    if config.request_id:
        return True
    if not config.access_log or not custom_output(config):
        return False
    fmt = config.access_log_format
    if fmt is None:
        return bool(config.access_log_json)
    return any(field == "request_id" for _, field, _ in parse_format(fmt))
