"""The mailbox between a WSGI app thread and the event loop, and ``wsgi.input`` on top of it.

One ``Channel`` per request. The app thread (producer) puts response items and asks for request body; the
pump on the loop (consumer) forwards items to ``send()`` and answers with ``receive()``. Neither side holds
the channel lock while it waits: the loop awaits a future the thread resolves with
``loop.call_soon_threadsafe``; the thread blocks on a plain lock the loop releases. See ``zonda.asgi.wsgi``
for the invariants (bounded buffering, back-pressure, unwinding on disconnect).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

from zonda.asgi.types import Message, Receive, Send
from zonda.errors import ClientDisconnected

HIGH_WATER = 512 * 1024  # response body bytes queued between the app thread and the loop before it blocks
_COALESCE = 64 * 1024  # small chunks waiting together are joined into one write up to this size
ZEROCOPY = "http.response.zerocopysend"
DISCONNECT: Message = {"type": "http.disconnect"}
BODY_END = object()  # the response body is complete (close() may still be running)
_NEED_INPUT = object()  # the app thread waits for the next request body message


class _End:
    """The app thread's job ended; ``error`` is what it raised."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Channel:
    """The mailbox between one request's app thread (producer) and its pump on the loop (consumer)."""

    __slots__ = ("_input", "_input_waiter", "_items", "_lock", "_loop", "_parked", "_pending", "_waiter",
                 "buffered", "closed")  # fmt: skip

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._pending = 0  # items put and not yet fully handled by the loop
        self._waiter: asyncio.Future[None] | None = None  # the pump waits for items
        self._parked: Any = None  # a lock the app thread blocks on until the pump makes progress
        self._input_waiter: Any = None  # a lock the app thread blocks on until _input is set
        self._input: Message | None = None
        self.buffered = 0  # response body bytes put and not yet sent
        self.closed = False  # the client is gone or the pump stopped: the app thread must unwind

    # ------------------------------------------------------------ app thread side

    def _park(self) -> None:
        """Block until the pump makes progress; called and returns with ``_lock`` held."""
        parked = threading.Lock()
        parked.acquire()
        self._parked = parked
        self._lock.release()
        try:
            parked.acquire()
        finally:
            self._lock.acquire()

    def put(self, item: Any, size: int = 0) -> None:
        """Queue a response item; block while too much body is queued. Raises ClientDisconnected."""
        with self._lock:
            while self.buffered >= HIGH_WATER and not self.closed:
                self._park()
            if self.closed:
                raise ClientDisconnected("the client disconnected before the response was sent")
            self._items.append(item)
            self._pending += 1
            self.buffered += size
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)

    def receive(self) -> Message:
        """Ask the loop for the next request message and block until it comes."""
        with self._lock:
            if self.closed:
                return DISCONNECT
            answered = self._input_waiter = threading.Lock()
            answered.acquire()
            self._items.append(_NEED_INPUT)
            self._pending += 1
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)
        answered.acquire()
        with self._lock:
            message, self._input = self._input, None
        return message if message is not None else DISCONNECT

    def drain(self) -> None:
        """Block until the loop has handled everything queued so far (or the channel closed)."""
        with self._lock:
            while self._pending and not self.closed:
                self._park()

    def finish(self, error: BaseException | None) -> None:
        """The job is over. Never blocks, never raises."""
        with self._lock:
            self._items.append(_End(error))
            self._pending += 1
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self._loop.call_soon_threadsafe(_wake, waiter)

    # ------------------------------------------------------------ loop side

    async def pump(self, receive: Receive, send: Send) -> None:
        """Forward the app thread's items until its job ends; raise what the app raised."""
        lock = self._lock
        try:
            while True:
                with lock:
                    batch = self._items
                    if batch:
                        self._items = []
                    else:
                        waiter = self._waiter = self._loop.create_future()
                if not batch:
                    await waiter
                    continue
                end = await self._forward(batch, receive, send)
                if end is not None:
                    error = end.error
                    if error is None or (self.closed and isinstance(error, ClientDisconnected)):
                        return
                    if isinstance(error, Exception):
                        raise error
                    raise RuntimeError(f"the WSGI app raised {type(error).__name__}") from error
        finally:
            self.close()

    async def _forward(self, batch: list[Any], receive: Receive, send: Send) -> _End | None:
        size = 0
        count = len(batch)
        i = 0
        try:
            while i < count:
                item = batch[i]
                i += 1
                if type(item) is bytes:
                    size += len(item)
                    if i < count and type(batch[i]) is bytes and len(item) < _COALESCE:
                        parts = [item]
                        total = len(item)
                        while i < count and type(batch[i]) is bytes and total < _COALESCE:
                            parts.append(batch[i])
                            total += len(batch[i])
                            i += 1
                        size += total - len(item)
                        item = b"".join(parts)
                    last = i < count and batch[i] is BODY_END
                    i += last
                    await self._send(
                        send, {"type": "http.response.body", "body": item, "more_body": not last}
                    )
                elif type(item) is dict:
                    if item["type"] == ZEROCOPY and i < count and batch[i] is BODY_END:
                        item["more_body"] = False
                        i += 1
                    await self._send(send, item)
                elif item is BODY_END:
                    await self._send(send, {"type": "http.response.body", "body": b"", "more_body": False})
                elif item is _NEED_INPUT:
                    await self._fetch_input(receive)
                else:
                    return item  # type: ignore[no-any-return]  # an _End, always the last item
        finally:
            with self._lock:
                self.buffered -= size
                self._pending -= count
                self._unpark()
        return None

    async def _send(self, send: Send, message: Message) -> None:
        if not self.closed:
            try:
                await send(message)
            except ClientDisconnected:
                self.close()

    async def _fetch_input(self, receive: Receive) -> None:
        if self.closed:
            return
        message = await receive()
        if message.get("type") != "http.request":
            self.close()
            return
        with self._lock:
            answered, self._input_waiter = self._input_waiter, None
            self._input = message
        if answered is not None:
            answered.release()

    def _unpark(self) -> None:
        parked, self._parked = self._parked, None
        if parked is not None:
            parked.release()

    def close(self) -> None:
        """The client is gone or the pump stopped: release the app thread from any wait."""
        with self._lock:
            self.closed = True
            self._waiter = None
            self._unpark()
            answered, self._input_waiter = self._input_waiter, None
            if answered is not None:
                self._input = DISCONNECT
                answered.release()


class WSGIInput:
    """``wsgi.input``: the request body as it arrives; a read blocks the app thread until the loop delivers.

    ``read(n)`` returns ``n`` bytes unless the body ends first. At most one body message is held besides what
    the caller asked for. A client that disconnects mid-body makes reads raise ``ClientDisconnected``.
    """

    __slots__ = ("_buf", "_channel", "_more", "_pos")

    def __init__(self, channel: Channel | None, first: Message | None = None, more: bool = True) -> None:
        self._channel = channel
        self._buf = b""
        self._pos = 0
        self._more = more and channel is not None
        if first is not None:
            self._buf = first.get("body", b"")
            self._more = bool(first.get("more_body", False))

    def _next_chunk(self) -> bytes | None:
        """The next non-empty piece of body, or None at its end. Raises ClientDisconnected."""
        while self._more:
            assert self._channel is not None
            message = self._channel.receive()
            if message["type"] != "http.request":
                self._more = False
                raise ClientDisconnected("the client disconnected before the request body was complete")
            self._more = bool(message.get("more_body", False))
            body: bytes = message.get("body", b"")
            if body:
                return body
        return None

    def _take_rest(self) -> list[bytes]:
        rest = self._buf[self._pos :]
        self._buf = b""
        self._pos = 0
        return [rest] if rest else []

    def read(self, size: int | None = -1) -> bytes:
        buf, pos = self._buf, self._pos
        if size is not None and size >= 0 and pos + size <= len(buf):
            self._pos = pos + size
            return buf[pos : pos + size]
        parts = self._take_rest()
        need = -1 if size is None or size < 0 else size - (len(buf) - pos)
        while need != 0:
            chunk = self._next_chunk()
            if chunk is None:
                break
            if 0 <= need < len(chunk):
                parts.append(chunk[:need])
                self._buf, self._pos = chunk, need
                break
            parts.append(chunk)
            if need > 0:
                need -= len(chunk)
        return b"".join(parts)

    def readline(self, size: int | None = -1) -> bytes:
        buf, pos = self._buf, self._pos
        limit = -1 if size is None or size < 0 else size
        end = len(buf) if limit < 0 else min(len(buf), pos + limit)
        newline = buf.find(b"\n", pos, end)
        if newline >= 0 or end < len(buf):
            self._pos = newline + 1 if newline >= 0 else end
            return buf[pos : self._pos]
        parts = self._take_rest()
        got = len(buf) - pos
        while limit < 0 or got < limit:
            chunk = self._next_chunk()
            if chunk is None:
                break
            room = len(chunk) if limit < 0 else min(len(chunk), limit - got)
            newline = chunk.find(b"\n", 0, room)
            take = newline + 1 if newline >= 0 else room
            parts.append(chunk[:take] if take < len(chunk) else chunk)
            got += take
            if take < len(chunk):
                self._buf, self._pos = chunk, take
            if newline >= 0:
                break
        return b"".join(parts)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class NoBody:
    """``wsgi.input`` for a request without a body."""

    __slots__ = ()

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())


NO_BODY = NoBody()
