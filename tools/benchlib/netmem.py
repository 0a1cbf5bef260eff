"""The small circuit of the load and memory figures, and the memory baseline.

    python -m benchlib.netmem N

prints, as JSON, the RSS growth of a bare Python process that builds N of
these circuits as :class:`jet.network.Network` objects (no pack, no MQTT):
what the gadget graphs themselves cost, to compare a pack's growth with.
"""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import psutil

from jet.definition.model import CircuitDef, GadgetDef, PortRef, WireDef


def small_circuit(name: str, *, changed: bool = False) -> CircuitDef:
    """Scale -> Offset -> Threshold; ``changed`` feeds the Threshold from the Scale instead."""
    gadgets = (
        GadgetDef("s", "jet.lib.Scale", {"factor": 2.0}),
        GadgetDef("o", "jet.lib.Offset", {"offset": 1.0}),
        GadgetDef("t", "jet.lib.Threshold", {"level": 10.0, "hysteresis": 1.0}),
    )
    last = "s" if changed else "o"
    wires = (
        WireDef(PortRef("s", "out"), PortRef("o", "in")),
        WireDef(PortRef(last, "out"), PortRef("t", "in")),
    )
    return CircuitDef(name, gadgets=gadgets, wires=wires)


def _ignore(_gadget: str, _index: int, _value: Any) -> None:
    pass


def measure(n: int) -> dict[str, Any]:
    from jet.runtime.network import Network
    from jet.runtime.registry import Registry

    registry = Registry()
    warm = Network(small_circuit("warm"), registry, _ignore, label="warm")  # imports, caches
    process = psutil.Process()
    gc.collect()
    before = process.memory_info().rss
    networks = []
    for i in range(n):
        network = Network(small_circuit(f"c{i}"), registry, _ignore, label=f"c{i}")
        network.activate()
        networks.append(network)
    gc.collect()
    after = process.memory_info().rss
    del warm
    return {
        "circuits": n,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_circuit": (after - before) / n,
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]))))
