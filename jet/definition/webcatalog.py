"""Port declarations of the web container's gadgets.

This table is the single source of the ports and parameters of ``web.*``
gadgets: ``jet check`` and the graph use it, and the web container builds
its widgets from it.  A web gadget has no Python class in a pack; it lives
in the browser page served by ``jet web``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

__all__ = ["WEB_GADGETS", "WebGadgetSpec", "param_errors"]


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@attrs.frozen
class WebGadgetSpec:
    """Ports and parameters (name -> default) of one web gadget type.

    ``state``: the outputs are a value in force (a setpoint, an on/off), not
    events: the web container publishes them retained and, loading the
    circuit, shows their retained value (jet/web/retained.py, docs/web.md).
    """

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    params: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_map)
    state: bool = False


#: ``label`` (the caption shown on the page; empty = the gadget's name) is
#: accepted by every web gadget.
WEB_GADGETS: dict[str, WebGadgetSpec] = {
    "web.Chart": WebGadgetSpec(inputs=("in",), params={"label": ""}),
    "web.Gauge": WebGadgetSpec(inputs=("in",), params={"label": "", "min": 0.0, "max": 100.0}),
    "web.Label": WebGadgetSpec(inputs=("in",), params={"label": ""}),
    "web.Slider": WebGadgetSpec(
        outputs=("value",),
        # value: what the slider shows until its output has a (retained) value;
        # None: ``min``
        params={"label": "", "min": 0.0, "max": 100.0, "step": 1.0, "value": None},
        state=True,
    ),
    "web.Switch": WebGadgetSpec(outputs=("value",), params={"label": ""}, state=True),
    "web.Button": WebGadgetSpec(outputs=("press",), params={"label": ""}),
}


def _is_number(value: object) -> bool:
    """A finite int or float: a slider's range of ±inf or NaN bounds nothing a page sends."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def param_errors(type_name: str, params: Mapping[str, Any]) -> list[str]:
    """One-line complaints about ``params`` for web gadget ``type_name`` (empty = fine)."""
    spec = WEB_GADGETS[type_name]
    errors: list[str] = []
    for key, value in params.items():
        if key not in spec.params:
            known = ", ".join(sorted(spec.params)) or "none"
            errors.append(f"{type_name}: unknown parameter {key!r} (parameters: {known})")
            continue
        default = spec.params[key]
        if key == "value" or _is_number(default):
            if value is not None and not _is_number(value):
                errors.append(f"{type_name}: parameter {key!r} must be a number, got {value!r:.40}")
        elif isinstance(default, str) and not isinstance(value, str):
            errors.append(f"{type_name}: parameter {key!r} must be a string, got {value!r}")
    return errors
