"""A tiny OTLP/HTTP trace receiver for the tests: ``POST /v1/traces`` bodies on 127.0.0.1 (port 0), decoded with
``opentelemetry-proto`` into ``ReceivedSpan`` records.

    with OTLPReceiver() as receiver:
        env = receiver.env()            # OTEL_* variables pointing a zonda child at it, batches sent quickly
        ...
        span = receiver.wait_for(lambda s: s.name == "GET" and s.attributes.get("url.query") == "t=1")
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass
class ReceivedSpan:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root
    trace_state: str
    scope: str  # the instrumentation scope: "zonda" for zonda's own spans
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]  # (name, time in ns, attributes)
    status: str
    status_message: str
    start_ns: int
    end_ns: int
    resource: dict[str, Any] = field(default_factory=dict)

    def event_names(self) -> list[str]:
        return [name for name, _, _ in self.events]


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=SPAN_KINDS.get(span.kind, str(span.kind)),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        trace_state=span.trace_state,
                        scope=scope_spans.scope.name,
                        attributes=_attributes(span.attributes),
                        events=[(e.name, e.time_unix_nano, _attributes(e.attributes)) for e in span.events],
                        status=STATUS_CODES.get(span.status.code, str(span.status.code)),
                        status_message=span.status.message,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        resource=resource,
                    )
                )
    return spans


class OTLPReceiver:
    """Collects the spans of every export it is sent; thread-safe reads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[ReceivedSpan] = []
        self.exports = 0
        self.headers: dict[str, str] = {}  # of the last export request
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                spans = decode(body)
                with receiver.lock:
                    receiver.received.extend(spans)
                    receiver.exports += 1
                    receiver.headers = {name.lower(): value for name, value in self.headers.items()}
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def env(self, **extra: str) -> dict[str, str]:
        """Variables for a zonda child exporting here: batches every 50 ms, every trace sampled, and a header
        the exporter must send."""
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": "x-collector-key=s3cret",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_SERVICE_NAME": "zonda-test",
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            **extra,
        }

    def spans(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.received)

    def wait_for(
        self, predicate: Callable[[ReceivedSpan], bool], count: int = 1, timeout: float = 10.0
    ) -> list[ReceivedSpan]:
        """The first ``count`` spans matching ``predicate``, waiting for them to be exported."""
        deadline = time.monotonic() + timeout
        while True:
            found = [span for span in self.spans() if predicate(span)]
            if len(found) >= count:
                return found[:count]
            if time.monotonic() > deadline:
                names = [(s.name, s.attributes.get("url.path")) for s in self.spans()]
                raise AssertionError(f"{len(found)} of {count} spans within {timeout}s; received {names}")
            time.sleep(0.02)

    def __enter__(self) -> OTLPReceiver:
        self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
