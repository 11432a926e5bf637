"""Sending a file's bytes on an asyncio/uvloop connection, for ``http.response.zerocopysend`` and ``pathsend``.

The bridge has the core frame the bytes (head, chunk-size line), then awaits the connection's ``send_file`` for
``count`` bytes of a file (``zonda.connection.base``); the connection hands all but small files to this module's
``AsyncioFileSender`` (the ``io.base.FileSender`` of asyncio and uvloop), which sends them one of two ways,
fixed per connection at its first file:

- ``OS`` (plaintext): once the transport's own buffer has drained, ``os.sendfile`` onto the socket from the loop
  thread, one call of at most ``STEP`` bytes per writable event (``OsSendfile``). The writability wait uses a
  ``dup`` of the socket's fd, since both loops refuse ``add_writer`` on an fd a transport owns. This is what
  stock asyncio's ``loop.sendfile`` does too; uvloop has no ``loop.sendfile`` at all (its method is
  ``AbstractEventLoop``'s, which raises ``NotImplementedError``). zonda uses its own on both loops because
  ``loop.sendfile`` cost ~116 µs of server CPU per request for a 4-64 KiB file against ~60 µs this way (it
  pauses and resumes reading, swaps the transport out of the loop, and always waits one more loop iteration),
  while 200 MiB downloads ran at the same speed both ways (``bench/sendfile.py``; bench/RESULTS.md, Sendfile).
- ``CHUNKS`` (TLS, where ``ssl`` needs the bytes in user space, or no ``os.sendfile``): ``os.pread`` blocks of
  ``_shared.CHUNK`` bytes in the loop's default executor, written through the transport. On plaintext it moved a
  200 MiB file at ~1.1 GB/s and ~700 ms CPU/GiB against ``OS``'s ~1.7 GB/s and ~300-400 ms.

Files of at most ``SMALL_FILE`` bytes (``zonda.connection.base``) are read on the loop thread and written with
the head in one write, either way: one ``pread`` of a few KiB costs less than a ``dup``/``sendfile``/``close``
round or a thread hop.

Back-pressure: ``OS`` sends only as fast as the socket drains, and ``CHUNKS`` awaits the protocol's
``resume_writing`` above the transport's high-water mark, so memory stays at one block per connection, never
the file. The loop thread spends at most one ``STEP`` of disk reading (inside ``os.sendfile``) per event-loop
iteration, so a cold page cache slows this response, not the others.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from zonda.errors import ClientDisconnected
from zonda.io._shared import STEP, send_in_blocks

if TYPE_CHECKING:
    from zonda.io.base import FileDrain

OS = 1
CHUNKS = 2


def way_for(transport: Any, plaintext: bool) -> int:
    """How this connection sends files (see the module docstring)."""
    if not plaintext or not hasattr(os, "sendfile"):
        return CHUNKS
    sock = transport.get_extra_info("socket")
    return OS if sock is not None and sock.fileno() >= 0 else CHUNKS


class OsSendfile:
    """``os.sendfile`` from the loop thread onto a non-blocking socket, one call per writable event.

    ``future`` resolves to the bytes sent (fewer than asked: the file ended) or to the ``OSError`` the socket
    gave. ``stop()`` (idempotent) unregisters and closes the ``dup``; the caller always calls it.
    """

    __slots__ = ("file_fd", "future", "left", "loop", "offset", "out", "registered", "sent")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, sock_fd: int, file_fd: int, offset: int, count: int
    ) -> None:
        self.loop = loop
        self.out = os.dup(sock_fd)  # shares the socket (and its O_NONBLOCK) under an fd no transport owns
        self.file_fd = file_fd
        self.offset = offset
        self.left = count
        self.sent = 0
        self.registered = False
        self.future: asyncio.Future[int] = loop.create_future()

    def step(self) -> None:
        if self.future.done():
            self.stop()
            return
        try:
            sent = os.sendfile(self.out, self.file_fd, self.offset, min(self.left, STEP))
        except (BlockingIOError, InterruptedError):
            sent = -1  # the socket is full: wait for it to drain
        except OSError as exc:
            self.stop()
            self.future.set_exception(exc)
            return
        if sent == 0 or sent == self.left:
            self.sent += sent
            self.stop()
            self.future.set_result(self.sent)  # all of it, or the file ended early
            return
        if sent > 0:
            self.offset += sent
            self.sent += sent
            self.left -= sent
        if not self.registered:
            self.registered = True
            self.loop.add_writer(self.out, self.step)

    def cancel(self, exc: BaseException) -> None:
        """The connection is gone: stop, and make the waiting send raise ``exc``."""
        self.stop()
        if not self.future.done():
            self.future.set_exception(exc)

    def stop(self) -> None:
        out = self.out
        if out >= 0:
            self.out = -1
            if self.registered:
                self.loop.remove_writer(out)  # before close: epoll forgets a dup'd fd only on EPOLL_CTL_DEL
            os.close(out)


class AsyncioFileSender:
    """One connection's ``io.base.FileSender`` on asyncio/uvloop: ``OS`` or ``CHUNKS``, fixed at its first file."""

    __slots__ = ("_conn", "_done", "_loop", "_sender", "_transport", "way")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, plaintext: bool, conn: FileDrain
    ) -> None:
        self._loop = loop
        self._transport = transport
        self._conn = conn
        self._sender: OsSendfile | None = None
        self._done = 0  # bytes the finished os.sendfile runs sent
        self.way = way_for(transport, plaintext)

    @property
    def os_sendfile(self) -> bool:
        return self.way == OS

    @property
    def bytes_sent(self) -> int:
        sender = self._sender
        return self._done + (sender.sent if sender is not None else 0)

    def cancel(self) -> None:
        if self._sender is not None:
            self._sender.cancel(ClientDisconnected("client disconnected while a file was being sent"))

    async def send(self, fd: int, offset: int, count: int) -> int:
        if self.way == OS:
            return await self._os_sendfile(fd, offset, count)
        return await self._send_chunks(fd, offset, count)

    async def _os_sendfile(self, fd: int, offset: int, count: int) -> int:
        await self._wait_written()  # the head and anything before it reach the socket first
        sock = self._transport.get_extra_info("socket")
        if self._conn.closed or sock is None:
            raise ClientDisconnected("client disconnected before the file could be sent")
        try:
            sender = self._sender = OsSendfile(self._loop, sock.fileno(), fd, offset, count)
        except OSError:  # no descriptor left for the dup (EMFILE): this file goes the slow way
            return await self._send_chunks(fd, offset, count)
        try:
            sender.step()
            return await sender.future
        finally:
            sender.stop()
            self._sender = None
            self._done += sender.sent

    async def _wait_written(self) -> None:
        """Wait until the transport's write buffer is empty: with a high-water mark of 0, the transport calls
        pause_writing() now and resume_writing() once it has written everything."""
        transport = self._transport
        if not transport.get_write_buffer_size():
            return
        low, high = transport.get_write_buffer_limits()
        transport.set_write_buffer_limits(high=0)
        try:
            while transport.get_write_buffer_size() and not self._conn.closed:
                await self._conn.drain()
        finally:
            if not self._conn.closed:
                transport.set_write_buffer_limits(high=high, low=low)

    async def _send_chunks(self, fd: int, offset: int, count: int) -> int:
        """No sendfile (TLS): read blocks in the loop's default executor, write them with back-pressure."""
        return await send_in_blocks(self._read_block, self._transport, self._conn, fd, offset, count)

    def _read_block(self, fd: int, size: int, offset: int) -> Awaitable[bytes]:
        return read_block(self._loop, fd, size, offset)


def read_block(loop: asyncio.AbstractEventLoop, fd: int, size: int, offset: int) -> Awaitable[bytes]:
    """``os.pread`` in the loop's default executor (``io.base.Loop.read_file``)."""
    return loop.run_in_executor(None, os.pread, fd, size, offset)
