"""UDP for QUIC on asyncio and uvloop: a datagram endpoint whose protocol hands each datagram on as it is."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

    from zonda.io.base import DatagramReceiver, DatagramSender

quic_log = logging.getLogger("zonda.quic")


class AsyncioDatagrams(asyncio.DatagramProtocol):
    """The socket's protocol (datagrams in) and the receiver's ``DatagramSender`` (datagrams out)."""

    def __init__(self, receiver: Callable[[DatagramSender], DatagramReceiver]) -> None:
        self._transport: asyncio.DatagramTransport | None = None
        # made here, not in connection_made (uvloop calls that a loop turn after the endpoint is returned);
        # bound once: every datagram goes straight to the receiver, one call less per datagram
        self.datagram_received = receiver(self).datagram_received  # type: ignore[method-assign,assignment]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's UDPTransport is not a subclass

    def error_received(self, exc: Exception) -> None:
        # An ICMP error (port unreachable) about one peer: its QUIC connection times out by itself.
        quic_log.debug("UDP socket error: %s", exc)

    def sendto(self, data: bytes, addr: Any, /) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.sendto(data, addr)  # asyncio buffers what the socket refuses; QUIC paces itself anyway

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def listen_datagrams(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    receiver: Callable[[DatagramSender], DatagramReceiver],
) -> DatagramSender:
    _, protocol = await loop.create_datagram_endpoint(lambda: AsyncioDatagrams(receiver), sock=sock)
    return protocol
