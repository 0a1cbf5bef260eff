"""Hierarchical circuits: a circuit definition used as a gadget.

The composite gadget's inputs are the definition's ``exports_in`` and its
outputs its ``exports_out``; inside, a :class:`~jet.network.Network` runs
the sub-circuit.  Its inner wires stay in-process and are not published.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .gadget import Gadget
from .model import CircuitDef
from .registry import Registry


class Composite(Gadget):
    """Base of the classes :func:`composite_class` makes; one per definition."""

    definition: CircuitDef
    registry: Registry
    label: str

    def __init__(self) -> None:
        from .network import Network  # network imports composite lazily too

        out_index = {
            (ref.gadget, ref.port): i for i, ref in enumerate(self.definition.exports_out.values())
        }
        inner = self.definition

        def forward(gadget: str, index: int, value: Any) -> None:
            slot = self.network.slots[gadget]
            i = out_index.get((gadget, slot.outputs[index]))
            if i is not None:
                self.emit(i, value)

        self.network = Network(inner, self.registry, forward, label=self.label)
        self.network.activate()
        self._routes = dict(inner.exports_in)

    def on_message(self, port: str, value: Any) -> None:
        ref = self._routes[port]
        self.network.deliver_to(ref.gadget, ref.port, value)

    async def run(self) -> None:
        self.network.start()
        try:
            await asyncio.Event().wait()  # lives as long as the enclosing circuit
        finally:
            await self.network.stop()


def composite_class(definition: CircuitDef, registry: Registry, *, label: str) -> type[Gadget]:
    body = {
        "inputs": tuple(definition.exports_in),
        "outputs": tuple(definition.exports_out),
        "definition": definition,
        "registry": registry,
        "label": label,
    }
    return type(f"Composite_{definition.name}", (Composite,), body)
