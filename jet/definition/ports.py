"""The ports of a gadget, whatever kind of gadget it is.

* pack gadgets: the Python class the :class:`~jet.runtime.registry.Registry` resolves;
* web gadgets: :data:`jet.definition.webcatalog.WEB_GADGETS`;
* node gadgets: the ``inputs``/``outputs`` declared in the circuit file
  (with optional types in ``params["types"]``);
* sub-circuit gadgets (a type naming a key of ``circuit.subcircuits``): the
  sub-circuit's ``inputs``/``outputs``, typed like the inner ports they map to.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
import networkx as nx

from jet.definition.model import CircuitDef, GadgetDef
from jet.definition.webcatalog import WEB_GADGETS
from jet.runtime.gadget import input_names, output_names, port_types
from jet.runtime.registry import Registry, UnknownGadgetType

__all__ = ["NODE_TYPES", "Ports", "ports_of"]

#: Port types a node gadget may declare (``{name: x, type: float}``).
NODE_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "bytes": bytes}


@attrs.frozen
class Ports:
    """Inputs and outputs in order; declared types; whether the gadget is a delay."""

    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    input_types: Mapping[str, object] = attrs.field(factory=dict)
    output_types: Mapping[str, object] = attrs.field(factory=dict)
    delay: bool = False


def ports_of(gadget: GadgetDef, circuit: CircuitDef, registry: Registry) -> Ports:
    """The ports of ``gadget`` inside ``circuit``.

    Raises :class:`~jet.runtime.registry.UnknownGadgetType` (a ``LookupError``) with a
    one-line message when the type cannot be resolved.
    """
    return _ports(gadget, circuit, registry, ())


def _ports(
    gadget: GadgetDef, circuit: CircuitDef, registry: Registry, stack: tuple[str, ...]
) -> Ports:
    if circuit.container == "node":
        types = gadget.params.get("types")
        declared = types if isinstance(types, Mapping) else {}
        typed = {k: NODE_TYPES[v] for k, v in declared.items() if v in NODE_TYPES}
        return Ports(
            inputs=tuple(gadget.inputs),
            outputs=tuple(gadget.outputs),
            input_types={k: v for k, v in typed.items() if k in gadget.inputs},
            output_types={k: v for k, v in typed.items() if k in gadget.outputs},
        )
    if gadget.type is None:
        raise UnknownGadgetType(f"gadget {gadget.name!r} has no type")
    if circuit.container == "web":
        spec = WEB_GADGETS.get(gadget.type)
        if spec is None:
            known = ", ".join(sorted(WEB_GADGETS))
            raise UnknownGadgetType(f"unknown web gadget type {gadget.type!r} (known: {known})")
        return Ports(inputs=spec.inputs, outputs=spec.outputs)
    sub = circuit.subcircuits.get(gadget.type)
    if sub is not None:
        return _sub_ports(gadget.type, sub, registry, stack)
    try:
        cls = registry.resolve(gadget.type)
    except UnknownGadgetType:
        raise
    except Exception as exc:  # importing allowed code may fail in any way
        raise UnknownGadgetType(f"cannot load gadget type {gadget.type!r}: {exc}") from exc
    return Ports(
        inputs=input_names(cls),
        outputs=output_names(cls),
        input_types=port_types(cls.inputs),
        output_types=port_types(cls.outputs),
        delay=bool(cls.delay),
    )


def _sub_ports(name: str, sub: CircuitDef, registry: Registry, stack: tuple[str, ...]) -> Ports:
    if name in stack:
        raise UnknownGadgetType(f"sub-circuit {name!r} uses itself ({' -> '.join(stack)})")
    stack = (*stack, name)
    inner: dict[str, Ports] = {}
    for g in sub.gadgets:
        try:
            inner[g.name] = _ports(g, sub, registry, stack)
        except UnknownGadgetType:
            # reported where the sub-circuit is checked; here it only passes through
            inner[g.name] = Ports()
    input_types = {
        port: inner[ref.gadget].input_types[ref.port]
        for port, ref in sub.inputs.items()
        if ref.gadget in inner and ref.port in inner[ref.gadget].input_types
    }
    output_types = {
        port: inner[ref.gadget].output_types[ref.port]
        for port, ref in sub.outputs.items()
        if ref.gadget in inner and ref.port in inner[ref.gadget].output_types
    }
    # The sub-circuit gadget is a delay when no path from one of its inputs
    # to one of its outputs avoids every inner delay gadget.
    passing = nx.DiGraph()
    passing.add_nodes_from(n for n, p in inner.items() if not p.delay)
    passing.add_edges_from(
        (w.src.gadget, w.dst.gadget)
        for w in sub.wires
        if w.src.gadget in passing and w.dst.gadget in passing
    )
    starts = {r.gadget for r in sub.inputs.values() if r.gadget in passing}
    ends = {r.gadget for r in sub.outputs.values() if r.gadget in passing}
    reach = set(starts).union(*(nx.descendants(passing, s) for s in starts))
    return Ports(
        inputs=tuple(sub.inputs),
        outputs=tuple(sub.outputs),
        input_types=input_types,
        output_types=output_types,
        delay=not (reach & ends),
    )
