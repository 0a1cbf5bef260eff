"""What runs where: the retained statuses of every container and circuit.

:class:`StatusBoard` is fed the retained messages of ``jet/+/+/status``
and ``+/+/status`` and turns them into what the operator view draws: the
containers, the circuits with their gadgets and ports, and the wires
between them (from each circuit's definition and from the ``inputs`` of
its status).  It also resolves ``circuit.gadget.port`` names, with the
rule ``jet tap`` and ``jet inject`` use (:func:`jet.address.find_port`).
It is plain data, with no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from jet import address
from jet.address import CircuitAddress, UnknownPort
from jet.definition.model import CircuitDef, GadgetDef, circuit_from_msgpack
from jet.definition.ports import ports_of
from jet.runtime.registry import Registry
from jet.transport import codec
from jet.web.jsonvalue import to_json

__all__ = ["PortAddress", "StatusBoard", "UnknownPort"]


@attrs.frozen
class PortAddress:
    """Where to reach a port: its circuit's conf topic, the port as that
    circuit names it in commands, its output topic, and the container type."""

    conf: str | None
    port: str
    topic: str
    kind: str


Ports = tuple[tuple[str, ...], tuple[str, ...]]


@attrs.frozen
class _Circuit:
    """One running circuit as its status describes it (an :class:`address.Running`)."""

    address: CircuitAddress
    status: Mapping[str, Any]
    definition: CircuitDef
    ports: Mapping[str, Ports]  # gadget -> (inputs, outputs)

    @property
    def key(self) -> str:
        return str(self.address)  # "<kind>/<circuit_id>"

    @property
    def kind(self) -> str:
        return self.address.kind

    @property
    def id(self) -> str:
        return self.address.id

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def gadgets(self) -> Sequence[GadgetDef]:
        return self.definition.gadgets

    def port_names(self, gadget: str, output: bool) -> Sequence[str]:
        return self.ports[gadget][1 if output else 0]

    def gadget_id(self, gadget: GadgetDef) -> str | int:
        """The gadget's name in topics: its name, or its number on a node."""
        return address.gadget_id(self.kind, self.gadgets, gadget)

    def by_gadget_id(self, gid: str) -> GadgetDef | None:
        for gadget in self.definition.gadgets:
            if str(self.gadget_id(gadget)) == gid:
                return gadget
        return None


def _known_ports(
    definition: CircuitDef, gadget: GadgetDef, registry: Registry
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    try:
        found = ports_of(gadget, definition, registry)
        return found.inputs, found.outputs
    except LookupError:
        # A type this process may not import (another pack's allow list):
        # the ports its wires name are still worth drawing.
        ins = [w.dst.port for w in definition.wires if w.dst.gadget == gadget.name]
        outs = [w.src.port for w in definition.wires if w.src.gadget == gadget.name]
        return tuple(dict.fromkeys(ins)), tuple(dict.fromkeys(outs))


class StatusBoard:
    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry or Registry()
        self.containers: dict[str, dict[str, Any]] = {}  # "jet/<kind>/<id>" -> status
        self.circuits: dict[str, _Circuit] = {}  # "<kind>/<circuit_id>" -> circuit
        self._definitions: dict[str, tuple[CircuitDef, Mapping[str, Ports]]] = {}

    # -- feeding ---------------------------------------------------------------------

    def update(self, topic: str, payload: bytes) -> bool:
        """Take one status or definition message; True when the board changed."""
        parsed = address.parse(topic)
        if parsed is not None and parsed.role == "definition":
            return self._take_definition(CircuitAddress(parsed.kind, parsed.id), payload)
        if parsed is None or parsed.role not in ("status", "container_status"):
            return False
        key = parsed.owner
        table_is_containers = parsed.role == "container_status"
        status: Any = None
        if payload:
            try:
                status = codec.decode(payload)
            except codec.PayloadError:
                status = None
        if not isinstance(status, dict):
            # deleted (empty retained message) or unreadable: forget it
            gone = (self.containers if table_is_containers else self.circuits).pop(key, None)
            return gone is not None
        if table_is_containers:
            self.containers[key] = status
            return True
        place = CircuitAddress(parsed.kind, parsed.id)
        if "definition" in status:  # the status that follows a load or reload has it
            self._parse_definition(place, status["definition"])
        definition, ports = self._definitions.get(key) or (CircuitDef(name=place.id), {})
        self.circuits[key] = _Circuit(place, status, definition, ports)
        return True

    def _take_definition(self, place: CircuitAddress, payload: bytes) -> bool:
        key = str(place)
        try:
            raw = codec.decode(payload) if payload else None
        except codec.PayloadError:
            raw = None
        if raw is None:
            return self._definitions.pop(key, None) is not None
        self._parse_definition(place, raw)
        circuit = self.circuits.get(key)
        if circuit is not None:
            definition, ports = self._definitions[key]
            self.circuits[key] = attrs.evolve(circuit, definition=definition, ports=ports)
        return True

    def _parse_definition(self, place: CircuitAddress, raw: Any) -> None:
        """Resolve a definition's ports once per load or reload, not per status."""
        cid = place.id
        try:
            definition = circuit_from_msgpack(raw if isinstance(raw, dict) else {"name": cid})
        except (KeyError, ValueError, TypeError, AttributeError):
            definition = CircuitDef(name=cid)
        ports = {g.name: _known_ports(definition, g, self.registry) for g in definition.gadgets}
        self._definitions[str(place)] = (definition, ports)

    # -- reading -----------------------------------------------------------------------

    def circuit_state(self, circuit: _Circuit) -> str:
        state = str(circuit.status.get("state", "?"))
        container = self.containers.get(str(circuit.status.get("container", "")))
        if container is not None and container.get("state") == "offline":
            return "offline"  # its container's will says it is gone
        return state

    def wire_topics(self) -> set[str]:
        """The topics of the wires between circuits (what a wire rate is counted on)."""
        return {w["topic"] for w in self._external_wires()}

    def snapshot(self) -> dict[str, Any]:
        """The whole board as the page draws it (values already JSON-safe)."""
        return {
            "containers": [
                {"name": name, **_pick(s, _CONTAINER_FIELDS)}
                for name, s in sorted(self.containers.items())
            ],
            "circuits": [self._describe(c) for _, c in sorted(self.circuits.items())],
            "wires": self._internal_wires() + self._external_wires(),
        }

    def _describe(self, c: _Circuit) -> dict[str, Any]:
        return {
            "key": c.key,
            "kind": c.kind,
            "id": c.id,
            "name": c.definition.name,
            "state": self.circuit_state(c),
            **_pick(c.status, _CIRCUIT_FIELDS),
            "gadgets": [
                {
                    "name": g.name,
                    "type": g.type,
                    "gid": c.gadget_id(g),
                    "inputs": list(c.ports[g.name][0]),
                    "outputs": list(c.ports[g.name][1]),
                }
                for g in c.definition.gadgets
            ],
        }

    def _internal_wires(self) -> list[dict[str, Any]]:
        wires = []
        for c in self.circuits.values():
            for w in c.definition.wires:
                gadget = c.definition.gadget(w.src.gadget)
                outputs = c.ports.get(w.src.gadget, ((), ()))[1]
                if gadget is None or w.src.port not in outputs:
                    continue
                topic = address.port_of(c.address, c.gadgets, gadget, outputs, w.src.port).topic
                wires.append(
                    {
                        "src": {"circuit": c.key, "gadget": w.src.gadget, "port": w.src.port},
                        "dst": {"circuit": c.key, "gadget": w.dst.gadget, "port": w.dst.port},
                        "topic": topic,
                        "internal": True,
                    }
                )
        return wires

    def _external_wires(self) -> list[dict[str, Any]]:
        wires = []
        for c in self.circuits.values():
            inputs = c.status.get("inputs")
            if not isinstance(inputs, dict):
                continue
            for port, subscriptions in sorted(inputs.items()):
                dst = self._port_end(c, str(port), output=False)
                for sub in subscriptions if isinstance(subscriptions, list) else ():
                    topic = sub.get("topic") if isinstance(sub, dict) else None
                    if isinstance(topic, str):
                        wires.append(
                            {
                                "src": self._topic_end(topic),
                                "dst": dst,
                                "topic": topic,
                                "internal": False,
                            }
                        )
        return wires

    def _port_end(self, c: _Circuit, port: str, *, output: bool) -> dict[str, Any]:
        """``gadget.port`` as a circuit names it in commands -> the names the page shows."""
        gid, name = address.split_port(port) or (port, "")
        gadget = c.by_gadget_id(gid)
        if gadget is not None and address.rules(c.kind).numbered and name.isdecimal():
            names = c.ports[gadget.name][1 if output else 0]
            index = int(name)
            name = names[index] if index < len(names) else name
        return {"circuit": c.key, "gadget": gadget.name if gadget else gid, "port": name}

    def _topic_end(self, topic: str) -> dict[str, Any] | None:
        """The output a topic belongs to, or None for a topic no loaded circuit publishes."""
        parsed = address.parse(topic)
        if parsed is None or parsed.circuit is None or parsed.role != "output":
            return None
        c = self.circuits.get(str(parsed.circuit))
        gadget = c.by_gadget_id(parsed.gadget) if c else None
        if c is None or gadget is None:
            return None
        outputs = c.ports[gadget.name][1]
        index = parsed.output
        port = outputs[index] if index < len(outputs) else str(index)
        return {"circuit": c.key, "gadget": gadget.name, "port": port}

    # -- naming ports ------------------------------------------------------------------

    def resolve(self, target: str, *, output: bool) -> PortAddress:
        """``circuit.gadget.port`` (or, for an output, any topic) -> where to reach it."""
        if output and "/" in target:
            return PortAddress(None, "", target, "")
        circuits = sorted(self.circuits.values(), key=lambda c: c.key)
        port = address.find_port(target, circuits, output=output)
        return PortAddress(port.conf, port.name, port.topic, port.circuit.kind)


_CONTAINER_FIELDS = (
    "state",
    "type",
    "id",
    "circuits",
    "pid",
    "host",
    "url",
    "pages",
    "conf_errors",
)
_CIRCUIT_FIELDS = ("app", "container", "rates", "counters", "taps", "started")


def _pick(status: Mapping[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {k: to_json(status[k]) for k in fields if k in status}
