"""The seams between the ASGI bridge and the connection layer.

What a connection hands the bridge: its ``Transport`` (and the ``Core`` behind it), ``StreamChannels`` when it
multiplexes streams, ``UpgradableConnection`` when it can become a WebSocket or HTTP/2; what the session asks of
a request's run (``Cycle``); and ``ConnectionInfo``, the scope fields fixed for a connection's lifetime. Only
types live here, so the connection layer and the bridge can both name them without importing each other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from zonda.asgi.types import Scope
from zonda.protocols.events import Request

if TYPE_CHECKING:
    from zonda.asgi.websocket import StreamTunnel, WebSocketCycle
    from zonda.io.base import Waiter
    from zonda.protocols.websocket import WSConnection


class Core(Protocol):
    """The response side of a protocol core, as the bridge uses it."""

    closing: bool

    def send_response(self, stream_id: int, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None: ...
    def send_body(self, stream_id: int, data: bytes, end_stream: bool) -> None: ...
    def send_continue(self, stream_id: int) -> None: ...
    def send_early_hint(self, stream_id: int, links: Iterable[bytes]) -> None:
        """A 103 with these ``link`` fields, if the final head has not gone out (else nothing)."""
        ...

    def send_trailers(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """End the response with trailer fields, or without them where its framing cannot carry them."""
        ...

    def send_file(self, stream_id: int, count: int, end_stream: bool) -> int: ...
    def file_sent(self, stream_id: int, count: int, end_stream: bool) -> None: ...
    def accept_upgrade(self, stream_id: int, headers: Iterable[tuple[bytes, bytes]]) -> bytes: ...
    def push(
        self,
        stream_id: int,
        path: bytes,
        headers: Iterable[tuple[bytes, bytes]],
        scheme: bytes,
        authority: bytes,
    ) -> Request | None:
        """Promise a pushed response (``http.response.push``): the request its app is to answer, or None where the
        promise cannot be made (the peer refused push, too many open, or a protocol without push)."""
        ...


class Transport(Protocol):
    """What the connection layer (``zonda.connection``) gives the bridge for one connection or stream."""

    @property
    def write_paused(self) -> bool: ...

    @property
    def core(self) -> Core: ...

    def flush(self) -> None: ...
    def drain(self) -> Waiter: ...
    def send_file(self, file: BinaryIO, offset: int, count: int) -> Awaitable[int]:
        """Flush, then send ``count`` bytes of ``file`` from ``offset``; return how many went (fewer: EOF)."""
        ...

    def create_waiter(self) -> Waiter: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None: ...
    def response_complete(self) -> None: ...
    def abort(self) -> None: ...
    def time(self) -> float: ...
    def rearm(self) -> None: ...


class WebSocketTransport(Transport, Protocol):
    """A transport that can carry a WebSocket once the app accepts it."""

    def upgrade(
        self,
        stream_id: int,
        headers: Iterable[tuple[bytes, bytes]],
        core: WSConnection,
        handler: WebSocketCycle,
    ) -> None:
        """Accept a WebSocket: ``core`` parses the connection's (or stream's) bytes from now on, ``handler``
        gets its events."""
        ...


class UpgradableConnection(WebSocketTransport, Protocol):
    """A connection that is its requests' transport and can become something else (HTTP/1.1)."""

    def upgrade_h2c(self, request: Request) -> None:
        """Answer ``Upgrade: h2c`` with 101 and go on over HTTP/2."""
        ...


class StreamChannels(Protocol):
    """A multiplexed connection (HTTP/2): every stream has its own transport."""

    def channel(self, stream_id: int) -> Transport: ...
    def websocket_channel(self, stream_id: int) -> StreamTunnel:
        """The transport of an extended CONNECT's WebSocket (RFC 8441)."""
        ...


class Cycle(Protocol):
    """One request's app run, HTTP or WebSocket, as the session drives it."""

    stream_id: int
    started_at: float

    def run(self) -> Coroutine[Any, Any, None]: ...
    def on_data(self, data: bytes, end_stream: bool) -> None: ...
    def on_disconnect(self) -> None: ...


class ConnectionInfo:
    """Scope fields fixed for the connection's lifetime, computed once when it opens (a PROXY protocol header
    may still change them before the first request; not after: its scope template is made then)."""

    __slots__ = ("client", "extensions", "rewrite", "root_path", "scheme", "scope_template", "server")

    def __init__(
        self,
        client: tuple[str, int] | None,
        server: tuple[str, int | None] | None,
        scheme: str,
        root_path: str,
    ) -> None:
        self.client = client
        self.server = server
        self.scheme = scheme
        self.root_path = root_path
        self.extensions: dict[str, Any] = {}
        # Per-request scope work decided once per connection (zonda.proxy: forwarded headers from a trusted
        # peer, request ids); None, the usual case, costs nothing per request.
        self.rewrite: Callable[[Scope], None] | None = None
        self.scope_template: dict[str, Any] | None = None

    def make_scope_template(self) -> dict[str, Any]:
        """The HTTP scope's keys in order, with this connection's values; ``build_scope`` fills the rest."""
        template = self.scope_template = {
            "type": "http",
            "asgi": None,
            "http_version": None,
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": None,
            "root_path": self.root_path,
            "path": None,
            "raw_path": None,
            "query_string": None,
            "headers": None,
            "state": None,
            "extensions": None,
        }
        return template
