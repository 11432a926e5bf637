"""Behind a proxy, end to end: forwarded headers from trusted and untrusted peers, and PROXY protocol v1/v2
bytes written by hand on a raw socket. The test client is 127.0.0.1: ``forwarded_allow_ips`` decides whether
it is a trusted proxy or a stranger."""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import socket
import struct
import time
from typing import Any

import pytest

from helpers import echo_scope, raw_request, read_response, read_until_closed, run_server, status_of
from zonda.proxy import V2_SIGNATURE

STRANGER = "10.99.0.1"  # a trust list that does not include the test client


def body_of(response: bytes) -> dict[str, Any]:
    assert status_of(response) == 200, response
    result: dict[str, Any] = json.loads(response.partition(b"\r\n\r\n")[2])
    return result


def get(port: int, *headers: str, target: str = "/x", prefix: bytes = b"") -> bytes:
    lines = "".join(f"{h}\r\n" for h in headers)
    request = f"GET {target} HTTP/1.1\r\nHost: backend:8000\r\n{lines}Connection: close\r\n\r\n"
    return raw_request(port, prefix + request.encode())


SPOOFED = (
    "X-Forwarded-For: 203.0.113.7",
    "X-Forwarded-Proto: https",
    "X-Forwarded-Host: shop.example",
    "X-Forwarded-Port: 8443",
    "X-Forwarded-Prefix: /shop",
    "X-Request-ID: req-from-proxy",
)

# --------------------------------------------------------------------------- forwarded headers


def test_x_forwarded_headers_from_a_trusted_proxy() -> None:
    with run_server(echo_scope, request_id=True) as server:  # default trust list: 127.0.0.1
        scope = body_of(get(server.port, *SPOOFED))
    assert scope["client"] == ["203.0.113.7", 0]
    assert scope["scheme"] == "https"
    assert scope["server"] == ["shop.example", 8443]
    assert scope["host"] == "shop.example:8443"
    assert (scope["root_path"], scope["path"]) == ("/shop", "/shop/x")
    assert scope["request_id"] == "req-from-proxy"


def test_forwarded_header_from_a_trusted_proxy() -> None:
    forwarded = (
        'Forwarded: for=1.1.1.1, for="[2001:db8::7]:4711";proto=https;host=shop.example, for=127.0.0.1'
    )
    with run_server(echo_scope, forwarded_allow_ips="127.0.0.1") as server:
        scope = body_of(get(server.port, forwarded))
    assert scope["client"] == ["2001:db8::7", 4711]
    assert (scope["scheme"], scope["server"], scope["host"]) == (
        "https",
        ["shop.example", 443],
        "shop.example",
    )


def test_spoofed_headers_from_an_untrusted_peer_are_ignored() -> None:
    with run_server(echo_scope, forwarded_allow_ips=STRANGER, request_id=True) as server:
        port = server.port
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                (
                    "GET /x HTTP/1.1\r\nHost: backend:8000\r\n"
                    + "".join(f"{h}\r\n" for h in SPOOFED)
                    + "\r\n"
                ).encode()
            )
            scope = body_of(read_response(sock))
            own_port = sock.getsockname()[1]
        forwarded = body_of(get(server.port, "Forwarded: for=6.6.6.6;proto=https;host=evil.example"))
    assert scope["client"] == ["127.0.0.1", own_port]
    assert scope["scheme"] == "http"
    assert scope["server"] == ["127.0.0.1", port]
    assert scope["host"] == "backend:8000"
    assert (scope["root_path"], scope["path"]) == ("", "/x")
    assert scope["request_id"] != "req-from-proxy" and len(scope["request_id"]) == 32
    assert scope["x_forwarded_for"] == "203.0.113.7"  # left as sent: ignored, not applied
    assert (forwarded["client"][0], forwarded["scheme"], forwarded["host"]) == (
        "127.0.0.1",
        "http",
        "backend:8000",
    )


def test_proxy_headers_off() -> None:
    with run_server(echo_scope, proxy_headers=False) as server:
        scope = body_of(get(server.port, *SPOOFED))
    assert scope["client"][0] == "127.0.0.1" and scope["scheme"] == "http" and scope["host"] == "backend:8000"
    assert scope["request_id"] is None  # nothing asked for ids


def test_request_ids_are_fresh_per_request_and_off_by_default() -> None:
    with run_server(echo_scope, request_id=True, forwarded_allow_ips=STRANGER) as server:
        ids = {body_of(get(server.port))["request_id"] for _ in range(3)}
    assert len(ids) == 3
    with run_server(echo_scope) as server:
        assert body_of(get(server.port, "X-Request-ID: abc"))["request_id"] is None


def test_websocket_scheme_follows_x_forwarded_proto() -> None:
    pytest.importorskip("websockets")
    key = base64.b64encode(os.urandom(16)).decode()
    handshake = (
        "GET /ws HTTP/1.1\r\nHost: backend\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-Proto: https\r\n"
        "X-Forwarded-For: 203.0.113.7\r\n\r\n"
    )
    with run_server(echo_scope) as server:
        data = raw_request(server.port, handshake.encode(), timeout=3)
    assert data.startswith(b"HTTP/1.1 101"), data
    frame = data.partition(b"\r\n\r\n")[2]
    length = frame[1] & 0x7F
    start = 2 if length < 126 else 4
    if length == 126:
        length = struct.unpack("!H", frame[2:4])[0]
    scope = json.loads(frame[start : start + length])
    assert scope["scheme"] == "wss"
    assert scope["client"] == ["203.0.113.7", 0]


# --------------------------------------------------------------------------- PROXY protocol


def v1(src: str = "203.0.113.7", dst: str = "198.51.100.2", sport: int = 56324, dport: int = 443) -> bytes:
    family = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(
    src: str = "203.0.113.7",
    dst: str = "198.51.100.2",
    sport: int = 56324,
    dport: int = 443,
    tlvs: bytes = b"",
) -> bytes:
    source, dest = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    family = 0x21 if source.version == 6 else 0x11
    block = source.packed + dest.packed + struct.pack("!HH", sport, dport) + tlvs
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(block)) + block


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


@pytest.mark.parametrize("version", ["v1", "v2", "auto"])
def test_proxy_header_sets_client_and_server(loop: str, version: str) -> None:
    header = v1() if version == "v1" else v2()
    with run_server(echo_scope, loop=loop, proxy_protocol=version) as server:
        scope = body_of(get(server.port, prefix=header))
    assert scope["client"] == ["203.0.113.7", 56324]
    assert scope["server"] == ["198.51.100.2", 443]
    assert scope["scheme"] == "http"


def test_proxy_v2_ipv6_with_tlvs_and_ssl(loop: str) -> None:
    tlvs = (
        tlv(0x05, b"an-id")
        + tlv(0x20, b"\x01\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3"))
        + tlv(0xE0, b"x" * 300)
    )
    header = v2("2001:db8::7", "2001:db8::1", 4711, 443, tlvs=tlvs)
    with run_server(echo_scope, loop=loop, proxy_protocol="v2") as server:
        scope = body_of(get(server.port, prefix=header))
    assert scope["client"] == ["2001:db8::7", 4711]
    assert scope["server"] == ["2001:db8::1", 443]
    assert scope["scheme"] == "https"  # PP2_TYPE_SSL: the client spoke TLS to the proxy


def test_proxy_header_in_pieces_and_keep_alive(loop: str) -> None:
    header = v2()
    with (
        run_server(echo_scope, loop=loop, proxy_protocol="auto") as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for piece in (header[:5], header[5:14], header[14:20], header[20:]):
            sock.sendall(piece)
            time.sleep(0.02)
        for _ in range(2):
            sock.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
            scope = body_of(read_response(sock))
            assert scope["client"] == ["203.0.113.7", 56324]
            assert scope["path"] == "/again"


def test_proxy_v2_local_keeps_the_real_addresses(loop: str) -> None:
    local = V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    with run_server(echo_scope, loop=loop, proxy_protocol="v2") as server:
        scope = body_of(get(server.port, prefix=local))
    assert scope["client"][0] == "127.0.0.1"


@pytest.mark.parametrize(
    ("mode", "data"),
    [
        ("v1", b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n"),
        ("v1", b"PROXY " + b"9" * 200),
        ("v2", V2_SIGNATURE + b"\x21\x11\x00\x02ab"),
        ("v2", b"PROXY TCP4 1.1.1.1 1.1.1.1 1 2\r\n"),
        ("auto", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),  # a trusted peer must send the header
    ],
)
def test_malformed_or_missing_proxy_header_closes_and_logs(
    loop: str, mode: str, data: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "zonda.error")
    with run_server(echo_scope, loop=loop, proxy_protocol=mode) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(data + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_until_closed(sock, timeout=3) == b""
        assert body_of(get(server.port, prefix=v1() if mode != "v2" else v2()))["client"][0] == "203.0.113.7"
    assert any("Closing connection from 127.0.0.1" in r.getMessage() for r in caplog.records), caplog.text


def test_proxy_header_from_an_untrusted_peer_is_not_accepted(loop: str) -> None:
    with run_server(echo_scope, loop=loop, proxy_protocol="auto", forwarded_allow_ips=STRANGER) as server:
        assert status_of(get(server.port, prefix=v1())) == 400  # plain HTTP: "PROXY" is no method
        response = raw_request(server.port, v2() + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(response) == 400
        assert body_of(get(server.port))["client"][0] == "127.0.0.1"  # plain HTTP still served


def test_headers_after_a_proxy_header_need_a_trusted_source(loop: str) -> None:
    """In TCP mode a proxy passes the client's own headers through: they count only if the address the PROXY
    header names is itself trusted."""
    with run_server(
        echo_scope, loop=loop, proxy_protocol="v1", forwarded_allow_ips="127.0.0.1,10.0.0.0/8"
    ) as server:
        spoof = get(server.port, "X-Forwarded-For: 6.6.6.6", "X-Forwarded-Proto: https", prefix=v1())
        inner = get(server.port, "X-Forwarded-For: 203.0.113.9", prefix=v1(src="10.1.1.1"))
    assert body_of(spoof)["client"] == ["203.0.113.7", 56324]
    assert body_of(spoof)["scheme"] == "http"
    assert body_of(inner)["client"] == ["203.0.113.9", 0]


def test_a_proxy_header_that_never_comes_times_out(loop: str) -> None:
    with (
        run_server(echo_scope, loop=loop, proxy_protocol="v1", timeout_keep_alive=0.3) as server,
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock,
    ):
        sock.sendall(b"PROXY TCP4 ")
        started = time.monotonic()
        assert read_until_closed(sock, timeout=3) == b""
        assert time.monotonic() - started < 2


@pytest.mark.parametrize(("trust", "applied"), [("unix", True), ("127.0.0.1", False)])
def test_unix_socket_peers(tmp_path: Any, trust: str, applied: bool) -> None:
    path = str(tmp_path / "z.sock")
    with run_server(echo_scope, uds=path, forwarded_allow_ips=trust) as server:
        assert server is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(
                b"GET /x HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.7\r\nConnection: close\r\n\r\n"
            )
            scope = body_of(read_until_closed(sock))
    assert scope["client"] == (["203.0.113.7", 0] if applied else None)
