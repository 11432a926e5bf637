"""``split_cancellation``: what ended an app call, as the app's failure and the cancellation to pass on."""

from __future__ import annotations

import asyncio
import sys

from zonda.errors import ClientDisconnected, split_cancellation

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup, ExceptionGroup


def test_a_plain_cancellation_is_passed_on_as_it_is() -> None:
    cancelled = asyncio.CancelledError()
    assert split_cancellation(cancelled) == (None, cancelled)


def test_a_task_groups_error_is_the_apps_and_the_cancellation_goes_on() -> None:
    error = RuntimeError("cleanup failed")
    cancelled = asyncio.CancelledError()
    failure, cancellation = split_cancellation(BaseExceptionGroup("task group", [error, cancelled]))
    assert isinstance(failure, ExceptionGroup)
    assert failure.exceptions == (error,)
    assert isinstance(cancellation, BaseExceptionGroup)
    assert cancellation.exceptions == (cancelled,)


def test_client_disconnected_in_a_group_is_dropped() -> None:
    cancelled = asyncio.CancelledError()
    group = BaseExceptionGroup("task group", [ClientDisconnected("gone"), cancelled])
    failure, cancellation = split_cancellation(group)
    assert failure is None
    assert isinstance(cancellation, BaseExceptionGroup)
    assert cancellation.exceptions == (cancelled,)


def test_nested_groups_are_split_through() -> None:
    error = ValueError("inner")
    cancelled = asyncio.CancelledError()
    inner = BaseExceptionGroup("inner", [error, ClientDisconnected("gone")])
    failure, cancellation = split_cancellation(BaseExceptionGroup("outer", [inner, cancelled]))
    assert failure is not None and failure.exceptions[0].exceptions == (error,)  # type: ignore[attr-defined]
    assert cancellation is not None
