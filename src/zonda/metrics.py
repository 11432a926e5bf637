"""Prometheus metrics, served with ``/healthz`` and ``/readyz`` on their own listener (``--metrics-bind
HOST:PORT``, ``zonda.metrics_listener``).

Only active with ``--metrics-bind``; needs ``prometheus_client`` (``pip install 'zonda[metrics]'``), imported
lazily so that ``PROMETHEUS_MULTIPROC_DIR`` can be set first.

Cost: updating a ``prometheus_client`` metric takes 0.5-1.5 µs (more in multiprocess mode, where every update
writes a memory-mapped file under a lock), several per request. So the per-response hook only bumps plain
Python counters (a ``Tally``: see ``LATENCY`` for what a response adds to), and ``Metrics.flush()`` moves them
into ``prometheus_client`` every ``FLUSH_INTERVAL`` seconds, before every scrape this process answers, and at
exit. Gauges (in-flight requests, open connections) are read from the server's own counts at flush time, and
so are the server's cumulative counters (limit and timeout rejections, WebSocket messages, HTTP/2 attacks and
errors): a flush adds what they grew by since the last one. The hook itself is C (``zonda._metrics``) when
that module was built: in Python it costs about 2,600 instructions a response, a Python call and a
``perf_counter()`` call among them, in C about half of that; the Python hook does what the C one passes on.

Bytes (``zonda_bytes_total``) are counted where they pass anyway: each connection's protocol cores count what
they are fed and hand out (``ServerShared.count_bytes``, set by ``attach``), the connection adds what it moves
past them (files, a PROXY header, an error written at accept), and its counts join the server's totals when it
closes. A flush reads the open connections' counts too (``ServerShared.byte_counts``), so a long-lived
connection shows as it goes; with 10,000 open connections that read takes about 1.5 ms, twice a second.

HTTP/2: ``zonda_http2_rejections_total{reason}`` exports the HTTP/2 core's attack and error counters
(``H2Connection.counters``). Each core adds to ``ServerShared.h2_counters`` as it counts, so open connections
are included (an attack on a connection the client keeps open shows at the next flush); counting happens only
on attacks and errors, never per request, and a flush reads one small dict rather than every connection.

Workers: under the supervisor (``--workers N`` and friends) ``prepare_multiprocess()``, called by the CLI
before the supervisor starts, points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory (prometheus_client's
multiprocess mode). Every worker serves the metrics listener itself, bound with ``SO_REUSEPORT`` to the same
address, and answers a scrape with the sum over all workers, live and dead (counters survive a worker; its
gauges go with it), plus the supervisor's ``zonda_worker_restarts_total``. ``/healthz`` and ``/readyz``
answer for the worker that took the connection: ready once its lifespan startup is done, 503 while it
drains. A listener in the supervisor would need a thread there (it has no event loop) and a readiness
report from each worker; a worker's own answer is what a load balancer's probe of that port needs.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from zonda.errors import ConfigError
from zonda.io.base import Loop, Timer

try:  # the per-response hook in C (optional: built when a C compiler was at hand at install time)
    from zonda import _metrics as accelerated
except ImportError:
    accelerated = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from zonda.connection.shared import ServerShared

logger = logging.getLogger("zonda.error")

FLUSH_INTERVAL = 0.5
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"))
REJECTION_REASONS = {  # ProtocolError class name -> reason label
    "BodyTooLarge": "request_body",
    "HeadersTooLarge": "request_headers",
    "RequestLineTooLong": "request_line",
    "RequestTimeout": "timeout",
    "RequestBodyTooSlow": "body_rate",
    "WriteTimeout": "write_timeout",
    "ProxyProtocolError": "proxy_protocol",
}
# A series (one protocol and method) is one list: a count per status code (index 0: no response), a count per
# latency bucket, then the latencies' sum. A response adds to two or three of its items: the status code is
# an index (no ``status // 100``); the first bucket's count is not kept (most responses fall in it) but worked
# out at flush time, with the status classes and the per-protocol histogram.
STATUS_CODES = 1000
LATENCY = STATUS_CODES  # the count of the first bucket (FIRST_BOUND), then of each other
LATENCY_SUM = LATENCY + len(BUCKETS)
FIRST_BOUND, SECOND_BOUND = BUCKETS[:2]
# the second bucket's count: a loaded server's next most common (bisect costs ~500 instructions)
SECOND = LATENCY + 1
_CREATED_DIR: list[str] = []


def prepare_multiprocess() -> None:
    """In the supervisor, before any worker starts (and before prometheus_client is imported): point
    ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory, removed when this process exits. A directory the
    environment already names is used as it is."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    import sys

    if "prometheus_client" in sys.modules:
        logger.warning(
            "prometheus_client was imported before zonda set PROMETHEUS_MULTIPROC_DIR: "
            "metrics will cover one worker each"
        )
    path = tempfile.mkdtemp(prefix="zonda-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    _CREATED_DIR.append(path)
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not in a forked worker
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _import_prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError:
        raise ConfigError(
            "metrics_bind: prometheus_client is not installed (pip install 'zonda[metrics]')"
        ) from None
    return prometheus_client


def count_worker_restart() -> None:
    """For the supervisor: a worker died and was replaced."""
    _families().worker_restarts.inc()


def worker_exited(pid: int) -> None:
    """For the supervisor (and each worker at exit): drop a gone process's live gauges."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)  # type: ignore[no-untyped-call]


class _Families:
    """The metric families in a registry of their own (in multiprocess mode their values live in files)."""

    def __init__(self) -> None:
        prom = _import_prometheus()
        self.registry = prom.CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = prom.Counter(
            "zonda_requests", "Responses sent", ["method", "status_class", "protocol"], registry=reg
        )
        self.latency = prom.Histogram(
            "zonda_request_duration_seconds",
            "Time from the request head to the last byte of the response (the 101, for WebSocket)",
            ["protocol"],
            buckets=BUCKETS,
            registry=reg,
        )
        self.in_flight = prom.Gauge(
            "zonda_requests_in_flight", "Requests being served", registry=reg, multiprocess_mode="livesum"
        )
        self.connections = prom.Gauge(
            "zonda_connections_open",
            "Open client connections",
            ["protocol"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.ws_connections = prom.Counter(
            "zonda_websocket_connections", "WebSocket handshakes accepted", registry=reg
        )
        self.ws_messages = prom.Counter(
            "zonda_websocket_messages", "WebSocket messages", ["direction"], registry=reg
        )
        self.bytes = prom.Counter("zonda_bytes", "Bytes on client connections", ["direction"], registry=reg)
        self.rejections = prom.Counter(
            "zonda_rejections",
            "Requests or connections refused by a limit or a timeout",
            ["reason"],
            registry=reg,
        )
        self.h2_rejections = prom.Counter(
            "zonda_http2_rejections",
            "HTTP/2 attacks and errors the server answered (GOAWAY, RST_STREAM, 431), by cause "
            "(rapid_reset, body_stall...) and by the error code sent (enhance_your_calm, stream_cancel...)",
            ["reason"],
            registry=reg,
        )
        self.worker_restarts = prom.Counter(
            "zonda_worker_restarts", "Workers the supervisor replaced", registry=reg
        )
        child = self.latency.labels("1.1")
        if not hasattr(child, "_buckets") or not hasattr(child, "_sum"):  # pragma: no cover
            raise ConfigError("metrics_bind: this prometheus_client version is not supported")


_FAMILIES: list[_Families] = []


def _families() -> _Families:
    if not _FAMILIES:
        _FAMILIES.append(_Families())
    return _FAMILIES[0]


class Tally:
    """Plain counters the per-response hook bumps; ``Metrics.flush()`` drains them. Byte counts are not bumped
    here: the connections keep them (``ServerShared.byte_counts``), read at flush time."""

    __slots__ = ("series", "shared", "ws_opened")

    def __init__(self, shared: ServerShared | None = None) -> None:
        # protocol -> method -> series (see LATENCY). Nested by keys whose hashes str caches: a (method,
        # class, protocol) tuple key was made, hashed and compared per response, a third of the hook's cost.
        self.series: dict[str, dict[str, list[Any]]] = {}
        self.ws_opened: int = 0
        self.shared = shared

    @property
    def bytes_in(self) -> int:
        """Bytes read on the server's connections so far, open ones included (0 before ``Metrics.attach``)."""
        return self.shared.byte_counts()[0] if self.shared is not None else 0

    @property
    def bytes_out(self) -> int:
        return self.shared.byte_counts()[1] if self.shared is not None else 0


def _series(tally: Tally, scope: dict[str, Any], cycle: Any) -> list[Any]:
    """The per-response hook's slow path: a series new since the last flush, or a WebSocket."""
    if scope["type"] == "http":
        protocol, method = scope["http_version"], scope["method"]
    else:
        protocol, method = "websocket", "GET"
        # asked of the cycle, not read from the status: the 101 over HTTP/1.1 is a 200 over HTTP/2 and 3, where a
        # denial (websocket.http.response) may answer 200 too
        if cycle.accepted:
            tally.ws_opened += 1
    methods = tally.series.setdefault(protocol, {})
    counts = methods.get(method)
    if counts is None:
        # floats: adding 1.0 to a float takes one from the interpreter's free list, where an int above 256 is
        # allocated anew (exact up to 2**53 responses between two flushes)
        counts = methods[method] = [0.0] * (LATENCY_SUM + 1)
    return counts


class Metrics:
    """This process's metrics: the per-response hook, the flush, the exposition."""

    def __init__(self, accelerate: bool = True) -> None:
        """``accelerate``: the per-response hook in C (``zonda._metrics``) when it is built; the tests of the
        Python hook say False."""
        self.families = _Families()  # per server: two servers in one process (tests, embedding) stay apart
        self.tally = Tally()
        self.shared: ServerShared | None = None
        self._seen: dict[str, int] = {}  # last values of the server's cumulative counters
        self._timer: Timer | None = None
        self.record = self._make_record(accelerate)

    def attach(self, shared: ServerShared, loop: Loop) -> None:
        """Start following a server's counts (once its connections are about to be accepted)."""
        self.shared = shared
        shared.tally = self.tally
        shared.count_bytes = True
        self.tally.shared = shared

        def tick() -> None:
            self.flush()
            self._timer = loop.call_at(loop.time() + FLUSH_INTERVAL, tick)

        self._timer = loop.call_at(loop.time() + FLUSH_INTERVAL, tick)

    def _make_record(self, accelerate: bool) -> Callable[[Any], None]:
        tally = self.tally
        series = tally.series

        def record(cycle: Any) -> None:
            elapsed = perf_counter() - cycle.started_at
            scope = cycle.scope
            try:  # a WebSocket's scope has no method: the slow path, without a type test for every response
                counts = series[scope["http_version"]][scope["method"]]
            except KeyError:
                counts = _series(tally, scope, cycle)
            counts[cycle.status] += 1.0  # 100-999 once a response went out (the cores check), 0 for none
            if elapsed > FIRST_BOUND:  # most responses take under the first bound (1 ms): counted at flush
                counts[SECOND if elapsed <= SECOND_BOUND else LATENCY + bisect_left(BUCKETS, elapsed)] += 1.0
            counts[LATENCY_SUM] += elapsed

        if accelerate and accelerated is not None:  # the same in C; this function for what it passes on
            return accelerated.Recorder(series, record, perf_counter, BUCKETS, LATENCY)
        return record

    def flush(self) -> None:
        """Move the tallies into prometheus_client; read the gauges."""
        families, tally = self.families, self.tally
        for protocol, methods in tally.series.items():
            buckets = [0.0] * len(BUCKETS)
            total = 0.0
            for method, counts in methods.items():
                label = method if method in METHODS else "other"
                for status_class in range(10):
                    count = sum(counts[status_class * 100 : status_class * 100 + 100])
                    if count:
                        families.requests.labels(label, f"{status_class}xx", protocol).inc(count)
                # the first bucket: every response not counted in another
                counts[LATENCY] = sum(counts[:STATUS_CODES]) - sum(counts[LATENCY + 1 : LATENCY_SUM])
                for index in range(len(BUCKETS)):
                    buckets[index] += counts[LATENCY + index]
                total += counts[LATENCY_SUM]
            child = families.latency.labels(protocol)
            for index, observed in enumerate(buckets):
                if observed:
                    child._buckets[index].inc(observed)  # a batched observe(): one write per bucket
            child._sum.inc(total)
        tally.series.clear()
        if tally.ws_opened:
            families.ws_connections.inc(tally.ws_opened)
            tally.ws_opened = 0
        if self.shared is not None:
            self._flush_server(self.shared)

    def _flush_server(self, shared: ServerShared) -> None:
        families = self.families
        stats = shared.context.stats
        open_by_protocol = {"http1": 0, "http2": 0, "http3": 0, "websocket": 0}
        # over HTTP/2 and HTTP/3 a WebSocket is a stream, not a connection
        for connection in shared.connections:
            open_by_protocol[connection.protocol_label] += 1
        for protocol, count in open_by_protocol.items():
            families.connections.labels(protocol).set(count)
        websockets = open_by_protocol["websocket"]
        families.in_flight.set(max(stats.active_requests - websockets, 0))
        bytes_in, bytes_out = shared.byte_counts()  # open connections' too: long ones show as they go
        counters = {
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "ws_in": stats.ws_messages_in,
            "ws_out": stats.ws_messages_out,
            "limit_connections": shared.stats_refused,
            "limit_concurrency": stats.rejected_concurrency,
        }
        for name, count in shared.rejections.items():
            counters[REJECTION_REASONS.get(name, "bad_request")] = (
                counters.get(REJECTION_REASONS.get(name, "bad_request"), 0) + count
            )
        for name, total in counters.items():
            delta = total - self._seen.get(name, 0)
            if delta <= 0:
                continue
            self._seen[name] = total
            if name.startswith("bytes_"):
                families.bytes.labels(name[6:]).inc(delta)
            elif name.startswith("ws_"):
                families.ws_messages.labels(name[3:]).inc(delta)
            else:
                families.rejections.labels(name).inc(delta)
        for reason, total in shared.h2_counters.items():  # the core's names: a small, fixed set
            key = "http2:" + reason
            delta = total - self._seen.get(key, 0)
            if delta > 0:
                self._seen[key] = total
                families.h2_rejections.labels(reason).inc(delta)

    def expose(self) -> tuple[bytes, str]:
        """The text exposition: every worker's metrics in multiprocess mode, else this process's."""
        prom = _import_prometheus()
        self.flush()
        if multiprocess():
            from prometheus_client import multiprocess as mp

            registry = prom.CollectorRegistry()
            mp.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST
        # zonda's own families, then the default registry: the app's metrics and the process collectors
        body = prom.generate_latest(self.families.registry) + prom.generate_latest(prom.REGISTRY)
        return body, prom.CONTENT_TYPE_LATEST

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        if self.shared is not None:
            self.families.in_flight.set(0)
            for protocol in ("http1", "http2", "http3", "websocket"):
                self.families.connections.labels(protocol).set(0)
        worker_exited(os.getpid())
