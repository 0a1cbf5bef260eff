"""Circuit definitions: the data that describes an app, independent of YAML.

A definition is plain, frozen data.  It travels to a container as a
msgpack-able map, its *msgpack form* (see :func:`circuit_to_msgpack` /
:func:`circuit_from_msgpack`), in conf commands, retained statuses and pack
state files, so a container learns *what* to build, never code: gadget types
are names that the container resolves against its own allow list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from jet import address
from jet.address import NAME_RE

Container = Literal["pack", "node", "web"]
CONTAINERS: tuple[Container, ...] = ("pack", "node", "web")


@attrs.frozen
class PortRef:
    """``gadget.port`` inside a circuit; ``circuit`` is set for app-level wires."""

    gadget: str
    port: str
    circuit: str | None = None

    def __str__(self) -> str:
        head = f"{self.circuit}." if self.circuit else ""
        return f"{head}{self.gadget}.{self.port}"

    def local(self) -> PortRef:
        return PortRef(self.gadget, self.port)


@attrs.frozen
class GadgetDef:
    """One gadget of a circuit.

    ``type`` names a Python gadget class (pack), a web gadget (web), or a
    sub-circuit (a key of the circuit's ``subcircuits``); it is None for firmware
    gadgets of a node, whose ports are declared in ``inputs``/``outputs``.
    ``number`` is the node gadget number (0..1023); ``line`` the YAML line.
    """

    name: str
    type: str | None = None
    params: Mapping[str, Any] = attrs.field(factory=dict)
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    number: int | None = None
    line: int | None = attrs.field(default=None, eq=False)


#: What a full input queue does with one more message (docs/reliability.md).
POLICIES = ("block", "drop-oldest", "drop-newest")
#: The longest input queue a wire may ask for: a queue is memory (a message may be
#: a megabyte), and one that long only hides a consumer that cannot keep up.
MAX_QUEUE = 100_000


def queue_limit(value: object) -> int:
    """``value`` as a queue bound; ValueError (one line) unless a whole number 1..MAX_QUEUE.

    The one rule for every place a queue bound arrives: a circuit file, a
    received definition, a ``wire`` command, a wire restored from a state file.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_QUEUE:
        raise ValueError(f"queue must be a whole number from 1 to {MAX_QUEUE}, not {value!r:.40}")
    return value

#: How deep sub-circuits may nest (a sub-circuit using one that uses one ...).
MAX_NESTING = 16
#: How many gadgets one circuit may have once every use of a sub-circuit is
#: expanded (each use runs a network of its own): a few kilobytes of nested
#: definitions, each used twice, would otherwise expand to millions.
MAX_EXPANDED_GADGETS = 10_000
#: The most copies ``replicas`` may ask for (a group of more members is not what JET is for).
MAX_REPLICAS = 64


@attrs.frozen
class WireDef:
    """output -> input.  ``qos`` applies when the wire crosses MQTT.

    ``queue``/``policy`` bound the input queue of a gadget with an async
    handler: None means the default (1000; ``block`` for MQTT wires, which
    pushes back on the broker, ``drop-oldest`` inside a circuit, where a
    synchronous sender cannot wait).
    """

    src: PortRef
    dst: PortRef
    qos: int = 1
    line: int | None = attrs.field(default=None, eq=False)
    queue: int | None = None
    policy: str | None = None

    def __str__(self) -> str:
        return f"{self.src} -> {self.dst}"


#: The payload formats of a foreign topic (jet.transport.formats.FORMATS, which reads them).
FOREIGN_FORMATS = ("json", "text", "raw", "msgpack", "presence")


@attrs.frozen
class ForeignWire:
    """A wire between a port of a pack circuit and a topic that is not JET's (a device's).

    ``inbound``: from ``topic`` (a filter) into the input ``port``; else from the
    output ``port`` out to ``topic``.  ``payload`` is how the messages read or write:
    ``{"format": ..., "path": ..., "map": ...}`` (jet.transport.formats.Format's map).
    """

    port: PortRef
    topic: str
    inbound: bool
    payload: Mapping[str, Any] = attrs.field(factory=lambda: {"format": "json"})
    qos: int = 1
    retain: bool = False
    queue: int | None = None
    policy: str | None = None
    line: int | None = attrs.field(default=None, eq=False)

    def __str__(self) -> str:
        return f"{self.topic} -> {self.port}" if self.inbound else f"{self.port} -> {self.topic}"

    def target(self) -> dict[str, Any]:
        """An outbound wire as a load command names it (under ``foreign``)."""
        return {"topic": self.topic, "qos": self.qos, "retain": self.retain, **self.payload}


@attrs.frozen
class CircuitDef:
    """A circuit: gadgets plus the wires between them.

    Used both for running circuits (``container`` says where) and for
    sub-circuits: a sub-circuit is a circuit used as a gadget type, and its
    ``inputs``/``outputs`` map that gadget's port names to ports of gadgets
    inside it (they are empty for a circuit that is not a sub-circuit).
    ``subcircuits`` holds every sub-circuit this circuit uses, nested ones
    included, by name.
    """

    name: str
    container: Container = "pack"
    gadgets: tuple[GadgetDef, ...] = ()
    wires: tuple[WireDef, ...] = ()
    node: int | None = None
    pack: str | None = None
    #: copies asked for (``replicas: N``): ``pack`` then names a group (docs/groups.md)
    replicas: int | None = None
    #: the level whose broker runs it (an app with ``levels``), None on an app's one broker
    level: str | None = None
    inputs: Mapping[str, PortRef] = attrs.field(factory=dict)
    outputs: Mapping[str, PortRef] = attrs.field(factory=dict)
    subcircuits: Mapping[str, CircuitDef] = attrs.field(factory=dict)
    line: int | None = attrs.field(default=None, eq=False)

    def gadget(self, name: str) -> GadgetDef | None:
        return next((g for g in self.gadgets if g.name == name), None)


class TooLarge(ValueError):
    """A circuit nests sub-circuits too deeply or expands to too many gadgets."""


def expansion(circuit: CircuitDef) -> tuple[int, int]:
    """``(nesting depth, gadgets once expanded)`` of ``circuit``; :class:`TooLarge` beyond
    :data:`MAX_NESTING` or :data:`MAX_EXPANDED_GADGETS`.

    Counted, never expanded: each sub-circuit definition is visited once
    however many times it is used, so the answer takes microseconds where
    the expansion would take gigabytes.
    """
    counted: dict[int, tuple[int, int]] = {}  # id(sub-circuit) -> (depth, gadgets)

    def count(c: CircuitDef, level: int) -> tuple[int, int]:
        done = counted.get(id(c))
        if done is not None:
            return done
        if level > MAX_NESTING:
            raise TooLarge(
                f"circuit {circuit.name!r}: sub-circuits nested more than {MAX_NESTING} deep"
                f" (at {c.name!r})"
            )
        depth, gadgets = 0, 0
        for g in c.gadgets:
            sub = c.subcircuits.get(g.type) if g.type is not None else None
            if sub is None:
                gadgets += 1
            else:
                inner_depth, inner_gadgets = count(sub, level + 1)
                depth, gadgets = max(depth, inner_depth + 1), gadgets + 1 + inner_gadgets
        if gadgets > MAX_EXPANDED_GADGETS:
            inside = "" if c is circuit else f" (sub-circuit {c.name!r} alone)"
            raise TooLarge(
                f"circuit {circuit.name!r}: {gadgets} gadgets once its sub-circuits are"
                f" expanded{inside}; at most {MAX_EXPANDED_GADGETS}"
            )
        counted[id(c)] = (depth, gadgets)
        return depth, gadgets

    found = count(circuit, 0)
    if found[0] > MAX_NESTING:  # a sub-circuit counted first where it was shallower
        raise TooLarge(
            f"circuit {circuit.name!r}: sub-circuits nested {found[0]} deep; at most {MAX_NESTING}"
        )
    return found


@attrs.frozen
class AppDef:
    """An app file: circuits loaded in order, and the wires between them.

    ``levels`` (level name -> broker URL, None where ``jet run`` of a levels file
    gives it) places the app on a tree of levels (docs/levels.md): each circuit
    names its level, and runs on that level's broker.
    """

    name: str
    circuits: tuple[CircuitDef, ...] = ()
    wires: tuple[WireDef, ...] = ()
    source: str = "<memory>"
    levels: Mapping[str, str | None] = attrs.field(factory=dict)
    #: wires between ports and topics that are not JET's (devices' topics)
    foreign: tuple[ForeignWire, ...] = ()

    def circuit(self, name: str) -> CircuitDef | None:
        return next((c for c in self.circuits if c.name == name), None)


# --- msgpack form (msgpack-able maps) ---------------------------------------------
#
# Keys read under an older name, so definitions written by an older loader (in a
# command, a retained status or a pack state file) still build: the sub-circuit
# ports were "exports_in"/"exports_out".
_OLD_KEYS = {"inputs": "exports_in", "outputs": "exports_out"}


def _port_to_msgpack(ref: PortRef) -> str:
    return str(ref)


def _port_from_msgpack(text: str) -> PortRef:
    parts = text.split(".")
    if len(parts) == 2:
        return PortRef(parts[0], parts[1])
    if len(parts) == 3:
        return PortRef(parts[1], parts[2], parts[0])
    raise ValueError(f"bad port reference {text!r}: expected gadget.port")


def wire_to_msgpack(w: WireDef) -> dict[str, Any]:
    d: dict[str, Any] = {
        "from": _port_to_msgpack(w.src), "to": _port_to_msgpack(w.dst), "qos": w.qos
    }
    if w.queue is not None:
        d["queue"] = w.queue
    if w.policy is not None:
        d["policy"] = w.policy
    return d


def wire_from_msgpack(d: Mapping[str, Any]) -> WireDef:
    policy = d.get("policy")
    if policy is not None and policy not in POLICIES:
        raise ValueError(f"unknown queue policy {policy!r} (one of {', '.join(POLICIES)})")
    queue, qos = d.get("queue"), d.get("qos", 1)
    if isinstance(qos, bool) or qos not in (0, 1, 2):
        raise ValueError(f"wire qos must be 0, 1 or 2, not {qos!r}")
    if queue is not None:
        queue_limit(queue)
    return WireDef(
        _port_from_msgpack(d["from"]),
        _port_from_msgpack(d["to"]),
        int(qos),
        queue=queue,
        policy=policy,
    )


def circuit_to_msgpack(c: CircuitDef) -> dict[str, Any]:
    """A msgpack-able map describing ``c`` (line numbers are not sent)."""
    return {
        "name": c.name,
        "container": c.container,
        "node": c.node,
        "pack": c.pack,
        **({"replicas": c.replicas} if c.replicas is not None else {}),
        "gadgets": [
            {
                "name": g.name,
                "type": g.type,
                "params": dict(g.params),
                "inputs": list(g.inputs),
                "outputs": list(g.outputs),
                "number": g.number,
            }
            for g in c.gadgets
        ],
        "wires": [wire_to_msgpack(w) for w in c.wires],
        "inputs": {k: str(v) for k, v in c.inputs.items()},
        "outputs": {k: str(v) for k, v in c.outputs.items()},
        "subcircuits": {k: circuit_to_msgpack(v) for k, v in c.subcircuits.items()},
    }


def circuit_from_msgpack(d: Mapping[str, Any]) -> CircuitDef:
    """Inverse of :func:`circuit_to_msgpack`; raises KeyError/ValueError/TypeError on bad data."""
    container = d.get("container", "pack")
    if container not in CONTAINERS:
        raise ValueError(f"unknown container {container!r}")
    circuit = _circuit_from_msgpack(d, container, 0)
    expansion(circuit)  # refused before anything expands it
    if not address.rules(container).numbered:
        # Names become topic levels: only what a topic level can safely hold.
        for gadget in circuit.gadgets:
            if not NAME_RE.match(gadget.name):
                raise ValueError(f"gadget name {gadget.name!r} must match [a-z0-9_-]+")
    return circuit


def _circuit_from_msgpack(d: Mapping[str, Any], container: Container, level: int) -> CircuitDef:
    if level > MAX_NESTING:
        raise TooLarge(f"sub-circuits nested more than {MAX_NESTING} deep (at {d.get('name')!r})")
    return CircuitDef(
        name=str(d["name"]),
        container=container,
        node=d.get("node"),
        pack=d.get("pack"),
        replicas=_replicas(d.get("replicas")),
        gadgets=tuple(
            GadgetDef(
                name=str(g["name"]),
                type=_type_name(g.get("type")),
                params=dict(g.get("params") or {}),
                inputs=tuple(g.get("inputs") or ()),
                outputs=tuple(g.get("outputs") or ()),
                number=g.get("number"),
            )
            for g in d.get("gadgets") or ()
        ),
        wires=tuple(wire_from_msgpack(w) for w in d.get("wires") or ()),
        inputs=_ports_from_msgpack(d, "inputs"),
        outputs=_ports_from_msgpack(d, "outputs"),
        subcircuits={
            # (inner gadgets never become topic levels: no name check there)
            k: _circuit_from_msgpack(v, v.get("container", "pack"), level + 1)
            for k, v in (d.get("subcircuits") or {}).items()
        },
    )


def _replicas(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REPLICAS:
        raise ValueError(f"replicas must be a whole number 1 to {MAX_REPLICAS}, not {value!r}")
    return value


def _type_name(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"gadget type must be a string, not {type(value).__name__}")
    return value


def _ports_from_msgpack(d: Mapping[str, Any], key: str) -> dict[str, PortRef]:
    ports = d.get(key)
    if ports is None:
        ports = d.get(_OLD_KEYS[key])
    return {k: _port_from_msgpack(v) for k, v in (ports or {}).items()}
