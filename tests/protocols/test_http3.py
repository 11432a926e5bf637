"""The HTTP/3 core without sockets: an aioquic client connection and ``H3Core`` exchange datagrams in memory,
with time as an input. Malformed requests, CONNECT, GOAWAY, back-pressure on sending, and the Retry tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aioquic._buffer import Buffer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamReset as QuicStreamReset
from aioquic.quic.packet import pull_quic_header

from tlsutil import TLSFiles, make_tls_files
from zonda.connection.quic import TOKEN_LIFETIME, RetryTokens
from zonda.protocols.events import Data, Request, StreamReset
from zonda.protocols.http1 import DefaultHeaders
from zonda.protocols.http3 import H3Core, H3ErrorCode, H3Settings

CLIENT = ("127.0.0.1", 50000)
SERVER = ("127.0.0.1", 443)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("h3core"))


class Pair:
    """A client (aioquic's ``QuicConnection`` and ``H3Connection``) and the server core, handshake done."""

    def __init__(self, tls: TLSFiles, settings: H3Settings | None = None) -> None:
        self.clock = Clock()
        client_config = QuicConfiguration(
            is_client=True, alpn_protocols=list(H3_ALPN), server_name="localhost"
        )
        client_config.load_verify_locations(str(tls.ca_pem))
        self.client = QuicConnection(configuration=client_config)
        self.client.connect(SERVER, now=self.clock.now)
        first = self.client.datagrams_to_send(now=self.clock.now)
        header = pull_quic_header(Buffer(data=first[0][0]), host_cid_length=8)
        server_config = QuicConfiguration(is_client=False, alpn_protocols=list(H3_ALPN))
        server_config.load_cert_chain(str(tls.cert), str(tls.key))
        quic = QuicConnection(
            configuration=server_config, original_destination_connection_id=header.destination_cid
        )
        self.core = H3Core(quic, settings or H3Settings(), DefaultHeaders(b"zonda"), self.clock)
        self.h3 = H3Connection(self.client)
        self.events: list[Any] = []  # the core's
        self.client_events: list[Any] = []  # the client's HTTP/3 events
        self.client_resets: dict[int, int] = {}
        for data, _ in first:
            self.events += self.core.receive_datagram(data, CLIENT)
        self.exchange()

    def exchange(self, rounds: int = 50) -> None:
        """Datagrams both ways until neither has any to send, time moving on to a timer due within 50 ms when
        nothing else moves (aioquic paces its sending)."""
        for _ in range(rounds):
            moved = self._move()
            if not moved:
                timers = [t for t in (self.client.get_timer(), self.core.deadline) if t is not None]
                soon = min(timers, default=None)
                if soon is None or soon - self.clock.now > 0.05:
                    return
                self.clock.now = max(self.clock.now, soon)
                self.client.handle_timer(now=self.clock.now)
                self.events += self.core.handle_timer(self.clock.now)

    def _move(self) -> bool:
        if True:
            moved = False
            for data, _ in self.core.datagrams_to_send():
                moved = True
                self.client.receive_datagram(data, SERVER, now=self.clock.now)
            while (event := self.client.next_event()) is not None:
                if isinstance(event, QuicStreamReset):
                    self.client_resets[event.stream_id] = event.error_code
                self.client_events += self.h3.handle_event(event)
            for data, _ in self.client.datagrams_to_send(now=self.clock.now):
                moved = True
                self.events += self.core.receive_datagram(data, CLIENT)
        return moved

    def request(self, headers: list[tuple[bytes, bytes]], body: bytes | None = None) -> int:
        stream_id = self.client.get_next_available_stream_id()
        self.h3.send_headers(stream_id, headers, end_stream=body is None)
        if body is not None:
            self.h3.send_data(stream_id, body, end_stream=True)
        self.exchange()
        return stream_id


def get(path: bytes = b"/") -> list[tuple[bytes, bytes]]:
    return [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"localhost"), (b":path", path)]


def test_a_request_and_its_response(tls: TLSFiles) -> None:
    pair = Pair(tls)
    stream_id = pair.request([*get(b"/hello?x=1"), (b"accept", b"*/*")])
    requests = [e for e in pair.events if isinstance(e, Request)]
    assert len(requests) == 1
    request = requests[0]
    assert (request.method, request.path, request.query_string) == (b"GET", b"/hello", b"x=1")
    assert request.http_version == "3" and request.end_stream
    assert request.headers[0] == (b"host", b"localhost")
    pair.core.send_response(stream_id, 200, [(b"content-type", b"text/plain")])
    pair.core.send_body(stream_id, b"hi", True)
    pair.exchange()
    heads = [e for e in pair.client_events if isinstance(e, HeadersReceived)]
    assert (b":status", b"200") in heads[0].headers
    assert b"".join(e.data for e in pair.client_events if isinstance(e, DataReceived)) == b"hi"
    assert stream_id not in pair.core.streams


def test_a_request_body_arrives_as_data(tls: TLSFiles) -> None:
    pair = Pair(tls)
    pair.request([(b":method", b"POST"), *get()[1:], (b"content-length", b"5")], b"hello")
    data = [e for e in pair.events if isinstance(e, Data)]
    assert b"".join(e.data for e in data) == b"hello" and data[-1].end_stream


@pytest.mark.parametrize(
    "fields",
    [
        [*get(), (b"connection", b"keep-alive")],  # connection-specific (RFC 9114 §4.2)
        [*get(), (b"te", b"gzip")],
        [*get(), (b"x-bad", b" padded")],
        [(b":method", b"POST"), *get()[1:], (b"content-length", b"7")],  # ends with no body
    ],
    ids=["connection", "te", "whitespace", "content-length"],
)
def test_a_malformed_request_is_a_message_error(tls: TLSFiles, fields: list[tuple[bytes, bytes]]) -> None:
    """RFC 9114 §4.1.2: H3_MESSAGE_ERROR, and the app never sees the request. What aioquic checks itself it
    answers by closing the connection with that code (§8 allows a stream error to be taken as a connection
    error); what only zonda checks (the HTTP/2 rules) resets the stream alone, and the connection serves on."""
    pair = Pair(tls)
    stream_id = pair.request(fields)
    assert not [e for e in pair.events if isinstance(e, Request)]
    if stream_id in pair.client_resets:
        assert pair.client_resets[stream_id] == H3ErrorCode.H3_MESSAGE_ERROR
        pair.request(get(b"/after"))
        assert [e.path for e in pair.events if isinstance(e, Request)] == [b"/after"]
    else:
        closed = pair.client._close_event
        assert closed is not None and closed.error_code == H3ErrorCode.H3_MESSAGE_ERROR


def test_connect_is_refused(tls: TLSFiles) -> None:
    pair = Pair(tls)
    stream_id = pair.request([(b":method", b"CONNECT"), (b":authority", b"example.com:443")])
    assert pair.client_resets[stream_id] == H3ErrorCode.H3_REQUEST_REJECTED


def test_a_client_reset_is_a_stream_reset_event(tls: TLSFiles) -> None:
    pair = Pair(tls)
    stream_id = pair.client.get_next_available_stream_id()
    pair.h3.send_headers(stream_id, [(b":method", b"POST"), *get()[1:]], end_stream=False)
    pair.exchange()
    pair.client.reset_stream(stream_id, H3ErrorCode.H3_REQUEST_CANCELLED)
    pair.exchange()
    assert [e.stream_id for e in pair.events if isinstance(e, StreamReset)] == [stream_id]
    assert stream_id not in pair.core.streams


def test_an_oversized_header_list_gets_431(tls: TLSFiles) -> None:
    pair = Pair(tls, H3Settings(max_header_list_size=200))
    pair.request([*get(), (b"x-big", b"v" * 300)])
    assert not [e for e in pair.events if isinstance(e, Request)]
    heads = [e for e in pair.client_events if isinstance(e, HeadersReceived)]
    assert (b":status", b"431") in heads[0].headers


def test_a_stream_with_too_much_unacknowledged_is_blocked_until_acknowledged(tls: TLSFiles) -> None:
    pair = Pair(tls, H3Settings(send_buffer=64 * 1024))
    stream_id = pair.request(get())
    pair.core.send_response(stream_id, 200, [])
    pair.core.send_body(stream_id, b"x" * 200_000, False)
    assert pair.core.is_blocked(stream_id)
    for _ in range(50):  # acknowledgements come back as the client reads
        pair.exchange()
        if not pair.core.is_blocked(stream_id):
            break
        pair.clock.now += 0.05
        pair.core.handle_timer(pair.clock.now)
    assert not pair.core.is_blocked(stream_id)
    assert stream_id in pair.core.unblocked


def test_goaway_names_the_first_stream_not_served_then_closes(tls: TLSFiles) -> None:
    pair = Pair(tls)
    stream_id = pair.request(get(b"/in-flight"))
    pair.core.finish_and_close()
    pair.exchange()
    assert not pair.core.closing  # the stream in flight is still to answer
    late = pair.request(get(b"/late"))
    assert late == stream_id + 4
    assert pair.client_resets[late] == H3ErrorCode.H3_REQUEST_REJECTED
    pair.core.send_response(stream_id, 200, [])
    pair.core.send_body(stream_id, b"done", True)
    pair.exchange()
    assert pair.core.closing


def test_retry_tokens_are_bound_to_address_retry_and_time(tmp_path: Path) -> None:
    tokens = RetryTokens()
    token = tokens.issue(CLIENT, b"original", b"retry-id", 100.0)
    assert tokens.check(CLIENT, token, b"retry-id", 101.0) == b"original"
    assert tokens.check(("127.0.0.2", 50000), token, b"retry-id", 101.0) is None
    assert tokens.check(CLIENT, token, b"other-id", 101.0) is None
    assert tokens.check(CLIENT, token, b"retry-id", 100.0 + TOKEN_LIFETIME + 1) is None
    assert tokens.check(CLIENT, b"x" * 40, b"retry-id", 101.0) is None
    assert tokens.check(CLIENT, b"", b"retry-id", 101.0) is None
    assert RetryTokens().check(CLIENT, token, b"retry-id", 101.0) is None  # another process's key
