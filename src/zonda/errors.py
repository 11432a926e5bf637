"""zonda's one error tree.

Protocol errors carry their wire remedy (the HTTP status to answer with), so the code that catches them only
has to flush what the core queued and close. App errors name the ASGI message and the rule it broke.
"""

from __future__ import annotations

import sys
from typing import TypeVar

if sys.version_info < (3, 11):  # the backport: trio and anyio, the only makers of such groups, depend on it
    try:
        from exceptiongroup import BaseExceptionGroup
    except ImportError:  # then no app can raise one
        BaseExceptionGroup = None  # type: ignore[assignment,misc,unused-ignore]


class ZondaError(Exception):
    """Base of every error zonda raises on purpose."""


class ConfigError(ZondaError):
    """A configuration key has a bad value; the message names the key."""


class AppLoadError(ZondaError):
    """The app could not be imported or called as configured; the message is one line for the user.

    ``traceback_text`` is the app's own part of the traceback when its code raised (empty otherwise), to log
    after the line: from the app's module down to the failing line, without the import machinery's frames."""

    def __init__(self, message: str, traceback_text: str = "") -> None:
        super().__init__(message)
        self.traceback_text = traceback_text


class ListenError(ZondaError, OSError):
    """A listener could not be opened; the message names the address and the cause, in one line."""


class LifespanFailure(ZondaError):
    """The app reported (or raised) a lifespan startup or shutdown failure."""


class ProtocolError(ZondaError):
    """The peer broke the protocol. ``status`` is the HTTP status the server answers with."""

    status = 400
    log_level = "info"  # a peer's mistake is not the server's error

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status


class BadRequest(ProtocolError):
    status = 400


class RequestTimeout(ProtocolError):
    status = 408


class RequestBodyTooSlow(RequestTimeout):
    """The request body arrived slower on average than ``--limit-request-body-rate``."""


class BodyTooLarge(ProtocolError):
    status = 413


class RequestLineTooLong(ProtocolError):
    status = 414


class HeadersTooLarge(ProtocolError):
    status = 431


class UnsupportedTransferCoding(ProtocolError):
    status = 501


class AppProtocolError(ZondaError):
    """The app sent a message that breaks the ASGI spec ("Expected X, got Y")."""


class ClientDisconnected(OSError):
    """``send()`` was called after the client went away (ASGI www spec 2.4).

    The server raised it, so the server never logs it as an error.
    """


class ProxyProtocolError(ZondaError):
    """A trusted peer's PROXY protocol header was missing or malformed: the connection is closed."""


def split_cancellation(exc: BaseException) -> tuple[Exception | None, BaseException | None]:
    """A BaseException that ended an app call, as (the app's own failure, the cancellation to pass on).

    A task group cancelled from outside (trio nurseries, anyio task groups) gathers its children's errors with
    the cancellation into one BaseExceptionGroup: the errors are the app's to report, the cancellation the
    caller's to see. ``ClientDisconnected`` raised by ``send()`` is neither: it is dropped."""
    if BaseExceptionGroup is None or not isinstance(exc, BaseExceptionGroup):
        return None, exc
    _, rest = exc.split(ClientDisconnected)
    if rest is None:
        return None, None
    failure, cancellation = rest.split(Exception)
    return failure, cancellation


_Error = TypeVar("_Error", bound=BaseException)


def caused_by(error: _Error, cause: BaseException | None) -> _Error:
    """``error`` with ``cause`` as its ``__cause__`` (None: no context shown), for ``raise caused_by(error,
    cause)``: what ``raise error from cause`` does, written out because the compiled modules
    (``zonda._compiled``) drop a raise's ``from`` (mypyc 2.4) and an app or a log would see another chain."""
    error.__cause__ = cause  # sets __suppress_context__ too, as ``from`` does
    return error
