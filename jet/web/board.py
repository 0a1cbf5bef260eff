"""What runs where: the retained statuses of every container and circuit.

:class:`StatusBoard` is fed the retained messages of ``jet/+/+/status``
and ``+/+/status`` and turns them into what the operator view draws: the
containers, the circuits with their gadgets and ports, and the wires
between them (from each circuit's definition and from the ``inputs`` of
its status).  It also resolves ``circuit.gadget.port`` names the way
``jet tap`` and ``jet inject`` do.  It is plain data, with no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from .. import codec, topics
from ..model import CircuitDef, GadgetDef, circuit_from_msgpack
from ..ports import ports_of
from ..registry import Registry
from .jsonvalue import to_json

__all__ = ["PortAddress", "StatusBoard", "UnknownPort"]


class UnknownPort(LookupError):
    """A ``circuit.gadget.port`` name that names nothing loaded."""


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
    key: str  # "<kind>/<circuit_id>"
    kind: str
    id: str
    status: Mapping[str, Any]
    definition: CircuitDef
    ports: Mapping[str, Ports]  # gadget -> (inputs, outputs)

    def gadget_id(self, gadget: GadgetDef) -> str | int:
        """The gadget's name in topics: its name, or its number on a node."""
        if self.kind != "node":
            return gadget.name
        return gadget.number if gadget.number is not None else self.definition.gadgets.index(gadget)

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
        if topic.endswith("/definition"):
            return self._take_definition(topic.removesuffix("/definition"), payload)
        key = topic.removesuffix("/status")
        table_is_containers = topic.startswith("jet/")
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
        kind, _, cid = key.partition("/")
        if "definition" in status:  # the status that follows a load or reload has it
            self._parse_definition(key, status["definition"])
        definition, ports = self._definitions.get(key) or (CircuitDef(name=cid), {})
        self.circuits[key] = _Circuit(key, kind, cid, status, definition, ports)
        return True

    def _take_definition(self, key: str, payload: bytes) -> bool:
        try:
            raw = codec.decode(payload) if payload else None
        except codec.PayloadError:
            raw = None
        if raw is None:
            return self._definitions.pop(key, None) is not None
        self._parse_definition(key, raw)
        circuit = self.circuits.get(key)
        if circuit is not None:
            definition, ports = self._definitions[key]
            self.circuits[key] = attrs.evolve(circuit, definition=definition, ports=ports)
        return True

    def _parse_definition(self, key: str, raw: Any) -> None:
        """Resolve a definition's ports once per load or reload, not per status."""
        cid = key.partition("/")[2]
        try:
            definition = circuit_from_msgpack(raw if isinstance(raw, dict) else {"name": cid})
        except (KeyError, ValueError, TypeError, AttributeError):
            definition = CircuitDef(name=cid)
        ports = {g.name: _known_ports(definition, g, self.registry) for g in definition.gadgets}
        self._definitions[key] = (definition, ports)

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
                topic = topics.output(c.kind, c.id, c.gadget_id(gadget), outputs.index(w.src.port))
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
        gid, _, name = port.partition(".")
        gadget = c.by_gadget_id(gid)
        if gadget is not None and c.kind == "node" and name.isdigit():
            names = c.ports[gadget.name][1 if output else 0]
            index = int(name)
            name = names[index] if index < len(names) else name
        return {"circuit": c.key, "gadget": gadget.name if gadget else gid, "port": name}

    def _topic_end(self, topic: str) -> dict[str, Any] | None:
        """The output a topic belongs to, or None for a topic no loaded circuit publishes."""
        parts = topic.split("/")
        if len(parts) != 4 or not parts[3].isdigit():
            return None
        c = self.circuits.get(f"{parts[0]}/{parts[1]}")
        gadget = c.by_gadget_id(parts[2]) if c else None
        if c is None or gadget is None:
            return None
        outputs = c.ports[gadget.name][1]
        index = int(parts[3])
        port = outputs[index] if index < len(outputs) else parts[3]
        return {"circuit": c.key, "gadget": gadget.name, "port": port}

    # -- naming ports ------------------------------------------------------------------

    def resolve(self, target: str, *, output: bool) -> PortAddress:
        """``circuit.gadget.port`` (or, for an output, any topic) -> where to reach it."""
        if output and "/" in target:
            return PortAddress(None, "", target, "")
        parts = target.split(".")
        if len(parts) != 3 or not all(parts):
            raise UnknownPort(f"{target!r}: expected circuit.gadget.port or a topic")
        circuit_name, gadget_name, port = parts
        for c in sorted(self.circuits.values(), key=lambda c: c.key):
            if circuit_name not in (c.id, c.definition.name):
                continue
            gadget = c.definition.gadget(gadget_name)
            if gadget is None:
                raise UnknownPort(f"{circuit_name} has no gadget {gadget_name!r}")
            names = c.ports[gadget.name][1 if output else 0]
            if port not in names:
                what = "output" if output else "input"
                raise UnknownPort(f"{circuit_name}.{gadget_name} has no {what} {port!r}")
            gid = c.gadget_id(gadget)
            index = names.index(port)
            named = f"{gid}.{index}" if c.kind == "node" else f"{gadget_name}.{port}"
            return PortAddress(
                topics.circuit_conf(c.kind, c.id),
                named,
                topics.output(c.kind, c.id, gid, index),
                c.kind,
            )
        raise UnknownPort(f"no circuit {circuit_name!r} is loaded")


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
