"""A web circuit: web gadgets shown on every page, wired over MQTT by the server.

The gadgets themselves live in the browser; the server keeps what the pages
need and what the protocol asks of a circuit: the definition (checked
against :data:`jet.webcatalog.WEB_GADGETS`), the MQTT wires into its inputs,
exports and taps of its outputs, the recent values of its ports (so a page
opened later shows the same thing as the others) and the counters of its
status.  It mirrors :class:`jet.circuit.RunningCircuit` where a web circuit
can, so the loader, ``jet ls`` and ``jet tap`` treat both alike.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import codec, topics
from ..circuit import CommandError, split_port
from ..model import CircuitDef, circuit_to_wire
from ..mqtt import Link, Subscription
from ..webcatalog import WEB_GADGETS, WebGadgetSpec, param_errors

log = logging.getLogger("jet.web")

__all__ = ["WebCircuit", "check_definition", "check_output_value"]

#: Points a chart keeps for pages that open later; other inputs keep their last value.
CHART_HISTORY = 500
_HISTORY = {"web.Chart": CHART_HISTORY}

#: ``deliver(circuit, gadget, port, value, t)``: a value for a gadget input, to the pages.
Deliver = Callable[["WebCircuit", str, str, Any, float], None]
#: ``announce(circuit, gadget, port, value)``: a gadget output changed (echoed to every page).
Announce = Callable[["WebCircuit", str, str, Any], None]


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


def check_definition(definition: CircuitDef) -> dict[str, WebGadgetSpec]:
    """The spec of each gadget; ValueError naming the first problem."""
    if definition.container != "web":
        raise ValueError(f"circuit {definition.name!r} is for a {definition.container}")
    if not topics.NAME_RE.match(definition.name):
        raise ValueError(f"circuit id {definition.name!r} must match [a-z0-9_-]+")
    specs: dict[str, WebGadgetSpec] = {}
    for gadget in definition.gadgets:
        if not topics.NAME_RE.match(gadget.name):
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


class WebCircuit:
    kind = "web"

    def __init__(
        self,
        definition: CircuitDef,
        link: Link,
        *,
        deliver: Deliver,
        announce: Announce,
        app: str = "",
        container: str = "",
        exports: Mapping[str, Any] | None = None,
    ) -> None:
        self.id = definition.name
        self.app = app
        self.container = container
        self.link = link
        self.started = False
        self.started_at = time.time()
        self.wires: dict[tuple[str, str], tuple[int, Subscription]] = {}
        self.exports: dict[str, set[str]] = {k: set(v) for k, v in (exports or {}).items()}
        self.taps: dict[str, float] = {}  # "gadget.port" -> monotonic expiry
        self.counters = collections.Counter[str]()
        self.rates: dict[str, float] = {"in": 0.0, "out": 0.0}
        self._rate_base = (0, 0)
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

    # -- naming ports --------------------------------------------------------------------

    def _has_output(self, gadget: str, port: str) -> bool:
        spec = self.specs.get(gadget)
        return spec is not None and port in spec.outputs

    def _input(self, text: str) -> tuple[str, str]:
        gadget, port = split_port(text)
        spec = self.specs.get(gadget)
        if spec is None or port not in spec.inputs:
            known = ", ".join(f"{g}.{p}" for g, s in self.specs.items() for p in s.inputs)
            raise CommandError(f"{self.id} has no input {text!r} (inputs: {known or 'none'})")
        return gadget, port

    def _output(self, text: str) -> tuple[str, str]:
        gadget, port = split_port(text)
        if not self._has_output(gadget, port):
            raise CommandError(f"{self.id} has no output {text!r}")
        return gadget, port

    def output_topic(self, gadget: str, port: str) -> str:
        return topics.output(self.kind, self.id, gadget, self.specs[gadget].outputs.index(port))

    # -- inputs --------------------------------------------------------------------------

    async def wire(
        self,
        input_: str,
        topic: str,
        qos: int,
        queue: int | None = None,
        policy: str | None = None,
    ) -> None:
        """Relay ``topic`` to the pages as ``input_`` (``queue``/``policy`` are
        accepted for the protocol's sake: nothing queues here, values go
        straight to the pages' bounded outboxes)."""
        gadget, port = self._input(input_)
        key = (f"{gadget}.{port}", topic)
        if key in self.wires:
            return  # idempotent, as in a pack: the loader may repeat a wire
        if qos not in (0, 1, 2):
            raise CommandError(f"qos must be 0, 1 or 2, not {qos}")

        def on_message(msg_topic: str, payload: bytes) -> None:
            self.counters["received"] += 1
            try:
                value = codec.decode(payload)
            except codec.PayloadError as exc:
                self.counters["bad_payloads"] += 1
                log.warning("%s: %s (wire to %s.%s), message dropped", msg_topic, exc, gadget, port)
                return
            self.deliver(gadget, port, value)

        self.wires[key] = (qos, await self.link.subscribe(topic, qos, on_message))

    async def unwire(self, input_: str, topic: str | None) -> int:
        gadget, port = split_port(input_)
        doomed = [k for k in self.wires if k[0] == f"{gadget}.{port}" and topic in (None, k[1])]
        for key in doomed:
            _, sub = self.wires.pop(key)
            await self.link.unsubscribe(sub)
        return len(doomed)

    def inject(self, input_: str, value: Any) -> None:
        self.deliver(*self._input(input_), value)

    def deliver(self, gadget: str, port: str, value: Any) -> None:
        """A value reaches a gadget input: remember it and send it to the pages."""
        recent = self.recent.get((gadget, port))
        if recent is None:  # the input went away in a reload
            return
        now = time.time()
        recent.append((now, value))
        self.counters["delivered"] += 1
        self._deliver(self, gadget, port, value, now)

    # -- outputs ---------------------------------------------------------------------------

    def emit(self, gadget: str, port: str, value: Any) -> None:
        """A page sets an output (slider moved, button pressed).

        The value goes to the inputs wired inside the circuit, and to MQTT
        when the output has no wire inside the circuit, or is exported or
        tapped (docs/protocol.md: which outputs are published).
        """
        if not self._has_output(gadget, port):
            raise CommandError(f"{self.id} has no output {gadget}.{port}")
        if not self.started:
            raise CommandError(f"{self.id} is not started")
        definition = self.definition.gadget(gadget)
        assert definition is not None  # _has_output found it
        params = {**self.specs[gadget].params, **definition.params}
        check_output_value(definition.type or "", params, value)
        payload = codec.encode(value)  # PayloadError before anything changes
        self.counters["emitted"] += 1
        self.outputs[(gadget, port)] = value
        self._announce(self, gadget, port, value)
        inside = self.internal.get((gadget, port), [])
        for dst_gadget, dst_port in inside:
            self.deliver(dst_gadget, dst_port, value)
        name = f"{gadget}.{port}"
        now = time.monotonic()
        tapped = self.taps.get(name, 0.0) > now
        if (not inside or self.exports.get(name) or tapped) and self.link.publish_nowait(
            self.output_topic(gadget, port), payload, qos=1
        ):
            self.counters["published"] += 1

    def export(self, output: str, by: str, on: bool, qos: int = 1) -> None:
        gadget, port = self._output(output)
        holders = self.exports.setdefault(f"{gadget}.{port}", set())
        if on:
            holders.add(by)
        else:
            holders.discard(by)

    def tap(self, output: str, ttl: float) -> None:
        gadget, port = self._output(output)
        name = f"{gadget}.{port}"
        if ttl > 0:
            self.taps[name] = time.monotonic() + ttl
        else:
            self.taps.pop(name, None)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.started = True

    async def drain(self, timeout: float) -> None:
        """Nothing is ever queued here: values go to the pages as they arrive."""

    async def stop(self) -> None:
        for _, sub in self.wires.values():
            await self.link.unsubscribe(sub)
        self.wires.clear()
        self.started = False

    async def reload(self, definition: CircuitDef, exports: Mapping[str, Any]) -> None:
        """Swap in a new definition; wires into inputs that remain keep their subscription."""
        if definition.name != self.id:
            raise CommandError(f"reload of {self.id} with a definition named {definition.name!r}")
        self._set_definition(definition)  # raises before anything changes
        self.exports = {k: set(v) for k, v in exports.items()}
        self.taps = {k: t for k, t in self.taps.items() if self._has_output(*split_port(k))}
        gone = [k for k in self.wires if split_port(k[0]) not in self.recent]
        for key in gone:
            _, sub = self.wires.pop(key)
            await self.link.unsubscribe(sub)

    def measure_rates(self, interval: float) -> None:
        now = (self.counters["delivered"], self.counters["emitted"])
        self.rates = {
            "in": round((now[0] - self._rate_base[0]) / interval, 2),
            "out": round((now[1] - self._rate_base[1]) / interval, 2),
        }
        self._rate_base = now

    # -- what pages and `jet ls` see ----------------------------------------------------------

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

    def status(self) -> dict[str, Any]:
        inputs: dict[str, list[dict[str, Any]]] = {}
        for (port, topic), (qos, _) in sorted(self.wires.items()):
            inputs.setdefault(port, []).append({"topic": topic, "qos": qos})
        now = time.monotonic()
        counters = self.counters
        return {
            "state": "online",
            "type": self.kind,
            "id": self.id,
            "app": self.app,
            "container": self.container,
            "since": self.started_at,
            "started": self.started,
            "definition": circuit_to_wire(self.definition),
            "inputs": inputs,
            "exports": {k: sorted(v) for k, v in self.exports.items() if v},
            "taps": sorted(k for k, t in self.taps.items() if t > now),
            "rates": self.rates,
            "counters": {
                "received": counters["received"],
                "published": counters["published"],
                "delivered": counters["delivered"],
                "emitted": counters["emitted"],
                "errors": counters["bad_payloads"],
                "dropped": 0,
                "queued": 0,
            },
        }
