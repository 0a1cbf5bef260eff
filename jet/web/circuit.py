"""A web circuit's body: web gadgets shown on every page.

The gadgets themselves live in the browser.  What is protocol-facing (wires,
exports, taps, counters, status) is the circuit's
:class:`~jet.containers.boundary.CircuitBoundary`, as for every container kind; behind
its ports the server keeps what the pages need: the definition (checked
against :data:`jet.definition.webcatalog.WEB_GADGETS`), the recent values of its ports
(so a page opened later shows the same thing as the others), and the relay
of values to and from the pages.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from jet import address
from jet.containers.boundary import CommandError, Wire, definition_map, split_port
from jet.definition.model import CircuitDef
from jet.definition.webcatalog import WEB_GADGETS, WebGadgetSpec, param_errors
from jet.transport import codec

log = logging.getLogger("jet.web")

__all__ = ["WebBody", "check_definition", "check_output_value"]

#: Points a chart keeps for pages that open later; other inputs keep their last value.
CHART_HISTORY = 500
_HISTORY = {"web.Chart": CHART_HISTORY}

#: ``deliver(body, gadget, port, value, t)``: a value for a gadget input, to the pages.
Deliver = Callable[["WebBody", str, str, Any, float], None]
#: ``announce(body, gadget, port, value)``: a gadget output changed (echoed to every page).
Announce = Callable[["WebBody", str, str, Any], None]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_output_value(gadget_type: str, params: Mapping[str, Any], value: Any) -> None:
    """CommandError when a page sets a value its gadget could not have produced."""
    if gadget_type == "web.Slider":
        if not _is_number(value):
            raise CommandError(f"a slider's value must be a number, not {value!r:.40}")
        low, high = params.get("min"), params.get("max")
        if _is_number(low) and _is_number(high) and not low <= value <= high:
            raise CommandError(f"slider value {value} is outside {low}..{high}")
    elif gadget_type == "web.Switch" and not isinstance(value, bool):
        raise CommandError(f"a switch's value must be true or false, not {value!r:.40}")
    elif gadget_type == "web.Button" and value is not True:
        raise CommandError(f"a button's press is true, not {value!r:.40}")


def check_definition(definition: CircuitDef) -> dict[str, WebGadgetSpec]:
    """The spec of each gadget; ValueError naming the first problem."""
    if definition.container != "web":
        raise ValueError(f"circuit {definition.name!r} is for a {definition.container}")
    if not address.NAME_RE.match(definition.name):
        raise ValueError(f"circuit id {definition.name!r} must match [a-z0-9_-]+")
    specs: dict[str, WebGadgetSpec] = {}
    for gadget in definition.gadgets:
        if not address.NAME_RE.match(gadget.name):
            raise ValueError(f"gadget name {gadget.name!r} must match [a-z0-9_-]+")
        spec = WEB_GADGETS.get(gadget.type or "")
        if spec is None:
            known = ", ".join(sorted(WEB_GADGETS))
            raise ValueError(f"{gadget.name}: unknown web gadget type {gadget.type!r} ({known})")
        errors = param_errors(gadget.type or "", gadget.params)
        if errors:
            raise ValueError(f"{gadget.name}: {errors[0]}")
        specs[gadget.name] = spec
    for wire in definition.wires:
        src, dst = specs.get(wire.src.gadget), specs.get(wire.dst.gadget)
        if src is None or wire.src.port not in src.outputs:
            raise ValueError(f"wire {str(wire)!r}: no output {str(wire.src)!r}")
        if dst is None or wire.dst.port not in dst.inputs:
            raise ValueError(f"wire {str(wire)!r}: no input {str(wire.dst)!r}")
    return specs


class WebBody:
    """What sits behind a web circuit's ports (see the module doc).

    Values wired into an input go to the pages (``deliver``); a value a page
    sets on an output (:meth:`page_emit`) goes to the inputs wired to it
    inside the circuit, to every page (``announce``) and to the boundary,
    which publishes it when the protocol's rule says so.
    """

    takes_filters = True

    def __init__(
        self,
        circuit_id: str,
        definition: CircuitDef,
        emit: Callable[[str, int, Any], None],
        *,
        app: str,
        deliver: Deliver,
        announce: Announce,
    ) -> None:
        self.id = circuit_id
        self.app = app
        self.started = False
        self.counts = collections.Counter[str]()
        self._emit = emit
        self._deliver = deliver
        self._announce = announce
        self.recent: dict[tuple[str, str], collections.deque[tuple[float, Any]]] = {}
        self.outputs: dict[tuple[str, str], Any] = {}
        self._set_definition(definition)

    def _set_definition(self, definition: CircuitDef) -> None:
        self.specs = check_definition(definition)
        self.definition = definition
        self.internal: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for wire in definition.wires:
            src = (wire.src.gadget, wire.src.port)
            self.internal.setdefault(src, []).append((wire.dst.gadget, wire.dst.port))
        kept = {}
        for gadget in definition.gadgets:
            for port in self.specs[gadget.name].inputs:
                key = (gadget.name, port)
                size = _HISTORY.get(gadget.type or "", 1)
                old = self.recent.get(key)
                kept[key] = collections.deque(old or (), maxlen=size)
        self.recent = kept
        self.outputs = {k: v for k, v in self.outputs.items() if self._has_output(*k)}

    # -- ports -------------------------------------------------------------------------

    def _has_output(self, gadget: str, port: str) -> bool:
        spec = self.specs.get(gadget)
        return spec is not None and port in spec.outputs

    def resolve_input(self, text: str) -> tuple[str, str]:
        gadget, port = split_port(text)
        spec = self.specs.get(gadget)
        if spec is None or port not in spec.inputs:
            known = ", ".join(f"{g}.{p}" for g, s in self.specs.items() for p in s.inputs)
            raise CommandError(f"{self.id} has no input {text!r} (inputs: {known or 'none'})")
        return gadget, port

    def resolve_output(self, text: str) -> tuple[str, str]:
        gadget, port = split_port(text)
        if not self._has_output(gadget, port):
            raise CommandError(f"{self.id} has no output {text!r}")
        return gadget, port

    def output_ports(self) -> Mapping[str, Sequence[str]]:
        return {name: spec.outputs for name, spec in self.specs.items()}

    def input_ports(self) -> Mapping[str, Sequence[str]]:
        return {name: spec.inputs for name, spec in self.specs.items()}

    def wired_inside(self, gadget: str, index: int) -> bool:
        return bool(self.internal.get((gadget, self.specs[gadget].outputs[index])))

    def output_topic(self, gadget: str, port: str) -> str:
        return address.output("web", self.id, gadget, self.specs[gadget].outputs.index(port))

    # -- values in and out ---------------------------------------------------------------

    def receive(
        self, gadget: str, port: str, payload: bytes, limit: int, policy: str
    ) -> Awaitable[None] | None:
        """Relay a wired value to the pages (``limit``/``policy`` are the protocol's:
        nothing queues here, values go straight to the pages' bounded outboxes)."""
        self.deliver(gadget, port, codec.decode(payload))
        return None

    def receive_value(
        self, gadget: str, port: str, value: Any, limit: int, policy: str
    ) -> Awaitable[None] | None:
        self.deliver(gadget, port, value)
        return None

    def inject(self, gadget: str, port: str, value: Any) -> None:
        self.deliver(gadget, port, value)

    def deliver(self, gadget: str, port: str, value: Any) -> None:
        """A value reaches a gadget input: remember it and send it to the pages."""
        recent = self.recent.get((gadget, port))
        if recent is None:  # the input went away in a reload
            return
        now = time.time()
        recent.append((now, value))
        self.counts["delivered"] += 1
        self._deliver(self, gadget, port, value, now)

    def page_emit(self, gadget: str, port: str, value: Any) -> None:
        """A page sets an output (slider moved, button pressed); CommandError or
        PayloadError before anything changes if it could not have."""
        if not self._has_output(gadget, port):
            raise CommandError(f"{self.id} has no output {gadget}.{port}")
        if not self.started:
            raise CommandError(f"{self.id} is not started")
        definition = self.definition.gadget(gadget)
        assert definition is not None  # _has_output found it
        params = {**self.specs[gadget].params, **definition.params}
        check_output_value(definition.type or "", params, value)
        codec.encode(value)  # PayloadError before anything changes
        self.counts["emitted"] += 1
        self.outputs[(gadget, port)] = value
        self._announce(self, gadget, port, value)
        for dst_gadget, dst_port in self.internal.get((gadget, port), []):
            self.deliver(dst_gadget, dst_port, value)
        self._emit(gadget, self.specs[gadget].outputs.index(port), value)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.started = True

    async def drain(self, timeout: float) -> None:
        """Nothing is ever queued here: values go to the pages as they arrive."""

    async def stop(self) -> None:
        self.started = False

    async def reload(self, definition: CircuitDef) -> None:
        if definition.name != self.id:
            raise CommandError(f"reload of {self.id} with a definition named {definition.name!r}")
        self._set_definition(definition)  # raises before anything changes

    # -- what pages and `jet ls` see -----------------------------------------------------

    def counters(self) -> dict[str, int]:
        return {
            "delivered": self.counts["delivered"],
            "emitted": self.counts["emitted"],
            "dropped": 0,
            "queued": 0,
        }

    def rate_basis(self) -> tuple[int, int]:
        return self.counts["delivered"], self.counts["emitted"]

    def wire_fields(self, wire: Wire) -> dict[str, Any]:
        return {"topic": wire.topic, "qos": wire.qos}

    def status_fields(self) -> dict[str, Any]:
        return {"started": self.started}

    def definition_map(self) -> dict[str, Any]:
        return definition_map(self.definition)

    def describe(self) -> dict[str, Any]:
        """The circuit as a page draws it: gadgets with their ports and full parameters."""
        return {
            "id": self.id,
            "app": self.app,
            "started": self.started,
            "gadgets": [
                {
                    "name": g.name,
                    "type": g.type,
                    "params": {**self.specs[g.name].params, **g.params},
                    "inputs": list(self.specs[g.name].inputs),
                    "outputs": list(self.specs[g.name].outputs),
                }
                for g in self.definition.gadgets
            ],
        }
