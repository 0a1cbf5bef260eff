"""``jet check``: everything that can be wrong with an app, found without a broker.

:func:`check_app` returns every problem found (it does not stop at the
first), each naming the file, the line and the offending name.  See
docs/circuit-files.md for the list of checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import msgpack
import networkx as nx

from jet import address
from jet.definition.graph import app_graph, wire_ends
from jet.definition.model import AppDef, CircuitDef, ForeignWire, GadgetDef, PortRef, WireDef
from jet.definition.ports import NODE_TYPES, Ports, ports_of
from jet.definition.webcatalog import param_errors
from jet.runtime.gadget import GadgetError, instantiate
from jet.runtime.registry import Registry, UnknownGadgetType

__all__ = ["Problem", "check_app", "refusal"]

#: Names of pack and web circuits and gadgets (they appear in MQTT topics).
ID_RE = re.compile(r"[a-z0-9_-]+")
#: Names of node circuits, node gadgets and ports, sub-circuits and their ports
#: (they only appear in wires, so they only must not contain '.' or spaces).
NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
NODE_IDS = range(1, 31)
NODE_GADGET_NUMBERS = range(1024)
NODE_MAX_PORTS = 64  # 6-bit port field of the escaped tag
CONF_GADGET, CONF_INPUT = 0, 7  # reserved for configuration messages to the node


@attrs.frozen
class Problem:
    """One thing wrong with an app; ``str()`` is ``path:line: message``."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def check_app(app: AppDef, registry: Registry) -> list[Problem]:
    """Every problem of ``app``, in line order (empty when it is fine)."""
    checker = _Checker(app.source, registry)
    checker.app(app)
    return sorted(checker.problems, key=lambda p: p.line)


#: Problems a refusal names before "and N more".
REFUSAL_NAMES = 3


def refusal(definition: CircuitDef, registry: Registry) -> str | None:
    """Why a container must refuse a circuit definition it received (None: accept it).

    The checks of ``jet check`` on that one circuit: every container runs them
    on every definition it is sent (``load``, ``reload``) or reads back from its
    state file, so a raw command cannot give it what ``jet check`` would refuse
    (a delay-free cycle recurses forever; two wires into one input).  One line.
    """
    app = AppDef(definition.name, (definition,), source=f"circuit {definition.name}")
    problems = check_app(app, registry)
    if not problems:
        return None
    named = "; ".join(" ".join(p.message.splitlines()) for p in problems[:REFUSAL_NAMES])
    more = len(problems) - REFUSAL_NAMES
    return named + (f"; and {more} more (jet check names them all)" if more > 0 else "")


def unsendable(value: Any) -> str | None:
    """Why ``value`` cannot travel in a message (a ``load`` carries every parameter), or None.

    The encoding is msgpack's, as :mod:`jet.transport.codec` uses it (a layer this one may
    not import): an integer beyond 64 bits, for one, has no msgpack form.
    """
    try:
        msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:39] + "…"
        return f"cannot be sent in a message (msgpack): {shown}: {exc}"
    return None


def _names(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"


def _type_name(t: object) -> str:
    return t.__name__ if isinstance(t, type) else str(t)


def _as_type(t: object) -> type | None:
    if isinstance(t, str):
        return NODE_TYPES.get(t)
    return t if isinstance(t, type) else None


def compatible(src: object, dst: object) -> bool:
    """Can a value declared ``src`` go to an input declared ``dst``?  (int fits float.)"""
    s, d = _as_type(src), _as_type(dst)
    if s is None or d is None or d is object:
        return True
    return issubclass(s, d) or (d is float and issubclass(s, int))


def _describe(circuit: CircuitDef, gadget: GadgetDef) -> str:
    if circuit.container == "node":
        return f"node gadget #{gadget.number}" if gadget.number is not None else "node gadget"
    return gadget.type or "no type"


def _missing_port(
    circuit: CircuitDef, gadget: GadgetDef, ports: Ports, port: str, output: bool
) -> str | None:
    """Why ``port`` is not an output (or input) of ``gadget``; None when it is."""
    names, what = (ports.outputs, "output") if output else (ports.inputs, "input")
    if port in names:
        return None
    return (
        f"gadget {circuit.name}.{gadget.name} ({_describe(circuit, gadget)})"
        f" has no {what} {port!r} ({what}s: {_names(names)})"
    )


#: input (circuit, gadget, port) -> (line, what feeds it: "the wire ..." or a sub-circuit input)
_Fed = dict[tuple[str, str, str], tuple[int | None, str]]


def _at(line: int | None, first: bool = False) -> str:
    """`` (line N)`` (``first at``); nothing for a definition received without lines."""
    if not line:
        return ""
    return f" (first at line {line})" if first else f" (line {line})"


@attrs.define
class _Checker:
    source: str
    registry: Registry
    problems: list[Problem] = attrs.Factory(list)
    # ports of each gadget, per circuit object (None: type unknown, already reported)
    ports: dict[tuple[int, str], Ports | None] = attrs.Factory(dict)

    def add(self, line: int | None, message: str) -> None:
        self.problems.append(Problem(self.source, line or 0, message))

    # --- the whole app -------------------------------------------------------------

    def app(self, app: AppDef) -> None:
        seen: dict[str, CircuitDef] = {}
        nodes: dict[int, CircuitDef] = {}
        for circuit in app.circuits:
            if circuit.name in seen:
                first = seen[circuit.name].line
                self.add(
                    circuit.line, f"duplicate circuit name {circuit.name!r}{_at(first, True)}"
                )
            seen.setdefault(circuit.name, circuit)
            self.circuit(circuit, "circuit")
            if circuit.container == "node" and circuit.node is not None:
                other = nodes.setdefault(circuit.node, circuit)
                if other is not circuit and circuit.node in NODE_IDS:
                    self.add(
                        circuit.line,
                        f"node circuit {circuit.name!r}: node id {circuit.node} is already used"
                        f" by circuit {other.name!r}{_at(other.line)}",
                    )
        fed: _Fed = {}
        for circuit in app.circuits:
            for wire in circuit.wires:
                self.wire(seen, circuit, wire, fed)
        for wire in app.wires:
            self.wire(seen, None, wire, fed)
        for foreign in app.foreign:
            self.foreign_wire(seen, foreign, fed)
        graph = app_graph(app)
        for circuit in app.circuits:
            if circuit.container == "pack":
                self.cycles(graph, circuit, "circuit")
        # Every sub-circuit once, nested ones included: a file lists them all in each
        # circuit, a definition received from elsewhere may keep them in their user.
        done: set[int] = set()
        pending = [sub for circuit in app.circuits for sub in circuit.subcircuits.values()]
        for sub in pending:  # (grows while it is walked)
            if id(sub) not in done:
                done.add(id(sub))
                self.subcircuit(sub)
                pending.extend(sub.subcircuits.values())

    # --- one circuit (or sub-circuit) ----------------------------------------------------

    def circuit(self, circuit: CircuitDef, kind: str) -> None:
        # A name that becomes a topic level must be an ID_RE (address.rules says which).
        rules = address.rules(circuit.container)
        pattern = ID_RE if rules.ids_are_names and kind != "sub-circuit" else NAME_RE
        if not pattern.fullmatch(circuit.name):
            self.add(circuit.line, f"{kind} name {circuit.name!r} must match {pattern.pattern}")
        if circuit.container == "node":
            self.node_circuit(circuit)
        names: dict[str, GadgetDef] = {}
        gadget_re = NAME_RE if rules.numbered else ID_RE
        for gadget in circuit.gadgets:
            where = f"{circuit.name}.{gadget.name}"
            if gadget.name in names:
                self.add(
                    gadget.line,
                    f"{kind} {circuit.name!r}: duplicate gadget name {gadget.name!r}"
                    f"{_at(names[gadget.name].line, True)}",
                )
            names.setdefault(gadget.name, gadget)
            if not gadget_re.fullmatch(gadget.name):
                self.add(gadget.line, f"gadget name {where!r} must match {gadget_re.pattern}")
            self.gadget(circuit, gadget, where)

    def node_circuit(self, circuit: CircuitDef) -> None:
        name = circuit.name
        if circuit.node is None:
            self.add(circuit.line, f"node circuit {name!r} has no node id")
        elif circuit.node not in NODE_IDS:
            self.add(
                circuit.line, f"node circuit {name!r}: node id {circuit.node} is outside 1..30"
            )
        numbers: dict[int, GadgetDef] = {}
        for index, gadget in enumerate(circuit.gadgets):
            label = f"node circuit {name!r}: gadget {gadget.name!r}"
            number = address.gadget_number(gadget, index)  # (the hub's rule: its place)
            if not isinstance(number, int) or number not in NODE_GADGET_NUMBERS:
                self.add(gadget.line, f"{label} number {number!r} is outside 0..1023")
            elif number in numbers:
                other = numbers[number]
                self.add(
                    gadget.line,
                    f"{label} has number {number}, like gadget {other.name!r}{_at(other.line)}",
                )
            else:
                numbers[number] = gadget
            for direction, ports in (("inputs", gadget.inputs), ("outputs", gadget.outputs)):
                if len(ports) > NODE_MAX_PORTS:
                    self.add(gadget.line, f"{label} has {len(ports)} {direction}; at most 64")
                if len(set(ports)) != len(ports):
                    dup = next(p for p in ports if ports.count(p) > 1)
                    self.add(gadget.line, f"{label}: duplicate port name {dup!r}")
                for port in ports:
                    if not NAME_RE.fullmatch(port):
                        self.add(
                            gadget.line, f"{label}: port name {port!r} must match {NAME_RE.pattern}"
                        )
            if number == CONF_GADGET and len(gadget.inputs) > CONF_INPUT:
                self.add(
                    gadget.line,
                    f"{label}: input {CONF_INPUT} ({gadget.inputs[CONF_INPUT]!r}) of gadget 0"
                    " is reserved for configuration messages",
                )

    def gadget(self, circuit: CircuitDef, gadget: GadgetDef, where: str) -> None:
        key = (id(circuit), gadget.name)
        if key in self.ports:
            return
        try:
            ports: Ports | None = ports_of(gadget, circuit, self.registry)
        except UnknownGadgetType as exc:
            self.add(gadget.line, f"gadget {where}: {exc}")
            ports = None
        self.ports[key] = ports
        for name, value in gadget.params.items():
            why = unsendable(value)
            if why is not None:
                self.add(gadget.line, f"gadget {where}: parameter {name!r} {why}")
        if ports is None or gadget.type is None or circuit.container == "node":
            return
        if circuit.container == "web":
            for message in param_errors(gadget.type, gadget.params):
                self.add(gadget.line, f"gadget {where}: {message}")
        elif gadget.type in circuit.subcircuits:
            if gadget.params:
                self.add(
                    gadget.line,
                    f"gadget {where}: sub-circuit {gadget.type!r} takes no parameters"
                    f" (got {_names(gadget.params)})",
                )
        else:
            self.params(gadget, where)

    def params(self, gadget: GadgetDef, where: str) -> None:
        assert gadget.type is not None
        try:
            instantiate(self.registry.resolve(gadget.type), dict(gadget.params))
        except (GadgetError, UnknownGadgetType) as exc:
            self.add(gadget.line, f"gadget {where}: {exc}")
        except Exception as exc:  # a gadget constructor may fail in any way
            self.add(gadget.line, f"gadget {where}: {type(exc).__name__}: {exc}")

    def ports_for(self, circuit: CircuitDef, gadget: GadgetDef) -> Ports | None:
        key = (id(circuit), gadget.name)
        if key not in self.ports:  # pragma: no cover - every gadget is checked first
            self.gadget(circuit, gadget, f"{circuit.name}.{gadget.name}")
        return self.ports[key]

    # --- wires ---------------------------------------------------------------------------

    def end(
        self,
        circuits: Mapping[str, CircuitDef],
        ref: PortRef,
        output: bool,
        wire: WireDef | ForeignWire,
        text: str,
    ) -> tuple[Ports | None, Any]:
        """Check one end of a wire; (ports of its gadget, declared type or None) when valid."""
        circuit = circuits.get(ref.circuit or "")
        if circuit is None:
            known = _names(circuits)
            self.add(
                wire.line, f"wire {text}: no circuit named {ref.circuit!r} (circuits: {known})"
            )
            return None, None
        gadget = circuit.gadget(ref.gadget)
        if gadget is None:
            known = _names(g.name for g in circuit.gadgets)
            self.add(
                wire.line,
                f"wire {text}: circuit {circuit.name!r} has no gadget {ref.gadget!r}"
                f" (gadgets: {known})",
            )
            return None, None
        ports = self.ports_for(circuit, gadget)
        if ports is None:
            return None, None
        missing = _missing_port(circuit, gadget, ports, ref.port, output)
        if missing:
            self.add(wire.line, f"wire {text}: {missing}")
            return None, None
        return ports, (ports.output_types if output else ports.input_types).get(ref.port)

    def wire(
        self,
        circuits: Mapping[str, CircuitDef],
        circuit: CircuitDef | None,
        wire: WireDef,
        fed: _Fed,
    ) -> None:
        src, dst = wire_ends(circuit, wire)
        if circuit is not None:
            circuits = {circuit.name: circuit}
        text = f"{src} -> {dst}"
        if circuit is not None and wire.policy == "block":
            self.add(
                wire.line,
                f"wire {text}: policy 'block' needs a wire between circuits"
                " (inside a circuit a sender cannot wait; use drop-oldest or drop-newest)",
            )
        src_ports, src_type = self.end(circuits, src, True, wire, text)
        dst_ports, dst_type = self.end(circuits, dst, False, wire, text)
        if dst_ports is not None:
            self.feed(fed, dst, wire.line, f"the wire {text}" if wire.line is None else "")
        if src_ports is not None and dst_ports is not None and not compatible(src_type, dst_type):
            self.add(
                wire.line,
                f"wire {text}: type mismatch: {src} gives {_type_name(src_type)},"
                f" {dst} takes {_type_name(dst_type)}",
            )

    def foreign_wire(
        self, circuits: Mapping[str, CircuitDef], wire: ForeignWire, fed: _Fed
    ) -> None:
        """A wire between a port and a device's topic: a pack or web circuit's port that
        exists, an input fed once (a topic counts as its feed), a filter only into a pack."""
        text = str(wire)
        circuit = circuits.get(wire.port.circuit or "")
        if circuit is not None and circuit.container == "node":
            self.add(
                wire.line,
                f"wire {text}: a node circuit does not read or write a device's topic"
                " (wire it to a pack circuit that does)",
            )
            return
        wildcard = any(level in ("+", "#") for level in wire.topic.split("/"))
        if circuit is not None and circuit.container != "pack" and wildcard:
            self.add(wire.line, f"wire {text}: only a pack circuit reads a topic filter")
            return
        ports, _declared = self.end(circuits, wire.port, not wire.inbound, wire, text)
        if ports is not None and wire.inbound:
            self.feed(fed, wire.port, wire.line)

    def feed(self, fed: _Fed, dst: PortRef, line: int | None, by: str = "") -> None:
        """Record that ``dst`` is fed by ``by`` (empty: the wire at ``line``); one feed each."""
        key = (dst.circuit or "", dst.gadget, dst.port)
        if key not in fed:
            fed[key] = (line, by)
            return
        first_line, first_by = fed[key]
        if not (by or first_by):
            self.add(line, f"input {dst} has two wires (lines {first_line} and {line})")
            return
        first = first_by or f"the wire at line {first_line}"
        second = by or f"the wire at line {line}"
        self.add(line, f"input {dst} has two wires: {first} and {second}")

    # --- cycles --------------------------------------------------------------------------

    def cycles(self, graph: nx.MultiDiGraph, circuit: CircuitDef, kind: str) -> None:
        """A loop of in-process calls inside one circuit must pass through a delay gadget."""
        eager = nx.MultiDiGraph()
        for gadget in circuit.gadgets:
            ports = self.ports.get((id(circuit), gadget.name))
            if ports is not None and not ports.delay:
                eager.add_node((circuit.name, gadget.name))
        for u, v, data in graph.edges(data=True):
            if u in eager and v in eager and data["internal"]:
                eager.add_edge(u, v, **data)
        for component in nx.strongly_connected_components(eager):
            first = next(iter(component))
            if len(component) == 1 and not eager.has_edge(first, first):
                continue
            loop = [eager.edges[e] for e in nx.find_cycle(eager.subgraph(component))]
            start = min(range(len(loop)), key=lambda i: loop[i]["wire"].line or 0)
            loop = loop[start:] + loop[:start]
            path = ", ".join(str(d["wire"]) for d in loop)
            gadgets = ", ".join(sorted({d["wire"].src.gadget for d in loop}))
            self.add(
                loop[0]["wire"].line,
                f"{kind} {circuit.name!r}: cycle without a delay through {gadgets}: {path}",
            )

    # --- sub-circuits -------------------------------------------------------------------------

    def subcircuit(self, sub: CircuitDef) -> None:
        self.circuit(sub, "sub-circuit")
        fed: _Fed = {}
        for refs, output in ((sub.inputs, False), (sub.outputs, True)):
            for name, ref in refs.items():
                what = f"{'output' if output else 'input'} {name!r}"
                label = f"sub-circuit {sub.name!r}: {what}"
                if not NAME_RE.fullmatch(name):
                    self.add(sub.line, f"{label} must match {NAME_RE.pattern}")
                gadget = sub.gadget(ref.gadget)
                if gadget is None:
                    known = _names(g.name for g in sub.gadgets)
                    self.add(
                        sub.line,
                        f"{label} names missing gadget {ref.gadget!r} (gadgets: {known})",
                    )
                    continue
                ports = self.ports_for(sub, gadget)
                if ports is None:
                    continue
                missing = _missing_port(sub, gadget, ports, ref.port, output)
                if missing:
                    self.add(sub.line, f"{label}: {missing}")
                elif not output:
                    self.feed(fed, PortRef(ref.gadget, ref.port, sub.name), sub.line, what)
        for wire in sub.wires:
            self.wire({}, sub, wire, fed)
        self.cycles(app_graph(AppDef(sub.name, (sub,))), sub, "sub-circuit")
