"""jet.lib: the standard gadgets every pack may build.

Each gadget is referenced from circuit files by its dotted name, e.g.
``type: jet.lib.Thermostat``.  See docs/gadgets.md for the reference table.
"""

from __future__ import annotations

from jet.lib.arith import Clamp, Offset, Scale
from jet.lib.control import Thermostat, Threshold
from jet.lib.flow import ChangeOnly, Counter, Delay, RateLimit
from jet.lib.levels import LevelCall
from jet.lib.sinks import Logger
from jet.lib.sources import Constant, Ticker
from jet.lib.stats import MovingAverage, TimeSeries

__all__ = [
    "ChangeOnly",
    "Clamp",
    "Constant",
    "Counter",
    "Delay",
    "LevelCall",
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
