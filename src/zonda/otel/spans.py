"""The tracer provider, the trust rule for incoming trace context, and a request's span.

The provider: the SDK's own, configured by the SDK from the ``OTEL_*`` variables (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_BSP_*``,
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``/``HEADERS``/``TIMEOUT``/``COMPRESSION``/``CERTIFICATE``,
``OTEL_SDK_DISABLED``), spans batched (``BatchSpanProcessor``) to the OTLP/HTTP exporter. Each process makes
its own after any fork: the server builds it once lifespan startup is done. If the app (or
``opentelemetry-instrument``) has already installed an SDK provider, zonda's spans go there instead.

Names and attributes follow the stable HTTP semantic conventions for server spans: the name is the method (the
route is the app's to know), ``http.request.method``, ``url.path``, ``url.query`` (signature values redacted),
``url.scheme``, ``network.protocol.version``, ``server.address``/``server.port`` (from the Host header, which a
trusted proxy's forwarded host has replaced), ``client.address``/``client.port`` (the client behind trusted
proxies), ``network.peer.address``/``network.peer.port`` (the connection's peer), ``user_agent.original``,
``http.response.status_code``, ``error.type``; status ERROR for 5xx and app exceptions.
"""

from __future__ import annotations

import logging
from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from zonda import __version__
from zonda.asgi.types import Scope
from zonda.config import Config
from zonda.proxy import TrustList

error_log = logging.getLogger("zonda.error")

Headers = list[tuple[bytes, bytes]]
REQUEST_HEAD = "zonda.request.head_received"  # the span's start: the request head was parsed
FIRST_BYTE = "zonda.response.first_byte"  # the response head went to the connection
LAST_BYTE = "zonda.response.last_byte"  # the response's last byte did (WebSocket: the handshake's answer)
# RFC 9110's methods and PATCH: the semantic conventions' well-known set; others are "_OTHER"
KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))
# Query keys whose values the conventions want redacted by default (signed-URL credentials)
SECRET_QUERY_KEYS = frozenset(("AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature"))
DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class HeaderGetter(Getter[Headers]):
    """The propagator's view of an ASGI header list (names are lowercase bytes in zonda's scopes)."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [value.decode("latin-1") for field, value in carrier if field == name]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [field.decode("latin-1") for field, _ in carrier]


HEADERS = HeaderGetter()


class Tracing:
    """What the traced cycles share, built once per server process."""

    def __init__(
        self,
        tracer: trace.Tracer,
        propagator: TextMapPropagator,
        trust: TrustList,
        trust_incoming: bool,
        provider: Any,
    ) -> None:
        self.tracer = tracer
        self.propagator = propagator
        self.trust = trust
        self.trust_incoming = trust_incoming  # --otel-trust-incoming: every peer's traceparent is continued
        self.provider = provider
        # the header names the propagators read (traceparent, tracestate, baggage by default)
        self.fields = frozenset(field.lower().encode("latin-1") for field in propagator.fields)

    def parent(self, headers: Headers, peer: tuple[str, int] | None) -> Context:
        """The trace a request continues: the one its headers carry when its peer is trusted (the same peer,
        the same trust list as forwarded headers), else none: a new root, never the server's own context."""
        fields = self.fields
        for name, _ in headers:
            if name in fields:
                break
        else:
            return Context()  # the usual request from a client: nothing to continue, no propagator run
        if self.trust_incoming or self.trust.is_trusted(peer[0] if peer else None):
            return self.propagator.extract(headers, context=Context(), getter=HEADERS)
        return Context()

    def open_span(
        self, scope: Scope, peer: tuple[str, int] | None, method: str, received_ns: int
    ) -> tuple[Span, Token[Context]]:
        """Start the request's SERVER span at ``received_ns`` and make it current in the calling task's
        context; returns it and the token that ``close_span`` detaches."""
        parent = self.parent(scope["headers"], peer)
        attributes = request_attributes(scope, peer, method)
        name = method if method in KNOWN_METHODS else "HTTP"
        span = self.tracer.start_span(name, parent, SpanKind.SERVER, attributes, start_time=received_ns)
        span.add_event(REQUEST_HEAD, timestamp=received_ns)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def flush(self) -> None:
        """Export what is queued (blocking: the server calls it from a thread of its own)."""
        flush = getattr(self.provider, "force_flush", None)
        if flush is not None:
            flush()


def close_span(span: Span, token: Token[Context], status: int, failed: bool) -> None:
    """Detach the span from the task's context and end it with the response's status."""
    otel_context.detach(token)
    if status:
        span.set_attribute("http.response.status_code", status)
        if status >= 500 and not failed:
            span.set_attribute("error.type", str(status))
            span.set_status(Status(StatusCode.ERROR))
    span.end()


def record_failure(span: Span, exc: BaseException) -> None:
    """The app raised: the exception as the span's event, ERROR, and its class as ``error.type``."""
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    span.record_exception(exc)
    span.set_attribute("error.type", name)
    span.set_status(Status(StatusCode.ERROR, f"{kind.__name__}: {exc}"))


def request_attributes(scope: Scope, peer: tuple[str, int] | None, method: str) -> dict[str, Any]:
    scheme = scope["scheme"]
    attributes: dict[str, Any] = {
        "http.request.method": method if method in KNOWN_METHODS else "_OTHER",
        "url.path": scope["path"],
        "url.scheme": scheme,
        "network.protocol.version": scope["http_version"],
    }
    if method not in KNOWN_METHODS:
        attributes["http.request.method_original"] = method
    query = scope["query_string"]
    if query:
        attributes["url.query"] = redacted_query(query.decode("latin-1"))
    host = agent = None
    for name, value in scope["headers"]:
        if name == b"host":
            host = value
        elif name == b"user-agent":
            agent = value
    address = split_host(host.decode("latin-1"), DEFAULT_PORTS.get(scheme)) if host else None
    if address is None and scope.get("server"):
        address = scope["server"]
    if address is not None:
        attributes["server.address"] = address[0]
        if address[1]:
            attributes["server.port"] = address[1]
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
        if client[1]:
            attributes["client.port"] = client[1]
    if peer:
        attributes["network.peer.address"] = peer[0]
        attributes["network.peer.port"] = peer[1]
    if agent is not None:
        attributes["user_agent.original"] = agent.decode("latin-1")
    state = scope.get("state")
    if state:
        request_id = state.get("request_id")
        if request_id is not None:
            attributes["zonda.request_id"] = str(request_id)
    return attributes


def split_host(text: str, default_port: int | None) -> tuple[str, int | None] | None:
    """``name``, ``name:port``, ``[v6]`` or ``[v6]:port`` as (name, port); the scheme's port when none."""
    if text.startswith("["):
        name, sep, rest = text[1:].partition("]")
        if not sep:
            return None
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = text.partition(":")
    if not name:
        return None
    if port and port.isascii() and port.isdigit() and len(port) <= 5:
        return name, int(port)
    return name, default_port


def redacted_query(query: str) -> str:
    """The query with the values of ``SECRET_QUERY_KEYS`` replaced by ``REDACTED``."""
    if "sig" not in query and "Signature" not in query and "AWSAccessKeyId" not in query:
        return query  # the usual query: one scan, nothing split
    pairs = query.split("&")
    for index, pair in enumerate(pairs):
        key, sep, _ = pair.partition("=")
        if sep and key in SECRET_QUERY_KEYS:
            pairs[index] = key + "=REDACTED"
    return "&".join(pairs)


def start_tracing(config: Config) -> Tracing:
    """The process's tracer: an SDK provider already installed (by the app or ``opentelemetry-instrument``), or
    a new one from the environment, installed globally so the app's own instrumentation exports with it."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        error_log.info("Tracing with the OpenTelemetry tracer provider already installed.")
    else:
        provider = TracerProvider()  # resource, sampler and limits from the OTEL_* variables
        exporter = OTLPSpanExporter()  # endpoint, headers, timeout, compression, TLS: likewise
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
        trace.set_tracer_provider(provider)
        error_log.info(
            "Tracing: spans to %s (OTLP/HTTP).", getattr(exporter, "_endpoint", "the OTLP endpoint")
        )
    tracer = provider.get_tracer("zonda", __version__)
    trust = TrustList(config.forwarded_allow_ips)
    return Tracing(tracer, get_global_textmap(), trust, config.otel_trust_incoming, provider)
