"""HTTP/2 core conformance, requests (RFC 9113 §8.1-8.3) and HPACK (RFC 7541): malformed requests are stream
errors and the connection carries on; the request head the app gets; the decode cache; oversized lists."""

from __future__ import annotations

import h2.events
import pytest

from h2wire import (
    GET,
    H2Pair,
    RawClient,
    assert_connection_error,
    assert_stream_error,
    continuation,
    data,
    request_fields,
    response_of,
)
from zonda.protocols.events import Data, Request
from zonda.protocols.http2 import (
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    RST_STREAM,
    U32,
    ErrorCode,
    frame,
)

Header = tuple[bytes, bytes]
M, S, P, A = b":method", b":scheme", b":path", b":authority"
BARE = [(M, b"GET"), (S, b"https"), (P, b"/")]  # all static-table fields: only the extra ones are inserted

MALFORMED: dict[str, list[Header]] = {
    "uppercase name": [*GET, (b"X-Upper", b"1")],
    "uppercase pseudo name": [(M, b"GET"), (S, b"https"), (b":Path", b"/"), (A, b"x")],
    "space in name": [*GET, (b"x bad", b"1")],
    "colon in regular name": [*GET, (b"x:y", b"1")],
    "empty name": [*GET, (b"", b"1")],
    "pseudo after regular": [(M, b"GET"), (S, b"https"), (b"accept", b"*/*"), (P, b"/")],
    "unknown pseudo": [*GET, (b":foo", b"bar")],
    "response pseudo in request": [(b":status", b"200"), *GET],
    "duplicate :path": [(M, b"GET"), (S, b"https"), (P, b"/"), (P, b"/other")],
    "duplicate :method": [(M, b"GET"), (M, b"POST"), (S, b"https"), (P, b"/")],
    "duplicate :scheme": [(M, b"GET"), (S, b"https"), (S, b"http"), (P, b"/")],
    "duplicate :authority": [*GET, (A, b"other")],
    "missing :method": [(S, b"https"), (P, b"/"), (A, b"x")],
    "missing :scheme": [(M, b"GET"), (P, b"/"), (A, b"x")],
    "missing :path": [(M, b"GET"), (S, b"https"), (A, b"x")],
    "empty :path": [(M, b"GET"), (S, b"https"), (P, b""), (A, b"x")],
    "connection": [*GET, (b"connection", b"keep-alive")],
    "transfer-encoding": [*GET, (b"transfer-encoding", b"chunked")],
    "upgrade": [*GET, (b"upgrade", b"websocket")],
    "keep-alive": [*GET, (b"keep-alive", b"timeout=5")],
    "proxy-connection": [*GET, (b"proxy-connection", b"close")],
    "te gzip": [*GET, (b"te", b"gzip")],
    "te trailers, gzip": [*GET, (b"te", b"trailers, gzip")],
    ":protocol without the setting": [
        (M, b"CONNECT"),
        (b":protocol", b"websocket"),
        (S, b"https"),
        (P, b"/"),
        (A, b"x"),
    ],
    "CONNECT with :path": [(M, b"CONNECT"), (A, b"x:443"), (P, b"/")],
    "CONNECT without :authority": [(M, b"CONNECT")],
    "CR in a value": [*GET, (b"x-a", b"a\rb")],
    "LF in a value": [*GET, (b"x-a", b"a\nb")],
    "NUL in a value": [*GET, (b"x-a", b"a\x00b")],
    "leading space in a value": [*GET, (b"x-a", b" a")],
    "trailing tab in a value": [*GET, (b"x-a", b"a\t")],
    "CRLF in :path": [(M, b"GET"), (S, b"https"), (P, b"/a\r\nx-injected: 1"), (A, b"x")],
    "LF in :authority": [(M, b"GET"), (S, b"https"), (P, b"/"), (A, b"x\nevil: 1")],
    "NUL in :method": [(M, b"GE\x00T"), (S, b"https"), (P, b"/"), (A, b"x")],
    "non-digit content-length": [*GET, (b"content-length", b"1e3")],
    "negative content-length": [*GET, (b"content-length", b"-1")],
    "conflicting content-lengths": [*GET, (b"content-length", b"1"), (b"content-length", b"2")],
    "huge content-length": [*GET, (b"content-length", b"9" * 5000)],
}


@pytest.mark.parametrize("fields", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_request_is_a_stream_protocol_error(fields: list[Header]) -> None:
    client = RawClient()
    events = client.send(client.headers(1, fields))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR)
    assert client.server.counters["stream_protocol_error"] == 1
    # the connection and its HPACK state carry on: the next request is fine
    assert client.request(3).stream_id == 3


@pytest.mark.parametrize("fields", list(MALFORMED.values())[:6], ids=list(MALFORMED)[:6])
def test_malformed_request_with_a_body_to_follow(fields: list[Header]) -> None:
    client = RawClient()
    events = client.send(client.headers(1, fields, end_stream=False))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR)
    assert client.send(data(1, b"in flight", end_stream=True)) == []  # we reset it: ignored
    assert [f.stream_id for f in client.read()] in ([], [0])


def test_valid_request_head() -> None:
    client = RawClient()
    fields = [
        (M, b"POST"),
        (S, b"https"),
        (P, b"/a/b%20c?x=1&y=%2F?z"),
        (A, b"example.com:8443"),
        (b"content-type", b"application/json"),
        (b"te", b"trailers"),
        (b"x-empty", b""),
        (b"x-inner", b"a b\tc"),
        (b"accept", b"*/*"),
        (b"accept", b"text/html"),
    ]
    request = client.request(1, fields, end_stream=False)
    assert request.stream_id == 1
    assert request.method == b"POST"
    assert request.path == b"/a/b%20c"
    assert request.query_string == b"x=1&y=%2F?z"
    assert request.http_version == "2"
    assert request.end_stream is False
    assert request.keep_alive is True
    assert request.expect_continue is False
    assert request.upgrade is None
    assert request.headers == [
        (b"host", b"example.com:8443"),  # :authority becomes the host header, first
        (b"content-type", b"application/json"),
        (b"te", b"trailers"),
        (b"x-empty", b""),
        (b"x-inner", b"a b\tc"),
        (b"accept", b"*/*"),
        (b"accept", b"text/html"),
    ]


def test_request_without_query_and_end_stream() -> None:
    request = RawClient().request(1, request_fields(b"/plain"))
    assert (request.path, request.query_string, request.end_stream) == (b"/plain", b"", True)


def test_cookies_are_joined_with_semicolon_space() -> None:
    # RFC 9113 §8.2.3: a client may split the cookie header into one field per crumb.
    client = RawClient()
    fields = [*GET, (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2"), (b"cookie", b"c=3")]
    request = client.request(1, fields)
    assert request.headers == [(b"host", b"example.com"), (b"accept", b"*/*"), (b"cookie", b"a=1; b=2; c=3")]


def test_cookies_from_the_h2_client() -> None:
    pair = H2Pair()
    _, request = pair.request([*GET, (b"cookie", b"session=abc"), (b"cookie", b"theme=dark")])
    assert (b"cookie", b"session=abc; theme=dark") in request.headers


def test_host_header_wins_over_authority() -> None:
    # RFC 9113 §8.3.1: a client may send host instead of :authority; when both come, host is kept as sent.
    request = RawClient().request(1, [*GET, (b"host", b"example.com")])
    assert request.headers == [(b"host", b"example.com")]


def test_request_without_authority_has_no_host() -> None:
    request = RawClient().request(1, [(M, b"GET"), (S, b"https"), (P, b"/")])
    assert request.headers == []


def test_options_asterisk() -> None:
    request = RawClient().request(1, [(M, b"OPTIONS"), (S, b"https"), (P, b"*"), (A, b"x")])
    assert (request.method, request.path) == (b"OPTIONS", b"*")


def test_connect_request() -> None:
    request = RawClient().request(1, [(M, b"CONNECT"), (A, b"upstream:443")], end_stream=False)
    assert (request.method, request.path, request.headers) == (b"CONNECT", b"", [(b"host", b"upstream:443")])


def test_extended_connect_when_enabled() -> None:
    client = RawClient(enable_connect_protocol=True)
    fields = [(M, b"CONNECT"), (b":protocol", b"websocket"), (S, b"https"), (P, b"/chat"), (A, b"x")]
    request = client.request(1, [*fields, (b"sec-websocket-version", b"13")], end_stream=False)
    assert (request.method, request.path, request.upgrade) == (b"CONNECT", b"/chat", b"websocket")


@pytest.mark.parametrize(
    "fields",
    [
        [(M, b"GET"), (b":protocol", b"websocket"), (S, b"https"), (P, b"/"), (A, b"x")],  # not CONNECT
        [(M, b"CONNECT"), (b":protocol", b"websocket"), (A, b"x")],  # no :scheme or :path
        [(M, b"CONNECT"), (b":protocol", b"a"), (b":protocol", b"b"), (S, b"https"), (P, b"/"), (A, b"x")],
    ],
)
def test_extended_connect_malformed(fields: list[Header]) -> None:
    client = RawClient(enable_connect_protocol=True)
    assert_stream_error(
        client, client.send(client.headers(1, fields, end_stream=False)), 1, ErrorCode.PROTOCOL_ERROR
    )


def test_h2_client_request_with_a_body() -> None:
    pair = H2Pair()
    pair.client.send_headers(1, [*request_fields(b"/p?q=1", b"POST"), (b"content-length", b"7")])
    pair.client.send_data(1, b"pay")
    pair.client.send_data(1, b"load", end_stream=True)
    events, _ = pair.pump()
    assert [type(e) for e in events] == [Request, Data, Data]
    request = events[0]
    assert isinstance(request, Request)
    assert (request.method, request.path, request.query_string, request.end_stream) == (
        b"POST",
        b"/p",
        b"q=1",
        False,
    )
    assert events[1:] == [Data(1, b"pay", False), Data(1, b"load", True)]


# ---------------------------------------------------------------------------------------------- body checks


def test_body_longer_than_content_length() -> None:
    client = RawClient()
    client.request(1, [*GET, (b"content-length", b"3")], end_stream=False)
    events = client.send(data(1, b"12345"))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR, handed_out=True)


def test_body_longer_than_content_length_over_several_frames() -> None:
    client = RawClient()
    client.request(1, [*GET, (b"content-length", b"5")], end_stream=False)
    assert client.send(data(1, b"123")) == [Data(1, b"123", False)]
    events = client.send(data(1, b"456"))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR, handed_out=True)


def test_body_shorter_than_content_length_at_end_stream() -> None:
    client = RawClient()
    client.request(1, [*GET, (b"content-length", b"5")], end_stream=False)
    events = client.send(data(1, b"123", end_stream=True))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR, handed_out=True)


def test_content_length_with_no_body_at_all() -> None:
    # HEADERS with END_STREAM and a non-zero content-length: malformed before any app sees it.
    client = RawClient()
    events = client.send(client.headers(1, [*GET, (b"content-length", b"5")], end_stream=True))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR)
    assert not client.server.is_open(1)


def test_body_matching_content_length() -> None:
    client = RawClient()
    request = client.request(
        1, [*GET, (b"content-length", b"6"), (b"content-length", b"6")], end_stream=False
    )
    assert (b"content-length", b"6") in request.headers
    assert client.send(data(1, b"abc"), data(1, b"def", end_stream=True)) == [
        Data(1, b"abc", False),
        Data(1, b"def", True),
    ]


def test_content_length_zero_with_end_stream() -> None:
    assert RawClient().request(1, [*GET, (b"content-length", b"0")]).end_stream


def test_request_trailers_end_the_body() -> None:
    client = RawClient()
    client.request(1, [*GET, (b"content-length", b"4")], end_stream=False)
    events = client.send(data(1, b"body"), client.headers(1, [(b"x-checksum", b"abc")], end_stream=True))
    assert events == [Data(1, b"body", False), Data(1, b"", True)]


def test_request_trailers_short_of_content_length() -> None:
    client = RawClient()
    client.request(1, [*GET, (b"content-length", b"4")], end_stream=False)
    assert client.send(data(1, b"bo")) == [Data(1, b"bo", False)]
    events = client.send(client.headers(1, [(b"x-checksum", b"abc")], end_stream=True))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR, handed_out=True)


def test_trailers_without_end_stream() -> None:
    # RFC 9113 §8.1: a second HEADERS frame without END_STREAM makes the request malformed.
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(client.headers(1, [(b"x-t", b"1")], end_stream=False))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR, handed_out=True)


@pytest.mark.parametrize(
    "trailers", [[(b":path", b"/")], [(b"x-t", b"1"), (b":status", b"200")], [(b"X-Upper", b"1")]]
)
def test_malformed_trailers(trailers: list[Header]) -> None:
    # RFC 9113 §8.1: trailers must not include pseudo-header fields; field names are lowercase (§8.2.1).
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(client.headers(1, trailers, end_stream=True))
    assert_stream_error(client, events, 1, ErrorCode.PROTOCOL_ERROR, handed_out=True)
    assert client.request(3).stream_id == 3


def test_headers_after_end_stream_is_stream_closed() -> None:
    client = RawClient()
    client.request(1, end_stream=True)
    events = client.send(client.headers(1, [(b"x-t", b"1")], end_stream=True))
    assert_stream_error(client, events, 1, ErrorCode.STREAM_CLOSED, handed_out=True)


# ---------------------------------------------------------------------------------------------- HPACK


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # indexed field 0
        b"\xbe",  # index 62: the dynamic table is empty
        b"\xff\xff\xff\xff\xff\x0f",  # an index far out of range
        b"\x40\x85\xff\xff\xff\xff\xff",  # a Huffman string with an EOS symbol
        b"\x3f\xe2\x1f",  # table size update to 4097, above our SETTINGS_HEADER_TABLE_SIZE (4096)
        b"\x82\x20",  # table size update after a field
        b"\x00\x05ab",  # a literal whose string is cut short
        b"\x00",  # a literal with no name length at all
    ],
)
def test_garbage_header_block_is_a_compression_error(block: bytes) -> None:
    client = RawClient()
    events = client.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, block))
    assert_connection_error(client, events, ErrorCode.COMPRESSION_ERROR, last=1)


def test_garbage_trailer_block_is_a_compression_error() -> None:
    client = RawClient()
    client.request(1, end_stream=False)
    events = client.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, b"\xbf\x7f"))
    assert_connection_error(client, events, ErrorCode.COMPRESSION_ERROR, last=1)


def test_repeated_requests_from_the_h2_client_decode_identically() -> None:
    pair = H2Pair()
    fields = [*request_fields(b"/same?q=1"), (b"accept", b"*/*"), (b"user-agent", b"test/1.0")]
    blocks = []
    requests = []
    for _ in range(5):
        stream_id = pair.client.get_next_available_stream_id()
        pair.client.send_headers(stream_id, fields, end_stream=True)
        wire = pair.client.data_to_send()
        blocks.append(wire[9:])
        events = pair.server.receive_data(wire)
        assert len(events) == 1 and isinstance(events[0], Request)
        requests.append(events[0])
        pair.respond(stream_id)
    # from the second request on, h2 sends one-byte indexed fields only: the block the core caches
    assert all(min(b) >= 0x80 for b in blocks[1:]) and len(set(blocks[1:])) == 1
    assert all(r.headers == requests[0].headers for r in requests)
    assert all((r.path, r.query_string) == (b"/same", b"q=1") for r in requests)
    # each request gets its own headers list: an app changing its scope does not change the next one
    requests[1].headers.append((b"x-mutated", b"1"))
    again = pair.request(fields)[1]
    assert again.headers == requests[0].headers


def last_field(client: RawClient, stream_id: int, block: bytes) -> tuple[bytes, bytes]:
    """Send a ready-made header block as a request; the last field of the Request it makes."""
    events = client.send(frame(HEADERS, END_HEADERS | END_STREAM, stream_id, block))
    assert len(events) == 1 and isinstance(events[0], Request), events
    return events[0].headers[-1]


def test_decode_cache_is_not_stale_after_the_dynamic_table_changes() -> None:
    client = RawClient()
    enc = client.encoder
    assert last_field(client, 1, enc.encode([*BARE, (b"x-a", b"1")])) == (b"x-a", b"1")  # x-a: 1 is index 62
    indexed = enc.encode([*BARE, (b"x-a", b"1")])
    assert min(indexed) >= 0x80  # one-byte indexed fields only: cacheable
    assert last_field(client, 3, indexed) == last_field(client, 5, indexed) == (b"x-a", b"1")
    # a request inserts x-b: 2, which becomes index 62 (x-a moves to 63)
    assert last_field(client, 7, enc.encode([*BARE, (b"x-b", b"2")])) == (b"x-b", b"2")
    same_bytes = enc.encode([*BARE, (b"x-b", b"2")])
    assert same_bytes == indexed  # the very bytes cached above now mean something else
    assert last_field(client, 9, same_bytes) == (b"x-b", b"2")


def test_decode_cache_is_not_stale_after_trailers_change_the_table() -> None:
    client = RawClient()
    enc = client.encoder
    last_field(client, 1, enc.encode([*BARE, (b"x-a", b"1")]))
    indexed = enc.encode([*BARE, (b"x-a", b"1")])
    assert last_field(client, 3, indexed) == (b"x-a", b"1")
    client.request(5, end_stream=False)
    # the trailers insert x-t: 9 at index 62, though nobody reads them
    assert client.send(frame(HEADERS, END_HEADERS | END_STREAM, 5, enc.encode([(b"x-t", b"9")]))) == [
        Data(5, b"", True)
    ]
    again = enc.encode([*BARE, (b"x-t", b"9")])
    assert again == indexed
    assert last_field(client, 7, again) == (b"x-t", b"9")


def test_decode_cache_is_not_stale_after_a_refused_streams_block() -> None:
    client = RawClient(max_concurrent_streams=1)
    enc = client.encoder
    client.send(frame(HEADERS, END_HEADERS, 1, enc.encode([*BARE, (b"x-a", b"1")])))
    indexed = enc.encode([*BARE, (b"x-a", b"1")])
    # streams 3 and 5 are refused (one stream at most) but their blocks are decoded all the same: 3's is
    # cached, 5's inserts x-b
    assert client.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, indexed)) == []
    assert client.send(frame(HEADERS, END_HEADERS | END_STREAM, 5, enc.encode([*BARE, (b"x-b", b"2")]))) == []
    assert [(f.stream_id, f.code) for f in client.read()] == [
        (3, ErrorCode.REFUSED_STREAM),
        (5, ErrorCode.REFUSED_STREAM),
    ]
    client.send(data(1, b"", end_stream=True))
    client.respond(1)
    client.read()
    assert enc.encode([*BARE, (b"x-b", b"2")]) == indexed
    assert last_field(client, 7, indexed) == (b"x-b", b"2")


def test_a_cached_malformed_block_is_still_refused() -> None:
    client = RawClient()
    enc = client.encoder
    bad = [*GET, (b"connection", b"close")]
    assert_stream_error(
        client,
        client.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, enc.encode(bad))),
        1,
        ErrorCode.PROTOCOL_ERROR,
    )
    indexed = enc.encode(bad)
    assert min(indexed) >= 0x80
    for stream_id in (3, 5):
        events = client.send(frame(HEADERS, END_HEADERS | END_STREAM, stream_id, indexed))
        assert_stream_error(client, events, stream_id, ErrorCode.PROTOCOL_ERROR)


def test_header_list_above_max_header_list_size_is_answered_431() -> None:
    pair = H2Pair(max_header_list_size=1000)
    stream_id = pair.client.get_next_available_stream_id()
    pair.client.send_headers(stream_id, [*GET, (b"x-big", b"v" * 2000)], end_stream=True)
    server_events, client_events = pair.pump()
    assert server_events == []  # no app sees it
    headers, body, ended = response_of(client_events, stream_id)
    assert headers[b":status"] == b"431" and ended
    assert headers[b"content-length"] == str(len(body)).encode()
    assert b"SETTINGS_MAX_HEADER_LIST_SIZE" in body
    assert pair.server.counters["header_list_too_large"] == 1
    assert not pair.server.closing
    # the connection carries on, HPACK in step
    stream_id, request = pair.request()
    assert request.headers == [(b"host", b"example.com")]


def test_header_list_431_with_a_body_to_follow() -> None:
    client = RawClient(max_header_list_size=200)
    events = client.send(client.headers(1, [*GET, (b"x-big", b"v" * 300)], end_stream=False))
    assert events == []
    frames = client.read()
    assert [(f.kind, f.stream_id) for f in frames] == [(HEADERS, 1), (DATA, 1)]
    assert client.decode(frames[0])[0] == (b":status", b"431")
    # the response is complete, the request not: the rest of it is taken till END_STREAM, with no events
    # (no app reads it)
    assert client.send(data(1, b"unread" * 2000)) == []
    assert client.send(data(1, b"", end_stream=True)) == []
    assert 1 not in client.server.streams


def test_header_list_431_then_a_reset_from_the_client_makes_no_event() -> None:
    client = RawClient(max_header_list_size=200)
    client.send(client.headers(1, [*GET, (b"x-big", b"v" * 300)], end_stream=False))
    client.read()
    assert client.send(frame(RST_STREAM, 0, 1, U32.pack(ErrorCode.CANCEL))) == []
    assert 1 not in client.server.streams
    assert isinstance(client.request(3), Request)  # the connection carries on


def test_header_list_size_counts_32_bytes_per_field() -> None:
    # RFC 9113 §6.5.2: the size of a field is its name, its value and 32 octets.
    fields = [*GET, (b"x-a", b"v" * 50)]
    size = sum(len(n) + len(v) + 32 for n, v in fields)
    assert isinstance(RawClient(max_header_list_size=size).request(1, fields), Request)
    client = RawClient(max_header_list_size=size - 1)
    assert client.send(client.headers(1, fields)) == []
    assert client.server.counters["header_list_too_large"] == 1


def _bomb(client: RawClient, value_size: int, references: int) -> bytes:
    """A header block inserting one large field and then referring to it, one byte a reference."""
    enc = client.encoder
    insert = enc.encode([*GET, (b"x-bomb", b"b" * value_size)])
    assert client.send(frame(HEADERS, END_HEADERS | END_STREAM, 1, insert))  # within the limit: a Request
    indexed = enc.encode([*GET, (b"x-bomb", b"b" * value_size)])
    assert indexed[-1:] == b"\xbe"
    return indexed + b"\xbe" * (references - 1)


def test_hpack_bomb_is_enhance_your_calm() -> None:
    client = RawClient()
    block = _bomb(client, 4000, 100)  # 100 bytes on the wire, 400 KB decoded
    assert len(block) < 110
    events = client.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, block))
    assert_connection_error(client, events, ErrorCode.ENHANCE_YOUR_CALM, last=3)
    assert client.server.counters["hpack_bomb"] == 1
    assert client.server.counters["enhance_your_calm"] == 1


def test_hpack_bomb_in_trailers_is_enhance_your_calm() -> None:
    client = RawClient()
    block = _bomb(client, 4000, 100)
    client.request(3, end_stream=False)
    events = client.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, block))
    assert_connection_error(client, events, ErrorCode.ENHANCE_YOUR_CALM, last=3)
    assert client.server.counters["hpack_bomb"] == 1


def test_moderate_hpack_expansion_is_answered_431() -> None:
    client = RawClient()
    block = _bomb(client, 4000, 20)  # 80 KB decoded: above the limit, within what the decoder tolerates
    assert client.send(frame(HEADERS, END_HEADERS | END_STREAM, 3, block)) == []
    frames = client.read()
    assert client.decode(frames[0])[0] == (b":status", b"431")
    assert client.server.counters == {"header_list_too_large": 1}


def test_hpack_state_kept_across_refused_and_malformed_streams() -> None:
    client = RawClient(max_concurrent_streams=1)
    client.request(1, end_stream=False)
    # each of these blocks inserts into the dynamic table; none becomes a request
    client.send(client.headers(3, [*GET, (b"x-one", b"1")]))  # refused
    client.send(client.headers(5, [*GET, (b"x-two", b"2"), (b"Bad", b"x")]))  # malformed
    client.send(data(1, b"", end_stream=True))
    client.respond(1)
    client.read()
    request = client.request(7, [*GET, (b"x-one", b"1"), (b"x-two", b"2")])
    assert request.headers[-2:] == [(b"x-one", b"1"), (b"x-two", b"2")]


def test_client_table_size_update_is_honoured() -> None:
    client = RawClient()
    client.request(1, [*GET, (b"x-a", b"1")])
    enc = client.encoder
    enc.header_table_size = 0  # emits a size update: the table is emptied
    request = client.request(3, [*GET, (b"x-a", b"1")])
    assert request.headers[-1] == (b"x-a", b"1")
    enc.header_table_size = 4096
    assert client.request(5, [*GET, (b"x-a", b"1")]).headers[-1] == (b"x-a", b"1")


def test_h2_client_with_a_sensitive_never_indexed_header() -> None:
    from hpack import NeverIndexedHeaderTuple

    pair = H2Pair()
    _, request = pair.request([*GET, NeverIndexedHeaderTuple(b"authorization", b"secret")])
    assert (b"authorization", b"secret") in request.headers


def test_continuation_block_decoded_with_the_cache() -> None:
    client = RawClient()
    fields = [*GET, (b"x-a", b"1")]
    client.request(1, fields)
    indexed = client.block(fields)
    events = client.send(
        frame(HEADERS, END_STREAM, 3, indexed[:2]), continuation(3, indexed[2:], end_headers=True)
    )
    assert len(events) == 1 and isinstance(events[0], Request)
    assert events[0].headers[-1] == (b"x-a", b"1")


def test_h2_client_response_decoding() -> None:
    pair = H2Pair()
    stream_id, _ = pair.request()
    events = pair.respond(stream_id, 200, [(b"content-type", b"text/plain")], b"hi")
    assert any(isinstance(e, h2.events.ResponseReceived) for e in events)
    assert response_of(events, stream_id) == (
        {
            b":status": b"200",
            b"content-type": b"text/plain",
            b"server": b"zonda",
            b"date": b"Mon, 01 Jan 2024 00:00:00 GMT",
        },
        b"hi",
        True,
    )
