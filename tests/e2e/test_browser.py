"""A real browser against a real zonda: headless Chromium loads the demo page, whose script opens a WebSocket to
/ws, sends a message and shows the echo (compressed with permessage-deflate, as Chromium offers it); and loads it
over HTTP/3."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from helpers import REPO, require_tool, run_server
from tlsutil import make_tls_files

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def test_demo_page_websocket_echo() -> None:
    chromium = require_tool("chromium")
    from playwright.sync_api import sync_playwright

    with run_server("examples.hello:app", app_dir=REPO) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_function(
                "document.getElementById('ws-echo').textContent.startsWith('echo:')", timeout=15000
            )
            assert page.text_content("#ws-echo") == "echo: hello over WebSocket"
            assert "permessage-deflate" in page.evaluate("ws.extensions")
        finally:
            browser.close()


def test_demo_page_over_http3(tmp_path: Path) -> None:
    """Chromium loads the demo page over HTTP/3: QUIC forced on for the origin (no alt-svc round first), the test
    certificate (ECDSA P-256, as Chromium's QUIC wants) accepted by its public key's hash; the page's own
    resource timing says which protocol carried it."""
    chromium = require_tool("chromium")
    from playwright.sync_api import sync_playwright

    files = make_tls_files(tmp_path)
    certificate = x509.load_pem_x509_certificate(files.cert.read_bytes())
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    spki_hash = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    options = {"app_dir": REPO, "http3": True, **files.server_options()}
    with run_server("examples.hello:app", **options) as server, sync_playwright() as playwright:
        port = server.server.quic_port
        args = [
            *CHROMIUM_ARGS,
            f"--origin-to-force-quic-on=localhost:{port}",
            f"--ignore-certificate-errors-spki-list={spki_hash}",
            "--host-resolver-rules=MAP localhost 127.0.0.1",
        ]
        browser = playwright.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page()
            page.goto(f"https://localhost:{port}/")
            protocol = page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol")
            assert protocol == "h3", protocol
            assert "zonda" in (page.content() or "")
        finally:
            browser.close()
