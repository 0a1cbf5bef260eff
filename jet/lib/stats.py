"""Statistics over recent numbers."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from jet.lib._util import integer_at_least, number_or_none
from jet.runtime.gadget import Gadget, period, within

__all__ = ["MAX_POINTS", "MovingAverage", "TimeSeries"]

#: The most numbers a statistic keeps: each message computes over all of them.
MAX_POINTS = 100_000


def _mean(values: Iterable[float], count: int) -> float:
    """Accurate mean that survives sums beyond the float range."""
    values = list(values)
    try:
        return math.fsum(values) / count
    except OverflowError:
        return math.fsum(v / count for v in values)


@attrs.define(kw_only=True)
class MovingAverage(Gadget):
    """Emits the mean of the last ``size`` numbers (fewer until ``size`` have arrived)."""

    inputs = ("in",)
    outputs = ("out",)

    size: int = attrs.field(default=10, validator=[integer_at_least(1), within(1, MAX_POINTS)])
    window: deque[float] = attrs.field(init=False, repr=False)

    @window.default
    def _window(self) -> deque[float]:
        return deque(maxlen=self.size)

    def on_in(self, value: Any) -> None:
        x = number_or_none(self, "in", value)
        if x is None:
            return
        self.window.append(x)
        self.emit("out", _mean(self.window, len(self.window)))


@attrs.define(kw_only=True)
class TimeSeries(Gadget):
    """Keeps the numbers of the last ``window`` seconds (at most ``max_points``).

    For each number it emits ``[t, value]`` on ``out`` (``t`` = ``time.time()``,
    float seconds) and then ``{"min", "max", "mean", "count"}`` over the
    points still kept on ``stats``.  Points older than ``window`` seconds
    (by the same wall clock) are dropped as new ones arrive.
    """

    inputs = ("in",)
    outputs = ("out", "stats")

    window: float = attrs.field(default=3600, validator=period())
    max_points: int = attrs.field(
        default=10000, validator=[integer_at_least(1), within(1, MAX_POINTS)]
    )
    #: Where ``t`` comes from; tests may replace it.
    clock: Callable[[], float] = attrs.field(default=time.time, init=False, repr=False)
    times: deque[float] = attrs.field(init=False, repr=False)
    values: deque[float] = attrs.field(init=False, repr=False)

    @times.default
    def _times(self) -> deque[float]:
        return deque(maxlen=self.max_points)

    @values.default
    def _values(self) -> deque[float]:
        return deque(maxlen=self.max_points)

    def on_in(self, value: Any) -> None:
        x = number_or_none(self, "in", value)
        if x is None:
            return
        t = self.clock()
        self.times.append(t)
        self.values.append(x)
        oldest = t - self.window
        while self.times[0] < oldest:
            self.times.popleft()
            self.values.popleft()
        self.emit("out", [t, x])
        self.emit("stats", self.stats())

    def points(self) -> list[list[float]]:
        """The kept points, oldest first, as ``[t, value]`` pairs."""
        return [[t, v] for t, v in zip(self.times, self.values, strict=True)]

    def stats(self) -> dict[str, float | int | None]:
        """``{"min", "max", "mean", "count"}`` over the kept points (None when empty)."""
        count = len(self.values)
        if not count:
            return {"min": None, "max": None, "mean": None, "count": 0}
        return {
            "min": min(self.values),
            "max": max(self.values),
            "mean": _mean(self.values, count),
            "count": count,
        }
