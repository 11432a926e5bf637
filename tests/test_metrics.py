"""The per-response tally and its flush into prometheus_client, without a server (tests/e2e/test_metrics.py
has the server's view)."""

from __future__ import annotations

from time import perf_counter
from typing import Any

import pytest

pytest.importorskip("prometheus_client")

from zonda.metrics import Metrics


class Cycle:
    def __init__(self, scope: dict[str, Any], status: int, seconds: float, accepted: bool = False) -> None:
        self.scope = scope
        self.status = status
        self.started_at = perf_counter() - seconds
        self.accepted = accepted  # a WebSocket's, by websocket.accept


def http(method: str, version: str = "1.1") -> dict[str, Any]:
    return {"type": "http", "method": method, "http_version": version}


def test_responses_and_latencies_reach_the_families() -> None:
    metrics = Metrics()
    for cycle in (
        Cycle(http("GET"), 200, 0.0),  # the first bucket, without bisect
        Cycle(http("GET"), 204, 0.003),
        Cycle(http("GET"), 404, 0.0),
        Cycle(http("BREW", "2"), 418, 0.3),  # a method outside the known ones: "other"
        Cycle({"type": "websocket"}, 101, 0.0, accepted=True),
        Cycle({"type": "websocket"}, 403, 0.0),  # denied: a response, not a WebSocket connection
        Cycle({"type": "websocket"}, 0, 0.0),  # a WebSocket that ended before any response
    ):
        metrics.record(cycle)
    metrics.flush()
    metrics.record(Cycle(http("GET"), 200, 20.0))  # a second flush adds to the first
    metrics.flush()
    registry = metrics.families.registry

    def sample(name: str, **labels: str) -> float | None:
        value: float | None = registry.get_sample_value(name, labels)
        return value

    requests = "zonda_requests_total"
    assert sample(requests, method="GET", status_class="2xx", protocol="1.1") == 3
    assert sample(requests, method="GET", status_class="4xx", protocol="1.1") == 1
    assert sample(requests, method="other", status_class="4xx", protocol="2") == 1
    assert sample(requests, method="GET", status_class="1xx", protocol="websocket") == 1
    assert sample(requests, method="GET", status_class="0xx", protocol="websocket") == 1
    assert sample(requests, method="GET", status_class="4xx", protocol="websocket") == 1
    assert sample("zonda_websocket_connections_total") == 1
    buckets = "zonda_request_duration_seconds_bucket"
    assert sample(buckets, protocol="1.1", le="0.001") == 2
    assert sample(buckets, protocol="1.1", le="0.005") == 3
    assert sample(buckets, protocol="1.1", le="10.0") == 3
    assert sample(buckets, protocol="1.1", le="+Inf") == 4
    assert sample(buckets, protocol="2", le="0.25") == 0
    assert sample(buckets, protocol="2", le="0.5") == 1
    assert sample("zonda_request_duration_seconds_count", protocol="1.1") == 4
    total = sample("zonda_request_duration_seconds_sum", protocol="1.1")
    assert total is not None and 20.003 <= total < 20.1
    assert not metrics.tally.series  # drained


def test_each_response_lands_in_its_latency_bucket() -> None:
    """The first two buckets are found by comparisons, the others by bisect; the first one's count is worked
    out at flush time."""
    metrics = Metrics()
    for seconds in (0.0, 0.0005, 0.0015, 0.002, 0.004, 0.007, 0.03, 0.7, 3.0, 7.0, 11.0):
        metrics.record(Cycle(http("GET"), 200, seconds))
    metrics.flush()
    registry = metrics.families.registry
    cumulative = {
        bound: registry.get_sample_value(
            "zonda_request_duration_seconds_bucket", {"protocol": "1.1", "le": bound}
        )
        for bound in ("0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "1.0", "5.0", "10.0", "+Inf")
    }
    assert cumulative == {
        "0.001": 2,
        "0.0025": 4,
        "0.005": 5,
        "0.01": 6,
        "0.025": 6,
        "0.05": 7,
        "1.0": 8,
        "5.0": 9,
        "10.0": 10,
        "+Inf": 11,
    }
