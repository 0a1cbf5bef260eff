"""The layers of docs/architecture.md hold: no import cycle between modules, and each layer
imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

REPO = Path(__file__).resolve().parent.parent
ROOTS = {"jet": REPO / "jet", "jet_rf12": REPO / "drivers" / "jet_rf12"}

#: Which layers a layer may import (docs/architecture.md): definition and runtime know only
#: the names of the transport (address); containers join runtime and transport.
ALLOWED = {
    "jet.address": {"jet.address"},  # names only: below every layer
    "jet.tasks": {"jet.tasks"},
    "jet.transport": {"jet.transport", "jet.address", "jet.tasks"},
    "jet.definition": {"jet.definition", "jet.address", "jet.runtime", "jet.tasks"},
    "jet.runtime": {"jet.runtime", "jet.definition", "jet.address", "jet.tasks"},
    "jet.containers": {
        "jet.containers", "jet.runtime", "jet.definition", "jet.transport", "jet.address",
        "jet.tasks",
    },
    # Devices: the MQTT devices people own (simulated ones, for now), on the transport.
    # (plug-n-process loads circuits: the loader, and the statuses it reads)
    "jet.devices": {
        "jet.devices", "jet.transport", "jet.definition", "jet.address", "jet.tasks",
        "jet.loader", "jet.containers", "jet.runtime", "jet.levels",
    },
    # Pack groups: copies of circuits over the shared containers, placed by a leader.
    "jet.cluster": {
        "jet.cluster", "jet.containers", "jet.runtime", "jet.definition", "jet.transport",
        "jet.address", "jet.tasks",
    },
    # Levels carry messages between brokers: the transport, and a CLI value reader.
    "jet.levels": {
        "jet.levels", "jet.transport", "jet.definition", "jet.address", "jet.tasks",
        "jet.embedded",
    },
}


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for root_name, root in ROOTS.items():
        for path in root.rglob("*.py"):
            parts = [root_name, *path.relative_to(root).with_suffix("").parts]
            is_pkg = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return found


def _imports() -> nx.DiGraph:
    """Module-level imports between our modules (a package counts as its __init__)."""
    modules = _modules()
    graph = nx.DiGraph()
    for name, (path, is_pkg) in modules.items():
        graph.add_node(name)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [
                    f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names
                ]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if not target or target == name:
                    continue
                graph.add_edge(name, target)
                # importing a.b.c runs a/__init__ and a/b/__init__ first
                parts = target.split(".")
                for i in range(1, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent in modules and parent != name and not name.startswith(parent + "."):
                        graph.add_edge(name, parent)
    return graph


def test_no_import_cycle_between_modules() -> None:
    graph = _imports()
    assert graph.has_edge("jet.containers.pack", "jet.runtime.network")  # the graph is real
    cycles = list(nx.simple_cycles(graph))
    assert cycles == [], " | ".join(" -> ".join(c) for c in cycles[:5])


def test_each_layer_imports_only_the_layers_below() -> None:
    graph = _imports()
    wrong = []
    for layer, allowed in ALLOWED.items():
        for module in graph.nodes:
            if module != layer and not module.startswith(layer + "."):
                continue
            for target in graph.successors(module):
                if target in ("jet",) or not target.startswith("jet"):
                    continue
                if not any(target == a or target.startswith(a + ".") for a in allowed):
                    wrong.append(f"{module} imports {target}")
    assert wrong == [], wrong
