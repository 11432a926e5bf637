"""What both drivers share: the sizes and timeouts they are tuned to, and sending a file in blocks.

Kept in one place so that asyncio and trio behave the same where nothing about the loop differs: a file sent over
TLS (read off the loop thread, one block in memory per connection), the longest stay in one ``os.sendfile``, how
long a graceful TLS close may wait for the peer."""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from typing import Protocol

from zonda.errors import ClientDisconnected
from zonda.io.base import FileDrain

try:  # POSIX
    from fcntl import ioctl
    from termios import TIOCOUTQ  # Linux's SIOCOUTQ on a socket
except ImportError:  # pragma: no cover
    ioctl = None  # type: ignore[assignment]

STEP = 1024 * 1024  # most bytes per os.sendfile call: the loop thread's longest stay in one disk read
CHUNK = 256 * 1024  # file bytes per worker-thread read when they must pass through user space (TLS)
TLS_CLOSE_TIMEOUT = 5.0  # seconds a graceful TLS close may wait to send close_notify; then the socket goes


def kernel_unacknowledged(fd: int) -> int:
    """Bytes in a socket's send queue that the peer has not acknowledged yet (Linux's SIOCOUTQ): they go down as
    the peer reads. 0 where that cannot be known (another platform, a closed descriptor)."""
    if ioctl is None or fd < 0:
        return 0
    try:
        return int(struct.unpack("i", ioctl(fd, TIOCOUTQ, b"\0\0\0\0"))[0])
    except OSError:  # ENOTTY where sockets do not answer it (macOS), EBADF once closed
        return 0


ReadBlock = Callable[[int, int, int], Awaitable[bytes]]
"""``(fd, size, offset)`` to at most ``size`` bytes, read off the loop thread (``os.pread`` in a worker)."""


class BlockSink(Protocol):
    """Where the blocks go: the driver's own transport or stream."""

    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...


async def send_in_blocks(
    read_block: ReadBlock, sink: BlockSink, conn: FileDrain, fd: int, offset: int, count: int
) -> int:
    """Send ``count`` bytes of ``fd`` from ``offset`` in ``CHUNK``-sized blocks with the connection's
    back-pressure; return how many went (fewer: the file ended). Raises ClientDisconnected."""
    sent = 0
    while sent < count:
        data = await read_block(fd, min(CHUNK, count - sent), offset + sent)
        if conn.closed or sink.is_closing():
            raise ClientDisconnected("client disconnected while a file was being sent")
        if not data:
            break  # the file ended early
        sink.write(data)
        sent += len(data)
        if conn.write_paused:
            await conn.drain()
    return sent
