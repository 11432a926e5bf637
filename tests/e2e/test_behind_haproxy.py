"""zonda behind a real HAProxy (the Debian package) in TCP mode, sending the PROXY protocol to zonda.

HAProxy runs in the foreground (``-db``) as a child of the test, on a free loopback port, with its config
written into ``tmp_path``; it is stopped by pid. The test client connects from 127.0.0.2, so the addresses
zonda reports can only have come from the PROXY header HAProxy wrote.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from helpers import child_process, echo_scope, free_port, read_response, require_tool, run_server, status_of

CONFIG = """
global
    maxconn 100

defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    option httpchk GET /healthz
    server zonda 127.0.0.1:{zonda} {send_proxy} check inter 100ms fall 2 rise 1 check-send-proxy
"""


def request_from(source: str, port: int, extra: str = "") -> tuple[bytes, int]:
    """GET /x from ``source`` (a loopback address) on a keep-alive connection, twice; the last response."""
    with socket.socket() as sock:
        sock.settimeout(5)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        for _ in range(2):
            sock.sendall(f"GET /x HTTP/1.1\r\nHost: shop.example\r\n{extra}\r\n".encode())
            response = read_response(sock)
        return response, sock.getsockname()[1]


@pytest.mark.parametrize(("send_proxy", "mode"), [("send-proxy-v2", "v2"), ("send-proxy", "v1")])
def test_behind_haproxy_with_proxy_protocol(tmp_path: Path, send_proxy: str, mode: str) -> None:
    haproxy = require_tool("haproxy")
    with run_server(echo_scope, proxy_protocol=mode, forwarded_allow_ips="127.0.0.1") as server:
        port = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(CONFIG.format(port=port, zonda=server.port, send_proxy=send_proxy))
        log = str(tmp_path / "haproxy.log")
        with child_process([haproxy, "-db", "-f", str(config)], port, log):
            time.sleep(0.5)  # several health checks (PROXY v2 LOCAL / v1 headers) have run by now
            response, client_port = request_from("127.0.0.2", port, "X-Forwarded-For: 6.6.6.6\r\n")
            assert status_of(response) == 200, (response, Path(log).read_text())
            scope = json.loads(response.partition(b"\r\n\r\n")[2])
            time.sleep(0.3)
            again, _ = request_from("127.0.0.3", port)
            assert status_of(again) == 200, "health checks failed: HAProxy took zonda out of service"
    assert scope["client"] == ["127.0.0.2", client_port]  # from the PROXY header, not the TCP peer
    assert scope["server"] == ["127.0.0.1", port]  # the address the client connected to: HAProxy's
    assert scope["scheme"] == "http"
    # TCP mode passes the client's own headers through: 127.0.0.2 is no trusted proxy, so they are ignored
    assert scope["path"] == "/x"


def test_haproxy_without_proxy_protocol_is_refused(tmp_path: Path) -> None:
    """zonda expects a PROXY header from its trusted peer; a misconfigured proxy gets its connections closed."""
    haproxy = require_tool("haproxy")
    with run_server(echo_scope, proxy_protocol="v2") as server:
        port = free_port()
        config = tmp_path / "haproxy.cfg"
        text = CONFIG.format(port=port, zonda=server.port, send_proxy="").replace(" check-send-proxy", "")
        config.write_text(text.replace("check inter", "no-check inter"))
        argv = [haproxy, "-db", "-f", str(config)]
        with (
            child_process(argv, port, str(tmp_path / "haproxy.log")),
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ):
            sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(1024) == b""
