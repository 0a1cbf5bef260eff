"""What runs where, as the operator view draws it.

:class:`StatusBoard` is fed the retained messages of ``jet/+/+/status``,
``+/+/status`` and ``+/+/definition``, checked and kept by
:class:`jet.containers.status.Statuses` (the one reader of statuses), and
turns them into what the page draws: the containers, the circuits with their
gadgets and ports, and the wires between them (from each circuit's definition
and from the ``inputs`` of its status).  It also resolves ``circuit.gadget.port``
names, with the rule ``jet tap`` and ``jet inject`` use
(:func:`jet.address.find_port`).  It is plain data, with no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from jet import address
from jet.address import UnknownPort
from jet.containers.status import Circuit, ContainerStatus, Statuses
from jet.runtime.registry import Registry
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


class StatusBoard:
    """What the operator view draws, kept up to date from the retained messages
    (:class:`~jet.containers.status.Statuses` checks every one of them)."""

    def __init__(self, registry: Registry | None = None) -> None:
        self.statuses = Statuses(registry)

    @property
    def containers(self) -> Mapping[str, ContainerStatus]:
        return self.statuses.containers  # "jet/<kind>/<id>" -> status

    @property
    def circuits(self) -> Mapping[str, Circuit]:
        return self.statuses.circuits  # "<kind>/<circuit_id>" -> circuit

    # -- feeding ---------------------------------------------------------------------

    def update(self, topic: str, payload: bytes) -> bool:
        """Take one status or definition message; True when the board changed."""
        return self.statuses.update(topic, payload)

    # -- reading -----------------------------------------------------------------------

    def circuit_state(self, circuit: Circuit) -> str:
        return self.statuses.state_of(circuit)

    def wire_topics(self) -> set[str]:
        """The topics of the wires between circuits (what a wire rate is counted on)."""
        return {w["topic"] for w in self._external_wires()}

    def snapshot(self) -> dict[str, Any]:
        """The whole board as the page draws it (values already JSON-safe)."""
        return {
            "containers": [
                {"name": name, **_pick(s.fields, _CONTAINER_FIELDS)}
                for name, s in sorted(self.containers.items())
            ],
            "circuits": [self._describe(c) for _, c in sorted(self.circuits.items())],
            "wires": self._internal_wires() + self._external_wires(),
        }

    def _describe(self, c: Circuit) -> dict[str, Any]:
        return {
            "key": c.key,
            "kind": c.kind,
            "id": c.id,
            "name": c.definition.name,
            "state": self.circuit_state(c),
            **_pick(c.status.fields, _CIRCUIT_FIELDS),
            "gadgets": [
                {
                    "name": g.name,
                    "type": g.type,
                    "gid": c.gadget_id(g),
                    "inputs": list(c.drawn_ports(g.name).inputs),
                    "outputs": list(c.drawn_ports(g.name).outputs),
                }
                for g in c.definition.gadgets
            ],
        }

    def _internal_wires(self) -> list[dict[str, Any]]:
        wires = []
        for c in self.circuits.values():
            for w in c.definition.wires:
                gadget = c.definition.gadget(w.src.gadget)
                outputs = c.drawn_ports(w.src.gadget).outputs
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
            for port, subscriptions in sorted(c.status.inputs.items()):
                dst = self._port_end(c, port, output=False)
                for sub in subscriptions:
                    wires.append(
                        {
                            "src": self._topic_end(sub.topic),
                            "dst": dst,
                            "topic": sub.topic,
                            "internal": False,
                        }
                    )
        return wires

    def _port_end(self, c: Circuit, port: str, *, output: bool) -> dict[str, Any]:
        """``gadget.port`` as a circuit names it in commands -> the names the page shows."""
        gid, name = address.split_port(port) or (port, "")
        gadget = c.by_gadget_id(gid)
        if gadget is not None and address.rules(c.kind).numbered and name.isdecimal():
            drawn = c.drawn_ports(gadget.name)
            names = drawn.outputs if output else drawn.inputs
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
        outputs = c.drawn_ports(gadget.name).outputs
        index = parsed.output
        port = outputs[index] if index < len(outputs) else str(index)
        return {"circuit": c.key, "gadget": gadget.name, "port": port}

    # -- naming ports ------------------------------------------------------------------

    def resolve(self, target: str, *, output: bool) -> PortAddress:
        """``circuit.gadget.port`` (or, for an output, any topic) -> where to reach it."""
        if output and "/" in target:
            return PortAddress(None, "", target, "")
        port = self.statuses.find_port(target, output=output)
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
