"""On/off control with hysteresis: numbers in, a bool out."""

from __future__ import annotations

from typing import Any

import attrs

from jet.lib._util import log, non_negative, number, number_or_none
from jet.runtime.gadget import Gadget

__all__ = ["Thermostat", "Threshold"]


def _switch(state: bool, value: float, level: float, hysteresis: float) -> bool:
    """The new on/off state: on above the band, off below it, unchanged inside."""
    if value > level + hysteresis / 2:
        return True
    if value < level - hysteresis / 2:
        return False
    return state


@attrs.define(kw_only=True)
class Threshold(Gadget):
    """Compares numbers with ``level``, with a hysteresis band.

    The state becomes True once a value is above ``level + hysteresis/2``
    and False once a value is below ``level - hysteresis/2``; inside the band
    it keeps its previous value (initially False).  The current state is
    emitted on every input.
    """

    inputs = ("in",)
    outputs = ("out",)

    level: float = attrs.field(default=0.0, validator=number)
    hysteresis: float = attrs.field(default=0.0, validator=non_negative)
    state: bool = attrs.field(default=False, init=False)

    def on_in(self, value: Any) -> None:
        x = number_or_none(self, "in", value)
        if x is None:
            return
        self.state = _switch(self.state, x, self.level, self.hysteresis)
        self.emit("out", self.state)


@attrs.define(kw_only=True)
class Thermostat(Gadget):
    """Turns heating on below the setpoint and off above it, with hysteresis.

    ``heat`` becomes True when ``temp < setpoint - hysteresis/2`` and False
    when ``temp > setpoint + hysteresis/2``; in between it is unchanged
    (initially False).  The current ``heat`` is emitted on every ``temp``,
    so an actuator that missed a message is refreshed.  A number on the
    ``setpoint`` input replaces the setpoint; if a temperature has been seen
    and the new setpoint changes ``heat``, the new state is emitted at once.
    """

    inputs = ("temp", "setpoint")
    outputs = ("heat",)

    setpoint: float = attrs.field(default=20.0, validator=number)
    hysteresis: float = attrs.field(default=1.0, validator=non_negative)
    heat: bool = attrs.field(default=False, init=False)
    last_temp: float | None = attrs.field(default=None, init=False)

    def _decide(self, temp: float) -> bool:
        # Heating is the inverse of "above the level": on when cold.
        return not _switch(not self.heat, temp, self.setpoint, self.hysteresis)

    def on_temp(self, value: Any) -> None:
        temp = number_or_none(self, "temp", value)
        if temp is None:
            return
        self.last_temp = temp
        self.heat = self._decide(temp)
        self.emit("heat", self.heat)

    def on_setpoint(self, value: Any) -> None:
        setpoint = number_or_none(self, "setpoint", value)
        if setpoint is None:
            return
        log.debug("%s: setpoint %s -> %s", type(self).__qualname__, self.setpoint, setpoint)
        self.setpoint = setpoint
        if self.last_temp is not None:
            heat = self._decide(self.last_temp)
            if heat != self.heat:
                self.heat = heat
                self.emit("heat", heat)
