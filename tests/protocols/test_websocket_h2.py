"""WebSocket over HTTP/2 without sockets: the extended CONNECT handshake check and its 200 headers (RFC 8441 §5),
and the HTTP/2 core's treatment of an extended CONNECT stream as a tunnel (no request-body stall timeout)."""

from __future__ import annotations

import h2.config
import h2.connection
import pytest

from helpers import Clock
from zonda.errors import BadRequest
from zonda.protocols.events import Data, Request, StreamReset
from zonda.protocols.http1 import DefaultHeaders
from zonda.protocols.http2 import H2Connection, H2Settings
from zonda.protocols.websocket import (
    Handshake,
    UpgradeRequired,
    WSSettings,
    check_extended_connect,
    check_handshake,
)

GOOD = [
    (b"host", b"example.com"),
    (b"sec-websocket-version", b"13"),
    (b"origin", b"http://www.example.com"),
]


def connect(
    headers: list[tuple[bytes, bytes]] = GOOD,
    method: bytes = b"CONNECT",
    protocol: bytes | None = b"websocket",
) -> Request:
    """The Request the HTTP/2 core emits for an extended CONNECT (RFC 8441 §5.1's example)."""
    return Request(1, method, b"/chat", b"", headers, "2", upgrade=protocol)


def test_good_extended_connect() -> None:
    headers = [
        *GOOD,
        (b"sec-websocket-protocol", b"chat, superchat"),
        (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits"),
    ]
    handshake = check_handshake(connect(headers))  # chooses RFC 8441 by the HTTP version
    assert handshake.extended_connect
    assert handshake.key == b""  # no Sec-WebSocket-Key over HTTP/2
    assert handshake.subprotocols == ["chat", "superchat"]
    assert [name for name, _ in handshake.extension_offers] == ["permessage-deflate"]
    assert check_extended_connect(connect(headers)) == handshake


@pytest.mark.parametrize(
    ("req", "error"),
    [
        (connect(method=b"GET"), BadRequest),  # :protocol on a GET never reaches here (the core), nor this
        (connect(protocol=None), BadRequest),
        (connect(protocol=b"connect-udp"), BadRequest),
        (connect([(b"sec-websocket-version", b"8")]), UpgradeRequired),
        (connect([(b"host", b"example.com")]), UpgradeRequired),
        (connect([*GOOD, (b"sec-websocket-version", b"13")]), UpgradeRequired),
    ],
    ids=["get", "no-protocol", "other-protocol", "version-8", "no-version", "two-versions"],
)
def test_bad_extended_connect(req: Request, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_handshake(req)


def test_an_http1_request_still_needs_the_rfc6455_handshake() -> None:
    request = Request(1, b"CONNECT", b"/chat", b"", GOOD, "1.1", upgrade=b"websocket")
    with pytest.raises(BadRequest):
        check_handshake(request)


def test_accept_headers_for_200() -> None:
    handshake = check_handshake(connect([*GOOD, (b"sec-websocket-protocol", b"chat, superchat")]))
    headers, extensions = handshake.accept_headers(WSSettings(), "chat")
    assert headers == [(b"sec-websocket-protocol", b"chat")]  # no Upgrade, Connection or Sec-WebSocket-Accept
    assert extensions == []
    assert Handshake(b"", extended_connect=True).accept_headers(WSSettings(), None) == ([], [])


def test_deflate_negotiated_as_over_http1() -> None:
    offer = (b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits")
    headers, extensions = check_handshake(connect([*GOOD, offer])).accept_headers(WSSettings(), None)
    assert headers == [(b"sec-websocket-extensions", b"permessage-deflate")]
    assert [type(e).__name__ for e in extensions] == ["PerMessageDeflate"]
    headers, extensions = check_handshake(connect([*GOOD, offer])).accept_headers(
        WSSettings(per_message_deflate=False), None
    )
    assert (headers, extensions) == ([], [])


# ---------------------------------------------------------------------------- the HTTP/2 core


def test_extended_connect_stream_is_not_a_stalled_body() -> None:
    """The stall sweep resets a request whose body stops coming, but not a WebSocket that is merely idle."""
    clock = Clock()
    settings = H2Settings(enable_connect_protocol=True, stall_timeout=10.0)
    server = H2Connection(settings, DefaultHeaders(b"zonda", []), clock)
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    client.initiate_connection()
    client.receive_data(server.data_to_send())  # the server's SETTINGS: ENABLE_CONNECT_PROTOCOL=1
    authority = (b":authority", b"example.com")
    client.send_headers(
        1,
        [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"), (b":path", b"/ws"),
         authority, (b"sec-websocket-version", b"13")],
    )  # fmt: skip
    client.send_headers(3, [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/upload"), authority])
    client.send_data(1, b"\x81\x80abcd")  # a WebSocket frame: the stream carries data, then goes quiet
    events = server.receive_data(client.data_to_send())
    requests = [e for e in events if isinstance(e, Request)]
    assert [(r.stream_id, r.method, r.upgrade, r.end_stream) for r in requests] == [
        (1, b"CONNECT", b"websocket", False),
        (3, b"POST", None, False),
    ]
    assert Data(1, b"\x81\x80abcd", False) in events
    clock.now += 60
    swept = server.handle_timer(clock.now)
    assert [e.stream_id for e in swept if isinstance(e, StreamReset)] == [3]
    assert server.is_open(1) and not server.is_open(3)
