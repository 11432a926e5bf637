"""Response header fields as apps give them: names checked and lowercased, values trimmed. Shared by every
HTTP version's core and by the bridge's trailers and pushes."""

from __future__ import annotations

from zonda.errors import AppProtocolError

_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_OWS = b" \t"
# Response header names as apps send them -> checked and lowercased; shared by all connections and bounded.
_lowered_names: dict[bytes, bytes] = {}


def header_name(name: bytes) -> bytes:
    """An app's response header name, checked as a token and lowercased: names are case-insensitive (RFC 9110
    §5.1), apps send them in any case (Django: ``Content-Type``), HTTP/2 and HTTP/3 need them lowercase."""
    lowered = _lowered_names.get(name)
    if lowered is not None:
        return lowered
    if not name or not all(c in _TOKEN_CHARS for c in name):
        raise AppProtocolError(f"response header name {name!r} is not a token (RFC 9110 §5.6.2)")
    lowered = bytes(name).lower()
    if len(_lowered_names) < 4096:
        _lowered_names[name] = lowered
    return lowered


def header_value(value: bytes) -> bytes:
    """An app's header value without leading or trailing whitespace (RFC 9110 §5.5: not part of the value;
    HTTP/2 forbids it). CR, LF and NUL inside are checked on the whole block."""
    try:
        return value.strip(_OWS)
    except AttributeError:  # None, an int: the callers report TypeError as "must be [bytes, bytes] pairs"
        raise TypeError(f"header value {value!r} is not bytes") from None


def check_file_length(count: int, sent: int, declared: int | None) -> None:
    """A file of ``count`` bytes is to follow ``sent`` body bytes: refused (``AppProtocolError``) if it passes
    the declared content-length, before any of it is sent, on every HTTP version alike."""
    if declared is not None and sent + count > declared:
        raise AppProtocolError(
            f"a file of {count} bytes after {sent} is more body than the declared content-length ({declared})"
        )
