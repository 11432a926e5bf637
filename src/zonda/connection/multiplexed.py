"""What an HTTP/2 and an HTTP/3 connection share above their cores: a read's (a datagram's, a timer's) events go
to the connection's one session with their output batched, DATA on accepted WebSocket streams to their channels,
and apps waiting to send on a stream are woken when it can take more or is gone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zonda.connection.streams import route_websockets
from zonda.protocols.events import Event, StreamReset

if TYPE_CHECKING:
    from zonda.asgi.session import HTTPSession
    from zonda.connection.streams import WebSocketChannel
    from zonda.io.base import Loop, Waiter


class StreamDispatch:
    """A mixin for ``HTTP2Connection`` and ``HTTP3Connection``; see the module docstring."""

    loop: Loop
    session: HTTPSession
    websockets: dict[int, WebSocketChannel]
    batching: bool
    _flush_queued: bool  # a _flush_now is queued on the loop
    _stream_waiters: dict[int, Waiter]

    def _flush_now(self) -> None:
        """Hand the core's output to the socket (HTTP/2's one write, HTTP/3's round of packets)."""
        raise NotImplementedError

    def _flush_soon(self) -> None:
        """Apps answering a read's requests run as tasks that read queued: their output goes out once all of
        them have had their turn (the loop's ready queue runs before this callback), on the same loop turn, in
        one write (HTTP/2) or as few packets as fit (HTTP/3) instead of one a response."""
        if not self._flush_queued:
            self._flush_queued = True
            self.loop.call_soon(self._flush_now)

    def _dispatch(self, events: list[Event], unblocked: list[int]) -> bool:
        """Hand ``events`` on; wake the senders of reset streams and of ``unblocked`` ones (cleared). Returns
        whether the connection terminated (the last event is ``ConnectionTerminated``)."""
        terminated = False
        if events:
            self.batching = True  # the apps' output waits for one write (or one round of datagrams)
            try:
                if self.websockets:
                    events = route_websockets(self.websockets, events)
                terminated = self.session.handle_events(events)
            finally:
                self.batching = False
            if self._stream_waiters:
                for event in events:
                    if type(event) is StreamReset:
                        self._wake(event.stream_id)
        if unblocked:
            for stream_id in unblocked:
                self._wake(stream_id)
            unblocked.clear()
        return terminated

    def _stream_waiter(self, stream_id: int, ready: bool) -> Waiter:
        """A waiter the stream's sender awaits: done now if ``ready``, else once the stream can send or is gone
        (a newer wait on the same stream releases the older)."""
        waiter = self.loop.create_waiter()
        if ready:
            waiter.set_result(None)
        else:
            previous = self._stream_waiters.get(stream_id)
            if previous is not None and not previous.done():
                previous.set_result(None)
            self._stream_waiters[stream_id] = waiter
        return waiter

    def _wake(self, stream_id: int) -> None:
        waiter = self._stream_waiters.pop(stream_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_all(self) -> None:
        for stream_id in list(self._stream_waiters):
            self._wake(stream_id)
