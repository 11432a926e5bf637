"""``zonda_connections_open{protocol="websocket"}`` and ``zonda_requests_in_flight`` while a WebSocket is open
over HTTP/1.1: the connection counts as a WebSocket, not as HTTP/1.1, and its cycle is not a request in
flight."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from helpers import run_server, wait_for
from wsframes import WSClient, text

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def gauges(metrics_port: int) -> dict[str, float]:
    """zonda_connections_open by protocol, and zonda_requests_in_flight as "in_flight"."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "zonda_connections_open":
                found[sample.labels["protocol"]] = sample.value
            elif sample.name == "zonda_requests_in_flight":
                found["in_flight"] = sample.value
    return found


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    await receive()
    await send({"type": "websocket.accept"})
    while (message := await receive())["type"] == "websocket.receive":
        await send({"type": "websocket.send", "text": message["text"]})


def test_an_open_websocket_counts_as_one() -> None:
    with run_server(echo, metrics_bind="127.0.0.1:0", ws_ping_interval=None) as running:
        metrics_port = running.server.metrics_port
        assert metrics_port is not None
        with WSClient(running.port, "/ws") as ws:
            assert ws.status == 101
            ws.send(text("hi"))
            assert ws.recv_raw(4) == b"\x81\x02hi"
            during = gauges(metrics_port)
            ws.close_handshake(1000)
        wait_for(lambda: gauges(metrics_port)["websocket"] == 0)
    assert during["websocket"] == 1
    assert during["http1"] == 0
    assert during["in_flight"] == 0
