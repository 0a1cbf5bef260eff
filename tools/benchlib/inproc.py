"""Figure 1: the in-process hop, gadget to gadget inside one circuit.

A chain of ``jet.lib.Scale`` gadgets (factor 1.0) is built by
:class:`jet.network.Network` straight from a :class:`CircuitDef`, exactly as a
pack builds a circuit, with an ``on_emit`` that does what a running circuit
does per emission (look up whether the output is published) and counts what
leaves the last gadget.  N values are emitted from the first gadget; each
travels ``length - 1`` wires.  The baseline is a chain of plain Python
functions of the same length, each multiplying by the factor and calling the
next: the cost of the same work with no runtime in between.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from jet.definition.model import CircuitDef, GadgetDef, PortRef, WireDef
from jet.runtime.network import Network
from jet.runtime.registry import Registry

from .common import BenchError, figure, goal

GOAL = goal(">= 500,000 msg/s per hop", ">=", 500_000)


def chain_definition(length: int) -> CircuitDef:
    gadgets = tuple(GadgetDef(f"g{i}", "jet.lib.Scale", {"factor": 1.0}) for i in range(length))
    wires = tuple(
        WireDef(PortRef(f"g{i}", "out"), PortRef(f"g{i + 1}", "in")) for i in range(length - 1)
    )
    return CircuitDef("chain", gadgets=gadgets, wires=wires)


def jet_chain(length: int) -> tuple[Callable[[float], None], Callable[[], int]]:
    """The first gadget's emit and a counter of values out of the last gadget."""
    definition = chain_definition(length)
    last = f"g{length - 1}"
    # What RunningCircuit._on_emit does first on every emission: is it published?
    published = {g.name: [g.name == last] for g in definition.gadgets}
    count = 0

    def on_emit(gadget: str, index: int, _value: Any) -> None:
        nonlocal count
        if published[gadget][index]:
            count += 1

    network = Network(definition, Registry(), on_emit, label="chain")
    network.activate()
    first = network.slots["g0"].gadget

    def send(value: float) -> None:
        first.emit("out", value)

    return send, lambda: count


def plain_chain(length: int) -> tuple[Callable[[float], None], Callable[[], int]]:
    """The same chain as plain function calls: emit from the first, count at the last."""
    count = 0
    factor = 1.0

    def sink(_value: float) -> None:
        nonlocal count
        count += 1

    nxt: Callable[[float], None] = sink
    for _ in range(length - 1):

        def hop(value: float, nxt: Callable[[float], None] = nxt) -> None:
            nxt(value * factor)

        nxt = hop
    return nxt, lambda: count


def hops_per_second(
    build: Callable[[int], tuple[Callable[[float], None], Callable[[], int]]],
    length: int,
    n: int,
) -> float:
    send, counted = build(length)
    for _ in range(min(n, 1000)):  # warm up caches and specialisation
        send(1.0)
    before = counted()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(n):
            send(1.0)
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    if counted() - before != n:
        raise BenchError(f"chain of {length}: {counted() - before} of {n} values came out")
    return n * (length - 1) / elapsed


def run(quick: bool) -> dict[str, Any]:
    length = 11  # 10 hops
    n = 20_000 if quick else 100_000
    repeats = 3 if quick else 5
    jet_runs: list[float] = []
    plain_runs: list[float] = []
    for _ in range(repeats):  # interleaved, so drift in machine speed hits both alike
        jet_runs.append(hops_per_second(jet_chain, length, n))
        plain_runs.append(hops_per_second(plain_chain, length, n))
    jet_rate = statistics.median(jet_runs)
    plain_rate = statistics.median(plain_runs)
    return {
        "description": "msg/s per hop through a chain of jet.lib.Scale gadgets in one Network",
        "figures": [
            figure(
                "in-process hop",
                jet_rate,
                "msg/s/hop",
                baseline=plain_rate,
                baseline_name="plain Python function-call chain",
                target=GOAL,
                digits=0,
            ),
            figure(
                "in-process hop cost",
                1e9 / jet_rate,
                "ns/hop",
                baseline=1e9 / plain_rate,
                baseline_name="plain Python function-call chain",
                digits=1,
            ),
        ],
        "raw": {
            "chain_gadgets": length,
            "hops": length - 1,
            "values": n,
            "repeats": repeats,
            "statistic": "median",
            "jet_hops_per_s": [round(r) for r in jet_runs],
            "plain_hops_per_s": [round(r) for r in plain_runs],
        },
    }
