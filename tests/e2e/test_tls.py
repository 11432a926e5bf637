"""TLS end to end: a real zonda serving HTTPS and WSS on loopback to httpx, curl, websockets and raw sockets.

The scope's ``tls`` extension, TLS 1.3 as the minimum, mutual TLS (required and optional), the handshake
timeout and plain HTTP sent to the TLS port, unix sockets, the access log, graceful shutdown with an idle
pooled client, bad start-up options as one line and exit status 1, and workers. Every client here offers only
HTTP/1.1 in ALPN (``curl --http1.1``, ``tlsutil.TLSFiles.client_context``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from websockets.asyncio.client import connect

import zonda.io._trio_stream
import zonda.io.asyncio
from helpers import (
    raw_request,
    read_response,
    read_until_closed,
    require_tool,
    run_server,
    status_of,
    zonda_process,
)
from tlsutil import KEY_PASSWORD, TLSFiles, make_tls_files

APP = """
import json


async def app(scope, receive, send):
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        tls = scope["extensions"].get("tls") or {}
        reply = json.dumps({"scheme": scope["scheme"], "echo": message.get("text"), "tls": sorted(tls)})
        await send({"type": "websocket.send", "text": reply})
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        return
    body = json.dumps({
        "scheme": scope["scheme"],
        "http_version": scope["http_version"],
        "server": scope["server"],
        "tls": scope["extensions"].get("tls"),
        "has_tls": "tls" in scope["extensions"],
    }).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
"""


def _load_app() -> Any:
    namespace: dict[str, Any] = {}
    exec(APP, namespace)
    return namespace["app"]


app = _load_app()
TLS_KEYS = {
    "server_cert",
    "client_cert_chain",
    "client_cert_name",
    "client_cert_error",
    "tls_version",
    "cipher_suite",
}


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path)


@pytest.fixture
def app_dir(tmp_path: Path) -> str:
    (tmp_path / "tls_app.py").write_text(APP)
    return str(tmp_path)


def get_json(url: str, context: ssl.SSLContext, **kwargs: Any) -> tuple[dict[str, Any], Any]:
    """GET over HTTPS; returns the JSON body and the client's own view of the TLS session."""
    with httpx.Client(verify=context, **kwargs) as client:
        with client.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.http_version == "HTTP/1.1"
            ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
            response.read()
        return response.json(), ssl_object


def tls_request(port: int, context: ssl.SSLContext, timeout: float = 5.0) -> bytes:
    """One HTTP/1.1 request over a raw TLS socket; the whole response, or what came before the server closed."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        return read_response(sock, timeout)


def cipher_id(context: ssl.SSLContext, name: str) -> int:
    return next(c["id"] & 0xFFFF for c in context.get_ciphers() if c["name"] == name)


def test_httpx_gets_the_tls_extension(files: TLSFiles, loop: str) -> None:
    with run_server(app, loop=loop, **files.server_options()) as server:
        context = files.client_context()
        data, ssl_object = get_json(server.url + "/", context)
    assert data["scheme"] == "https"
    assert data["http_version"] == "1.1"
    tls = data["tls"]
    assert set(tls) == TLS_KEYS
    assert tls["server_cert"] == files.cert.read_text()
    assert tls["client_cert_chain"] == []
    assert tls["client_cert_name"] is None
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] == {"TLSv1.3": 0x0304, "TLSv1.2": 0x0303}[ssl_object.version()]
    assert isinstance(tls["cipher_suite"], int)
    assert tls["cipher_suite"] == cipher_id(context, ssl_object.cipher()[0])


def test_tls12_and_a_chosen_cipher(files: TLSFiles) -> None:
    with run_server(app, ssl_ciphers="ECDHE-ECDSA-AES256-GCM-SHA384", **files.server_options()) as server:
        context = files.client_context(maximum_version=ssl.TLSVersion.TLSv1_2)
        data, _ = get_json(server.url + "/", context)
    assert data["tls"]["tls_version"] == 0x0303
    assert data["tls"]["cipher_suite"] == 0xC02C  # TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 (RFC 5289)


def test_plain_http_has_no_tls_extension() -> None:
    with run_server(app) as server:
        data = httpx.get(server.url + "/").json()
    assert data["scheme"] == "http"
    assert data["has_tls"] is False


def test_curl(files: TLSFiles) -> None:
    curl = require_tool("curl")
    with run_server(app, **files.mtls_options("optional")) as server:
        url = f"https://127.0.0.1:{server.port}/"
        command = [curl, "-sS", "--http1.1", "--cacert", str(files.ca_pem), url]
        identity = ["--cert", str(files.client_cert), "--key", str(files.client_key)]
        plain = subprocess.run(command, capture_output=True, text=True, timeout=10)
        mutual = subprocess.run([*command, *identity], capture_output=True, text=True, timeout=10)
    assert plain.returncode == 0, plain.stderr
    data = json.loads(plain.stdout)
    assert data["scheme"] == "https"
    assert data["tls"]["client_cert_name"] is None
    assert mutual.returncode == 0, mutual.stderr
    assert json.loads(mutual.stdout)["tls"]["client_cert_name"] == files.client_name


def test_min_version_13_refuses_a_tls12_client(files: TLSFiles) -> None:
    with run_server(app, ssl_min_version="1.3", **files.server_options()) as server:
        # asyncio sends a protocol_version alert (UNSUPPORTED_PROTOCOL); uvloop closes without one (EOF)
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            tls_request(server.port, files.client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
        data, _ = get_json(server.url + "/", files.client_context())
        assert data["tls"]["tls_version"] == 0x0304


def test_mutual_tls_required(files: TLSFiles) -> None:
    with run_server(app, **files.mtls_options("required")) as server:
        # TLS 1.3: the client's half of the handshake may finish before the server checks the certificate,
        # so the refusal shows as an alert on the first read rather than in connect
        try:
            response = tls_request(server.port, files.client_context())
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            response = b""
        assert not response.startswith(b"HTTP/")
        data, _ = get_json(server.url + "/", files.client_context(client_cert=True))
    tls = data["tls"]
    assert tls["client_cert_name"] == files.client_name
    assert tls["client_cert_name"].startswith("CN=zonda test client,")
    assert tls["client_cert_chain"] == files.client_chain_sent()
    assert tls["client_cert_error"] is None


def test_mutual_tls_optional(files: TLSFiles) -> None:
    with run_server(app, **files.mtls_options("optional")) as server:
        anonymous, _ = get_json(server.url + "/", files.client_context())
        known, _ = get_json(server.url + "/", files.client_context(client_cert=True))
    assert anonymous["tls"]["client_cert_chain"] == []
    assert anonymous["tls"]["client_cert_name"] is None
    assert known["tls"]["client_cert_name"] == files.client_name


def test_a_client_certificate_from_another_ca_is_refused(files: TLSFiles, tmp_path: Path) -> None:
    other_ca = trustme.CA()
    leaf = other_ca.issue_cert("mallory@example.org", common_name="mallory")
    cert, key = tmp_path / "mallory.pem", tmp_path / "mallory.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    context = files.client_context()
    context.load_cert_chain(str(cert), str(key))
    with run_server(app, **files.mtls_options("optional")) as server:
        try:
            response = tls_request(server.port, context)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            response = b""
        assert not response.startswith(b"HTTP/")
        data, _ = get_json(server.url + "/", files.client_context(client_cert=True))
        assert data["tls"]["client_cert_name"] == files.client_name


def test_handshake_timeout_and_plain_http_on_the_tls_port(files: TLSFiles) -> None:
    with run_server(app, timeout_tls_handshake=0.5, **files.server_options()) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as silent:
            began = time.monotonic()
            assert read_until_closed(silent, 5) == b""
            waited = time.monotonic() - began
        assert 0.3 < waited < 3, waited
        answer = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert not answer.startswith(b"HTTP/")  # closed: no plaintext response leaks from a TLS port
        assert not server.server.shared.connections  # type: ignore[union-attr]  # neither reached the registry
        response = tls_request(server.port, files.client_context())
        assert status_of(response) == 200


def test_websocket_over_tls(files: TLSFiles) -> None:
    async def talk(url: str) -> Any:
        async with connect(url, ssl=files.client_context(), proxy=None, open_timeout=5) as ws:
            await ws.send("hello over tls")
            return json.loads(await ws.recv())

    with run_server(app, **files.server_options()) as server:
        reply = asyncio.run(asyncio.wait_for(talk(f"wss://localhost:{server.port}/"), 10))
    assert reply == {"scheme": "wss", "echo": "hello over tls", "tls": sorted(TLS_KEYS)}


def test_unix_socket(files: TLSFiles, short_dir: str) -> None:
    path = f"{short_dir}/tls.sock"
    with run_server(app, uds=path, **files.server_options()) as _:
        transport = httpx.HTTPTransport(uds=path, verify=files.client_context())
        with httpx.Client(transport=transport) as client:
            data = client.get("https://localhost/").json()
    assert data["scheme"] == "https"
    assert data["tls"]["tls_version"] in (0x0303, 0x0304)


def test_inherited_fd(files: TLSFiles) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        fd = os.dup(listener.fileno())  # the server owns (and closes) this one
    with run_server(app, fd=fd, **files.server_options()):
        data, _ = get_json(f"https://127.0.0.1:{port}/", files.client_context())
    assert data["scheme"] == "https"
    assert data["server"] == ["127.0.0.1", port]


def test_access_log_tls_version(files: TLSFiles, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    options = files.server_options(access_log_format="{scheme} {tls_version}", access_log_file=str(log))
    with run_server(app, **options) as server:
        get_json(server.url + "/", files.client_context())
        get_json(server.url + "/", files.client_context(maximum_version=ssl.TLSVersion.TLSv1_2))
    assert log.read_text().splitlines() == ["https TLSv1.3", "https TLSv1.2"]


def test_graceful_shutdown_does_not_wait_long_for_an_idle_client(
    files: TLSFiles, monkeypatch: pytest.MonkeyPatch, loop: str
) -> None:
    # An idle pooled client never answers the server's close_notify; TLS_CLOSE_TIMEOUT bounds the wait for it
    monkeypatch.setattr(zonda.io.asyncio, "TLS_CLOSE_TIMEOUT", 0.5)
    monkeypatch.setattr(zonda.io._trio_stream, "TLS_CLOSE_TIMEOUT", 0.5)
    with httpx.Client(verify=files.client_context()) as client:
        with run_server(app, loop=loop, **files.server_options()) as server:
            assert client.get(server.url + "/").status_code == 200
            began = time.monotonic()
        assert time.monotonic() - began < 3


# --------------------------------------------------------------------------- the zonda command


def test_bad_certificate_options_are_one_line_and_exit_1(
    files: TLSFiles, app_dir: str, tmp_path: Path
) -> None:
    missing = str(tmp_path / "nope.pem")
    encrypted = ["--ssl-certfile", str(files.cert), "--ssl-keyfile", str(files.encrypted_key)]
    cases = [
        (
            ["--ssl-certfile", missing, "--ssl-keyfile", str(files.key)],
            f"ssl_certfile: cannot read {missing}",
        ),
        (
            [*encrypted, "--ssl-keyfile-password", "wrong"],
            "ssl_keyfile_password: wrong password",
        ),
        (["--ssl-keyfile", str(files.key)], "ssl_keyfile: needs ssl_certfile"),
        (
            ["--workers", "2", "--ssl-certfile", missing, "--ssl-keyfile", str(files.key)],
            "ssl_certfile: cannot",
        ),
    ]
    for args, expected in cases:
        with zonda_process("tls_app:app", "--port", "0", "--app-dir", app_dir, *args) as proc:
            assert proc.wait(10) == 1, proc.output
        errors = [line for line in proc.output.splitlines() if "ERROR" in line]
        assert len(errors) == 1, proc.output
        assert expected in errors[0], proc.output
        assert "Traceback" not in proc.output
        assert "Listening on" not in proc.output


def test_encrypted_key_and_workers(files: TLSFiles, app_dir: str) -> None:
    args = ["--ssl-certfile", str(files.cert), "--ssl-keyfile", str(files.encrypted_key)]
    args += ["--ssl-keyfile-password", KEY_PASSWORD, "--workers", "2", "--timeout-graceful-shutdown", "2"]
    with zonda_process("tls_app:app", "--port", "0", "--app-dir", app_dir, *args) as proc:
        url = proc.wait_listening()
        assert url.startswith("https://127.0.0.1:")
        context = files.client_context()
        for _ in range(4):
            data, _ = get_json(url + "/", context)
            assert data["scheme"] == "https"
        proc.signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert f"on {url}" in proc.output  # the supervisor's start line names the https URL
    assert "TLS: TLS 1.2 and up, ALPN h2, http/1.1" in proc.output
