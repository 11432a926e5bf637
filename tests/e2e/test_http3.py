"""HTTP/3 over QUIC (``--http3``) on every driver, with aioquic's client API as the client: requests and their
scope, bodies both ways checked by hash, 100 concurrent streams on one connection, back-pressure on a 10 MiB
download, a stream reset reaching only its own app, trailers and early hints, alt-svc on TCP responses, Retry,
bad datagrams and a wrong QUIC version leaving the server serving, and a graceful shutdown with a request in
flight."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from h3client import H3Client, H3Response, h3_connect
from helpers import require_tool, run_server, wait_for, zonda_process
from tlsutil import TLSFiles, make_tls_files
from zonda.config import Config
from zonda.errors import ConfigError
from zonda.protocols.http3 import INTERIM_RESPONSES

MIB = 1024 * 1024


class Seen:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scopes: dict[str, dict[str, Any]] = {}
        self.disconnected: set[str] = set()
        self.go = threading.Event()  # /late-reader starts reading

    def note(self, key: str, scope: dict[str, Any]) -> None:
        with self.lock:
            self.scopes[key] = scope


def make_app(seen: Seen) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        seen.note(path, scope)
        if path == "/hold":  # never answers: notes its http.disconnect
            while (await receive())["type"] != "http.disconnect":
                pass
            with seen.lock:
                seen.disconnected.add(scope["query_string"].decode())
            return
        if path == "/late-reader":  # reads nothing until told, then the whole body
            import anyio

            while not seen.go.is_set():
                await anyio.sleep(0.01)
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/download":  # 10 MiB in 64 KiB pieces, each send() under back-pressure
            size = int(scope["query_string"] or 10 * MIB)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            block = bytes(range(256)) * 256
            for start in range(0, size, len(block)):
                await send({"type": "http.response.body", "body": block[: size - start], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        if path == "/slow":  # answers after a while: in flight during a graceful shutdown
            import anyio

            await anyio.sleep(0.5)
        if path == "/trailers":
            await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
            await send({"type": "http.response.body", "body": b"data", "more_body": False})
            await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})
            return
        if path == "/hint" and "http.response.early_hint" in scope["extensions"]:
            await send(
                {"type": "http.response.early_hint", "links": [b"</style.css>; rel=preload; as=style"]}
            )
        digest = hashlib.sha256(body).hexdigest().encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-sha256", digest)]})
        await send({"type": "http.response.body", "body": b"%d" % len(body)})

    return app


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("h3tls"))


@pytest.fixture(scope="module")
def seen() -> Seen:
    return Seen()


@pytest.fixture(scope="module")
def server(driver: str, tls: TLSFiles, seen: Seen) -> Iterator[Any]:
    with run_server(make_app(seen), loop=driver, http3=True, **tls.server_options()) as running:
        yield running


def h3(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_a_request_over_http3_and_its_scope(server: Any, tls: TLSFiles, seen: Seen) -> None:
    async def go() -> Any:
        async with h3_connect(server.server.quic_port, tls.ca_pem) as client:
            return await client.request("GET", "/scope?a=1", [(b"x-custom", b"yes")])

    response = h3(go())
    assert response.status == 200
    assert response.header(b"server") == b"zonda"
    scope = seen.scopes["/scope"]
    assert scope["http_version"] == "3"
    assert scope["scheme"] == "https"
    assert scope["query_string"] == b"a=1"
    assert scope["server"] == ("127.0.0.1", server.server.quic_port)
    assert scope["client"][0] == "127.0.0.1"
    assert (b"host", b"127.0.0.1") in scope["headers"]
    assert (b"x-custom", b"yes") in scope["headers"]
    assert "http.response.trailers" in scope["extensions"]
    assert ("http.response.early_hint" in scope["extensions"]) == INTERIM_RESPONSES
    assert scope["extensions"]["http.response.pathsend"] == {"ranges": True}  # test_extensions_files.py
    tls_info = scope["extensions"]["tls"]
    assert tls_info["tls_version"] == 0x0304  # QUIC is TLS 1.3
    assert tls_info["cipher_suite"] in (0x1301, 0x1302, 0x1303)
    assert tls_info["server_cert"] == tls.cert.read_text()
    assert tls_info["client_cert_chain"] == [] and tls_info["client_cert_name"] is None


def test_ngtcp2_client_downloads_over_http3(server: Any, tmp_path: Path) -> None:
    """A second, independent QUIC and HTTP/3 stack (ngtcp2 with GnuTLS, Debian's ngtcp2-client): three
    requests on one connection, the 1 MiB download checked by hash, and a clean close (H3_NO_ERROR)."""
    client = require_tool("gtlsclient")
    port = server.server.quic_port
    base = f"https://127.0.0.1:{port}"
    result = subprocess.run(
        [
            *(client, "--quiet", "--exit-on-all-streams-close", "--timeout=10s", "--download", str(tmp_path)),
            *("127.0.0.1", str(port), f"{base}/download?{MIB}", f"{base}/ngtcp2", f"{base}/ngtcp2-again"),
        ],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    block = bytes(range(256)) * 256
    downloaded = (tmp_path / f"download?{MIB}").read_bytes()
    assert hashlib.sha256(downloaded).digest() == hashlib.sha256(block * 16).digest()
    assert (tmp_path / "ngtcp2").read_bytes() == b"0"
    assert (tmp_path / "ngtcp2-again").read_bytes() == b"0"


def test_tcp_responses_offer_http3_with_alt_svc(server: Any, tls: TLSFiles) -> None:
    response = httpx.get(server.url + "/", verify=tls.client_context())
    assert response.headers["alt-svc"] == f'h3=":{server.server.quic_port}"; ma=86400'


def test_bodies_both_ways_checked_by_hash(server: Any, tls: TLSFiles) -> None:
    upload = os.urandom(MIB)

    async def go() -> Any:
        async with h3_connect(server.server.quic_port, tls.ca_pem) as client:
            posted = await client.request("POST", "/upload", body=upload)
            downloaded = await client.request("GET", "/download")
            return posted, downloaded

    posted, downloaded = h3(go())
    assert posted.status == 200 and posted.body == b"%d" % MIB
    assert posted.header(b"x-sha256") == hashlib.sha256(upload).hexdigest().encode()
    block = bytes(range(256)) * 256
    assert downloaded.status == 200
    assert len(downloaded.body) == 10 * MIB
    assert hashlib.sha256(downloaded.body).digest() == hashlib.sha256(block * 160).digest()


def test_a_body_the_app_does_not_read_is_held_to_one_window(server: Any, tls: TLSFiles, seen: Seen) -> None:
    """Receive-side back-pressure: while the app reads nothing, the client may send one stream window (1 MiB)
    and no more; once the app reads, the rest comes and the whole body arrives intact."""
    upload = os.urandom(8 * MIB)
    seen.go.clear()

    async def go() -> tuple[int, Any]:
        async with h3_connect(server.server.quic_port, tls.ca_pem) as client:
            stream_id, done = client.start("POST", "/late-reader", body=upload)
            await asyncio.sleep(1.0)
            quic_stream = client._quic._streams[stream_id]
            waiting = quic_stream.sender.buffer_is_empty is False and len(quic_stream.sender._buffer)
            seen.go.set()
            return int(waiting), await asyncio.wait_for(done, 30)

    waiting, response = h3(go())
    assert waiting >= 8 * MIB - 3 * MIB, f"the client could send {8 * MIB - waiting} bytes unread"
    assert response.status == 200 and response.body == b"%d" % (8 * MIB)
    assert response.header(b"x-sha256") == hashlib.sha256(upload).hexdigest().encode()


def test_a_smaller_stream_window_holds_the_client_to_less(driver: str, tls: TLSFiles) -> None:
    seen = Seen()
    options = {"http3": True, "h3_stream_window": 65536, **tls.server_options()}
    with run_server(make_app(seen), loop=driver, **options) as running:

        async def go() -> int:
            async with h3_connect(running.server.quic_port, tls.ca_pem) as client:
                stream_id, done = client.start("POST", "/late-reader", body=b"x" * MIB)
                await asyncio.sleep(0.5)
                waiting = len(client._quic._streams[stream_id].sender._buffer)
                seen.go.set()
                assert (await asyncio.wait_for(done, 30)).status == 200
                return waiting

        waiting = h3(go())
    assert waiting >= MIB - 4 * 65536, f"the client could send {MIB - waiting} bytes unread"


def test_a_hundred_concurrent_streams_on_one_connection(server: Any, tls: TLSFiles) -> None:
    async def go() -> Any:
        async with h3_connect(server.server.quic_port, tls.ca_pem) as client:
            return await asyncio.gather(
                *(client.request("POST", f"/many/{n}", body=b"x" * n) for n in range(100))
            )

    responses = h3(go())
    assert [r.body for r in responses] == [b"%d" % n for n in range(100)]


class CountingClient(H3Client):
    """Counts the datagrams the server sends it."""

    datagrams = 0

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        self.datagrams += 1
        super().datagram_received(data, addr)


def test_answers_to_requests_that_came_together_share_packets(server: Any, tls: TLSFiles) -> None:
    """Twenty requests in one datagram: their apps take their turns (queued tasks before Python 3.12) and the
    twenty small answers go out together, in a packet or two, not one packet each."""

    async def go() -> tuple[list[H3Response], int]:
        async with h3_connect(server.server.quic_port, tls.ca_pem, protocol=CountingClient) as client:
            assert isinstance(client, CountingClient)
            await client.request("GET", "/warm-up")  # the handshake's own packets are over
            await asyncio.sleep(0.2)
            before = client.datagrams
            dones = [client.start("GET", f"/together/{n}", transmit=False)[1] for n in range(20)]
            client.transmit()
            responses = await asyncio.wait_for(asyncio.gather(*dones), 20)
            return responses, client.datagrams - before

    responses, datagrams = h3(go())
    assert [r.status for r in responses] == [200] * 20
    assert datagrams <= 5, f"{datagrams} datagrams for twenty small answers"


def test_a_reset_stream_disconnects_only_its_own_app(
    server: Any, tls: TLSFiles, seen: Seen, driver: str
) -> None:
    doomed_key, kept_key = f"doomed-{driver}", f"kept-{driver}"  # the record outlives one driver's server

    async def go() -> Any:
        async with h3_connect(server.server.quic_port, tls.ca_pem) as client:
            doomed, _ = client.start("GET", f"/hold?{doomed_key}")
            kept, _ = client.start("GET", f"/hold?{kept_key}")
            await asyncio.sleep(0.2)
            client.reset(doomed)
            await asyncio.to_thread(
                wait_for, lambda: doomed_key in seen.disconnected, what="the reset's disconnect"
            )
            assert kept_key not in seen.disconnected
            after = await client.request("GET", "/after-reset")
            client.reset(kept)
            return after

    assert h3(go()).status == 200
    wait_for(lambda: kept_key in seen.disconnected, what="the second reset's disconnect")


def test_trailers_and_early_hints(server: Any, tls: TLSFiles) -> None:
    async def go() -> Any:
        async with h3_connect(server.server.quic_port, tls.ca_pem) as client:
            trailers = await client.request("GET", "/trailers", [(b"te", b"trailers")])
            return trailers, await client.request("GET", "/hint")

    trailers, hint = h3(go())
    assert trailers.body == b"data"
    assert trailers.trailers == [(b"x-checksum", b"abc")]
    assert hint.status == 200
    if not INTERIM_RESPONSES:  # aioquic before 1.4 cannot send a 1xx head: early hints are not offered
        assert hint.interim == []
        return
    assert [dict(head)[b":status"] for head in hint.interim] == [b"103"]
    assert (b"link", b"</style.css>; rel=preload; as=style") in hint.interim[0]


def test_bad_datagrams_and_a_wrong_version_leave_the_server_serving(server: Any, tls: TLSFiles) -> None:
    port = server.server.quic_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for junk in (b"", b"\x00", os.urandom(40), b"\xc0" + os.urandom(1300), b"\x40" + os.urandom(30)):
            sock.sendto(junk, ("127.0.0.1", port))
        # a long header with an unknown version (0x1a2a3a4a, reserved for exercising negotiation)
        dcid, scid = os.urandom(8), os.urandom(8)
        packet = b"\xc0" + bytes.fromhex("1a2a3a4a") + bytes([8]) + dcid + bytes([8]) + scid
        sock.sendto(packet + b"\x00" * (1200 - len(packet)), ("127.0.0.1", port))
        answer, _ = sock.recvfrom(2048)
    assert answer[1:5] == b"\x00\x00\x00\x00"  # Version Negotiation (RFC 9000 §17.2.1)
    assert answer[6 : 6 + 8] == scid and answer[15 : 15 + 8] == dcid  # the client's IDs, swapped

    async def go() -> Any:
        async with h3_connect(port, tls.ca_pem) as client:
            return await client.request("GET", "/after-junk")

    assert h3(go()).status == 200


def test_retry_validates_the_address_first(driver: str, tls: TLSFiles) -> None:
    with run_server(
        make_app(Seen()), loop=driver, quic_retry=True, http3=True, **tls.server_options()
    ) as running:

        async def go() -> Any:
            async with h3_connect(running.server.quic_port, tls.ca_pem) as client:
                return await client.request("GET", "/retried")

        assert h3(go()).status == 200


def test_retry_once_too_many_handshakes_are_in_progress(driver: str, tls: TLSFiles) -> None:
    """With one handshake left hanging (an Initial from a client that never answers) and --quic-retry-after 1,
    the next client must echo a Retry token first: it still gets served, and the server counts the Retry."""
    options = {"http3": True, "quic_retry_after": 1, **tls.server_options()}
    with run_server(make_app(Seen()), loop=driver, **options) as running:
        port = running.server.quic_port
        endpoint = running.server.quic_endpoint
        assert endpoint is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hanging:
            hanging.sendto(an_initial(port, tls), ("127.0.0.1", port))
            wait_for(lambda: len(endpoint.handshaking) == 1, what="the hanging handshake")

            async def go() -> Any:
                async with h3_connect(port, tls.ca_pem) as client:
                    return await client.request("GET", "/after-retry")

            assert h3(go()).status == 200
        assert endpoint.retries_sent == 1


def an_initial(port: int, tls: TLSFiles) -> bytes:
    """A client's first datagram (a real Initial, from aioquic's client), to send from a socket of the test's."""
    from aioquic.quic.connection import QuicConnection

    from h3client import client_configuration

    client = QuicConnection(configuration=client_configuration(tls.ca_pem))
    client.connect(("127.0.0.1", port), now=time.monotonic())
    return client.datagrams_to_send(now=time.monotonic())[0][0]


def test_graceful_shutdown_finishes_a_request_in_flight(driver: str, tls: TLSFiles) -> None:
    with run_server(make_app(Seen()), loop=driver, http3=True, **tls.server_options()) as running:
        port = running.server.quic_port

        async def go() -> Any:
            async with h3_connect(port, tls.ca_pem) as client:
                _, done = client.start("GET", "/slow")
                await asyncio.sleep(0.2)
                stopping = asyncio.get_running_loop().run_in_executor(None, running.stop)
                response = await asyncio.wait_for(done, 10)
                await stopping
                return response

        started = time.monotonic()
        response = h3(go())
    assert response.status == 200
    assert time.monotonic() - started < 10


def test_http3_needs_tls_and_says_so() -> None:
    with pytest.raises(ConfigError, match="HTTP/3 runs over TLS only"):
        Config(app="x:app", http3=True)
    assert Config(app="x:app", quic_bind="127.0.0.1:4433", ssl_certfile=str(Path(__file__))).http3


WORKER_APP = """
import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%d" % os.getpid()})
"""


@pytest.mark.drivers("uvloop")  # the kernel's SO_REUSEPORT hashing; the loops' UDP paths are tested above
def test_two_workers_each_keep_their_own_quic_connections(tmp_path: Path, tls: TLSFiles) -> None:
    """Each worker binds the UDP port with SO_REUSEPORT; a connection's datagrams all reach the worker that
    holds it (the kernel hashes the client's address), so every request of a connection is answered by one
    worker, and connections from different client ports spread over both."""
    (tmp_path / "happ.py").write_text(WORKER_APP)
    args = ["happ:app", "--port", "0", "--app-dir", str(tmp_path), "--workers", "2", "--no-access-log"]
    args += ["--http3", "--ssl-certfile", str(tls.cert), "--ssl-keyfile", str(tls.key)]
    with zonda_process(*args) as proc:
        port = int(proc.wait_listening().rsplit(":", 1)[1])
        wait_for(lambda: proc.output.count("HTTP/3 (QUIC) on") >= 2, what="both workers serving HTTP/3")

        async def one_connection() -> set[bytes]:
            async with h3_connect(port, tls.ca_pem) as client:
                responses = [await client.request("GET", f"/{n}") for n in range(3)]
            assert all(r.status == 200 for r in responses)
            return {bytes(r.body) for r in responses}

        async def go() -> list[set[bytes]]:
            return list(await asyncio.gather(*(one_connection() for _ in range(16))))

        answered = h3(go())
    assert all(len(pids) == 1 for pids in answered), answered
    assert len(set().union(*answered)) == 2, "16 connections all went to one worker"


@pytest.mark.drivers("uvloop")  # aioquic's accounting, the same whatever loop sends the datagrams
def test_the_amplification_limit_holds_for_an_unvalidated_address(server: Any, tls: TLSFiles) -> None:
    """RFC 9000 §8.1: before a client's address is validated, the server sends at most three times what it
    received from it. A client that sends one Initial and never answers (a spoofed address, as in a reflection
    attack) gets at most 3 x its datagram back, resends for lost packets included."""
    initial = an_initial(server.server.quic_port, tls)
    received = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(initial, ("127.0.0.1", server.server.quic_port))
        sock.settimeout(0.2)
        deadline = time.monotonic() + 2.0  # a few probe timeouts' worth of resends
        while time.monotonic() < deadline:
            try:
                data, _ = sock.recvfrom(65536)
            except TimeoutError:
                continue
            received += len(data)
    assert 0 < received <= 3 * len(initial), (received, len(initial))


@pytest.mark.parametrize("zero_rtt", [False, True], ids=["default", "quic-0rtt"])
def test_0rtt_only_when_asked_and_each_ticket_once(driver: str, tls: TLSFiles, zero_rtt: bool) -> None:
    """By default no session tickets are issued, so no client can resume or send 0-RTT data (replayable).
    With --quic-0rtt a ticket resumes once, with early data; the same ticket again (a replay) does not."""
    from aioquic.tls import SessionTicket

    tickets: list[SessionTicket] = []
    options = {"http3": True, "quic_0rtt": zero_rtt, **tls.server_options()}
    with run_server(make_app(Seen()), loop=driver, **options) as running:
        port = running.server.quic_port

        async def once(ticket: SessionTicket | None) -> tuple[int, bool, bool]:
            extra = {} if ticket is None else {"session_ticket": ticket}
            async with h3_connect(port, tls.ca_pem, session_ticket_handler=tickets.append, **extra) as client:
                status = (await client.request("GET", "/resumed")).status
                return status, client._quic.tls.session_resumed, client._quic.tls.early_data_accepted

        status, resumed, _ = h3(once(None))
        assert status == 200 and not resumed
        if not zero_rtt:
            assert tickets == []
            return
        assert tickets
        ticket = tickets[0]
        assert h3(once(ticket)) == (200, True, True)
        assert h3(once(ticket)) == (200, False, False)  # single use: a replayed ticket gets a full handshake
