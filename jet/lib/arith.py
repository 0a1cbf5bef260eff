"""Arithmetic on numbers: one number in, one number out."""

from __future__ import annotations

from typing import Any

import attrs

from jet.lib._util import bound, number, number_or_none
from jet.runtime.gadget import Gadget

__all__ = ["Clamp", "Offset", "Scale"]


@attrs.define(kw_only=True)
class Scale(Gadget):
    """Multiplies each number by ``factor``."""

    inputs = ("in",)
    outputs = ("out",)

    factor: float = attrs.field(default=1.0, validator=number)

    def on_in(self, value: Any) -> None:
        x = number_or_none(self, "in", value)
        if x is not None:
            self.emit("out", x * self.factor)


@attrs.define(kw_only=True)
class Offset(Gadget):
    """Adds ``offset`` to each number."""

    inputs = ("in",)
    outputs = ("out",)

    offset: float = attrs.field(default=0.0, validator=number)

    def on_in(self, value: Any) -> None:
        x = number_or_none(self, "in", value)
        if x is not None:
            self.emit("out", x + self.offset)


@attrs.define(kw_only=True)
class Clamp(Gadget):
    """Limits each number to the range ``low .. high`` (both required, low <= high)."""

    inputs = ("in",)
    outputs = ("out",)

    low: float = attrs.field(validator=bound)
    high: float = attrs.field(validator=bound)

    @high.validator
    def _check_range(self, _attribute: attrs.Attribute[float], high: float) -> None:
        if self.low > high:
            raise ValueError(
                f"parameter 'low' must be <= parameter 'high', got low={self.low!r} high={high!r}"
            )

    def on_in(self, value: Any) -> None:
        x = number_or_none(self, "in", value)
        if x is not None:
            self.emit("out", min(max(x, self.low), self.high))
