"""The span's name and attributes from a scope, the query redaction, and the trust rule for incoming trace
context (``zonda.otel.spans``), without a server: the end-to-end checks are in tests/e2e/test_otel.py."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from zonda.otel.spans import Tracing, redacted_query, request_attributes, split_host
from zonda.proxy import TrustList

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
TRACEPARENT = (b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


def scope(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items/7",
        "raw_path": b"/items/7",
        "query_string": b"",
        "headers": [(b"host", b"example.com:8080"), (b"user-agent", b"curl/8")],
        "server": ("127.0.0.1", 8000),
        "client": ("192.0.2.1", 51000),
        "state": {},
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a=1&b=2", "a=1&b=2"),
        ("sig=abc&x=1", "sig=REDACTED&x=1"),
        (
            "X-Goog-Signature=s&AWSAccessKeyId=k&Signature=v",
            "X-Goog-Signature=REDACTED&AWSAccessKeyId=REDACTED&Signature=REDACTED",
        ),
        ("signature=lowercase&design=1", "signature=lowercase&design=1"),  # keys match exactly
        ("sig", "sig"),  # a key without a value
    ],
)
def test_signed_url_credentials_are_redacted(query: str, expected: str) -> None:
    assert redacted_query(query) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("example.com", ("example.com", 80)),
        ("example.com:8080", ("example.com", 8080)),
        ("[::1]:9000", ("::1", 9000)),
        ("[::1]", ("::1", 80)),
        ("[::1", None),
        (":8080", None),
        ("example.com:x", ("example.com", 80)),
    ],
)
def test_split_host(text: str, expected: tuple[str, int] | None) -> None:
    assert split_host(text, 80) == expected


def test_attributes_of_a_request() -> None:
    attributes = request_attributes(
        scope(query_string=b"q=1", state={"request_id": "abc"}), ("10.0.0.1", 4000), "GET"
    )
    assert attributes == {
        "http.request.method": "GET",
        "url.path": "/items/7",
        "url.query": "q=1",
        "url.scheme": "http",
        "network.protocol.version": "1.1",
        "server.address": "example.com",
        "server.port": 8080,
        "client.address": "192.0.2.1",
        "client.port": 51000,
        "network.peer.address": "10.0.0.1",
        "network.peer.port": 4000,
        "user_agent.original": "curl/8",
        "zonda.request_id": "abc",
    }


def test_an_unknown_method_and_no_host_header() -> None:
    attributes = request_attributes(scope(method="PURGE", headers=[], client=None), None, "PURGE")
    assert attributes["http.request.method"] == "_OTHER"
    assert attributes["http.request.method_original"] == "PURGE"
    assert (attributes["server.address"], attributes["server.port"]) == ("127.0.0.1", 8000)
    assert "client.address" not in attributes and "network.peer.address" not in attributes
    assert "url.query" not in attributes and "user_agent.original" not in attributes


def tracing(allow: str, trust_incoming: bool = False) -> Tracing:
    tracer = TracerProvider().get_tracer("test")
    return Tracing(tracer, TraceContextTextMapPropagator(), TrustList(allow), trust_incoming, None)


@pytest.mark.parametrize(
    ("allow", "peer", "trust_incoming", "continued"),
    [
        ("127.0.0.1", ("127.0.0.1", 5000), False, True),
        ("127.0.0.1", ("192.0.2.1", 5000), False, False),
        ("127.0.0.1", ("192.0.2.1", 5000), True, True),
        ("10.0.0.0/8", ("10.1.2.3", 5000), False, True),
        ("unix", None, False, True),  # a unix-socket peer
        ("127.0.0.1", None, False, False),
    ],
)
def test_incoming_trace_context_only_from_trusted_peers(
    allow: str, peer: tuple[str, int] | None, trust_incoming: bool, continued: bool
) -> None:
    parent = tracing(allow, trust_incoming).parent([TRACEPARENT], peer)
    context = trace.get_current_span(parent).get_span_context()
    assert context.is_valid is continued
    if continued:
        assert context.trace_id == TRACE_ID


def test_a_new_root_never_inherits_the_callers_context() -> None:
    """Without a trusted traceparent the parent is an empty context, even inside a span (an embedding program's)."""
    outer = TracerProvider().get_tracer("test")
    with outer.start_as_current_span("embedding program"):
        parent = tracing("127.0.0.1").parent([], ("192.0.2.1", 1))
        assert not trace.get_current_span(parent).get_span_context().is_valid
