"""The gadget: an atomic component with ordered, named inputs and outputs.

A gadget is a class.  Its ports are class attributes, its parameters are
attrs fields, and each input has a handler method ``on_<input>`` (plain or
``async``).  Outputs are sent with :meth:`Gadget.emit`.  A gadget never knows
whether its outputs travel in-process or over MQTT: the runtime installs an
emitter when it places the gadget in a circuit.

    @attrs.define
    class Scale(Gadget):
        inputs = ("in",)
        outputs = ("out",)
        factor: float = 1.0

        def on_in(self, value: float) -> None:
            self.emit("out", value * self.factor)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar

import attrs

__all__ = [
    "Emitter",
    "Gadget",
    "GadgetError",
    "PortSpec",
    "function_gadget",
    "input_names",
    "instantiate",
    "output_names",
    "period",
    "port_types",
    "within",
]

#: ``emitter(output_index, value)``, installed by the runtime or a test harness.
Emitter = Callable[[int, Any], None]

#: Ports are declared as a sequence of names, or a mapping name -> type when
#: the gadget wants ``jet check`` to verify what is wired to it.
PortSpec = Sequence[str] | Mapping[str, type]


class GadgetError(Exception):
    """A gadget class or its parameters are not usable."""


def _names(spec: PortSpec) -> tuple[str, ...]:
    return tuple(spec)


def input_names(cls: type[Gadget]) -> tuple[str, ...]:
    return _names(cls.inputs)


def output_names(cls: type[Gadget]) -> tuple[str, ...]:
    return _names(cls.outputs)


def port_types(spec: PortSpec) -> dict[str, type]:
    """The declared type of each port; ports declared by name only are absent."""
    return dict(spec) if isinstance(spec, Mapping) else {}


def _drop(_index: int, _value: Any) -> None:
    # Before the runtime installs a real emitter, output goes nowhere; this is
    # only reachable from a constructor that emits, which is a gadget bug.
    raise GadgetError("emit() called before the gadget was placed in a circuit")


class Gadget:
    """Base class of every Python gadget.

    Class attributes:
      inputs / outputs: the ports, in order (numbering starts at 0).
      delay: True for gadgets that emit later than they receive (they break
        an in-process cycle, so ``jet check`` accepts a loop through them).

    Optional methods:
      on_<input>(value): handler of one input, sync or async.
      on_message(port, value): fallback handler for inputs without their own.
      async run(): long-running work (timers, polling) started with the
        circuit and cancelled when it stops.
    """

    inputs: ClassVar[PortSpec] = ()
    outputs: ClassVar[PortSpec] = ()
    delay: ClassVar[bool] = False

    _jet_emit: Emitter = _drop
    _jet_index: dict[str, int]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = output_names(cls)
        cls._jet_index = {name: i for i, name in enumerate(names)}
        for spec, what in ((cls.inputs, "input"), (cls.outputs, "output")):
            seen = _names(spec)
            if len(set(seen)) != len(seen):
                raise GadgetError(f"{cls.__qualname__}: duplicate {what} name in {seen}")

    def emit(self, output: str | int, value: Any) -> None:
        """Send ``value`` on an output, given by name or number."""
        index = output if isinstance(output, int) else self._jet_index.get(output, -1)
        if not 0 <= index < len(self._jet_index):
            raise GadgetError(f"{type(self).__qualname__} has no output {output!r}")
        self._jet_emit(index, value)

    def handler(self, port: str) -> Callable[[Any], Any]:
        """The callable that receives values arriving on input ``port``."""
        method = getattr(self, f"on_{port}", None)
        if callable(method):
            return method  # type: ignore[no-any-return]
        fallback = getattr(self, "on_message", None)
        if callable(fallback):
            return lambda value: fallback(port, value)
        raise GadgetError(f"{type(self).__qualname__} has no handler for input {port!r}")

    def bind(self, emitter: Emitter) -> None:
        """Install where outputs go (called by the runtime or a test harness)."""
        object.__setattr__(self, "_jet_emit", emitter)


def is_async(handler: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(handler)


Handler = Callable[..., Any | Awaitable[Any]]


def function_gadget(
    fn: Callable[..., Any] | None = None, *, outputs: Sequence[str] = ("out",)
) -> Any:
    """Turn a function into a gadget class, for one-liners.

    Positional parameters become inputs; keyword-only parameters become
    gadget parameters (with their defaults).  The function runs each time an
    input arrives once every input has had a value, with the latest value of
    each.  A return of None emits nothing; with several outputs, return a
    tuple with one item (or None) per output.

        @function_gadget
        def fahrenheit(celsius: float) -> float:
            return celsius * 9 / 5 + 32
    """

    def wrap(func: Callable[..., Any]) -> type[Gadget]:
        sig = inspect.signature(func)
        ins = tuple(
            p.name
            for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        params = {
            p.name: attrs.field(
                default=p.default if p.default is not p.empty else attrs.NOTHING,
                type=p.annotation if p.annotation is not p.empty else Any,
            )
            for p in sig.parameters.values()
            if p.kind == p.KEYWORD_ONLY
        }
        outs = tuple(outputs)
        param_names = tuple(params)
        missing = object()

        def on_message(self: Any, port: str, value: Any) -> None:
            self._latest[port] = value
            args = [self._latest.get(name, missing) for name in ins]
            if any(a is missing for a in args):
                return
            kwargs = {name: getattr(self, name) for name in param_names}
            result = func(*args, **kwargs)
            if result is None:
                return
            if len(outs) == 1:
                self.emit(0, result)
                return
            for index, item in enumerate(result):
                if item is not None:
                    self.emit(index, item)

        body: dict[str, Any] = {
            "inputs": ins,
            "outputs": outs,
            "on_message": on_message,
            "__doc__": func.__doc__,
            "__module__": func.__module__,
            "__qualname__": func.__qualname__,
        }
        params["_latest"] = attrs.field(factory=dict, init=False, repr=False)
        base = type(func.__name__, (Gadget,), body)
        return attrs.define(base, these=params, kw_only=True)

    return wrap(fn) if fn is not None else wrap


# -- parameter ranges ----------------------------------------------------------------------
#
# A gadget declares the range of a parameter with an attrs validator, and
# :func:`instantiate` (so ``jet check`` and every pack) refuses a value outside it:
#
#     interval: float = attrs.field(default=1.0, validator=period())
#     size: int = attrs.field(default=10, validator=within(1, 100_000))

#: The shortest period a timer parameter may name, in seconds: a timer firing
#: faster keeps the event loop busy, and every circuit of the pack waits.
MIN_PERIOD = 0.001
#: The longest, a year: beyond it the number is a mistake (and asyncio's
#: timers refuse far beyond).
MAX_PERIOD = 365 * 24 * 3600.0

#: An attrs validator: ``validator(instance, attribute, value)``.
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def within(low: float, high: float, *, unit: str = "") -> Validator:
    """Validator: a number (not a bool, not NaN or infinite) from ``low`` to ``high``."""
    unit = f" {unit}" if unit else ""
    shown = [str(int(x)) if float(x).is_integer() else f"{x:g}" for x in (low, high)]

    def check(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not low <= value <= high:
            raise ValueError(
                f"parameter {attribute.name!r} must be from {shown[0]} to {shown[1]}{unit},"
                f" got {value!r:.40}"
            )

    return check


def period(*, zero: bool = False) -> Validator:
    """Validator: a time in seconds a timer can keep, MIN_PERIOD (or 0) to MAX_PERIOD."""
    return within(0 if zero else MIN_PERIOD, MAX_PERIOD, unit="seconds")


_SIMPLE_TYPES: dict[object, tuple[type, ...]] = {
    float: (int, float),
    int: (int,),
    str: (str,),
    bool: (bool,),
    "float": (int, float),
    "int": (int,),
    "str": (str,),
    "bool": (bool,),
}


def instantiate(cls: type[Gadget], params: Mapping[str, Any]) -> Gadget:
    """Build a gadget from YAML/conf parameters, with one-line errors.

    Unknown parameter names and values of the wrong simple type (int, float,
    str, bool, as annotated on the attrs field) are refused before the
    gadget's own attrs validators run.
    """
    name = cls.__qualname__
    if attrs.has(cls):
        fields = {f.alias or f.name: f for f in attrs.fields(cls) if f.init}
        for key, value in params.items():
            field = fields.get(key)
            if field is None:
                known = ", ".join(sorted(fields)) or "none"
                raise GadgetError(f"{name}: unknown parameter {key!r} (parameters: {known})")
            accepted = _SIMPLE_TYPES.get(field.type)
            bad_bool = isinstance(value, bool) and field.type not in (bool, "bool")
            if accepted and (not isinstance(value, accepted) or bad_bool):
                raise GadgetError(
                    f"{name}: parameter {key!r} must be {accepted[-1].__name__},"
                    f" got {value!r}"
                )
            if isinstance(value, float) and math.isnan(value):
                # NaN compares false with everything: it would pass every range check
                raise GadgetError(f"{name}: parameter {key!r} must be a number, got nan")
        params = {
            k: float(v) if fields[k].type in (float, "float") else v for k, v in params.items()
        }
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        raise GadgetError(f"{name}: {exc}") from exc
    except BaseException as exc:  # gadget code: even SystemExit is its fault
        raise GadgetError(f"{name}: raised {type(exc).__name__}: {exc} while being built") from None
