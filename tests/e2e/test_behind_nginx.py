"""zonda behind a real nginx (the Debian package) that sets the X-Forwarded-* headers and X-Request-ID.

nginx runs in the foreground (``daemon off``, one process) as a child of the test on a free loopback port,
its config and temp directories in ``tmp_path``; it is stopped by pid. The client connects from 127.0.0.2
and sends a spoofed X-Forwarded-For, which nginx's ``$proxy_add_x_forwarded_for`` keeps on the left: zonda,
trusting only 127.0.0.1 (nginx), must skip it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from helpers import child_process, echo_scope, free_port, read_response, require_tool, run_server, status_of

CONFIG = """
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    server {{
        listen 127.0.0.1:{port};
        server_name shop.example;
        location /api/ {{
            proxy_pass http://127.0.0.1:{zonda}/;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port 8443;
            proxy_set_header X-Forwarded-Prefix /api;
            proxy_set_header X-Request-ID $request_id;
            add_header X-Request-ID $request_id always;
        }}
    }}
}}
"""


@pytest.fixture
def nginx_port(tmp_path: Path) -> Any:
    nginx = require_tool("nginx")
    with run_server(echo_scope, request_id=True, forwarded_allow_ips="127.0.0.1") as server:
        port = free_port()
        config = tmp_path / "nginx.conf"
        config.write_text(CONFIG.format(tmp=tmp_path, port=port, zonda=server.port))
        argv = [nginx, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(config)]
        with child_process(argv, port, str(tmp_path / "nginx.out")):
            yield port


def connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(5)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def test_behind_nginx_x_forwarded(nginx_port: int) -> None:
    with connect_from("127.0.0.2", nginx_port) as sock:
        sock.sendall(
            b"GET /api/items?q=1 HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 6.6.6.6\r\n"
            b"X-Request-ID: spoofed\r\nConnection: close\r\n\r\n"
        )
        response = read_response(sock)
    assert status_of(response) == 200, response
    head, _, body = response.partition(b"\r\n\r\n")
    scope = json.loads(body)
    assert scope["client"] == ["127.0.0.2", 0]  # right to left: nginx (trusted), then 127.0.0.2, not 6.6.6.6
    assert scope["scheme"] == "https"
    assert scope["server"] == ["shop.example", 8443]
    assert scope["host"] == "shop.example:8443"
    assert (scope["root_path"], scope["path"]) == ("/api", "/api/items")
    nginx_id = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"x-request-id:")
    )
    assert scope["request_id"] == nginx_id != "spoofed"  # nginx's own id, honoured from a trusted peer


def test_behind_nginx_websocket(nginx_port: int) -> None:
    pytest.importorskip("websockets")
    key = base64.b64encode(os.urandom(16)).decode()
    with connect_from("127.0.0.2", nginx_port) as sock:
        sock.sendall(
            (
                "GET /api/ws HTTP/1.1\r\nHost: shop.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 2:
            data += sock.recv(65536)
        head, _, frame = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        length = frame[1] & 0x7F
        start = 2 if length < 126 else 4
        if length == 126:
            length = int.from_bytes(frame[2:4], "big")
        while len(frame) < start + length:
            frame += sock.recv(65536)
    scope = json.loads(frame[start : start + length])
    assert scope["scheme"] == "wss"
    assert scope["client"] == ["127.0.0.2", 0]
    assert (scope["root_path"], scope["path"]) == ("/api", "/api/ws")
