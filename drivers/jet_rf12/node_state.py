"""A node circuit at run time: what the hub knows, its wires, its counters and status map."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import attrs

from jet.mqtt import Subscription

from .node_circuit import NodeCircuit
from .state import SavedNode, SavedWire


@attrs.define(eq=False)
class Wire:
    """A subscription whose messages go to one node input."""

    gadget: int
    input: int
    topic: str
    qos: int
    sub: Subscription | None = None


@attrs.define(eq=False)
class NodeState:
    """A node circuit the hub answers for, with its live wires and counters."""

    circuit: NodeCircuit
    definition: Mapping[str, Any] | None = None
    wires: dict[tuple[int, int, str], Wire] = attrs.field(factory=dict)
    since: float = attrs.field(factory=time.time)
    packets: int = 0  # received from the node
    published: int = 0  # of those, published
    sent: int = 0  # messages from wires and injects sent to the node
    errors: int = 0  # undecodable packets from it, messages that could not be sent
    last_seen: float | None = None
    rates: dict[str, float] = attrs.field(factory=lambda: {"in": 0.0, "out": 0.0})
    undeclared_ports: set[tuple[int, int]] = attrs.field(factory=set)
    last_status: bytes | None = None  # the retained status last published
    _rate_base: tuple[int, int] = (0, 0)

    def measure_rates(self, interval: float) -> None:
        """Messages per second to the node (in) and from it (out) since the last call."""
        self.rates = {
            "in": round((self.sent - self._rate_base[0]) / interval, 2),
            "out": round((self.published - self._rate_base[1]) / interval, 2),
        }
        self._rate_base = (self.sent, self.published)

    def definition_map(self) -> dict[str, Any]:
        """The definition it was loaded with, or what the hub knows of an undeclared node."""
        if self.definition is not None:
            return dict(self.definition)
        c = self.circuit
        return {"name": c.name, "container": "node", "node": c.node_id, "gadgets": []}

    def status(self, container: str, state: str = "online") -> dict[str, Any]:
        """``node/<uid>/status``, shaped like a pack circuit's so the loader and
        ``jet ls`` read it the same way (docs/nodes.md)."""
        c = self.circuit
        inputs: dict[str, list[dict[str, Any]]] = {}
        for w in self.wires.values():
            inputs.setdefault(f"{w.gadget}.{w.input}", []).append(
                {"topic": w.topic, "qos": w.qos, "name": c.input_name(w.gadget, w.input)})
        return {
            "state": state,
            "type": "node",
            "id": c.circuit_id,
            "app": c.app,
            "container": container,
            "since": self.since,
            "definition": self.definition_map(),
            "inputs": inputs,
            "exports": {},
            "taps": [],
            "rates": self.rates,
            "counters": {
                "received": self.packets,
                "published": self.published,
                "sent": self.sent,
                "errors": self.errors,
                "undeclared": len(self.undeclared_ports),
                "dropped": 0,
            },
            "node": c.node_id,
            "group": c.group,
            "declared": c.declared,
            "gadgets": c.gadget_list(),
            "last_seen": self.last_seen,
        }

    def saved(self) -> SavedNode:
        c = self.circuit
        return SavedNode(
            c.uid, c.group, c.node_id, c.app, self.definition,
            tuple(SavedWire(w.gadget, w.input, w.topic, w.qos) for w in self.wires.values()),
        )
