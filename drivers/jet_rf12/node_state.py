"""A node circuit's body: what sits behind its ports is a radio node.

The hub hosts each node circuit as a :class:`~jet.containers.boundary.CircuitBoundary`
like every container does; this body is the node side of it.  A value wired
into an input is converted for the radio (msgpack, or the declared struct
codec) and sent through the hub's dongle; what the node sends is published by
the hub's packet path (:meth:`jet.containers.boundary.CircuitBoundary.publish_payload`),
so nothing of the node is internal: every output is published.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol

from jet.containers.boundary import CommandError, Wire, definition_map
from jet.definition.model import CircuitDef
from jet.transport.codec import encode
from jet_rf12.node_circuit import NodeCircuit, NodeCircuitError, node_from_definition
from jet_rf12.ratelog import RateLimitedLog


class Radio(Protocol):
    """The hub as a node body sees it: how to reach a node."""

    limited: RateLimitedLog

    def send(self, circuit: NodeCircuit, gadget: int, port: int, payload: bytes,
             ack: bool = False) -> int:
        """Queue one packet to a node input; its size; CommandError when impossible."""
        ...

    def drain_to(self, circuit: NodeCircuit, timeout: float) -> Awaitable[None]: ...

    def count_wire_message(self, failed: str | None) -> None: ...


class NodeBody:
    """A node circuit at run time: what the hub knows of the node, and its counters."""

    #: A wire into a node takes one topic: each message it matches goes over the air
    #: (a few per second at most), and ``#`` would send the node the whole broker.
    takes_filters = False

    def __init__(self, circuit: NodeCircuit, definition: CircuitDef, radio: Radio) -> None:
        self.circuit = circuit
        self._definition = definition
        self.radio = radio
        self.packets = 0  # received from the node
        self.sent = 0  # messages from wires and injects sent to the node
        self.errors = 0  # undecodable packets from it, messages that could not be sent
        self.last_seen: float | None = None
        self.rssi: int | None = None  # dBm of the last packet, when the dongle says it
        self.undeclared_ports: set[tuple[int, int]] = set()

    @property
    def definition(self) -> CircuitDef:
        return self._definition

    # -- ports ---------------------------------------------------------------------------

    def resolve_input(self, text: str) -> tuple[str, str]:
        try:
            gadget, port = self.circuit.resolve_input(text)
        except NodeCircuitError as exc:
            raise CommandError(str(exc)) from None
        return str(gadget), str(port)

    def resolve_output(self, text: str) -> tuple[str, str]:
        # Outputs are named by number on the radio; every one is published.
        gadget, dot, port = str(text).partition(".")
        if not (dot and gadget.isdecimal() and port.isdecimal()):
            for g in self.circuit.gadgets.values():
                if g.name == gadget and port in g.outputs:
                    return str(g.number), str(g.outputs.index(port))
            raise CommandError(f"node {self.circuit.uid} has no output {text!r}")
        return gadget, port

    def output_ports(self) -> Mapping[str, Sequence[str]]:
        return {str(g.number): g.outputs for g in self.circuit.gadgets.values()}

    def input_ports(self) -> Mapping[str, Sequence[str]]:
        return {str(g.number): g.inputs for g in self.circuit.gadgets.values()}

    def wired_inside(self, gadget: str, index: int) -> bool:
        return False  # a node's inside is firmware: the boundary cannot see it

    # -- values in -----------------------------------------------------------------------

    def receive_value(
        self, gadget: str, port: str, value: Any, limit: int, policy: str
    ) -> Awaitable[None] | None:
        # (jet check keeps devices' topics away from nodes; a value is sent as a wire's)
        return self.receive(gadget, port, encode(value), limit, policy)

    def receive(
        self, gadget: str, port: str, payload: bytes, limit: int, policy: str
    ) -> Awaitable[None] | None:
        g, p = int(gadget), int(port)
        circuit = self.circuit
        radio = circuit.input_codec(g, p).to_radio(payload)  # PayloadError: counted by the boundary
        try:
            self.radio.send(circuit, g, p, radio)
        except CommandError as exc:
            self.errors += 1
            self.radio.count_wire_message(str(exc))
            self.radio.limited.warning(f"node{circuit.uid}:wire", "cannot send to node %d: %s",
                                   circuit.uid, exc)
            return None
        self.sent += 1
        self.radio.count_wire_message(None)
        return None

    def inject(self, gadget: str, port: str, value: Any) -> dict[str, Any]:
        g, p = int(gadget), int(port)
        circuit = self.circuit
        size = self.radio.send(circuit, g, p, circuit.input_codec(g, p).to_radio(encode(value)))
        self.sent += 1
        return {"input": f"{g}.{p}", "bytes": size}

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """A node runs its own firmware: nothing to start here."""

    async def drain(self, timeout: float) -> None:
        await self.radio.drain_to(self.circuit, timeout)

    async def stop(self) -> None:
        """Telling the node itself to stop is the hub's ``stop`` command."""

    async def reload(self, definition: CircuitDef) -> None:
        """A new declaration for the same node; wires into inputs it keeps stay."""
        c = self.circuit
        if definition.node != c.node_id:
            raise CommandError(f"reload cannot move node circuit {c.uid} from node "
                               f"{c.node_id} to node {definition.node}")
        try:
            self.circuit = node_from_definition(definition, c.uid, c.group, c.app)
        except NodeCircuitError as exc:
            raise CommandError(str(exc)) from None
        self._definition = definition
        self.undeclared_ports.clear()

    # -- status ------------------------------------------------------------------------

    def seen(self, rssi: int | None = None) -> None:
        self.packets += 1
        self.last_seen = time.time()
        if rssi is not None:
            self.rssi = rssi

    def counters(self) -> dict[str, int]:
        return {
            "received": self.packets,
            "sent": self.sent,
            "errors": self.errors,
            "undeclared": len(self.undeclared_ports),
            "dropped": 0,
        }

    def rate_basis(self) -> tuple[int, int]:
        """In: messages sent to the node; out: packets from it."""
        return self.sent, self.packets

    def wire_fields(self, wire: Wire) -> dict[str, Any]:
        name = self.circuit.input_name(int(wire.gadget), int(wire.port))
        return {"topic": wire.topic, "qos": wire.qos, "name": name}

    def status_fields(self) -> dict[str, Any]:
        c = self.circuit
        return {
            "node": c.node_id,
            "group": c.group,
            "declared": c.declared,
            "gadgets": c.gadget_list(),
            "last_seen": self.last_seen,
            # dBm of its last packet (RF69 dongles say it): where to place a node.
            "rssi": self.rssi,
        }

    def definition_map(self) -> dict[str, Any]:
        return definition_map(self._definition)

