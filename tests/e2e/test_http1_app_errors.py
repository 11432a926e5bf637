"""Apps that fail or break the ASGI rules: the client gets a 500 or a closed connection, and zonda logs the error
once, naming the message and the rule."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from helpers import assert_still_serving, run_server
from wire import Closed, Wire, get

Scope = dict[str, Any]
Message = dict[str, Any]
START: Message = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}


def scripted_app(messages: list[Message], then: str = "return") -> Any:
    """Sends ``messages`` for any path but /alive, then returns or raises (``then="raise"``)."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/alive":
            await send(START)
            await send({"type": "http.response.body", "body": b"alive"})
            return
        for message in messages:
            await send(message)
        if then == "raise":
            raise RuntimeError("boom from the app")

    return app


def outcome(port: int) -> int | str:
    """The status the client got, or "closed" if the connection ended before a whole response."""
    with Wire(port) as wire:
        wire.send(get("/x"))
        try:
            response = wire.read_response()
        except Closed:
            return "closed"
        except ConnectionResetError:
            return "closed"
        assert response.header("connection") == "close" or response.status < 500
        if response.status == 500:
            assert response.body == b"Internal Server Error\n"
            assert wire.is_closed(2.0)
        return response.status


def error_records(logs: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in logs.records if r.name == "zonda.error" and r.levelno >= logging.WARNING]


def record_text(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        text += f" | {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
    return text


def check(
    loop: str, logs: pytest.LogCaptureFixture, app: Any, expected: int | str, *phrases: str
) -> logging.LogRecord:
    with run_server(app, loop=loop, lifespan="off") as server:
        assert outcome(server.port) == expected
        assert_still_serving(server.port)
    records = error_records(logs)
    assert len(records) == 1, [record_text(r) for r in records]
    assert records[0].levelno == logging.ERROR
    text = record_text(records[0])
    for phrase in phrases:
        assert phrase in text, text
    assert "GET /x" in text
    return records[0]


def test_app_raises_before_response_start_gets_500(loop: str, logs: pytest.LogCaptureFixture) -> None:
    record = check(
        loop, logs, scripted_app([], then="raise"), 500, "Exception in ASGI app", "boom from the app"
    )
    assert record.exc_info is not None


def test_app_raises_after_response_start_closes(loop: str, logs: pytest.LogCaptureFixture) -> None:
    check(loop, logs, scripted_app([START], then="raise"), "closed", "boom from the app")


def test_app_raises_mid_body_closes(loop: str, logs: pytest.LogCaptureFixture) -> None:
    messages = [START, {"type": "http.response.body", "body": b"part", "more_body": True}]
    check(loop, logs, scripted_app(messages, then="raise"), "closed", "boom from the app")


def test_app_returns_without_responding_gets_500(loop: str, logs: pytest.LogCaptureFixture) -> None:
    check(loop, logs, scripted_app([]), 500, "without sending a response")


def test_app_returns_mid_response_closes(loop: str, logs: pytest.LogCaptureFixture) -> None:
    messages = [START, {"type": "http.response.body", "body": b"part", "more_body": True}]
    check(loop, logs, scripted_app(messages), "closed", "without completing the response")


INVALID = {
    "wrong-type-first": (
        [{"type": "http.response.body", "body": b"x"}],
        500,
        "Expected 'http.response.start'",
    ),
    "not-a-dict": (["http.response.start"], 500, "'type'"),
    "missing-type": ([{"status": 200}], 500, "'type'"),
    "missing-status": ([{"type": "http.response.start", "headers": []}], 500, "status"),
    "status-not-int": ([{"type": "http.response.start", "status": "200"}], 500, "status"),
    "status-out-of-range": ([{"type": "http.response.start", "status": 42}], 500, "status"),
    "header-value-str": (
        [{"type": "http.response.start", "status": 200, "headers": [(b"x-a", "v")]}],
        500,
        "header",
    ),
    "header-name-str": (
        [{"type": "http.response.start", "status": 200, "headers": [("x-a", b"v")]}],
        500,
        "header",
    ),
    "header-name-not-a-token": (
        [{"type": "http.response.start", "status": 200, "headers": [(b"X A", b"v")]}],
        500,
        "header name",
    ),
    "header-value-crlf": (
        [{"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"v\r\nx-evil: 1")]}],
        500,
        "CR, LF",
    ),
    "start-twice": ([START, START], "closed", "Expected 'http.response.body'"),
    "body-not-bytes": ([START, {"type": "http.response.body", "body": "text"}], "closed", "must be bytes"),
    "body-after-final-body": (
        [
            START,
            {"type": "http.response.body", "body": b"done"},
            {"type": "http.response.body", "body": b"x"},
        ],
        200,
        "already complete",
    ),
    "more-than-content-length": (
        [
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]},
            {"type": "http.response.body", "body": b"abcd"},
        ],
        "closed",
        "content-length",
    ),
    "more-than-content-length-streamed": (
        [
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]},
            {"type": "http.response.body", "body": b"ab", "more_body": True},
            {"type": "http.response.body", "body": b"cd", "more_body": True},
        ],
        "closed",
        "content-length",
    ),
    "less-than-content-length": (
        [
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]},
            {"type": "http.response.body", "body": b"abc"},
        ],
        "closed",
        "content-length",
    ),
}


@pytest.mark.parametrize(("messages", "expected", "phrase"), INVALID.values(), ids=INVALID.keys())
def test_invalid_messages_are_logged_once_naming_the_rule(
    loop: str, logs: pytest.LogCaptureFixture, messages: list[Message], expected: int | str, phrase: str
) -> None:
    check(loop, logs, scripted_app(messages), expected, phrase)
