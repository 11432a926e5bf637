"""``http.response.pathsend`` (with ranges) and ``http.response.zerocopysend`` on every HTTP version, against a real
zonda with real clients: HTTP/1.1 on a raw socket, HTTP/2 with the ``h2`` package, HTTP/3 with aioquic's client.
Bytes are checked whole (by hash for the large file), ranges against the file's slice, HEAD for no body; over
HTTP/2 and HTTP/3 a 10 MiB file goes under a small stream window, an HTTP/2 client that opens no window holds the
app's send (back-pressure, not buffering), and a reset stream ends the send with ClientDisconnected.
(HTTP/1.1 specifics, os.sendfile and TLS blocks, are in test_sendfile.py.)"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from h2.errors import ErrorCodes

from extensions_e2e import ExtensionApp, Servers, make_files, serve_both, sha, span
from h2socket import H2Client
from h3client import h3_connect
from helpers import Record

PROTOCOLS = ["1.1", "2", "3"]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_files(tmp_path_factory.mktemp("ext-files"))


@pytest.fixture(scope="module")
def record() -> Record:
    return Record()


@pytest.fixture(scope="module")
def servers(
    driver: str, files: dict[str, Path], record: Record, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    with serve_both(ExtensionApp(files, record), driver, tmp_path_factory.mktemp("ext-tls")) as both:
        yield both


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_both_file_extensions_are_offered_with_ranges(servers: Servers, protocol: str) -> None:
    offers = json.loads(servers.fetch(protocol, "/extensions").body)
    assert offers["http.response.pathsend"] == {"ranges": True}  # asgiref PR #538: offset and count taken
    assert offers["http.response.zerocopysend"] == {}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", ["small", "medium"])
@pytest.mark.parametrize("declared", [True, False])
def test_pathsend_sends_the_whole_file(
    servers: Servers, files: dict[str, Path], protocol: str, name: str, declared: bool
) -> None:
    data = files[name].read_bytes()
    response = servers.fetch(protocol, f"/path?name={name}" + ("&cl" if declared else ""))
    assert response.status == 200
    assert sha(response.body) == sha(data)
    if declared or protocol == "1.1":  # HTTP/1.1 frames a lone final file with a Content-Length of its own
        assert response.header(b"content-length") == b"%d" % len(data)


RANGES = [
    (1000, 5000),  # inside the file
    (0, 1),
    (None, 7),  # offset 0 by default
    (123_456, None),  # to the end
    (299_000, 10_000),  # past the end: cut to it
    (400_000, None),  # starts past the end: nothing
    (17, 0),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pathsend_ranges(servers: Servers, files: dict[str, Path], protocol: str) -> None:
    data = files["medium"].read_bytes()
    for offset, count in RANGES:
        query = "name=medium&cl" + (f"&offset={offset}" if offset is not None else "")
        query += f"&count={count}" if count is not None else ""
        response = servers.fetch(protocol, f"/path?{query}")
        expected = span(data, offset, count)
        assert response.status == 200
        assert response.body == expected, (offset, count, len(response.body))
        assert response.header(b"content-length") == b"%d" % len(expected)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("offset", "count"), [(None, None), (70_000, 100_000), (10, 20), (299_990, 50)])
def test_zerocopysend_between_bodies(
    servers: Servers, files: dict[str, Path], protocol: str, offset: int | None, count: int | None
) -> None:
    data = files["medium"].read_bytes()
    query = "name=medium" + (f"&offset={offset}" if offset is not None else "")
    query += f"&count={count}" if count is not None else ""
    for declared in ("", "&cl"):
        response = servers.fetch(protocol, f"/zc?{query}{declared}")
        assert response.status == 200
        assert response.body == b"<" + span(data, offset, count) + b">"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_head_sends_no_file_bytes(servers: Servers, files: dict[str, Path], protocol: str) -> None:
    for name in ("small", "medium"):
        response = servers.fetch(protocol, f"/path?name={name}&cl", method="HEAD")
        assert response.status == 200
        assert response.body == b""
        assert response.header(b"content-length") == b"%d" % files[name].stat().st_size


@pytest.mark.parametrize("protocol", ["2", "3"])
def test_a_10_mib_file_under_a_small_stream_window(
    servers: Servers, files: dict[str, Path], protocol: str
) -> None:
    """The client's stream window is 16 KiB (HTTP/2) or 64 KiB (HTTP/3): the file goes in blocks as the window
    opens; both clients fail the connection if the server sends past it."""
    response = servers.fetch(protocol, "/path?name=big&cl", small_window=True)
    assert response.status == 200
    assert len(response.body) == 10 * 1024 * 1024
    assert sha(response.body) == sha(files["big"].read_bytes())


def test_an_http2_client_that_opens_no_window_holds_the_apps_send(
    servers: Servers, files: dict[str, Path], record: Record, driver: str
) -> None:
    """Back-pressure reaches the app: with the client's windows (64 KiB) full and not returned, the server sends
    no more and the app's pathsend has not returned; once the client reads, the rest comes, whole."""
    key = f"held-{driver}"
    with H2Client(servers.plain.port, auto_ack=False, timeout=20) as client:
        stream_id = client.request(f"/watch?{key}")
        state = client.streams[stream_id]
        client.wait(lambda: len(state.data) >= 65535, what="the first window's bytes")
        time.sleep(0.3)
        client.pump(0.1)
        assert len(state.data) == 65535 and not state.ended
        assert record.data[key] == []  # the app still waits in send()
        acked = 0
        while not state.ended:
            if len(state.data) > acked:
                client.ack(stream_id, len(state.data) - acked)
                acked = len(state.data)
            client.pump(0.05)
    assert sha(state.data) == sha(files["big"].read_bytes())
    assert record.wait(key) == ["sent"]


def test_a_reset_http2_stream_ends_the_file_send_with_client_disconnected(
    servers: Servers, record: Record, driver: str
) -> None:
    key = f"h2-reset-{driver}"
    with H2Client(servers.plain.port, auto_ack=False, timeout=20) as client:
        stream_id = client.request(f"/watch?{key}")
        state = client.streams[stream_id]
        client.wait(lambda: len(state.data) > 0, what="the file's first bytes")
        client.reset(stream_id, ErrorCodes.CANCEL)
        assert record.wait(key) == ["disconnected"]
        client.pump(0.1)
        client.conn.increment_flow_control_window(len(state.data))  # what the reset stream took, back
        assert client.get("/extensions").status == 200  # the connection serves on


def test_a_reset_http3_stream_ends_the_file_send_with_client_disconnected(
    servers: Servers, record: Record, driver: str
) -> None:
    key = f"h3-reset-{driver}"

    async def go() -> int:
        options = {"max_stream_data": 65536, "max_data": 4 * 65536}
        async with h3_connect(servers.tls.server.quic_port, servers.ca_pem, **options) as client:
            stream_id, _ = client.start("GET", f"/watch?{key}")
            while not client._responses[stream_id].body:
                await asyncio.sleep(0.01)
            client.reset(stream_id)
            await asyncio.to_thread(record.wait, key)
            return (await client.request("GET", "/extensions")).status

    assert asyncio.run(asyncio.wait_for(go(), 30)) == 200
    assert record.data[key] == ["disconnected"]


@pytest.mark.parametrize("protocol", ["2", "3"])
def test_a_file_longer_than_the_declared_length_resets_the_stream(servers: Servers, protocol: str) -> None:
    """As for a body: nothing of the file goes, the stream is reset (HTTP/1.1 closes: test_sendfile.py)."""
    if protocol == "2":
        with H2Client(servers.plain.port, timeout=20) as client:
            state = client.get("/path?name=small&cl=10")
            assert state.reset_code == ErrorCodes.INTERNAL_ERROR and state.data == b""
            assert client.get("/extensions").status == 200
        return

    async def go() -> tuple[int | None, bytes, int]:
        async with h3_connect(servers.tls.server.quic_port, servers.ca_pem) as client:
            response = await client.request("GET", "/path?name=small&cl=10")
            after = await client.request("GET", "/extensions")
            return response.reset, bytes(response.body), after.status

    reset, body, after = asyncio.run(asyncio.wait_for(go(), 30))
    assert reset == 0x102 and body == b"" and after == 200  # H3_INTERNAL_ERROR
