"""The output buffer every protocol core drains the same way (h2's ``data_to_send`` style)."""

from __future__ import annotations


class OutputBuffer:
    """A core queues bytes on ``_out``; the driver drains them with one ``data_to_send()`` per flush."""

    __slots__ = ()
    _out: list[bytes]

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
        return data
