"""A node circuit: the gadgets a node's firmware declares, as the hub sees them.

The hub learns them from a ``load`` command (a circuit definition with
``container: node``): names for the numbered ports, and struct codecs for
legacy firmware.  A node the hub was never told about can still be wired
with numeric ports; it has no declared gadgets and every port is msgpack.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from jet.address import gadget_number
from jet.definition.model import CircuitDef
from jet_rf12.payload import MSGPACK, PortCodec, codec_from_params
from jet_rf12.tags import CONF_GADGET, CONF_INPUT, MAX_GADGET, MAX_PORT

#: Node ids a node may use: 0 is the RF12 broadcast/OOK id, 31 the "any" id.
MIN_NODE_ID = 1
MAX_NODE_ID = 30


class NodeCircuitError(ValueError):
    """A node definition or a port reference is unusable."""


@attrs.frozen
class NodeGadget:
    number: int
    name: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    in_codecs: Mapping[int, PortCodec] = attrs.field(factory=dict)
    out_codecs: Mapping[int, PortCodec] = attrs.field(factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "name": self.name,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
        }


@attrs.frozen
class NodeCircuit:
    """What the hub knows about one node: its address and declared gadgets."""

    uid: int
    group: int
    node_id: int
    name: str
    gadgets: Mapping[int, NodeGadget] = attrs.field(factory=dict)
    declared: bool = False
    app: str | None = None

    @property
    def circuit_id(self) -> str:
        return str(self.uid)

    def output_codec(self, gadget: int, port: int) -> PortCodec | None:
        """The codec of an output; None when the output is not declared."""
        if not self.declared:
            return MSGPACK
        g = self.gadgets.get(gadget)
        if g is None or port >= len(g.outputs):
            return None
        return g.out_codecs.get(port, MSGPACK)

    def input_codec(self, gadget: int, port: int) -> PortCodec:
        g = self.gadgets.get(gadget)
        return MSGPACK if g is None else g.in_codecs.get(port, MSGPACK)

    def resolve_input(self, ref: str) -> tuple[int, int]:
        """``"1.0"`` or ``"relay.on"`` (or a mix) -> (gadget, input) numbers."""
        gadget_part, port_part = _split_ref(ref)
        gadget = self._gadget_number(gadget_part, ref)
        declared = self.gadgets.get(gadget)
        if port_part.isdecimal():
            port = int(port_part)
            if port > MAX_PORT:
                raise NodeCircuitError(f"{ref!r}: input {port} out of range 0..{MAX_PORT}")
        elif declared is not None and port_part in declared.inputs:
            port = declared.inputs.index(port_part)
        else:
            raise NodeCircuitError(f"{ref!r}: node {self.uid} has no input {port_part!r}"
                                   + self._declared_inputs())
        if gadget == CONF_GADGET and port == CONF_INPUT:
            raise NodeCircuitError(f"{ref!r}: gadget 0 input 7 is reserved for node commands")
        if self.declared and (declared is None or port >= len(declared.inputs)):
            raise NodeCircuitError(f"{ref!r}: node {self.uid} has no input {gadget}.{port}"
                                   + self._declared_inputs())
        return gadget, port

    def input_name(self, gadget: int, port: int) -> str:
        g = self.gadgets.get(gadget)
        if g is not None and port < len(g.inputs):
            return f"{g.name}.{g.inputs[port]}"
        return f"{gadget}.{port}"

    def _gadget_number(self, part: str, ref: str) -> int:
        if part.isdecimal():
            number = int(part)
            if number > MAX_GADGET:
                raise NodeCircuitError(f"{ref!r}: gadget {number} out of range 0..{MAX_GADGET}")
            return number
        for g in self.gadgets.values():
            if g.name == part:
                return g.number
        raise NodeCircuitError(f"{ref!r}: node {self.uid} has no gadget {part!r}"
                               + self._declared_inputs())

    def _declared_inputs(self) -> str:
        names = [
            f"{g.name}.{p}={g.number}.{i}"
            for g in self.gadgets.values()
            for i, p in enumerate(g.inputs)
        ]
        return f" (declared inputs: {', '.join(names) or 'none'})" if self.declared else ""

    def gadget_list(self) -> list[dict[str, Any]]:
        """The declared gadgets by number, as status maps show them."""
        return [g.to_wire() for g in sorted(self.gadgets.values(), key=_number)]


def _number(g: NodeGadget) -> int:
    return g.number


def _split_ref(ref: object) -> tuple[str, str]:
    if not isinstance(ref, str) or ref.count(".") != 1:
        raise NodeCircuitError(f"port {ref!r}: expected gadget.input, e.g. '1.0' or 'relay.on'")
    gadget, port = ref.split(".")
    if not gadget or not port:
        raise NodeCircuitError(f"port {ref!r}: expected gadget.input")
    return gadget, port


def undeclared_node(uid: int, group: int, node_id: int) -> NodeCircuit:
    """A node wired by number before (or without) its definition was loaded."""
    return NodeCircuit(uid, group, node_id, name=f"node{node_id}")


def node_from_definition(
    definition: CircuitDef, uid: int, group: int, app: str | None = None
) -> NodeCircuit:
    """Check a ``container: node`` definition and index its gadgets by number."""
    if definition.container != "node":
        raise NodeCircuitError(
            f"circuit {definition.name!r} is a {definition.container} circuit, not a node"
        )
    node_id = definition.node
    if not isinstance(node_id, int) or not MIN_NODE_ID <= node_id <= MAX_NODE_ID:
        raise NodeCircuitError(
            f"circuit {definition.name!r}: node id must be {MIN_NODE_ID}..{MAX_NODE_ID}, "
            f"got {node_id!r}"
        )
    gadgets: dict[int, NodeGadget] = {}
    for index, g in enumerate(definition.gadgets):
        number = gadget_number(g, index)
        where = f"circuit {definition.name!r} gadget {g.name!r}"
        if not isinstance(number, int) or not 0 <= number <= MAX_GADGET:
            raise NodeCircuitError(f"{where}: number must be 0..{MAX_GADGET}, got {number!r}")
        if number in gadgets:
            raise NodeCircuitError(f"{where}: number {number} already used by "
                                   f"{gadgets[number].name!r}")
        if len(g.inputs) > MAX_PORT + 1 or len(g.outputs) > MAX_PORT + 1:
            raise NodeCircuitError(f"{where}: at most {MAX_PORT + 1} inputs and outputs")
        if number == CONF_GADGET and len(g.inputs) > CONF_INPUT:
            raise NodeCircuitError(f"{where}: gadget 0 input 7 is reserved for node commands")
        in_codecs, out_codecs = _codecs(g.params, g.inputs, g.outputs, where)
        gadgets[number] = NodeGadget(
            number, g.name, tuple(g.inputs), tuple(g.outputs), in_codecs, out_codecs
        )
    return NodeCircuit(uid, group, node_id, definition.name, gadgets, declared=True, app=app)


def _codecs(
    params: Mapping[str, Any], inputs: tuple[str, ...], outputs: tuple[str, ...], where: str
) -> tuple[dict[int, PortCodec], dict[int, PortCodec]]:
    declared = params.get("codecs") or {}
    if not isinstance(declared, Mapping):
        raise NodeCircuitError(f"{where}: params.codecs must be a map port -> codec")
    in_codecs: dict[int, PortCodec] = {}
    out_codecs: dict[int, PortCodec] = {}
    for port, spec in declared.items():
        if port not in inputs and port not in outputs:
            raise NodeCircuitError(f"{where}: codec for unknown port {port!r}")
        try:
            codec = codec_from_params(spec)
        except ValueError as exc:
            raise NodeCircuitError(f"{where} port {port!r}: {exc}") from exc
        if port in inputs:
            in_codecs[inputs.index(port)] = codec
        if port in outputs:
            out_codecs[outputs.index(port)] = codec
    return in_codecs, out_codecs
