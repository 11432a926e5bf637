"""A real browser against a real zonda: headless Chromium loads the demo page, whose script opens a WebSocket to
/ws, sends a message and shows the echo (compressed with permessage-deflate, as Chromium offers it)."""

from __future__ import annotations

from helpers import REPO, require_tool, run_server

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
