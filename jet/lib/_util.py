"""Helpers shared by the jet.lib gadgets: parameter validators and input checks."""

from __future__ import annotations

import logging
import math
from typing import Any

import attrs

from jet.runtime.gadget import Gadget, Validator

log = logging.getLogger("jet.lib")

Number = int | float

_MAX_REPR = 80


def short_repr(value: object) -> str:
    """``repr(value)`` on one line, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def is_number(value: object) -> bool:
    """True for int and float values other than bool and NaN."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return not (isinstance(value, float) and math.isnan(value))


def number_or_none(gadget: Gadget, port: str, value: object) -> Number | None:
    """``value`` if it is a number; otherwise log one warning line and return None."""
    if is_number(value):
        return value  # type: ignore[return-value]
    log.warning(
        "%s: ignoring non-number %s on input %r", type(gadget).__qualname__, short_repr(value), port
    )
    return None


def _check_number(attribute: attrs.Attribute[Any], value: object) -> None:
    if not is_number(value):
        raise TypeError(f"parameter {attribute.name!r} must be a number, got {short_repr(value)}")
    if isinstance(value, float) and math.isinf(value):
        # A setpoint, a factor or a step of ±inf makes every output inf or NaN.
        raise ValueError(f"parameter {attribute.name!r} must be finite, got {value!r}")


def number(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Validator: a finite int or float (not bool)."""
    _check_number(attribute, value)


def bound(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Validator: a number or ±inf (a bound on one side only)."""
    if not is_number(value):
        raise TypeError(f"parameter {attribute.name!r} must be a number, got {short_repr(value)}")


def positive(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: a finite number > 0."""
    _check_number(attribute, value)
    if not value > 0:
        raise ValueError(f"parameter {attribute.name!r} must be > 0, got {short_repr(value)}")


def non_negative(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator: a finite number >= 0."""
    _check_number(attribute, value)
    if not value >= 0:
        raise ValueError(f"parameter {attribute.name!r} must be >= 0, got {short_repr(value)}")


def integer_at_least(minimum: int) -> Validator:
    """Validator factory: an int (not bool) >= ``minimum``."""

    def check(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"parameter {attribute.name!r} must be an integer, got {short_repr(value)}"
            )
        if value < minimum:
            raise ValueError(
                f"parameter {attribute.name!r} must be >= {minimum}, got {short_repr(value)}"
            )

    return check


def one_of(*choices: str) -> Validator:
    """Validator factory: one of the given strings."""

    def check(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ValueError(
                f"parameter {attribute.name!r} must be one of {', '.join(choices)},"
                f" got {short_repr(value)}"
            )

    return check
