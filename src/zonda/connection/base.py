"""What every connection does between a driver's byte stream and the bridge, whatever its protocol.

A ``Connection`` is the stream's protocol object (``io.base.StreamProtocol``: the driver calls
``data_received`` and the rest on it) and the bridge's transport (``asgi.http.Transport``). It owns the
write-pause state and its drain waiters, the one timer that follows the core's deadline, closing, and the file
sending the bridge asks for. Subclasses add a protocol: ``HTTP1Connection``, ``HTTP2Connection``. Nothing here
knows the event loop: time, timers, waiters and tasks come from the server's ``io.base.Loop``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from zonda.asgi._files import PATHSEND, ZEROCOPYSEND
from zonda.connection.log import log_closed
from zonda.connection.timer import DeadlineTimer
from zonda.errors import ClientDisconnected
from zonda.io.base import ByteStream, FileSender, Loop, Waiter

if TYPE_CHECKING:
    from zonda.asgi.http import ConnectionInfo, HTTPSession
    from zonda.connection.shared import ServerShared


class ActiveCore(Protocol):
    """The sans-io core that reads a connection now (HTTP/1.1's, or a WebSocket's after an upgrade)."""

    closing: bool  # the last bytes are queued: flush, then close
    deadline: float | None

    def receive_data(self, data: bytes) -> list[Any]: ...
    def data_to_send(self) -> bytes: ...
    def handle_timer(self, now: float) -> list[Any]: ...
    def set_reading_paused(self, paused: bool) -> None: ...
    def finish_and_close(self) -> None: ...


class EventHandler(Protocol):
    """Who takes a core's events: an ``HTTPSession``, or a ``WebSocketCycle`` once accepted."""

    def handle_events(self, events: list[Any]) -> bool:
        """Returns whether the connection terminated (the last event is ``ConnectionTerminated``)."""
        ...

    def connection_lost(self) -> None: ...


SMALL_FILE = 16 * 1024  # at most this many bytes: read on the loop thread, written with the head


class Connection:
    """The plumbing every protocol's connection shares; see the module docstring."""

    protocol_label = "http1"  # zonda_connections_open{protocol}

    def __init__(self, shared: ServerShared, loop: Loop) -> None:
        self.shared = shared
        self.loop = loop
        self.stream: ByteStream = None  # type: ignore[assignment]  # set when the connection opens
        self.raw_stream: ByteStream = None  # type: ignore[assignment]  # the driver's, if ``stream`` wraps it
        self.session: HTTPSession = None  # type: ignore[assignment]
        self.handler: EventHandler | None = None  # gets the core's events: the session, or a WebSocket cycle
        self.write_paused = False
        self.reading_paused = False
        self._drain_waiters: list[Waiter] = []
        self.timer = DeadlineTimer(loop.call_at, self._on_timer)
        self._closed = False
        self._files: FileSender | None = None
        # the bridge's spawn() is the loop's own: one call less per request
        self.spawn: Callable[[Coroutine[Any, Any, None]], None] = loop.spawn

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------ the stream's callbacks

    def eof_received(self) -> bool | None:
        # A peer's EOF is taken as a disconnect (as uvicorn does): a half-closed client cannot be told apart
        # from a gone one, and apps waiting on receive() need their http.disconnect promptly.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.shared.log_connections and self.session is not None:
            log_closed(self, exc)
        self._closed = True
        if self._files is not None:
            self._files.cancel()
        self.shared.connections.discard(self)
        self.timer.cancel()
        if self.handler is not None:
            self.handler.connection_lost()
        self._wake_drain_waiters()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_drain_waiters()

    def _wake_drain_waiters(self) -> None:
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # ------------------------------------------------------------ the bridge's transport

    def drain(self) -> Waiter:
        waiter = self.loop.create_waiter()
        if self._closed or not self.write_paused:
            waiter.set_result(None)
        else:
            self._drain_waiters.append(waiter)
        return waiter

    def create_waiter(self) -> Waiter:
        return self.loop.create_waiter()

    def time(self) -> float:
        return self.loop.time()

    def abort(self) -> None:
        self._closed = True
        self.stream.abort()

    def rearm(self) -> None:
        """The core's deadline moved earlier outside a read or a timer (a close frame sent): arm for it."""
        self._arm_if_earlier()

    def flush(self) -> None:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Graceful shutdown: finish what was received (GOAWAY, Going Away), then close."""
        raise NotImplementedError

    def stop_streaming(self) -> int:
        """Later in a graceful shutdown (``--shutdown-stream-notice``): ``http.disconnect`` to the responses
        still streaming with their request read whole, so their apps end them cleanly; returns how many."""
        raise NotImplementedError

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self.stream.close()

    def _arm_if_earlier(self) -> None:
        if not self._closed:
            self.timer.arm(self.core_deadline())

    def core_deadline(self) -> float | None:
        raise NotImplementedError

    def _on_timer(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ files (pathsend, zerocopysend)

    def _offer_files(self, info: ConnectionInfo) -> None:
        """pathsend on every connection; zerocopysend only where os.sendfile reaches the socket (not TLS)."""
        info.extensions[PATHSEND] = {}
        if info.scheme == "http" and "tls" not in info.extensions:
            info.extensions[ZEROCOPYSEND] = {}

    def _queued_output(self) -> bytes:
        """What the core has queued (a response head, a chunk-size line): it goes before a file's bytes."""
        raise NotImplementedError

    def _count_out(self, sent: int) -> None:
        """A file's bytes, which the driver's file sender wrote past ``stream``; ``connection.observed`` counts them."""

    async def send_file(self, file: BinaryIO, offset: int, count: int) -> int:
        """The core's queued bytes, then ``count`` bytes of ``file`` from ``offset``; return how many went
        (fewer: the file ended). Raises ClientDisconnected if the peer goes; aborts on any failure."""
        fd = file.fileno()
        if count <= SMALL_FILE:
            data = os.pread(fd, count, offset)  # a few KiB, page-cached as a rule: cheaper than any hand-off
            head = self._queued_output()
            if self._closed or self.stream.is_closing():
                raise ClientDisconnected("client disconnected before the file could be sent")
            self.stream.write(head + data if head else data)  # one write with the head
            return len(data)
        self.flush()
        if self._closed or self.stream.is_closing():
            raise ClientDisconnected("client disconnected before the file could be sent")
        if self._files is None:
            plaintext = ZEROCOPYSEND in self.session.info.extensions
            self._files = self.loop.file_sender(self.raw_stream, plaintext, self)
        try:
            sent = await self._files.send(fd, offset, count)
        except ClientDisconnected:
            self.abort()
            raise
        except ConnectionError as exc:  # EPIPE, ECONNRESET, ENOTCONN from the socket
            self.abort()
            raise ClientDisconnected("client disconnected while a file was being sent") from exc
        except OSError:  # the file's side (EIO ...): the response cannot be completed
            self.abort()
            raise
        self._count_out(sent)  # the sender writes to the driver's own stream, past any counting one
        return sent
