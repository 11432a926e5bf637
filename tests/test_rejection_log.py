"""``RejectionLog``: at most one line per cause per interval, then one line with how many were suppressed; the
caller's time, explicit here."""

from __future__ import annotations

import logging

import pytest

from zonda.rejection_log import RejectionLog

log = logging.getLogger("zonda.test.rejections")


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    found = [(record.levelno, record.getMessage()) for record in caplog.records if record.name == log.name]
    caplog.clear()
    return found


def test_one_line_per_cause_per_second_then_the_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, log.name)
    quiet = RejectionLog()
    logged = [
        quiet.log(100.0 + i / 100, "400 response", log, logging.WARNING, "bad %d", i) for i in range(50)
    ]
    assert logged == [True] + [False] * 49
    assert lines(caplog) == [(logging.WARNING, "bad 0")]
    quiet.flush(100.99)  # the second is not over
    assert lines(caplog) == []
    quiet.flush(101.0)
    assert lines(caplog) == [(logging.WARNING, "400 response: 49 more suppressed (at most one line per 1s)")]
    quiet.flush(105.0)  # said once
    assert lines(caplog) == []


def test_causes_are_apart_and_the_count_comes_before_the_next_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, log.name)
    quiet = RejectionLog()
    quiet.log(10.0, "408 response", log, logging.INFO, "slow %s", "a")
    quiet.log(10.1, "400 response", log, logging.WARNING, "bad %s", "b")  # another cause: its own line
    quiet.log(10.2, "408 response", log, logging.INFO, "slow %s", "c")
    quiet.log(10.3, "408 response", log, logging.INFO, "slow %s", "d")
    quiet.log(11.5, "408 response", log, logging.INFO, "slow %s", "e")  # no flush came in between
    assert lines(caplog) == [
        (logging.INFO, "slow a"),
        (logging.WARNING, "bad b"),
        (logging.INFO, "408 response: 2 more suppressed (at most one line per 1s)"),
        (logging.INFO, "slow e"),
    ]
    quiet.flush(float("inf"))  # the server's end: nothing was suppressed since
    assert lines(caplog) == []


def test_a_level_that_is_off_costs_no_entry(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, log.name)
    quiet = RejectionLog()
    for i in range(5):
        assert not quiet.log(1.0 + i, "408 response", log, logging.INFO, "slow")
    quiet.flush(100.0)
    assert lines(caplog) == []
