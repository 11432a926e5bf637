"""What every connection does between a driver's byte stream and the bridge, whatever its protocol.

A ``Connection`` is the stream's protocol object (``io.base.StreamProtocol``: the driver calls
``data_received`` and the rest on it) and the bridge's transport (``asgi.seams.Transport``). It owns the
write-pause state and its drain waiters, the one timer that follows the core's deadline, closing, and the file
sending the bridge asks for. Subclasses add a protocol: ``HTTP1Connection``, ``HTTP2Connection``. Nothing here
knows the event loop: time, timers, waiters and tasks come from the server's ``io.base.Loop``.

Byte counts (``zonda_bytes_total``, with metrics on: ``ServerShared.count_bytes``): the cores count what they
are fed and hand out; a connection adds what it reads or writes past them (a file's bytes, a PROXY header, an
error written without a core) and answers for the sum (``byte_counts``), which moves to the server's totals when
the connection ends (``ServerShared.bytes_in``). No wrapper counts per read or write; with metrics off the cores
test one flag per read and per flush.

Slow readers (``--timeout-write``): while the connection waits on its client to take bytes (writing paused, a
file going out by ``os.sendfile``, or a close with bytes still buffered), the same timer checks every
``timeout_write`` seconds that the client took some since the last look: writing resumed, the file sender moved
on, or the bytes it has not taken (``Loop.unacknowledged``: the stream's buffer and the kernel's send queue)
went down. If not, the connection is aborted and its apps get ``http.disconnect``. Nothing is measured per
write: the driver and the kernel keep those counts anyway, and a look happens only when the timer fires.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from zonda.connection.log import log_closed
from zonda.connection.timer import DeadlineTimer
from zonda.errors import ClientDisconnected
from zonda.io.base import ByteStream, FileSender, Loop, Waiter
from zonda.logging import describe_peer

if TYPE_CHECKING:
    from zonda.asgi.session import HTTPSession
    from zonda.connection.shared import ServerShared


class ActiveCore(Protocol):
    """The sans-io core that reads a connection now (HTTP/1.1's, or a WebSocket's after an upgrade)."""

    closing: bool  # the last bytes are queued: flush, then close
    deadline: float | None
    bytes_received: int  # every byte fed and handed out (Connection.byte_counts)
    bytes_sent: int

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
error_log = logging.getLogger("zonda.error")


class LostStream:
    """What a connection holds instead of its driver's stream once that stream is lost or handed over: closed,
    it takes no bytes and holds nothing. A connection and its session refer to each other (and the connection
    to its timer, through its callback), so the connection is freed only by the cyclic garbage collector, which
    seldom looks at objects that lived through a few collections; the driver's stream must not wait with it (a
    TLS stream holds the TLS state and, on asyncio and uvloop, 256 KiB of buffers)."""

    __slots__ = ()

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def is_closing(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default  # asyncio's Loop.unacknowledged asks for the socket: there is none

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol: object) -> None:
        pass


LOST_STREAM: ByteStream = LostStream()


class Connection:
    """The plumbing every protocol's connection shares; see the module docstring."""

    protocol_label = "http1"  # zonda_connections_open{protocol}; "websocket" once upgraded

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
        self.timer = DeadlineTimer(loop, self._on_timer)
        self._closed = False
        self.direct_in = 0  # bytes read and written past the cores (module docstring)
        self.direct_out = 0
        self._bytes_published = False
        self.plaintext = True  # no TLS on the socket: files may go by os.sendfile
        self._files: FileSender | None = None
        self._sending_file = False
        # --timeout-write: when writing is next checked for progress (None: not waiting on the client), and
        # what progress was as of the last look (the bytes the client has not taken, the file bytes sent, how
        # many times writing resumed: the app may have written more meanwhile, so the bytes alone can rise)
        self._write_check: float | None = None
        self._write_unsent = 0
        self._write_file_sent = 0
        self._write_resumes = 0
        self._write_resumes_seen = 0
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
        self.publish_bytes()
        self.timer.cancel()
        if self.handler is not None:
            self.handler.connection_lost()
        self._wake_drain_waiters()
        self.let_go_of_stream()

    def let_go_of_stream(self) -> None:
        """The driver's stream is gone (or another connection object has it): drop it, and the file sender
        writing to it (see ``LostStream``)."""
        self.stream = self.raw_stream = LOST_STREAM
        self._files = None

    def byte_counts(self) -> tuple[int, int]:
        """The bytes read and written on this connection so far: its cores' counts and its own."""
        raise NotImplementedError

    def publish_bytes(self) -> None:
        """This object is done with the connection (closed, or handed to another object after leaving
        ``shared.connections``): its counts move to the server's totals, once."""
        shared = self.shared
        if self._bytes_published or not shared.count_bytes:
            return
        self._bytes_published = True
        received, sent = self.byte_counts()
        shared.bytes_in += received
        shared.bytes_out += sent

    def pause_writing(self) -> None:
        self.write_paused = True
        self._watch_writes()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._write_resumes += 1  # the client took bytes (only after a pause, not per write)
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
            stream = self.stream
            # asked before close(): a closed TLS transport of asyncio's may not answer (closed twice, it drops
            # its protocol), and one the peer already closed has nothing to flush
            flushing = not stream.is_closing() and stream.get_write_buffer_size()
            stream.close()
            if flushing:
                self._watch_writes()  # the stream flushes before it closes: bounded too, if the client stops

    def _arm_if_earlier(self) -> None:
        if not self._closed:
            self.timer.arm(self.core_deadline())

    def core_deadline(self) -> float | None:
        raise NotImplementedError

    def _on_timer(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ slow readers (--timeout-write)

    def _watch_writes(self) -> None:
        """The connection now waits on its client to take bytes: check it makes progress (module docstring)."""
        timeout = self.shared.timeout_write
        if self._write_check is None and timeout:
            self._note_write_progress()
            self._write_check = self.loop.time() + timeout
            self.timer.arm(self._write_check)

    def _note_write_progress(self) -> None:
        self._write_unsent = self.loop.unacknowledged(self.raw_stream)
        files = self._files
        self._write_file_sent = files.bytes_sent if files is not None else 0
        self._write_resumes_seen = self._write_resumes

    def _waiting_on_client(self) -> bool:
        """Writing waits for the client to read: paused, or a file going out by ``os.sendfile`` (a file read
        in blocks waits on the disk between them: its writes pause the stream like any others), or closing
        with bytes still to flush."""
        if self.write_paused or (self._sending_file and self._files is not None and self._files.os_sendfile):
            return True
        return self._closed and self.loop.unacknowledged(self.raw_stream) > 0

    def _writes_stalled(self, now: float) -> bool:
        """Called first when the timer fires: whether the client took nothing for ``timeout_write`` seconds
        (then the connection is aborted and logged, and the caller does nothing more)."""
        check = self._write_check
        if check is None:
            return False
        if now < check:
            self.timer.arm(check)  # the timer fired for the core's deadline: keep this check armed too
            return False
        if not self._waiting_on_client():
            self._write_check = None
            return False
        unsent, file_sent, resumes = self._write_unsent, self._write_file_sent, self._write_resumes_seen
        self._note_write_progress()
        if self._write_unsent < unsent or self._write_file_sent > file_sent or self._write_resumes > resumes:
            self._write_check = now + self.shared.timeout_write
            self.timer.arm(self._write_check)
            return False
        self._write_check = None
        self._abort_slow_reader(now)
        return True

    def _abort_slow_reader(self, now: float) -> None:
        shared = self.shared
        shared.rejections["WriteTimeout"] = shared.rejections.get("WriteTimeout", 0) + 1
        shared.rejection_log.log(
            now,
            "write timeout",
            error_log,
            logging.INFO,
            "Closing connection from %s: it took no response bytes for %gs (--timeout-write), %d left unsent",
            describe_peer(self.session.info.client) if self.session is not None else "client",
            shared.timeout_write,
            self._write_unsent,
        )
        self.abort()

    # ------------------------------------------------------------ files (pathsend, zerocopysend)

    def _queued_output(self) -> bytes:
        """What the core has queued (a response head, a chunk-size line): it goes before a file's bytes."""
        raise NotImplementedError

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
            self.direct_out += len(data)  # the head was counted by the core that queued it
            return len(data)
        self.flush()
        if self._closed or self.stream.is_closing():
            raise ClientDisconnected("client disconnected before the file could be sent")
        if self._files is None:
            self._files = self.loop.file_sender(self.raw_stream, self.plaintext, self)
        self._sending_file = True
        self._watch_writes()
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
        finally:
            self._sending_file = False
        self.direct_out += sent  # the file's bytes never pass through the core
        return sent
