"""One log line per bad input, without letting a noisy input flood the log.

A dongle at the wrong baud rate produces garbage many times a second; each
line is logged until ``burst`` lines of one kind were written within
``period`` seconds, then the rest of that period is only counted, and the
number left out is logged when the next period starts.
"""

from __future__ import annotations

import logging
import time
from typing import Any


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, burst: int = 20, period: float = 10.0) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self._windows: dict[str, tuple[float, int, int]] = {}  # kind -> start, logged, left out

    def warning(self, kind: str, msg: str, *args: Any) -> None:
        self.log(logging.WARNING, kind, msg, *args)

    def log(self, level: int, kind: str, msg: str, *args: Any) -> None:
        if not self.logger.isEnabledFor(level):
            return
        now = time.monotonic()
        start, logged, left_out = self._windows.get(kind, (now, 0, 0))
        if now - start >= self.period:
            if left_out:
                self.logger.log(level, "%s: %d more not logged in the last %.0fs",
                                kind, left_out, self.period)
            start, logged, left_out = now, 0, 0
        if logged < self.burst:
            self.logger.log(level, msg, *args)
            logged += 1
        else:
            left_out += 1
        self._windows[kind] = (start, logged, left_out)
