"""HTTP/2 header fields (RFC 9113 §8.2-8.3): the checks on a request's decoded fields, and the encoding of what
the server sends (response heads, trailers, the requests it promises).

Encoding or decoding one header block in pure Python (the ``hpack`` package) costs 15-30 µs, so responses are
encoded statelessly: our dynamic table size is 0, announced once per connection (``TABLE_SIZE_ZERO`` at the
head of its first block), so the encoding of a header list is a pure function of the list and is cached
process-wide. (The core caches request decoding per connection; see ``H2Connection._decode``.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from hpack import Encoder

from zonda.errors import AppProtocolError
from zonda.protocols.events import Headers
from zonda.protocols.fields import CONNECTION_HEADERS, TOKEN_BYTES, header_name, header_value, trailer_fields
from zonda.protocols.http2_frames import ErrorCode, StreamError

if TYPE_CHECKING:
    from zonda.protocols.http1 import DefaultHeaders

Field = tuple[bytes, bytes]

_REQUEST_PSEUDO = frozenset((b":method", b":scheme", b":path", b":authority", b":protocol"))
NO_BODY_STATUSES = frozenset({204, 304}) | frozenset(range(100, 200))
_BAD_VALUE_BYTES = (b"\r", b"\n", b"\x00")
_EDGE_SPACE = (b" ", b"\t")

_RESPONSE_CACHE: dict[tuple[Any, ...], tuple[bytes, int | None]] = {}
_BLOCK_CACHE: dict[tuple[Any, ...], bytes] = {}
_RESPONSE_CACHE_MAX = 1024
_encoder = Encoder()
_encoder.header_table_size = 0
_encoder.encode([])  # consume the pending size update: from here on every block is stateless
TABLE_SIZE_ZERO = b"\x20"  # dynamic table size update to 0, the first thing in our first header block
_STATUS = {status: b"%d" % status for status in range(100, 1000)}


def encode_headers(key: tuple[Any, ...], fields: list[Field]) -> bytes:
    """A header block for ``fields`` (checked values), cached under ``key``."""
    block = _BLOCK_CACHE.get(key)
    if block is None:
        _check_values(fields, "header values must not contain CR, LF or NUL")
        block = _encoder.encode(fields)
        if len(_BLOCK_CACHE) >= _RESPONSE_CACHE_MAX:
            _BLOCK_CACHE.clear()
        _BLOCK_CACHE[key] = block
    return block


def _check_values(fields: Iterable[Field], message: str) -> None:
    for _, value in fields:
        for bad in _BAD_VALUE_BYTES:
            if bad in value:
                raise AppProtocolError(message)


def response_head(
    status: int, headers: Iterable[tuple[bytes, bytes]], defaults: DefaultHeaders
) -> tuple[bytes, int | None]:
    """The encoded head of a response (``http.response.start``) and its declared content-length, if any."""
    try:
        key = (status, defaults.date, *headers)
        cached = _RESPONSE_CACHE.get(key)
    except TypeError:  # headers given as lists, not tuples: fine by ASGI, just not hashable
        try:
            headers = [(name, value) for name, value in headers]
        except (TypeError, ValueError) as exc:
            raise AppProtocolError(
                "http.response.start: 'headers' must be an iterable of [bytes, bytes] pairs"
            ) from exc
        key = (status, defaults.date, *headers)
        cached = _RESPONSE_CACHE.get(key)
    if cached is None:
        cached = _encode_response(key, status, headers, defaults)
    return cached


def _encode_response(
    key: tuple[Any, ...], status: int, headers: Iterable[tuple[bytes, bytes]], defaults: DefaultHeaders
) -> tuple[bytes, int | None]:
    fields, length = response_fields(status, headers, defaults)
    entry = (_encoder.encode(fields), length)
    if len(_RESPONSE_CACHE) >= _RESPONSE_CACHE_MAX:
        _RESPONSE_CACHE.clear()
    _RESPONSE_CACHE[key] = entry
    return entry


def response_fields(
    status: int, headers: Iterable[tuple[bytes, bytes]], defaults: DefaultHeaders
) -> tuple[list[Field], int | None]:
    """A response head's fields, checked (HTTP/2 and HTTP/3 alike: RFC 9114 §4.2 keeps RFC 9113's rules), and
    its declared content-length, if any."""
    if type(status) is not int or not 100 <= status <= 999:
        raise AppProtocolError(f"http.response.start: invalid status {status!r}")
    fields = [(b":status", _STATUS[status])]
    has_date = has_server = False
    length = None
    try:
        for raw_name, raw_value in headers:
            name = header_name(raw_name)
            value = header_value(raw_value)
            if name in CONNECTION_HEADERS:
                continue  # connection-specific: HTTP/2 frames the response itself (RFC 9113 §8.2.2)
            if name == b"date":
                has_date = True
            elif name == b"server":
                has_server = True
            elif name == b"content-length":
                if not value.isdigit() or len(value) > 18 or (length is not None and int(value) != length):
                    raise AppProtocolError(f"http.response.start: invalid content-length {value!r}")
                length = int(value)
            fields.append((name, bytes(value)))
    except (TypeError, ValueError) as exc:
        raise AppProtocolError(
            "http.response.start: 'headers' must be an iterable of [bytes, bytes] pairs"
        ) from exc
    if not has_server and defaults.server:
        fields.append((b"server", defaults.server))
    if not has_date and defaults.date:
        fields.append((b"date", defaults.date))
    fields.extend(defaults.extra)
    _check_values(fields, "response header values must not contain CR, LF or NUL")
    return fields, length


def trailer_block(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The encoded trailers of a response (``http.response.trailers``)."""
    fields = trailer_fields(headers)
    return encode_headers(("trailers", *fields), fields)


def promised_request(
    path: bytes, headers: Iterable[tuple[bytes, bytes]], scheme: bytes, authority: bytes
) -> tuple[list[Field], bytes]:
    """The fields and the encoded block of a request we promise (``http.response.push``)."""
    fields = [(b":method", b"GET"), (b":scheme", scheme), (b":authority", authority), (b":path", path)]
    fields.extend((bytes(n), bytes(v)) for n, v in headers)
    # The promised request must be well-formed (RFC 9113 §8.4.1): a malformed one costs the connection.
    for index, (name, _) in enumerate(fields):
        if index > 3 and (not name or name.translate(None, TOKEN_BYTES) or name in CONNECTION_HEADERS):
            raise AppProtocolError(f"http.response.push: header name {name!r} is not allowed")
    _check_values(fields, "http.response.push: header values must not contain CR, LF or NUL")
    return fields, _encoder.encode(fields)


def bad_trailer_name(fields: Iterable[Field]) -> bytes | None:
    """The first request trailer name that is not allowed: no pseudo-header fields in trailers (RFC 9113
    §8.1), names lowercase tokens (§8.2.1)."""
    for name, _ in fields:
        if not name or name.translate(None, TOKEN_BYTES):
            return bytes(name)
    return None


class FieldRules(Protocol):
    """The settings the request checks read (``H2Settings``, ``H3Settings``)."""

    @property
    def enable_connect_protocol(self) -> bool: ...
    @property
    def max_header_list_size(self) -> int: ...


def check_request_fields(fields: Iterable[Field], settings: FieldRules) -> tuple[Any, ...]:
    """RFC 9113 §8.2-8.3 checks (HTTP/3 has the same ones: RFC 9114 §4.2-4.3); raise StreamError for a
    malformed request. Returns (method, scheme, path, authority, protocol, headers, content_length, oversized)."""
    method = scheme = path = authority = protocol = None
    headers: Headers = []
    cookies: list[bytes] = []
    regular = False
    content_length = None
    size = 0
    has_host = False
    for name, value in fields:
        size += len(name) + len(value) + 32
        if name[:1] == b":":
            if regular:
                raise StreamError(ErrorCode.PROTOCOL_ERROR, "pseudo-header after a regular header")
            if name not in _REQUEST_PSEUDO:
                raise StreamError(ErrorCode.PROTOCOL_ERROR, f"unknown pseudo-header {name!r}")
            # RFC 9113 §8.2.1 holds for pseudo-headers too: :path and :authority reach apps
            for bad in _BAD_VALUE_BYTES:
                if bad in value:
                    raise StreamError(ErrorCode.PROTOCOL_ERROR, f"{name!r} contains CR, LF or NUL")
            if name == b":method":
                if method is not None:
                    raise StreamError(ErrorCode.PROTOCOL_ERROR, "duplicate :method")
                method = value
            elif name == b":scheme":
                if scheme is not None:
                    raise StreamError(ErrorCode.PROTOCOL_ERROR, "duplicate :scheme")
                scheme = value
            elif name == b":path":
                if path is not None:
                    raise StreamError(ErrorCode.PROTOCOL_ERROR, "duplicate :path")
                path = value
            elif name == b":authority":
                if authority is not None:
                    raise StreamError(ErrorCode.PROTOCOL_ERROR, "duplicate :authority")
                authority = value
            else:
                if protocol is not None or not settings.enable_connect_protocol:
                    raise StreamError(ErrorCode.PROTOCOL_ERROR, "unexpected :protocol")
                protocol = value
            continue
        regular = True
        if not name or name.translate(None, TOKEN_BYTES):
            raise StreamError(ErrorCode.PROTOCOL_ERROR, f"header name {name!r} is not a lowercase token")
        if name in CONNECTION_HEADERS:
            raise StreamError(ErrorCode.PROTOCOL_ERROR, f"connection-specific header {name!r}")
        if name == b"te" and value != b"trailers":
            raise StreamError(ErrorCode.PROTOCOL_ERROR, "te header other than 'trailers'")
        for bad in _BAD_VALUE_BYTES:
            if bad in value:
                raise StreamError(ErrorCode.PROTOCOL_ERROR, f"header {name!r} contains CR, LF or NUL")
        if value[:1] in _EDGE_SPACE or value[-1:] in _EDGE_SPACE:
            raise StreamError(
                ErrorCode.PROTOCOL_ERROR, f"header {name!r} value starts or ends with whitespace"
            )
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"content-length":
            # at most 18 digits: int() refuses over 4300, and no body is an exabyte
            if (
                not value.isdigit()
                or len(value) > 18
                or (content_length is not None and int(value) != content_length)
            ):
                raise StreamError(ErrorCode.PROTOCOL_ERROR, f"invalid content-length {value!r}")
            content_length = int(value)
        elif name == b"host":
            has_host = True
        headers.append((name, value))
    if method is None:
        raise StreamError(ErrorCode.PROTOCOL_ERROR, "missing :method")
    if method == b"CONNECT" and protocol is None:
        if scheme is not None or path is not None or authority is None:
            raise StreamError(ErrorCode.PROTOCOL_ERROR, "CONNECT needs :authority and no :scheme or :path")
        path = b""
    else:
        if scheme is None or not path:
            raise StreamError(ErrorCode.PROTOCOL_ERROR, "missing :scheme or :path")
        if protocol is not None and method != b"CONNECT":
            raise StreamError(ErrorCode.PROTOCOL_ERROR, ":protocol on a request other than CONNECT")
    if cookies:
        headers.append((b"cookie", b"; ".join(cookies)))  # RFC 9113 §8.2.3
    if authority is not None and not has_host:
        headers.insert(0, (b"host", authority))
    oversized = size > settings.max_header_list_size
    return method, scheme, path, authority, protocol, headers, content_length, oversized
