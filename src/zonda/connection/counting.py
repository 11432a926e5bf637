"""Byte counts for ``--metrics-bind``: a stream wrapper on the write side (reads are counted where they arrive,
``ObservedHTTP1Connection`` and ``HTTP2Connection._count_bytes``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zonda.io.base import ByteStream, StreamProtocol

if TYPE_CHECKING:
    from zonda.metrics import Tally


class CountingStream:
    """A ``ByteStream`` that counts the bytes written; the rest goes to the driver's stream as it is."""

    __slots__ = ("_stream", "_tally")

    def __init__(self, stream: ByteStream, tally: Tally) -> None:
        self._stream = stream
        self._tally = tally

    def write(self, data: bytes) -> None:
        self._tally.bytes_out += len(data)
        self._stream.write(data)

    def close(self) -> None:
        self._stream.close()

    def abort(self) -> None:
        self._stream.abort()

    def is_closing(self) -> bool:
        return self._stream.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._stream.get_write_buffer_size()

    def pause_reading(self) -> None:
        self._stream.pause_reading()

    def resume_reading(self) -> None:
        self._stream.resume_reading()

    def set_protocol(self, protocol: StreamProtocol) -> None:
        self._stream.set_protocol(protocol)
