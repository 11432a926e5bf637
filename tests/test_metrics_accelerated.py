"""The metrics' per-response hook in C (``zonda._metrics``) tallies exactly what the Python hook does.

The Python hook (``Metrics(accelerate=False)``) is the reference; the C one must give the same counts, doing
the common case itself and passing everything else on to the Python hook (a new series, a WebSocket, a value
of an unusual type)."""

from __future__ import annotations

import os
from time import perf_counter
from typing import Any

import pytest

pytest.importorskip("prometheus_client")

from zonda import metrics
from zonda.metrics import Metrics

if metrics.accelerated is None:
    reason = "zonda._metrics is not built (no C compiler at install time)"
    if os.environ.get("ZONDA_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{reason} (ZONDA_REQUIRE_TOOLS=1)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


class PlainCycle:
    """A cycle whose attributes are in its __dict__ (read with getattr)."""

    def __init__(self, scope: Any, status: Any, seconds: float) -> None:
        self.scope = scope
        self.status = status
        self.started_at = perf_counter() - seconds
        self.accepted = status in (101, 200) and isinstance(scope, dict) and scope["type"] == "websocket"


class SlottedCycle:
    """A cycle with __slots__, as zonda's are (read at their offsets)."""

    __slots__ = ("accepted", "scope", "started_at", "status")

    def __init__(self, scope: Any, status: Any, seconds: float) -> None:
        self.scope = scope
        self.status = status
        self.started_at = perf_counter() - seconds
        self.accepted = status in (101, 200) and isinstance(scope, dict) and scope["type"] == "websocket"


def http(method: Any = "GET", version: Any = "1.1") -> dict[str, Any]:
    return {"type": "http", "method": method, "http_version": version}


# seconds kept away from the bucket bounds: the two hooks read the clock a few microseconds apart
RESPONSES: list[tuple[Any, Any, float]] = [
    (http(), 200, 0.0),
    (http(), 200, 0.0004),
    (http(), 204, 0.0017),  # the second bucket
    (http(), 404, 0.004),  # past it: the C loop, Python's bisect
    (http(), 500, 0.03),
    (http(), 0, 0.0),  # no response
    (http(), 999, 7.0),
    (http(), 200, 20.0),  # +Inf
    (http("POST", "1.0"), 201, 0.0),
    (http("BREW", "2"), 418, 0.3),  # a method outside the known ones: "other"
    (http("GET", "3"), 302, 0.0),
    ({"type": "websocket", "http_version": "1.1"}, 101, 0.0),  # no method: passed on
    ({"type": "websocket", "http_version": "2"}, 200, 0.0),
    (http(), True, 0.0),  # a bool is an int to Python's hook, not to C's check: passed on
    (http(b"GET"), 200, 0.0),  # a method of another type: its own series
    (http(["unhashable"]), 200, 0.0),  # raises in both hooks (TypeError), after nothing was counted
    ("not a dict", 200, 0.0),  # likewise
]


def tally_of(accelerate: bool, cycle_type: type[Any], rounds: int = 3) -> dict[Any, float]:
    recording = Metrics(accelerate=accelerate)
    for _ in range(rounds):  # a series made by the first round is used by the C hook from then on
        for scope, status, seconds in RESPONSES:
            cycle = cycle_type(scope, status, seconds)
            try:
                recording.record(cycle)
            except TypeError:
                assert not isinstance(scope, dict) or isinstance(scope["method"], list)
    recording.flush()
    samples = {}
    for family in recording.families.registry.collect():
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.mark.parametrize("cycle_type", [PlainCycle, SlottedCycle])
def test_the_c_hook_counts_as_the_python_hook_does(cycle_type: type[Any]) -> None:
    python = tally_of(False, cycle_type)
    c = tally_of(True, cycle_type)
    assert c.keys() == python.keys()
    for key, value in python.items():
        if key[0] == "zonda_request_duration_seconds_sum":
            assert c[key] == pytest.approx(value, abs=0.01), key
        else:
            assert c[key] == value, key
    requests = "zonda_requests_total"
    assert python[(requests, (("method", "GET"), ("protocol", "1.1"), ("status_class", "2xx")))] == 12
    assert (
        python[("zonda_websocket_connections_total", ())] == 6
    )  # the 101 and the 200 over HTTP/2, each round


def test_the_c_hook_is_the_one_in_use() -> None:
    assert isinstance(Metrics().record, metrics.accelerated.Recorder)
    assert not isinstance(Metrics(accelerate=False).record, metrics.accelerated.Recorder)
