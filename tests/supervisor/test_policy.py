"""The supervisor's policies: restart back-off, recycling jitter, worker count, exit descriptions."""

from __future__ import annotations

import os
import random
import signal

import pytest

from zonda.config import Config
from zonda.supervisor import needs_supervisor
from zonda.supervisor.supervisor import (
    BACKOFF_CAP,
    backoff_delay,
    describe_exit,
    lifetime_deadline,
    request_limit,
    rss_bytes,
    worker_count,
)


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff_delay(n) for n in range(6)] == [0.0, 0.1, 0.2, 0.4, 0.8, 1.6]
    assert backoff_delay(8) == pytest.approx(12.8) or backoff_delay(8) == BACKOFF_CAP
    assert backoff_delay(50) == BACKOFF_CAP
    assert backoff_delay(10_000) == BACKOFF_CAP
    assert backoff_delay(3, base=1.0, cap=3.0) == 3.0


def test_request_limit_jitter_stays_in_range_and_spreads() -> None:
    rng = random.Random(1)
    assert request_limit(None, 10, rng) is None
    assert request_limit(1000, 0, rng) == 1000
    limits = [request_limit(1000, 50, rng) for _ in range(500)]
    assert all(limit is not None and 1000 <= limit <= 1050 for limit in limits)
    assert len(set(limits)) > 30, "workers get different limits"
    known = [limit for limit in limits if limit is not None]
    assert min(known) < 1010 and max(known) > 1040


def test_lifetime_deadline_jitter() -> None:
    rng = random.Random(2)
    assert lifetime_deadline(5.0, None, rng) is None
    deadlines = [lifetime_deadline(5.0, 100.0, rng) for _ in range(200)]
    assert all(d is not None and 105.0 <= d <= 115.0 for d in deadlines)
    assert len(set(deadlines)) > 100


def test_worker_count() -> None:
    assert worker_count(3) == 3
    cpus = len(os.sched_getaffinity(0))
    assert worker_count(0) == cpus


def test_describe_exit() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(None) == "still running"


def test_rss_of_this_process() -> None:
    rss = rss_bytes(os.getpid())
    assert rss is not None and rss > 1024 * 1024
    assert rss_bytes(2**22 + 12345) is None


def test_workers_option_accepts_auto() -> None:
    assert Config(app="a:b", workers="auto").workers == 0  # type: ignore[arg-type]
    assert Config.load(env={"ZONDA_WORKERS": "auto"}).workers == 0
    assert Config.load(env={"ZONDA_WORKERS": "4"}).workers == 4


def test_which_runs_need_the_supervisor() -> None:
    base = Config(app="a:b")
    assert not needs_supervisor(base, {})
    for changes in (
        {"workers": 2},
        {"workers": 0},
        {"reload": True},
        {"reuse_port": True},
        {"max_requests": 10},
        {"max_worker_lifetime": 60.0},
        {"max_worker_memory": 512},
        {"pid": "/tmp/x.pid"},
    ):
        assert needs_supervisor(base.replace(**changes), {}), changes
