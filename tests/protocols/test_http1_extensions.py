"""The HTTP/1.1 core's side of two ASGI extensions, sans-io: 103 Early Hints (RFC 8297) and response trailers
after the last chunk (RFC 9112 §7.1.2). The bridge decides whether the client takes trailers (``te``); the core
decides whether the framing can carry them."""

from __future__ import annotations

import pytest

from helpers import Clock
from zonda.errors import AppProtocolError
from zonda.protocols.http1 import DefaultHeaders, H1Connection, H1Limits

LINK = b"</a.css>; rel=preload"
HINT = b"HTTP/1.1 103 Early Hints\r\nlink: " + LINK + b"\r\n\r\n"


def make() -> H1Connection:
    return H1Connection(H1Limits(), DefaultHeaders(b"zonda"), Clock())


def request_head(path: bytes = b"/", method: bytes = b"GET", version: bytes = b"1.1") -> bytes:
    return b"%s %s HTTP/%s\r\nHost: x\r\n\r\n" % (method, path, version)


def split_response(data: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """The status line, the header fields and what follows the head."""
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.split(b"\r\n")
    return status_line, dict(line.split(b": ", 1) for line in lines), rest


def started(version: bytes = b"1.1", method: bytes = b"GET") -> H1Connection:
    conn = make()
    conn.receive_data(request_head(b"/", method, version))
    return conn


def test_an_early_hint_goes_before_the_response_head() -> None:
    conn = started()
    conn.send_early_hint(1, [LINK])
    conn.send_response(1, 200, [(b"content-length", b"2")])
    conn.send_early_hint(1, [b" </b.js>; rel=preload "])  # after the start, before the head went: still a 1xx
    conn.send_body(1, b"ok", True)
    out = conn.data_to_send()
    second = b"HTTP/1.1 103 Early Hints\r\nlink: </b.js>; rel=preload\r\n\r\n"  # trimmed, as head values
    assert out.startswith(HINT + second + b"HTTP/1.1 200 OK\r\n")
    assert out.endswith(b"\r\n\r\nok")


def test_an_early_hint_with_many_links_and_none() -> None:
    conn = started()
    conn.send_early_hint(1, [LINK, b"</b.js>; rel=preload"])
    conn.send_early_hint(1, [])
    assert conn.data_to_send() == (
        b"HTTP/1.1 103 Early Hints\r\nlink: " + LINK + b"\r\nlink: </b.js>; rel=preload\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\n\r\n"
    )


@pytest.mark.parametrize("declared", [True, False])
def test_no_early_hint_once_the_final_head_is_out(declared: bool) -> None:
    conn = started()
    conn.send_response(1, 200, [(b"content-length", b"2")] if declared else [])
    conn.send_body(1, b"", False)  # the head goes out
    head = conn.data_to_send()
    conn.send_early_hint(1, [LINK])
    assert conn.data_to_send() == b""
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")


def test_no_early_hint_to_an_http10_client() -> None:
    conn = started(b"1.0")
    conn.send_early_hint(1, [LINK])
    assert conn.data_to_send() == b""


def test_no_early_hint_for_a_request_not_being_answered() -> None:
    conn = make()
    conn.receive_data(request_head() + request_head(b"/second"))
    conn.send_early_hint(2, [LINK])  # the first request is owed its response first
    assert conn.data_to_send() == b""


def test_an_early_hint_cannot_split_the_response() -> None:
    conn = started()
    with pytest.raises(AppProtocolError):
        conn.send_early_hint(1, [b"</a>\r\nset-cookie: x=1"])
    assert conn.data_to_send() == b""


def test_trailers_follow_the_last_chunk() -> None:
    conn = started()
    conn.send_response(1, 200, [(b"trailer", b"x-sum")])
    conn.send_body(1, b"hello", False)
    conn.send_trailers(1, [(b"x-sum", b"abc"), (b"x-n", b"1")])
    _, headers, body = split_response(conn.data_to_send())
    assert headers[b"transfer-encoding"] == b"chunked"
    assert body == b"5\r\nhello\r\n0\r\nx-sum: abc\r\nx-n: 1\r\n\r\n"
    assert not conn.closing  # kept alive: the message ended where the client expects it


def test_trailers_before_any_body_frame_the_head_as_chunked() -> None:
    conn = started()
    conn.send_response(1, 200, [])
    conn.send_trailers(1, [(b"x-sum", b"abc")])
    _, headers, body = split_response(conn.data_to_send())
    assert headers[b"transfer-encoding"] == b"chunked"
    assert body == b"0\r\nx-sum: abc\r\n\r\n"


@pytest.mark.parametrize(
    ("version", "method", "headers", "expected"),
    [
        (b"1.1", b"GET", [(b"content-length", b"5")], b"hello"),  # a declared length: not chunked
        (b"1.0", b"GET", [], b"hello"),  # close-delimited
        (b"1.1", b"HEAD", [], b""),  # no body at all
    ],
)
def test_trailers_are_dropped_where_the_framing_cannot_carry_them(
    version: bytes, method: bytes, headers: list[tuple[bytes, bytes]], expected: bytes
) -> None:
    conn = started(version, method)
    conn.send_response(1, 200, headers)
    conn.send_body(1, b"hello", False)
    conn.send_trailers(1, [(b"x-sum", b"abc")])
    _, head, body = split_response(conn.data_to_send())
    assert b"transfer-encoding" not in head
    assert body == expected


@pytest.mark.parametrize(
    "fields",
    [
        [(b"transfer-encoding", b"chunked")],
        [(b":status", b"200")],
        [(b"bad name", b"1")],
        [(b"x", b"a\r\nb")],
    ],
)
def test_trailers_that_would_break_the_message_are_refused(fields: list[tuple[bytes, bytes]]) -> None:
    conn = started()
    conn.send_response(1, 200, [])
    conn.send_body(1, b"hello", False)
    conn.data_to_send()
    with pytest.raises(AppProtocolError):
        conn.send_trailers(1, fields)
