"""Response header fields as apps give them: names checked and lowercased, values trimmed; trailer fields, and
values outside a response head, checked on their own. Shared by every HTTP version's core and by the bridge's
trailers, pushes and early hints, so each rule is the same whatever version carries the response."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from zonda.errors import AppProtocolError, caused_by

_TOKEN_CHARS: Final = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_OWS: Final = b" \t"
# Header fields a request must not carry and a response drops (RFC 9113 §8.2.2); nor may trailers, any version
CONNECTION_HEADERS: Final = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")
)
TOKEN_BYTES: Final = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"  # lowercase token bytes (§8.2.1)
# Response header names as apps send them -> checked and lowercased; shared by all connections and bounded.
_lowered_names: Final[dict[bytes, bytes]] = {}


# ``header_name`` and ``header_value`` take what the app sent (``Any``): they are where it is checked, and the
# compiled build (zonda._compiled) would check a ``bytes`` parameter on entry, refusing what the source accepts.


def header_name(name: Any) -> bytes:
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


def header_value(value: Any) -> bytes:
    """An app's header value without leading or trailing whitespace (RFC 9110 §5.5: not part of the value;
    HTTP/2 forbids it). CR, LF and NUL inside are checked on the whole block."""
    try:
        stripped = value.strip(_OWS)
    except AttributeError:  # None, an int: the callers report TypeError as "must be [bytes, bytes] pairs"
        raise caused_by(TypeError(f"header value {value!r} is not bytes"), None)
    return stripped if type(stripped) is bytes else bytes(stripped)  # a bytearray's: the same bytes


def checked_value(value: bytes) -> bytes:
    """A header value outside a response head (trailers, pushed requests, early hints' links), trimmed and
    checked on its own: a CR, LF or NUL would split an HTTP/1.1 message, and is malformed in HTTP/2 and HTTP/3."""
    value = header_value(value)
    if b"\r" in value or b"\n" in value or b"\x00" in value:
        raise AppProtocolError(f"header value {value!r} contains CR, LF or NUL")
    return value


def check_file_length(count: int, sent: int, declared: int | None) -> None:
    """A file of ``count`` bytes is to follow ``sent`` body bytes: refused (``AppProtocolError``) if it passes
    the declared content-length, before any of it is sent, on every HTTP version alike."""
    if declared is not None and sent + count > declared:
        raise AppProtocolError(
            f"a file of {count} bytes after {sent} is more body than the declared content-length ({declared})"
        )


def trailer_fields(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A response's trailer fields, names checked: no pseudo-headers, lowercase tokens, nothing
    connection-specific (every HTTP version alike)."""
    fields = []
    for name, value in headers:
        if name[:1] == b":" or name.translate(None, TOKEN_BYTES) or name in CONNECTION_HEADERS:
            raise AppProtocolError(f"http.response.trailers: header name {name!r} is not allowed")
        fields.append((bytes(name), bytes(value)))
    return fields
