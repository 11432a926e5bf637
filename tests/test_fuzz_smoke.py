"""Each fuzz target for a few seconds (its committed corpus, then drawn inputs), so CI exercises them.

Long runs are opt-in: ``python -m fuzz.<target> --seconds N`` (see fuzz/README.md).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGETS = ["http1", "proxy_header", "forwarded", "config", "http2", "websocket"]


@pytest.mark.parametrize("name", TARGETS)
def test_target_survives_a_short_run(name: str) -> None:
    harness = importlib.import_module("fuzz._harness")
    target = importlib.import_module(f"fuzz.{name}")
    count = harness.run_hypothesis(
        target.one_input, [*harness.corpus(name), *target.SEEDS], max_examples=150, deadline_s=3.0
    )
    assert count > len(target.SEEDS)
