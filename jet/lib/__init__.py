"""jet.lib: the standard gadgets every pack may build.

Each gadget is referenced from circuit files by its dotted name, e.g.
``type: jet.lib.Thermostat``.  See docs/gadgets.md for the reference table.
"""

from __future__ import annotations

from .arith import Clamp, Offset, Scale
from .control import Thermostat, Threshold
from .flow import ChangeOnly, Counter, Delay, RateLimit
from .sinks import Logger
from .sources import Constant, Ticker
from .stats import MovingAverage, TimeSeries

__all__ = [
    "ChangeOnly",
    "Clamp",
    "Constant",
    "Counter",
    "Delay",
    "Logger",
    "MovingAverage",
    "Offset",
    "RateLimit",
    "Scale",
    "Thermostat",
    "Threshold",
    "Ticker",
    "TimeSeries",
]
