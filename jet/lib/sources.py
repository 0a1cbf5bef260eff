"""Sources: gadgets that produce values by themselves."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs

from jet.lib._util import Number, integer_at_least, number
from jet.runtime.gadget import Gadget, period

__all__ = ["Constant", "Ticker"]


@attrs.define(kw_only=True)
class Constant(Gadget):
    """Emits ``value`` once when the circuit starts, and again on every trigger.

    Whatever arrives on ``trigger`` is ignored; only its arrival counts.
    """

    inputs = ("trigger",)
    outputs = ("out",)

    value: Any = 0

    async def run(self) -> None:
        self.emit("out", self.value)

    def on_trigger(self, _value: Any) -> None:
        self.emit("out", self.value)


@attrs.define(kw_only=True)
class Ticker(Gadget):
    """Emits ``start``, ``start + step``, ... every ``interval`` seconds.

    The first value is emitted as soon as the circuit starts.  Ticks follow a
    fixed monotonic schedule (tick n is due at ``t0 + n * interval``), so
    they do not drift; if the event loop falls more than a whole interval
    behind, the missed ticks are skipped rather than emitted in a burst (the
    values stay consecutive).  With ``count > 0`` it stops after ``count``
    values.  Values are ints when ``start`` and ``step`` are both integral.
    """

    outputs = ("out",)

    interval: float = attrs.field(default=1.0, validator=period())
    start: float = attrs.field(default=0, validator=number)
    step: float = attrs.field(default=1, validator=number)
    count: int = attrs.field(default=0, validator=integer_at_least(0))

    def value_at(self, index: int) -> Number:
        """The ``index``-th value (0-based) this ticker emits."""
        if float(self.start).is_integer() and float(self.step).is_integer():
            return int(self.start) + index * int(self.step)
        return self.start + index * self.step

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        slot = 0
        index = 0
        while self.count == 0 or index < self.count:
            due = t0 + slot * self.interval
            now = loop.time()
            if now < due:
                await asyncio.sleep(due - now)
                now = loop.time()
            if now - due >= self.interval:
                # Fell behind by whole intervals: skip the slots already missed.
                slot = int((now - t0) // self.interval)
            self.emit("out", self.value_at(index))
            index += 1
            slot += 1
