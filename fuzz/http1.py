"""The HTTP/1.1 core: arbitrary bytes in arbitrary chunks (with timer ticks between them); every Request is
answered with a small response; the output must parse with h11 as the client.

Invariants: ``receive_data``/``handle_timer`` raise nothing (the core reports the peer's mistakes as
``ConnectionTerminated(error=ProtocolError)``); the output is a sequence of responses h11 accepts, one per
answered request plus at most one error response (status >= 400, ``connection: close``) at the end.

Input layout: byte 0 = flags (bit 0 small limits, bit 1 chunked responses, bit 2 accept upgrades,
bit 3 graceful close at the end, bit 4 timer ticks), byte 1 = seed of the chunk cuts, the rest = the stream.
"""

from __future__ import annotations

import random

import h11

from fuzz._harness import main
from helpers import Clock
from zonda.errors import ProtocolError
from zonda.protocols.events import ConnectionTerminated, Data, Request, StreamReset
from zonda.protocols.http1 import DefaultHeaders, H1Connection, H1Limits

_SMALL = H1Limits(max_request_line=64, max_header_count=4, max_header_bytes=256, max_body=64)
_BODY = b"hello"


def _answer(conn: H1Connection, request: Request, flags: int) -> bytes | None:
    """Answer ``request``; returns the method the h11 client must have sent, or None for an accepted upgrade."""
    if request.upgrade is not None and flags & 4 and _asks_upgrade(request):
        conn.accept_upgrade(request.stream_id, [(b"upgrade", request.upgrade), (b"connection", b"upgrade")])
        return None
    headers = [(b"content-type", b"text/plain")]
    if not flags & 2:
        headers.append((b"content-length", b"%d" % len(_BODY)))
    conn.send_response(request.stream_id, 200, headers)
    if flags & 2:
        conn.send_body(request.stream_id, _BODY[:2], False)
        conn.send_body(request.stream_id, _BODY[2:], True)
    else:
        conn.send_body(request.stream_id, _BODY, True)
    return b"HEAD" if request.method == b"HEAD" else b"GET"


def _asks_upgrade(request: Request) -> bool:
    """What the WebSocket and h2c handshakes check before the bridge accepts an upgrade."""
    connection = [t.strip().lower() for n, v in request.headers if n == b"connection" for t in v.split(b",")]
    return (
        request.upgrade in (b"websocket", b"h2c")
        and request.method == b"GET"
        and request.http_version == "1.1"
        and b"upgrade" in connection
    )


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    flags, cut_seed, stream = data[0], data[1], data[2:]
    clock = Clock()
    defaults = DefaultHeaders(b"zonda")
    defaults.set_date(b"Mon, 01 Jan 2024 00:00:00 GMT")
    conn = H1Connection(_SMALL if flags & 1 else H1Limits(), defaults, clock)
    cuts = random.Random(cut_seed)
    answered: list[tuple[bytes | None, Request]] = []
    errors: list[ProtocolError] = []
    upgraded = False
    position = 0
    while position < len(stream) and not upgraded:
        size = cuts.randint(1, 64)
        piece, position = stream[position : position + size], position + size
        events = conn.receive_data(piece)
        if flags & 16 and cuts.random() < 0.2:
            events += conn.handle_timer(clock.advance(cuts.choice((0.5, 6.0, 11.0, 31.0))))
        # A request reset within the same batch was withdrawn before any app could answer it.
        reset = {event.stream_id for event in events if isinstance(event, StreamReset)}
        for event in events:
            if isinstance(event, Request) and event.stream_id in reset:
                continue
            if isinstance(event, Request):
                assert not upgraded
                method = _answer(conn, event, flags)
                answered.append((method, event))
                upgraded = method is None
            elif isinstance(event, ConnectionTerminated) and event.error is not None:
                assert isinstance(event.error, ProtocolError)
                assert 400 <= event.error.status <= 599
                errors.append(event.error)
            else:
                assert isinstance(event, (Data, ConnectionTerminated, StreamReset)), event
    if flags & 8 and not upgraded:
        conn.finish_and_close()
    _check_output(conn.data_to_send(), answered, errors, eof=conn.closing or upgraded)


def _check_output(
    output: bytes, answered: list[tuple[bytes | None, Request]], errors: list[ProtocolError], eof: bool
) -> None:
    client = h11.Connection(h11.CLIENT)
    client.receive_data(output)
    if eof:
        client.receive_data(b"")
    methods: list[bytes | None] = [method for method, _ in answered]
    expected_statuses: list[int | None] = [200] * len(methods)
    if errors and output:
        methods.append(b"GET")  # the error response answers a request the core never handed out
        expected_statuses.append(None)
    for index, method in enumerate(methods):
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
        if client.our_state is not h11.IDLE:
            # The previous response closed the connection: nothing may follow it.
            assert index == len(methods) - 1 and expected_statuses[index] is None, (output, methods)
            assert not client.trailing_data[0], output
            return
        if expected_statuses[index] is None and not client.trailing_data[0]:
            return  # no error response was queued (the app had answered in full, or was mid-response)
        headers = [("host", "x")]
        if method is None:
            headers += [("connection", "upgrade"), ("upgrade", "x")]
        client.send(h11.Request(method=method or b"GET", target="/", headers=headers))
        client.send(h11.EndOfMessage())
        response = _next(client)
        if method is None:
            assert isinstance(response, h11.InformationalResponse) and response.status_code == 101, response
            return
        assert isinstance(response, h11.Response), (response, output)
        expected = expected_statuses[index]
        if expected is None:
            assert 400 <= response.status_code <= 599, response
            assert (b"connection", b"close") in response.headers, response
        else:
            assert response.status_code == expected, response
        while True:
            event = _next(client)
            if isinstance(event, h11.EndOfMessage):
                break
            assert isinstance(event, h11.Data), (event, output)
    leftover, _closed = client.trailing_data
    assert not leftover, (leftover, output)


def _next(client: h11.Connection) -> object:
    try:
        return client.next_event()
    except h11.RemoteProtocolError as exc:
        raise AssertionError(f"h11 rejected zonda's output: {exc}") from exc


def _seeds() -> list[bytes]:
    get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    post = b"POST /u?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    chunked = (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nT: 1\r\n\r\n"
    )
    upgrade = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nrest"
    head = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
    old = b"GET / HTTP/1.0\r\n\r\n"
    expect = b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
    close = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" + get
    smuggle = (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    seeds = []
    for flags in (0, 1, 2, 4, 8, 16, 31):
        for stream in (get + post + head, chunked + get, upgrade, old, expect, close, smuggle, get * 3):
            seeds.append(bytes((flags, len(seeds) % 256)) + stream)
    return seeds


SEEDS = _seeds()

if __name__ == "__main__":
    main("http1", one_input, SEEDS)
