"""``zonda_bytes_total`` against what raw clients sent and received, byte for byte, on every path the
server writes by: HTTP/1.1 (keep-alive, pipelined, an error response, a 503 at accept, an h2c refusal, a
PROXY header), files (``os.sendfile``, with the head, and in blocks over TLS), WebSocket after the upgrade,
and HTTP/3's datagrams. Counts of open connections show at a scrape, not only once they close. (HTTP/2:
test_metrics.py.)"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from helpers import echo_messages, read_response, read_until_closed, run_server, status_of, wait_for
from tlsutil import make_tls_files
from wsframes import close, handshake_request, text

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

GET = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"


def byte_totals(metrics_port: int) -> tuple[float, float]:
    """zonda_bytes_total in and out, from a scrape."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {"in": 0.0, "out": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "zonda_bytes_total":
                found[sample.labels["direction"]] = sample.value
    return found["in"], found["out"]


def read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` responses with a content-length, each whole, nothing read past the last (``read_response``
    may read into the next one)."""
    data = b""
    responses = []
    while len(responses) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            declared = re.search(rb"content-length: (\d+)", data[:head_end].lower())
            assert declared is not None, data[:head_end]
            length = int(declared.group(1))
            end = head_end + 4 + length
            if len(data) >= end:
                responses.append(data[:end])
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(responses)} responses"
        data += chunk
    assert not data
    return responses


def settled_totals(running: Any) -> tuple[float, float]:
    """The totals once every connection is closed and counted."""
    wait_for(lambda: not running.server.shared.connections, what="all connections closed")
    return byte_totals(running.server.metrics_port)


FILES: dict[str, Path] = {}  # what /file/NAME sends, set by the test that asks for it


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """/file/NAME: pathsend of FILES[NAME]; a WebSocket echoes text; anything else: its path back."""
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await echo_messages(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"].startswith("/file/"):
        path = FILES[scope["path"][6:]]
        headers = [(b"content-length", b"%d" % path.stat().st_size)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": str(path)})
        return
    body = scope["path"].encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


def test_http1_counts_exactly_while_open_and_after() -> None:
    with run_server(app, metrics_bind="127.0.0.1:0") as running:
        metrics_port = running.server.metrics_port
        assert metrics_port is not None
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as keep:
            sent = GET % b"one" + GET % b"two"  # pipelined, one write
            keep.sendall(sent)
            received = b"".join(read_responses(keep, 2))
            assert received.endswith(b"/two")
            # still open: its counts are read from the connection at the scrape
            assert byte_totals(metrics_port) == (len(sent), len(received))
            bad = b"NOT HTTP AT ALL\r\n\r\n"
            with socket.create_connection(("127.0.0.1", running.port), timeout=5) as other:
                other.sendall(bad)
                refused = read_until_closed(other)
            assert status_of(refused) == 400
        totals = settled_totals(running)
    assert totals == (len(sent) + len(bad), len(received) + len(refused))


def test_the_503_at_accept_is_counted() -> None:
    """Over --limit-connections the answer is written without any core: it counts all the same."""
    with run_server(app, metrics_bind="127.0.0.1:0", limit_connections=1) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as held:
            sent = GET % b"held"
            held.sendall(sent)
            received = read_response(held)
            with socket.create_connection(("127.0.0.1", running.port), timeout=5) as over:
                refusal = read_until_closed(over)
            assert status_of(refusal) == 503
        totals = settled_totals(running)
    assert totals == (len(sent), len(received) + len(refusal))


def test_an_h2c_refusal_is_counted() -> None:
    """An ``Upgrade: h2c`` without HTTP2-Settings: the 400 is written past the core, before the close."""
    request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    with run_server(app, metrics_bind="127.0.0.1:0") as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sock.sendall(request)
            answer = read_until_closed(sock)
        assert status_of(answer) == 400
        totals = settled_totals(running)
    assert totals == (len(request), len(answer))


def test_a_proxy_header_counts_as_read() -> None:
    line = b"PROXY TCP4 198.51.100.7 203.0.113.1 56324 443\r\n"
    with run_server(app, metrics_bind="127.0.0.1:0", proxy_protocol="v1") as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sent = line + GET % b"proxied"
            sock.sendall(sent)
            received = read_response(sock)
            assert received.endswith(b"/proxied")
        totals = settled_totals(running)
    assert totals == (len(sent), len(received))


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_files_are_counted(tmp_path: Path, tls: bool) -> None:
    """A file over SMALL_FILE goes by os.sendfile (in blocks through the stream over TLS), a small one with
    its head: either way past the core, counted once. Over TLS the counts are of the HTTP bytes."""
    FILES["big"] = tmp_path / "big"
    FILES["big"].write_bytes(bytes(range(256)) * 1000)
    FILES["small"] = tmp_path / "small"
    FILES["small"].write_bytes(b"s" * 3000)
    files = make_tls_files(tmp_path) if tls else None
    options = files.server_options() if files is not None else {}
    with run_server(app, metrics_bind="127.0.0.1:0", **options) as running:
        sock = socket.create_connection(("127.0.0.1", running.port), timeout=5)
        if files is not None:
            sock = files.client_context().wrap_socket(sock, server_hostname="localhost")
        with sock:
            sent = GET % b"file/big" + GET % b"file/small"
            sock.sendall(sent)
            big, small = read_responses(sock, 2)
            assert big.endswith(FILES["big"].read_bytes()) and small.endswith(b"s" * 3000)
            received = big + small
        totals = settled_totals(running)
    assert totals == (len(sent), len(received))


def test_a_websocket_is_counted_after_its_upgrade() -> None:
    with run_server(app, metrics_bind="127.0.0.1:0", ws_ping_interval=None) as running:
        with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
            sent = handshake_request("/ws")
            sock.sendall(sent)
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            assert status_of(received) == 101
            frames = text("hello") + text("x" * 1000) + close(1000)
            sock.sendall(frames)
            sent += frames
            received += read_until_closed(sock)
        assert received.endswith(b"\x88\x02\x03\xe8")  # the server's close frame, 1000
        totals = settled_totals(running)
    assert totals == (len(sent), len(received))


def test_http3_datagrams_are_counted(tmp_path: Path) -> None:
    """Both ways, the UDP payloads, as the client counted them: exact once the connection is quiet."""
    from h3client import H3Client, h3_connect

    class CountingClient(H3Client):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.bytes_in = self.bytes_out = 0

        def connection_made(self, transport: Any) -> None:
            sendto = transport.sendto

            def counted(data: bytes, addr: Any = None) -> None:
                self.bytes_out += len(data)
                sendto(data, addr)

            transport.sendto = counted
            super().connection_made(transport)

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.bytes_in += len(data)
            super().datagram_received(data, addr)

    files = make_tls_files(tmp_path)
    with run_server(app, metrics_bind="127.0.0.1:0", http3=True, **files.server_options()) as running:
        metrics_port = running.server.metrics_port
        assert metrics_port is not None

        async def go() -> tuple[tuple[float, float], tuple[int, int]]:
            async with h3_connect(running.server.quic_port, files.ca_pem, protocol=CountingClient) as client:
                assert isinstance(client, CountingClient)
                for name in ("one", "two"):
                    assert (await client.request("GET", f"/{name}")).body == f"/{name}".encode()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:  # acknowledgements settle within a few ms
                    await asyncio.sleep(0.2)
                    totals = await asyncio.to_thread(byte_totals, metrics_port)
                    if totals == (client.bytes_out, client.bytes_in):
                        break
                return totals, (client.bytes_out, client.bytes_in)

        totals, client_counts = asyncio.run(go())
    assert totals == client_counts
    assert client_counts[0] > 1200 and client_counts[1] > 1200  # the handshake at least
