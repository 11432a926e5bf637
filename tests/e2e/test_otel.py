"""``--otel`` on every driver: ``python -m zonda --otel`` children export their spans over OTLP/HTTP to a receiver
in the test (``otlp_receiver``), which decodes them with ``opentelemetry-proto``.

What is checked: one SERVER span per request with the stable HTTP semantic-convention name and attributes over
HTTP/1.1, HTTP/2 and HTTP/3; the span is current in the app's task (the app reports the ids it sees) and an
instrumented FastAPI app's spans are its children; status ERROR for 5xx and exceptions; ``traceparent``
continued from a trusted peer, ignored from an untrusted one, continued from anyone with
``--otel-trust-incoming``; the sampler from ``OTEL_TRACES_SAMPLER``; WebSocket sessions (HTTP/1.1, HTTP/2,
HTTP/3) with their close code; a WSGI app's thread seeing the span; the request id recorded; spans still
queued exported on a graceful stop. Each request carries a query of its own to find its span.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from h2ws import H2Client
from h3client import h3_connect
from helpers import ZondaProcess, wait_for, zonda_process
from otlp_receiver import OTLPReceiver, ReceivedSpan
from tlsutil import TLSFiles, make_tls_files
from wsframes import close, parse_frame

APPS = str(Path(__file__).parent)
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
EVENTS = ["zonda.request.head_received", "zonda.response.first_byte", "zonda.response.last_byte"]


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("oteltls"))


@contextmanager
def traced_zonda(
    receiver: OTLPReceiver, driver: str, *args: str, app: str = "otel_apps:app", **env: str
) -> Iterator[ZondaProcess]:
    """A ``--otel`` child on ``driver`` exporting to ``receiver``; stopped with SIGTERM, which must exit 0."""
    argv = [app, "--port", "0", "--app-dir", APPS, "--otel", "--loop", driver, "--no-access-log", *args]
    with zonda_process(*argv, env=receiver.env(**env)) as proc:
        proc.wait_listening(20)
        yield proc
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.output


@pytest.fixture(scope="module")
def traced(receiver: OTLPReceiver, tls: TLSFiles, driver: str) -> Iterator[ZondaProcess]:
    """TLS: HTTP/1.1 and HTTP/2 (ALPN) over TCP, HTTP/3 over QUIC; 127.0.0.1 is trusted (the default)."""
    options = ["--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key), "--http3", "--request-id"]
    with traced_zonda(receiver, driver, *options) as proc:
        yield proc


@pytest.fixture(scope="module")
def untrusted(receiver: OTLPReceiver, driver: str) -> Iterator[ZondaProcess]:
    with traced_zonda(receiver, driver, "--forwarded-allow-ips", "10.9.9.9") as proc:
        yield proc


@pytest.fixture(scope="module")
def trusting(receiver: OTLPReceiver, driver: str) -> Iterator[ZondaProcess]:
    """Untrusted peers, but --otel-trust-incoming; traces are sampled only when the caller's are."""
    sampler = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    args = ("--forwarded-allow-ips", "10.9.9.9", "--otel-trust-incoming")
    with traced_zonda(receiver, driver, *args, **sampler) as proc:
        yield proc


def marker() -> str:
    return "t=" + uuid.uuid4().hex


def span_for(receiver: OTLPReceiver, query: str) -> ReceivedSpan:
    """zonda's span of the request whose query is ``query``."""
    [span] = receiver.wait_for(lambda s: s.scope == "zonda" and s.attributes.get("url.query") == query)
    return span


def check_http_span(span: ReceivedSpan, proc: ZondaProcess, path: str, query: str, version: str) -> None:
    attributes = span.attributes
    assert (span.name, span.kind, span.status) == ("GET", "SERVER", "UNSET")
    assert attributes["http.request.method"] == "GET"
    assert attributes["url.path"] == path
    assert attributes["url.query"] == query
    assert attributes["url.scheme"] == "https"
    assert attributes["network.protocol.version"] == version
    assert attributes["server.address"] == "127.0.0.1"
    if version != "3":  # aioquic's client sends an :authority without the port: 443 is taken
        assert attributes["server.port"] == proc.port
    assert attributes["client.address"] == "127.0.0.1"
    assert isinstance(attributes["client.port"], int) and attributes["client.port"] > 0
    assert attributes["http.response.status_code"] == 200
    assert re.fullmatch(r"[0-9a-f]{32}", attributes["zonda.request_id"])
    assert span.event_names() == EVENTS
    times = [time for _, time, _ in span.events]
    assert span.start_ns == times[0] <= times[1] <= times[2] <= span.end_ns


def test_http1_span_names_attributes_and_is_current_in_the_app(
    traced: ZondaProcess, receiver: OTLPReceiver, tls: TLSFiles
) -> None:
    query = marker()
    headers = {"user-agent": "otel-test/1.0"}
    response = httpx.get(f"{traced.url}/current?{query}", headers=headers, verify=tls.client_context())
    seen = json.loads(response.text)
    span = span_for(receiver, query)
    check_http_span(span, traced, "/current", query, "1.1")
    assert span.attributes["user_agent.original"] == "otel-test/1.0"
    assert span.parent_span_id == ""  # no traceparent: a new trace
    assert (seen["trace_id"], seen["span_id"]) == (span.trace_id, span.span_id)
    assert span.resource["service.name"] == "zonda-test"  # OTEL_SERVICE_NAME, read by the SDK
    assert receiver.headers["x-collector-key"] == "s3cret"  # OTEL_EXPORTER_OTLP_HEADERS, likewise


def test_http2_span(traced: ZondaProcess, receiver: OTLPReceiver, tls: TLSFiles) -> None:
    query = marker()
    with httpx.Client(http2=True, verify=tls.client_context(alpn=["h2"])) as client:
        response = client.get(f"{traced.url}/current?{query}")
    assert response.http_version == "HTTP/2"
    span = span_for(receiver, query)
    check_http_span(span, traced, "/current", query, "2")
    assert json.loads(response.text)["span_id"] == span.span_id


def quic_port(proc: ZondaProcess) -> int:
    # the QUIC endpoint's line may come a moment after the TCP listener's, which the fixture waited for
    pattern = r"HTTP/3 \(QUIC\) on udp://127\.0\.0\.1:(\d+)"
    wait_for(lambda: re.search(pattern, proc.output) is not None, what="the HTTP/3 listening line")
    match = re.search(pattern, proc.output)
    assert match, proc.output
    return int(match.group(1))


def test_http3_span(traced: ZondaProcess, receiver: OTLPReceiver, tls: TLSFiles) -> None:
    query = marker()

    async def get() -> bytes:
        async with h3_connect(quic_port(traced), tls.ca_pem) as client:
            response = await client.request("GET", f"/current?{query}")
            return bytes(response.body)

    seen = json.loads(asyncio.run(asyncio.wait_for(get(), 30)))
    span = span_for(receiver, query)
    check_http_span(span, traced, "/current", query, "3")
    assert seen["span_id"] == span.span_id


def test_an_instrumented_fastapi_app_nests_under_the_server_span(
    traced: ZondaProcess, receiver: OTLPReceiver, tls: TLSFiles
) -> None:
    query = marker()
    response = httpx.get(f"{traced.url}/api/items/7?{query}", verify=tls.client_context())
    assert response.json() == {"item": 7}
    server = span_for(receiver, query)
    [app_span] = receiver.wait_for(
        lambda s: s.scope.startswith("opentelemetry.instrumentation") and s.parent_span_id == server.span_id
    )
    assert app_span.trace_id == server.trace_id
    assert app_span.kind == "INTERNAL"  # a server span is current: the framework's is an inner one
    assert app_span.name.startswith("GET /api/items/{item}")


def test_5xx_is_an_error_and_4xx_is_not(traced: ZondaProcess, receiver: OTLPReceiver, tls: TLSFiles) -> None:
    client = httpx.Client(verify=tls.client_context())
    queries = {503: marker(), 404: marker()}
    for status, query in queries.items():
        assert client.get(f"{traced.url}/status/{status}?{query}").status_code == status
    failed = span_for(receiver, queries[503])
    assert failed.status == "ERROR" and failed.attributes["error.type"] == "503"
    assert failed.attributes["http.response.status_code"] == 503
    missing = span_for(receiver, queries[404])
    assert missing.status == "UNSET" and "error.type" not in missing.attributes


def test_an_app_exception_is_recorded(traced: ZondaProcess, receiver: OTLPReceiver, tls: TLSFiles) -> None:
    client = httpx.Client(verify=tls.client_context())
    query, late = marker(), marker()
    assert client.get(f"{traced.url}/boom?{query}").status_code == 500
    assert client.get(f"{traced.url}/late-boom?{late}").text == "sent"
    span = span_for(receiver, query)
    assert span.status == "ERROR" and "the app failed" in span.status_message
    assert span.attributes["error.type"] == "RuntimeError"
    assert span.attributes["http.response.status_code"] == 500
    [exception] = [attrs for name, _, attrs in span.events if name == "exception"]
    assert exception["exception.type"] == "RuntimeError"
    assert span.event_names()[-2:] == EVENTS[1:]  # the 500 zonda answered with
    after = span_for(receiver, late)  # raised after a complete 200: still the app's failure
    assert after.status == "ERROR" and after.attributes["error.type"] == "ValueError"
    assert after.attributes["http.response.status_code"] == 200


def test_traceparent_from_a_trusted_peer_is_continued(
    traced: ZondaProcess, receiver: OTLPReceiver, tls: TLSFiles
) -> None:
    query = marker()
    headers = {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"}
    response = httpx.get(f"{traced.url}/current?{query}", headers=headers, verify=tls.client_context())
    span = span_for(receiver, query)
    assert (span.trace_id, span.parent_span_id, span.trace_state) == (TRACE_ID, PARENT_ID, "vendor=abc")
    assert json.loads(response.text)["trace_id"] == TRACE_ID


def test_traceparent_from_an_untrusted_peer_starts_a_new_trace(
    untrusted: ZondaProcess, receiver: OTLPReceiver
) -> None:
    query = marker()
    response = httpx.get(f"{untrusted.url}/current?{query}", headers={"traceparent": TRACEPARENT})
    span = span_for(receiver, query)
    assert span.trace_id != TRACE_ID and span.parent_span_id == ""
    assert json.loads(response.text)["trace_id"] == span.trace_id
    assert span.attributes["url.scheme"] == "http"


def test_trust_incoming_continues_any_traceparent_and_the_sampler_follows_it(
    trusting: ZondaProcess, receiver: OTLPReceiver
) -> None:
    unsampled, not_asked, sampled = marker(), marker(), marker()
    client = httpx.Client()
    no = client.get(
        f"{trusting.url}/current?{unsampled}", headers={"traceparent": f"00-{'1' * 32}-{'2' * 16}-00"}
    )
    alone = client.get(f"{trusting.url}/current?{not_asked}")
    client.get(f"{trusting.url}/current?{sampled}", headers={"traceparent": TRACEPARENT})
    span = span_for(receiver, sampled)
    assert (span.trace_id, span.parent_span_id) == (TRACE_ID, PARENT_ID)
    # parentbased_traceidratio with ratio 0: a trace the caller did not sample, or a new one, is not recorded;
    # the app still sees the trace it belongs to (exports keep their order: the later span came, these did not)
    assert json.loads(no.text)["trace_id"] == "1" * 32
    assert re.fullmatch(r"[0-9a-f]{32}", json.loads(alone.text)["trace_id"])
    queries = {s.attributes.get("url.query") for s in receiver.spans()}
    assert unsampled not in queries and not_asked not in queries


def test_forwarded_client_and_request_id(traced: ZondaProcess, receiver: OTLPReceiver, tls: TLSFiles) -> None:
    query = marker()
    headers = {"x-forwarded-for": "203.0.113.7", "x-request-id": "req-42"}
    httpx.get(f"{traced.url}/current?{query}", headers=headers, verify=tls.client_context())
    attributes = span_for(receiver, query).attributes
    assert attributes["client.address"] == "203.0.113.7"  # behind the trusted proxy
    assert "client.port" not in attributes  # X-Forwarded-For carried none
    assert attributes["network.peer.address"] == "127.0.0.1"
    assert attributes["zonda.request_id"] == "req-42"  # the trusted peer's X-Request-ID


def test_websocket_session_span(traced: ZondaProcess, receiver: OTLPReceiver, tls: TLSFiles) -> None:
    query, denied = marker(), "deny&" + marker()
    ws_url = traced.url.replace("https", "wss")
    with connect(f"{ws_url}/ws?{query}", ssl=tls.threaded_client_context()) as ws:
        ws.send("hi")
        assert ws.recv() == "hi"
        ws.send("close:4001")
        with pytest.raises(Exception, match="4001"):
            ws.recv()
    with (
        pytest.raises(Exception, match="403"),
        connect(f"{ws_url}/ws?{denied}", ssl=tls.threaded_client_context()),
    ):
        pass
    span = span_for(receiver, query)
    assert (span.name, span.kind, span.status) == ("GET", "SERVER", "UNSET")
    assert span.attributes["url.scheme"] == "wss"
    assert span.attributes["http.response.status_code"] == 101
    assert span.attributes["zonda.websocket.close_code"] == 4001
    assert span.event_names() == EVENTS
    refused = span_for(receiver, denied)
    assert refused.attributes["http.response.status_code"] == 403
    assert "zonda.websocket.close_code" not in refused.attributes


def test_websocket_over_http2_and_http3_spans(
    untrusted: ZondaProcess, traced: ZondaProcess, receiver: OTLPReceiver, tls: TLSFiles
) -> None:
    query_h2, query_h3 = marker(), marker()
    with H2Client(untrusted.port) as client:
        ws = client.open_websocket(f"/ws?{query_h2}")
        assert ws.status == 200
        ws.close_handshake(1001)

    async def over_h3() -> None:
        async with h3_connect(quic_port(traced), tls.ca_pem) as client:
            tunnel = await client.open_tunnel(f"/ws?{query_h3}")
            assert tunnel.status == 200
            tunnel.send(close(1000))
            got = await tunnel.receive(parse_frame)
            assert got.close_code == 1000

    asyncio.run(asyncio.wait_for(over_h3(), 30))
    for query, version, scheme, code in ((query_h2, "2", "ws", 1001), (query_h3, "3", "wss", 1000)):
        span = span_for(receiver, query)
        assert span.name == "CONNECT" and span.attributes["http.request.method"] == "CONNECT"
        assert span.attributes["network.protocol.version"] == version
        assert span.attributes["url.scheme"] == scheme
        assert span.attributes["http.response.status_code"] == 200
        assert span.attributes["zonda.websocket.close_code"] == code


def test_the_span_is_current_in_a_wsgi_apps_thread(receiver: OTLPReceiver, driver: str) -> None:
    query = marker()
    with traced_zonda(receiver, driver, "--interface", "wsgi", app="otel_apps:wsgi_app") as proc:
        seen = httpx.get(f"{proc.url}/w?{query}").json()
        server = span_for(receiver, query)
        [inner] = receiver.wait_for(lambda s: s.scope == "wsgi-test-app" and s.trace_id == server.trace_id)
    assert (seen["trace_id"], seen["span_id"]) == (server.trace_id, server.span_id)
    assert inner.parent_span_id == server.span_id
    assert server.event_names() == EVENTS


def test_each_worker_exports_its_queued_spans_on_a_graceful_stop(receiver: OTLPReceiver, driver: str) -> None:
    """Workers leave by os._exit (multiprocessing's fork start), where no atexit hook of the SDK runs: the
    server's own flush at the stop is what exports a worker's last spans."""
    queries = [marker() for _ in range(6)]
    args = ("--workers", "2")
    with traced_zonda(receiver, driver, *args, OTEL_BSP_SCHEDULE_DELAY="600000") as proc:  # never on time
        for query in queries:  # a connection each: both workers take some
            assert httpx.get(f"{proc.url}/current?{query}").status_code == 200
        assert not {s.attributes.get("url.query") for s in receiver.spans()} & set(queries)
    for query in queries:
        span_for(receiver, query)  # exported by the stop, before the workers exited
