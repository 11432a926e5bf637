"""The output buffer every protocol core drains the same way (h2's ``data_to_send`` style), counting what it
hands out when asked: a connection's byte counts (``zonda_bytes_total``) are its cores' counts, not a
wrapper's on every write."""

from __future__ import annotations

from zonda._compiled import mypyc_attr


@mypyc_attr(allow_interpreted_subclasses=True)  # the HTTP/2 and WebSocket cores are not compiled
class OutputBuffer:
    """A core queues bytes on ``_out``; the driver drains them with one ``data_to_send()`` per flush."""

    # ``_out`` is a slot here, not in each core's: compiled, a subclass's slot of the same name would hide this
    # class's attribute from its methods
    __slots__ = ("_out", "bytes_sent", "count_bytes")
    _out: list[bytes]
    count_bytes: bool  # count the bytes fed and handed out (metrics on); off, one test per read and flush
    bytes_sent: int  # every byte data_to_send() handed out, while counting

    def queued(self) -> int:
        """How many pieces wait for ``data_to_send()`` (a count, not bytes: cheap)."""
        return len(self._out)

    def data_to_send(self) -> bytes:
        """Drain the queued output."""
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self.count_bytes:
            self.bytes_sent += len(data)
        return data
