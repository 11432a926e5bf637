"""Log lines for rejected clients, at most one per cause per second, so that an attack cannot fill the disk.

Every bad request, protocol error or slow client is counted exactly where it happens (``ServerShared.rejections``,
the HTTP/2 counters, the metrics); only its log line goes through here. The first line of a cause is written; the
ones that follow within ``interval`` are counted and dropped; once the interval is over, one line says how many
were dropped: just before the cause's next line, or at the next ``flush`` (the server calls it every second and
once more at its end), whichever comes first. Time is the caller's (``Loop.time()``): no thread, no timer here.
"""

from __future__ import annotations

import logging

INTERVAL = 1.0  # seconds between two lines of one cause


class _Cause:
    __slots__ = ("level", "logger", "suppressed", "until")

    def __init__(self, logger: logging.Logger, level: int, until: float) -> None:
        self.logger = logger
        self.level = level
        self.until = until  # lines of this cause before then are suppressed
        self.suppressed = 0


class RejectionLog:
    """See the module docstring. ``cause`` names a kind of rejection ("400 response", "GOAWAY
    ENHANCE_YOUR_CALM"): a short, fixed set of strings, never anything the client chose."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._causes: dict[str, _Cause] = {}

    def log(
        self, now: float, cause: str, logger: logging.Logger, level: int, message: str, *args: object
    ) -> bool:
        """Log ``message % args`` unless a line of ``cause`` went out less than ``interval`` ago; returns
        whether it was logged."""
        if not logger.isEnabledFor(level):
            return False  # nothing would be written: nothing to count either
        entry = self._causes.get(cause)
        if entry is not None and now < entry.until:
            entry.suppressed += 1
            return False
        if entry is not None and entry.suppressed:
            self._summarize(cause, entry)
        self._causes[cause] = _Cause(logger, level, now + self.interval)
        logger.log(level, message, *args)
        return True

    def flush(self, now: float) -> None:
        """Say how many lines were suppressed for each cause whose interval is over, and forget those causes."""
        causes = self._causes
        if not causes:
            return
        for cause, entry in list(causes.items()):
            if now >= entry.until:
                del causes[cause]
                if entry.suppressed:
                    self._summarize(cause, entry)

    def _summarize(self, cause: str, entry: _Cause) -> None:
        entry.logger.log(
            entry.level,
            "%s: %d more suppressed (at most one line per %gs)",
            cause,
            entry.suppressed,
            self.interval,
        )
