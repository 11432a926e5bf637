"""Version-agnostic stream events emitted by every protocol core.

HTTP/1.1, HTTP/2 and HTTP/3 cores all speak in these, each tagged with a ``stream_id`` (HTTP/1.1 numbers its
requests 1, 2, 3 ... in arrival order), so one ASGI bridge serves every version.

The classes are slotted but not frozen: a frozen dataclass pays ``object.__setattr__`` per field on creation,
and a Request is created per request on the hot path. Treat them as immutable once emitted. The two made per
request and per body piece, ``Request`` and ``Data``, write their own ``__init__``: this module is compiled
(``zonda._compiled``), and mypyc leaves a dataclass's generated ``__init__`` to the dataclasses module, as
Python code run per event; the dataclass still gives them ``__eq__`` and ``__repr__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

from zonda.errors import ProtocolError

Headers: TypeAlias = list[tuple[bytes, bytes]]


@dataclass(slots=True, init=False)
class Request:
    """A request head. ``end_stream`` is set when the request has no body (or the whole body already came)."""

    stream_id: int
    method: bytes
    path: bytes  # the raw path, without the query string
    query_string: bytes
    headers: Headers
    http_version: str
    end_stream: bool
    keep_alive: bool  # HTTP/1.x: the connection may carry another request after this one
    expect_continue: bool
    upgrade: bytes | None  # lowercased Upgrade header token, when the client asks for one

    def __init__(
        self,
        stream_id: int,
        method: bytes,
        path: bytes,
        query_string: bytes,
        headers: Headers,
        http_version: str,
        end_stream: bool = False,
        keep_alive: bool = True,
        expect_continue: bool = False,
        upgrade: bytes | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.http_version = http_version
        self.end_stream = end_stream
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.upgrade = upgrade


@dataclass(slots=True, init=False)
class Data:
    """A piece of request body. ``end_stream`` marks the last one."""

    stream_id: int
    data: bytes
    end_stream: bool

    def __init__(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.stream_id = stream_id
        self.data = data
        self.end_stream = end_stream


@dataclass(slots=True)
class Trailers:
    """Request trailers; they end the stream."""

    stream_id: int
    headers: Headers = field(default_factory=list)


@dataclass(slots=True)
class StreamReset:
    """The peer (or a timeout) ended one stream; its app gets ``http.disconnect``."""

    stream_id: int
    reason: str = ""


@dataclass(slots=True)
class ConnectionTerminated:
    """The connection is ending: flush what the core queued; close once the core says ``closing``.

    ``error`` is set when the peer broke the protocol or a deadline passed; the core has already queued its
    answer (an error response, GOAWAY or close frame).
    """

    reason: str = ""
    error: ProtocolError | None = None


@dataclass(slots=True)
class HTTP2Preface:
    """An HTTP/1.1 connection opened with the HTTP/2 preface: ``data`` is every byte the client sent so far."""

    data: bytes


Event: TypeAlias = Request | Data | Trailers | StreamReset | ConnectionTerminated | HTTP2Preface
