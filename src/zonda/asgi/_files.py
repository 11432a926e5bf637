"""Checks for the file-sending ASGI extensions, ``http.response.zerocopysend`` and ``http.response.pathsend``.

The bridge (``zonda.asgi.http``) calls these only for messages other than ``http.response.body``, so the body
hot path pays nothing. Each turns an app's message into what the core and driver need: an open regular file,
an offset and the number of bytes to send, or an ``AppProtocolError`` saying what was expected. A ``count``
past the end of the file is cut to the file's size (as reading it would be), so the framing the core writes
up front (Content-Length accounting, a chunk-size line) matches what the driver can send.

pathsend takes ``offset`` and ``count`` too, as zerocopysend does (asgiref PR #538, for range requests): the
scope says so with ``{"ranges": True}`` in the extension's dict. Both are offered on every HTTP connection,
whatever its version (``FILE_OFFERS``).
"""

from __future__ import annotations

import os
import stat
from typing import Any

from zonda.asgi.types import Message
from zonda.errors import AppProtocolError

ZEROCOPYSEND = "http.response.zerocopysend"
PATHSEND = "http.response.pathsend"
FILE_EXTENSIONS = frozenset((ZEROCOPYSEND, PATHSEND))
# The scope's offers, the same on every HTTP version: pathsend with ranges (``offset``, ``count``), zerocopysend.
FILE_OFFERS: dict[str, dict[str, Any]] = {PATHSEND: {"ranges": True}, ZEROCOPYSEND: {}}


def _regular_size(fd: int, what: str) -> int:
    try:
        info = os.fstat(fd)
    except OSError as exc:
        raise AppProtocolError(f"{what}: cannot stat the file ({exc})") from exc
    if not stat.S_ISREG(info.st_mode):
        raise AppProtocolError(
            f"{what}: expected a regular file, got file mode {stat.filemode(info.st_mode)}"
        )
    return info.st_size


def _optional_int(message: Message, key: str, what: str) -> int | None:
    value = message.get(key)
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise AppProtocolError(f"{what} {key!r} must be an int >= 0, got {value!r}")
    return value


def _span(size: int, offset: int, count: int | None) -> int:
    """The bytes a send of ``count`` (None: to the end) from ``offset`` finds in a file of ``size`` bytes."""
    left = max(0, size - offset)
    return left if count is None else min(count, left)


def zerocopy_span(message: Message) -> tuple[Any, int, int, bool, bool]:
    """``(file, offset, count, more_body, positioned)`` for a zerocopysend message.

    ``positioned``: the app gave no offset, so the send starts at the file's current position and should
    leave it after the bytes sent, as a read would.
    """
    file: Any = message.get("file")
    fileno = getattr(file, "fileno", None)
    if fileno is None:
        raise AppProtocolError(
            f"{ZEROCOPYSEND} 'file' must be a file object with fileno(), got {type(file).__name__}"
        )
    try:
        fd = fileno()
    except (OSError, ValueError) as exc:  # io.UnsupportedOperation is both
        raise AppProtocolError(
            f"{ZEROCOPYSEND} 'file' must have an OS file descriptor, got {type(file).__name__} ({exc})"
        ) from None
    if type(fd) is not int:
        raise AppProtocolError(f"{ZEROCOPYSEND} 'file'.fileno() must return an int, got {fd!r}")
    size = _regular_size(fd, ZEROCOPYSEND)
    offset = _optional_int(message, "offset", ZEROCOPYSEND)
    positioned = offset is None
    if offset is None:
        try:
            offset = file.tell()
        except (OSError, ValueError) as exc:
            raise AppProtocolError(
                f"{ZEROCOPYSEND}: no 'offset' and the file has no position ({exc})"
            ) from None
    count = _span(size, offset, _optional_int(message, "count", ZEROCOPYSEND))
    return file, offset, count, bool(message.get("more_body", False)), positioned


def open_path(message: Message) -> tuple[Any, int, int]:
    """The opened file, the offset and the number of bytes to send for a pathsend message (the whole file
    unless ``offset`` or ``count`` narrow it); the caller closes the file."""
    path = message.get("path")
    if type(path) is not str or not os.path.isabs(path):
        raise AppProtocolError(f"{PATHSEND} 'path' must be an absolute path (str), got {path!r}")
    offset = _optional_int(message, "offset", PATHSEND) or 0
    count = _optional_int(message, "count", PATHSEND)  # checked before the file is opened
    try:
        # O_NONBLOCK: opening a FIFO must not block the event loop (a regular file ignores the flag)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise AppProtocolError(f"{PATHSEND}: cannot open {path!r} ({exc})") from exc
    file = open(fd, "rb", buffering=0)  # noqa: SIM115  # closed by the caller once sent
    try:
        return file, offset, _span(_regular_size(fd, PATHSEND), offset, count)
    except BaseException:
        file.close()
        raise
