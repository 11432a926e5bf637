"""HTTP/2 stream states (RFC 9113 §5.1) over real sockets: frames a client sends after its own RST_STREAM, after
its END_STREAM, on a stream closed by both ends and after the server's RST_STREAM, each with the exact RST_STREAM
or GOAWAY code and a server that serves on afterwards; and a response sent before the request body is read
(h2spec 6.9 #2, 6.9.1 #3 and 8.1.2.1 #3 with such an app), with the rest of the body still flow controlled.

Hand-built frames (``h2socket.RawH2``) for the broken clients, the ``h2`` package (``H2Client``) for the
well-behaved upload. The app answers at once without reading the body, except ``/hold``, which never answers
and notes the ``http.disconnect`` it gets."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import h2.events
import pytest

from h2socket import (
    DATA,
    END_HEADERS,
    END_STREAM,
    HEADERS,
    PING,
    RST_STREAM,
    ErrorCodes,
    H2Client,
    RawH2,
    frame,
    ping,
    rst_stream,
    window_update,
)
from helpers import assert_still_serving, run_server, simple_app, wait_for


class Record:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.disconnected: set[str] = (
            set()
        )  # the query strings of /hold requests whose app got http.disconnect

    def saw_disconnect(self, key: str) -> bool:
        with self.lock:
            return key in self.disconnected


def make_app(record: Record) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/hold":
            while (await receive())["type"] != "http.disconnect":
                pass
            with record.lock:
                record.disconnected.add(scope["query_string"].decode())
            return
        await simple_app(scope, receive, send)  # answers without reading the body

    return app


@pytest.fixture(scope="module")
def server(driver: str) -> Iterator[Any]:
    record = Record()
    with run_server(make_app(record), loop=driver) as running:
        running.record = record  # type: ignore[attr-defined]
        yield running


@pytest.fixture
def record(server: Any) -> Record:
    return server.record  # type: ignore[no-any-return]


def data(stream_id: int, body: bytes, end_stream: bool = False) -> bytes:
    return frame(DATA, END_STREAM if end_stream else 0, stream_id, body)


def post(raw: RawH2, stream_id: int, path: str, end_stream: bool = False) -> bytes:
    return raw.headers(stream_id, path, "POST", end_stream=end_stream)


def trailers(raw: RawH2, stream_id: int, fields: list[tuple[str, str]], end_stream: bool = True) -> bytes:
    flags = END_HEADERS | (END_STREAM if end_stream else 0)
    return frame(HEADERS, flags, stream_id, raw.block(fields))


def synced(raw: RawH2, payload: bytes = b"in sync!") -> None:
    """The server has read everything sent so far (its PING ACK is back), so what comes next is a later read:
    an app started for a request sent before has been started, not dropped with it in the same read."""
    raw.send(ping(payload))
    raw.wait_for(lambda f: f.kind == PING and f.payload == payload, what="PING ACK")


def assert_serves_on(raw: RawH2, stream_id: int) -> None:
    """The same connection answers a fresh request."""
    raw.send(raw.headers(stream_id, "/next"))
    assert raw.response(stream_id)[::2] == (200, b"GET /next")


def resets_of(raw: RawH2, stream_id: int) -> list[ErrorCodes | int]:
    return [f.error_code for f in raw.frames if f.kind == RST_STREAM and f.stream_id == stream_id]


def late_frame(raw: RawH2, kind: str, stream_id: int) -> bytes:
    if kind == "DATA":
        return data(stream_id, b"late", end_stream=True)
    if kind == "HEADERS":
        return trailers(raw, stream_id, [("x-late", "1")])
    return window_update(stream_id, 100)


# ------------------------------------------------------------------------- after the client's RST_STREAM


@pytest.mark.parametrize("kind", ["DATA", "HEADERS", "WINDOW_UPDATE"])
def test_frame_after_the_clients_reset_is_stream_closed(server: Any, record: Record, kind: str) -> None:
    key = f"client-reset-{kind}"
    with RawH2(server.port) as raw:
        raw.send(post(raw, 1, f"/hold?{key}"))
        synced(raw)
        raw.send(rst_stream(1, ErrorCodes.CANCEL))
        wait_for(lambda: record.saw_disconnect(key), what="the app's http.disconnect")
        raw.send(late_frame(raw, kind, 1))
        assert raw.reset_of(1).error_code == ErrorCodes.STREAM_CLOSED
        raw.send(data(1, b"more"))  # one RST_STREAM per stream: later frames are ignored
        assert_serves_on(raw, 3)
        assert resets_of(raw, 1) == [ErrorCodes.STREAM_CLOSED]


# ----------------------------------------------------------- after END_STREAM: half-closed (remote), closed


@pytest.mark.parametrize("kind", ["DATA", "HEADERS"])
def test_frame_after_end_stream_is_stream_closed(server: Any, record: Record, kind: str) -> None:
    key = f"half-closed-remote-{kind}"
    with RawH2(server.port) as raw:
        raw.send(post(raw, 1, f"/hold?{key}", end_stream=True))
        synced(raw)
        raw.send(late_frame(raw, kind, 1))
        assert raw.reset_of(1).error_code == ErrorCodes.STREAM_CLOSED
        wait_for(lambda: record.saw_disconnect(key), what="the app's http.disconnect")
        assert_serves_on(raw, 3)


def test_data_on_a_closed_stream_is_stream_closed(server: Any) -> None:
    with RawH2(server.port) as raw:
        raw.send(raw.headers(1, "/done"))
        assert raw.response(1)[0] == 200
        raw.send(data(1, b"late"))
        assert raw.reset_of(1).error_code == ErrorCodes.STREAM_CLOSED
        assert_serves_on(raw, 3)


def test_headers_on_a_closed_stream_is_a_connection_error(server: Any) -> None:
    with RawH2(server.port) as raw:
        raw.send(raw.headers(1, "/done"))
        assert raw.response(1)[0] == 200
        raw.send(raw.headers(1, "/again"))
        goaway = raw.goaway()
        assert (goaway.error_code, goaway.last_stream_id) == (ErrorCodes.STREAM_CLOSED, 1)
        assert raw.wait_closed()
    assert_still_serving(server.port)
    with RawH2(server.port) as fresh:
        assert_serves_on(fresh, 1)


# ---------------------------------------------------------------------- after the server's RST_STREAM


def test_frames_after_our_reset_are_ignored(server: Any, record: Record) -> None:
    with RawH2(server.port) as raw:
        raw.send(post(raw, 1, "/hold?server-reset"))
        synced(raw)
        raw.send(window_update(1, 0))  # a stream error: RST_STREAM PROTOCOL_ERROR
        assert raw.reset_of(1).error_code == ErrorCodes.PROTOCOL_ERROR
        wait_for(lambda: record.saw_disconnect("server-reset"), what="the app's http.disconnect")
        raw.send(
            data(1, b"in flight"),
            window_update(1, 10),
            trailers(raw, 1, [("x-checksum", "1")]),
            rst_stream(1),
        )
        synced(raw, b"stillup!")
        assert_serves_on(raw, 3)
        assert resets_of(raw, 1) == [ErrorCodes.PROTOCOL_ERROR]


# ----------------------------------------------------------- the response before the body: half-closed (local)


def answered_first(raw: RawH2, stream_id: int) -> None:
    """A POST whose app answers before reading the body; the response is complete, the request is not."""
    raw.send(post(raw, stream_id, "/upload"))
    assert raw.response(stream_id)[::2] == (200, b"POST /upload")
    assert resets_of(raw, stream_id) == []  # no RST_STREAM NO_ERROR: the client may finish its body


def test_answered_first_then_zero_window_update_is_a_stream_protocol_error(server: Any) -> None:
    # h2spec 6.9 #2
    with RawH2(server.port) as raw:
        answered_first(raw, 1)
        raw.send(window_update(1, 0))
        assert raw.reset_of(1).error_code == ErrorCodes.PROTOCOL_ERROR
        assert_serves_on(raw, 3)


def test_answered_first_then_window_overflow_is_a_stream_flow_control_error(server: Any) -> None:
    # h2spec 6.9.1 #3: the first RST_STREAM on the stream is FLOW_CONTROL_ERROR
    with RawH2(server.port) as raw:
        answered_first(raw, 1)
        raw.send(window_update(1, 2**31 - 1), window_update(1, 2**31 - 1))
        assert raw.wait_for(lambda f: f.kind == RST_STREAM).error_code == ErrorCodes.FLOW_CONTROL_ERROR
        assert_serves_on(raw, 3)


def test_answered_first_then_pseudo_header_trailers_are_a_stream_protocol_error(server: Any) -> None:
    # h2spec 8.1.2.1 #3
    with RawH2(server.port) as raw:
        answered_first(raw, 1)
        raw.send(data(1, b"test"), trailers(raw, 1, [(":method", "POST")], end_stream=False))
        assert raw.reset_of(1).error_code == ErrorCodes.PROTOCOL_ERROR
        assert_serves_on(raw, 3)


def test_answered_first_then_the_body_ends_normally(server: Any) -> None:
    with RawH2(server.port) as raw:
        answered_first(raw, 1)
        raw.send(data(1, b"rest of the body", end_stream=True))
        synced(raw)
        assert_serves_on(raw, 3)
        raw.send(data(1, b"after END_STREAM"))  # closed by both ends now
        assert raw.reset_of(1).error_code == ErrorCodes.STREAM_CLOSED
        assert resets_of(raw, 1) == [ErrorCodes.STREAM_CLOSED]


def test_answered_first_a_large_body_is_still_flow_controlled(driver: str) -> None:
    """Eight times the stream window after the response: the client gets it all out only if the server keeps
    returning the stream's and the connection's window until END_STREAM."""
    window = 64 * 1024
    body = bytes(range(256)) * (8 * window // 256)
    with (
        run_server(
            simple_app, loop=driver, h2_initial_window_size=window, h2_connection_window_size=2 * window
        ) as server,
        H2Client(server.port) as client,
    ):
        stream_id = client.request("/upload", "POST", end_stream=False)
        sent = client.streams[stream_id]
        offset = 0
        while offset < len(body):
            offset += client.send_body(stream_id, body[offset:])  # what the windows allow; END_STREAM last
            assert sent.reset_code is None, sent
            client.pump(0.05)
        state = client.response(stream_id)
        assert (state.status, state.data, state.reset_code) == (200, b"POST /upload", None)
        updates = [
            e for e in client.events if isinstance(e, h2.events.WindowUpdated) and e.stream_id == stream_id
        ]
        assert updates, "the stream's window came back after the response"
        assert client.get("/next").status == 200
