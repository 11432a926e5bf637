"""One re-armable timer following a sans-io core's deadline, for a connection or a tunnelled stream."""

from __future__ import annotations

from collections.abc import Callable

from zonda.io.base import Timer


class DeadlineTimer:
    """Calls ``on_due`` at the core's deadline. Armed only when the deadline moves earlier (a later one is
    found when this fires, and the owner re-arms then): one timer per connection, not one per request."""

    __slots__ = ("_call_at", "_handle", "_on_due", "at")

    def __init__(
        self, call_at: Callable[[float, Callable[[], object]], Timer], on_due: Callable[[], None]
    ) -> None:
        self._call_at = call_at
        self._on_due = on_due
        self._handle: Timer | None = None
        self.at: float | None = None  # when it fires; None: not armed

    def arm(self, deadline: float | None) -> None:
        if deadline is not None and (self.at is None or deadline < self.at):
            if self._handle is not None:
                self._handle.cancel()
            self.at = deadline
            self._handle = self._call_at(deadline, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = self.at = None

    def _fire(self) -> None:
        self._handle = self.at = None
        self._on_due()
