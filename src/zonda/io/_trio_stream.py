"""One connection's bytes on trio: the ``io.base.ByteStream`` over a ``trio.SocketStream`` or ``trio.SSLStream``.

Each connection has two trio tasks. The reader (``read``) calls the current protocol's ``data_received`` with
what it reads, waiting while reading is paused; the writer (``write_loop``) sends what ``write`` queued and is
the one that ends the connection: on ``close()`` it flushes first, on ``abort()`` or an error it does not; then
it closes the socket, stops the reader, and calls the protocol's ``connection_lost`` (exactly once).

On plaintext, ``write`` sends at once with one non-blocking ``os.write`` while nothing is queued (the common
case: a response fits the socket buffer), so a response costs no wake-up of the writer task; what does not fit
is queued for the writer. TLS writes always go through the writer (``SSLStream.send_all`` is async).

Back-pressure as asyncio's transports do it: above ``HIGH_WATER`` queued bytes the protocol's
``pause_writing`` is called, and ``resume_writing`` once the queue is down to ``LOW_WATER``. The queue's size
(``get_write_buffer_size``) goes down as the kernel takes the bytes, not once a whole batch is sent: on
plaintext after each ``os.write``, on TLS after each ``TLS_PIECE``; the connection watches it fall to tell a
slow reader from one that reads nothing (``--timeout-write``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, cast

import trio
from trio.lowlevel import wait_readable, wait_writable

from zonda.errors import ClientDisconnected
from zonda.io._shared import STEP, TLS_CLOSE_TIMEOUT, kernel_unacknowledged, send_in_blocks
from zonda.io._trio_waiter import TrioWaiter

if TYPE_CHECKING:
    from zonda.io.base import ByteStream, FileDrain, StreamProtocol

error_log = logging.getLogger("zonda.error")

HIGH_WATER = 64 * 1024  # asyncio's default write-buffer limits
LOW_WATER = HIGH_WATER // 4
# Most bytes per read. Not asyncio's 256 KiB: a bytes object of that size is past glibc's mmap threshold
# (128 KiB until a large block is freed whole), so every read would mmap and shrink a block (~15-20 us per
# read measured, per request or WebSocket message); 64 KiB comes from the heap.
READ_SIZE = 64 * 1024
DIRECT_WRITES = sys.platform != "win32"  # os.write on a socket's descriptor: POSIX only
TLS_PIECE = 16 * 1024  # bytes per SSLStream.send_all (one TLS record's worth): the queue goes down by these


def _cause(exc: BaseException) -> Exception:
    """The OSError behind trio's ``BrokenResourceError`` (what asyncio would pass to ``connection_lost``)."""
    cause = exc.__cause__
    if isinstance(cause, Exception):
        return cause
    return exc if isinstance(exc, Exception) else ConnectionError(str(exc))


class TrioStream:
    """See the module docstring. ``protocol`` is looked up at every read: ``set_protocol`` switches it."""

    __slots__ = (
        "_aborted",
        "_buffer",
        "_buffered",
        "_closing",
        "_error",
        "_fd",
        "_flushed_waiter",
        "_held",
        "_lost",
        "_read_scope",
        "_reader_waiter",
        "_reading_paused",
        "_send_scope",
        "_sending",
        "_socket",
        "_stream",
        "_write_paused",
        "_writer_waiter",
        "protocol",
    )

    def __init__(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]) -> None:
        self._stream = stream
        tls = isinstance(stream, trio.SSLStream)
        self._socket = stream.transport_stream.socket if tls else stream.socket  # type: ignore[union-attr]
        # >= 0: writes go straight to this descriptor while nothing is queued (plaintext only)
        self._fd = -1 if tls or not DIRECT_WRITES else self._socket.fileno()
        self.protocol: StreamProtocol = None  # type: ignore[assignment]  # set before the first read
        self._buffer: list[bytes] = []
        self._buffered = 0  # bytes queued or being sent by the writer
        self._sending = False  # the writer is inside send_all
        self._write_paused = False
        self._reading_paused = False
        self._closing = False  # close() or abort() called, or the connection failed: no more reads or writes
        self._aborted = False  # end without flushing
        self._lost = False  # connection_lost was called
        self._error: Exception | None = None
        self._read_scope = trio.CancelScope()
        self._send_scope = trio.CancelScope()
        self._reader_waiter: TrioWaiter | None = None  # the reader, parked while reading is paused
        self._writer_waiter: TrioWaiter | None = None  # the writer, parked with nothing to send
        self._held = False  # a file is being sent past the writer (os.sendfile): writes queue meanwhile
        self._flushed_waiter: TrioWaiter | None = None  # wait_flushed(), until nothing is queued

    # ------------------------------------------------------------ io.base.ByteStream

    def write(self, data: bytes) -> None:
        if self._closing or not data:
            return  # asyncio drops writes after close() as well (and warns after a few)
        if self._fd >= 0 and not self._buffer and not self._sending and not self._held:
            try:
                sent = os.write(self._fd, data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._fail(exc)
                return
            if sent == len(data):
                return
            data = data[sent:]
        self._buffer.append(data)
        self._buffered += len(data)
        self._wake_writer()
        if self._buffered > HIGH_WATER and not self._write_paused:
            self._write_paused = True
            self._call_protocol("pause_writing")

    def close(self) -> None:
        """Send what is queued, then close."""
        if not self._closing:
            self._closing = True
            self._wake_writer()

    def abort(self) -> None:
        """Close now; what is queued is dropped."""
        if not self._aborted:
            self._closing = self._aborted = True
            self._send_scope.cancel()
            self._wake_writer()

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self._reading_paused = True

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            waiter = self._reader_waiter
            if waiter is not None:
                self._reader_waiter = None
                waiter.set_result(None)

    def set_protocol(self, protocol: StreamProtocol) -> None:
        self.protocol = protocol

    # ------------------------------------------------------------ for the file sender

    @property
    def fd(self) -> int:
        """The socket's descriptor on plaintext (POSIX); -1 on TLS."""
        return self._fd

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet handed to the kernel (asyncio's transports name it so)."""
        return self._buffered

    def unacknowledged(self) -> int:
        """Those and the bytes in the kernel's send queue the peer has not acknowledged (``Loop.unacknowledged``)."""
        return self._buffered + kernel_unacknowledged(self._socket.fileno())

    async def wait_flushed(self) -> None:
        """Wait until everything written is in the kernel (or the stream is closing)."""
        while (self._buffer or self._sending) and not self._closing:
            waiter = self._flushed_waiter = TrioWaiter()
            await waiter

    def hold(self, held: bool) -> None:
        """While held, writes queue and the writer waits: the socket is another's (``os.sendfile``)."""
        self._held = held
        if not held and (self._buffer or self._closing):
            self._wake_writer()

    # ------------------------------------------------------------ the tasks

    async def read(self) -> None:
        """The reader task: feed the protocol until EOF, an error, or the end of the connection."""
        receive = self._receive_direct if self._fd >= 0 else self._receive_stream
        try:
            with self._read_scope:
                while not self._closing:
                    while self._reading_paused:
                        waiter = self._reader_waiter = TrioWaiter()
                        await waiter
                    data = await receive()
                    if data is None:
                        continue  # reading was paused while the socket was awaited
                    if self._closing:
                        break  # close() or abort() while the read was under way: asyncio reads no more either
                    if not data:
                        self._eof()
                        if (
                            self._closing
                            and self._fd >= 0
                            and not (self._buffer or self._sending or self._held)
                        ):
                            self._close_and_report()  # nothing to flush: lost now, not a writer's turn later
                        break
                    self.protocol.data_received(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            if not self._closing:
                self._fail(_cause(exc))
        except OSError as exc:
            if not self._closing:
                self._fail(exc)
        except Exception as exc:  # a bug above the seam: this connection ends, not the server
            error_log.exception("Error in a connection's data_received; closing it")
            self._fail(exc)

    async def _receive_direct(self) -> bytes | None:
        """Plaintext: wait until the socket is readable, then one ``os.read`` (None: reading was paused
        meanwhile, nothing read). ``SocketStream.receive_some`` tries the read first and yields to the
        scheduler either way: a ``recv`` that finds nothing and a scheduler pass more per request, ~20% more
        server CPU per hello request."""
        fd = self._fd
        while True:
            await wait_readable(fd)
            if self._closing:  # closed while this task was already rescheduled: the fd may be another's now
                raise trio.ClosedResourceError("the stream was closed")
            if self._reading_paused:
                return None
            try:
                return os.read(fd, READ_SIZE)
            except BlockingIOError:
                continue

    async def _receive_stream(self) -> bytes:
        return bytes(await self._stream.receive_some(READ_SIZE))  # SSLObject.read gives bytes: no copy

    def _eof(self) -> None:
        keep_open = False
        try:
            keep_open = bool(self.protocol.eof_received())
        except Exception as exc:
            error_log.exception("Error in a connection's eof_received; closing it")
            self._fail(exc)
            return
        if not keep_open:
            self.close()

    async def write_loop(self) -> None:
        """The writer task: send what is queued; once closing, close the socket and report the loss."""
        try:
            while True:
                if self._aborted or self._held or not self._buffer:
                    if self._aborted or (self._closing and not self._held and not self._buffer):
                        break
                    flushed = self._flushed_waiter
                    if flushed is not None and not self._buffer:
                        self._flushed_waiter = None
                        flushed.set_result(None)
                    waiter = self._writer_waiter = TrioWaiter()
                    await waiter
                    continue
                data = b"".join(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
                self._buffer.clear()
                self._sending = True
                try:
                    with trio.CancelScope() as self._send_scope:  # abort() cancels a send under way
                        if self._fd >= 0:
                            await self._send_direct(data)
                        else:
                            await self._send_stream(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    self._fail(_cause(exc))
                    break
                except OSError as exc:  # os.write: the peer reset, or the pipe broke
                    self._fail(exc)
                    break
                except Exception as exc:  # a bug: this connection ends, not the server
                    error_log.exception("Error sending on a connection; closing it")
                    self._fail(exc)
                    break
                finally:
                    self._sending = False
        finally:
            await self._finish()

    async def _send_direct(self, data: bytes) -> None:
        """Plaintext: ``os.write`` what the socket takes, then wait until it takes more."""
        fd = self._fd
        view = memoryview(data)
        while view:
            try:
                sent = os.write(fd, view)
            except BlockingIOError:
                await wait_writable(fd)
                continue
            view = view[sent:]
            self._taken(sent)

    async def _send_stream(self, data: bytes) -> None:
        """TLS: ``send_all`` in pieces, so that the queue goes down as they go out."""
        if len(data) <= TLS_PIECE:
            await self._stream.send_all(data)
            self._taken(len(data))
            return
        view = memoryview(data)
        for start in range(0, len(data), TLS_PIECE):
            piece = view[start : start + TLS_PIECE]
            await self._stream.send_all(piece)
            self._taken(len(piece))

    def _taken(self, count: int) -> None:
        """The kernel took ``count`` queued bytes."""
        self._buffered -= count
        if self._write_paused and self._buffered <= LOW_WATER:
            self._write_paused = False
            self._call_protocol("resume_writing")

    async def _finish(self) -> None:
        self._closing = True
        self._read_scope.cancel()
        stream = self._stream
        if isinstance(stream, trio.SSLStream) and not (self._aborted or self._lost) and self._error is None:
            with trio.move_on_after(TLS_CLOSE_TIMEOUT) as scope:
                scope.shield = True  # also when the server's tasks are being cancelled: a bounded goodbye
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    await stream.aclose()  # close_notify, then the socket
        self._close_and_report()

    def _close_and_report(self) -> None:
        """Close the socket and call ``connection_lost``, once; the writer, woken, then ends."""
        self._closing = True
        flushed = self._flushed_waiter
        if flushed is not None:
            self._flushed_waiter = None
            flushed.set_result(None)
        self._buffer.clear()
        self._buffered = 0
        self._socket.close()
        if not self._lost:
            self._lost = True
            self._wake_writer()
            try:
                self.protocol.connection_lost(self._error)
            except Exception:
                error_log.exception("Error in a connection's connection_lost")

    # ------------------------------------------------------------ internals

    def _fail(self, exc: Exception) -> None:
        """The connection broke: end it without flushing; ``connection_lost`` gets ``exc``."""
        if self._error is None and not self._lost:
            self._error = exc
        self.abort()

    def _wake_writer(self) -> None:
        waiter = self._writer_waiter
        if waiter is not None:
            self._writer_waiter = None
            waiter.set_result(None)

    def _call_protocol(self, name: str) -> None:
        try:
            getattr(self.protocol, name)()
        except Exception:
            error_log.exception("Error in a connection's %s", name)


class TrioFileSender:
    """A connection's ``io.base.FileSender`` on trio, one of two ways fixed per connection:

    - plaintext (POSIX): once the stream's queue is in the kernel, ``os.sendfile`` onto the socket from the
      loop thread, at most ``STEP`` bytes per writable event, the stream held meanwhile (writes queue behind
      the file); no thread hop, the bytes never in user space.
    - TLS (``ssl`` needs the bytes): ``os.pread`` blocks of ``_shared.CHUNK`` bytes in a worker thread
      (``trio.to_thread``), written through the stream with its back-pressure: one block in memory per
      connection, never the file.

    Either way the bytes never pass through the connection's core: the connection counts them itself."""

    __slots__ = ("_conn", "_stream", "bytes_sent", "os_sendfile")

    def __init__(self, stream: ByteStream, plaintext: bool, conn: FileDrain) -> None:
        self._stream = stream
        self._conn = conn
        self.bytes_sent = 0  # by os.sendfile, on this connection
        self.os_sendfile = (
            plaintext and hasattr(os, "sendfile") and isinstance(stream, TrioStream) and stream.fd >= 0
        )

    def cancel(self) -> None:
        """The connection is lost. Nothing to stop: the socket was closed first, which ends an
        ``os.sendfile``'s wait for it; a block read in a thread is checked when it comes, and
        ``connection_lost`` wakes the drain the blocks may wait on."""

    async def send(self, fd: int, offset: int, count: int) -> int:
        if self.os_sendfile:
            return await self._send_os(fd, offset, count)
        return await self._send_chunks(fd, offset, count)

    async def _send_os(self, fd: int, offset: int, count: int) -> int:
        stream = cast(TrioStream, self._stream)
        await stream.wait_flushed()  # the head and anything before it reach the socket first
        if self._conn.closed or stream.is_closing():
            raise ClientDisconnected("client disconnected before the file could be sent")
        sock = stream.fd
        sent = 0
        stream.hold(True)
        try:
            while sent < count:
                if stream.is_closing():  # closed while this task was rescheduled: the fd may be another's now
                    raise ClientDisconnected("client disconnected while a file was being sent")
                try:
                    step = os.sendfile(sock, fd, offset + sent, min(STEP, count - sent))
                except BlockingIOError:
                    step = -1  # the socket is full: wait for it to drain
                if step == 0:
                    break  # the file ended early
                if step > 0:
                    sent += step
                    self.bytes_sent += step
                if sent < count:
                    await wait_writable(sock)  # one call per writable event: the others get their turn
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:  # closed under the wait
            raise ClientDisconnected("client disconnected while a file was being sent") from exc
        finally:
            stream.hold(False)
        return sent

    async def _send_chunks(self, fd: int, offset: int, count: int) -> int:
        return await send_in_blocks(read_block, self._stream, self._conn, fd, offset, count)


async def read_block(fd: int, size: int, offset: int) -> bytes:
    """``os.pread`` in a trio worker thread (``io.base.Loop.read_file``)."""
    return await trio.to_thread.run_sync(os.pread, fd, size, offset)
