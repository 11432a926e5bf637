"""UDP for QUIC on trio: a task reads the socket; sending is a non-blocking ``sendto`` that drops what the
socket buffer cannot take (the network may drop any datagram: QUIC's loss recovery sends again what mattered),
so the sans-io side never waits to send."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from zonda.io.base import DatagramReceiver, DatagramSender

quic_log = logging.getLogger("zonda.quic")
MAX_DATAGRAM = 65535


class TrioDatagrams:
    """One UDP socket: ``run`` reads it into the receiver; ``sendto`` writes without waiting."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._trio_sock = trio.socket.from_stdlib_socket(sock)
        self._scope = trio.CancelScope()
        self._dropped = 0

    def sendto(self, data: bytes, addr: Any, /) -> None:
        try:
            self._sock.sendto(data, addr)
        except BlockingIOError:
            self._dropped += 1
        except OSError as exc:  # an ICMP error from an earlier datagram, reported now
            quic_log.debug("UDP send to %s failed: %s", addr, exc)

    def close(self) -> None:
        self._scope.cancel()

    async def run(self, receiver: DatagramReceiver) -> None:
        received = receiver.datagram_received
        recvfrom = self._trio_sock.recvfrom
        try:
            with self._scope:
                while True:
                    try:
                        data, addr = await recvfrom(MAX_DATAGRAM)
                    except (ConnectionRefusedError, ConnectionResetError):
                        continue  # ICMP about an earlier datagram to one peer: the socket serves on
                    try:
                        received(data, addr)
                    except (
                        Exception
                    ):  # as asyncio does for a callback: one datagram's failure, not the socket's
                        quic_log.exception("Error handling a datagram from %s", addr)
        finally:
            self._trio_sock.close()


async def listen_datagrams(
    nursery: trio.Nursery, sock: socket.socket, receiver: Callable[[DatagramSender], DatagramReceiver]
) -> DatagramSender:
    datagrams = TrioDatagrams(sock)
    nursery.start_soon(datagrams.run, receiver(datagrams), name="zonda.quic")
    return datagrams
