"""The graph of an app: one builder for ``jet check`` and ``jet graph``.

:func:`app_graph` turns an :class:`~jet.definition.model.AppDef` into a networkx
``MultiDiGraph`` whose nodes are ``(circuit, gadget)`` pairs and whose edges
are wires; :func:`draw_app` draws it to an SVG or PNG file with matplotlib
(no system graphviz needed).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import networkx as nx

from jet.definition.model import AppDef, CircuitDef, GadgetDef, PortRef, WireDef

__all__ = ["app_graph", "draw_app", "wire_ends"]

Node = tuple[str, str]


def wire_ends(circuit: CircuitDef | None, wire: WireDef) -> tuple[PortRef, PortRef]:
    """Both ends of ``wire`` with their circuit filled in (``circuit`` for internal wires)."""
    if circuit is None:
        return wire.src, wire.dst
    return (
        PortRef(wire.src.gadget, wire.src.port, circuit.name),
        PortRef(wire.dst.gadget, wire.dst.port, circuit.name),
    )


def app_graph(app: AppDef) -> nx.MultiDiGraph:
    """Gadgets as nodes, wires as edges, across the whole app.

    Node ``(circuit, gadget)`` carries ``circuit``, ``container`` and
    ``gadget`` (the :class:`GadgetDef`).  Each edge carries ``wire`` (the
    :class:`WireDef`), ``src_port``, ``dst_port``, ``label`` (``"out->in"``)
    and ``internal`` (True for a wire inside one circuit, an in-process call;
    False for a wire between circuits, which goes over MQTT).  Wires naming a
    circuit or gadget that does not exist are left out (``jet check`` reports
    them).
    """
    graph = nx.MultiDiGraph(name=app.name)
    for circuit in app.circuits:
        for gadget in circuit.gadgets:
            graph.add_node(
                (circuit.name, gadget.name),
                circuit=circuit.name,
                container=circuit.container,
                gadget=gadget,
            )
    wires: list[tuple[CircuitDef | None, WireDef]] = [(c, w) for c in app.circuits for w in c.wires]
    wires += [(None, w) for w in app.wires]
    for owner, wire in wires:
        src, dst = wire_ends(owner, wire)
        u, v = (src.circuit or "", src.gadget), (dst.circuit or "", dst.gadget)
        if u in graph and v in graph:
            graph.add_edge(
                u,
                v,
                wire=wire,
                src_port=src.port,
                dst_port=dst.port,
                label=f"{src.port}->{dst.port}",
                internal=owner is not None or src.circuit == dst.circuit,
            )
    return graph


# --- drawing ---------------------------------------------------------------------------

_DX, _DY, _GAP = 2.4, 1.3, 1.6  # layer spacing, row spacing, space between circuits
_FORMATS = {".svg": "svg", ".png": "png"}


def _layers(graph: nx.MultiDiGraph, nodes: list[Node]) -> dict[Node, int]:
    """Left-to-right layer of each node along the circuit's internal wires."""
    inner = nx.DiGraph()
    inner.add_nodes_from(nodes)
    inner.add_edges_from(
        (u, v) for u, v, internal in graph.subgraph(nodes).edges(data="internal") if internal
    )
    condensed = nx.condensation(inner)
    depth: dict[int, int] = {}
    for scc in nx.topological_sort(condensed):
        depth[scc] = max((depth[p] + 1 for p in condensed.predecessors(scc)), default=0)
    members = condensed.graph["mapping"]
    return {n: depth[members[n]] for n in nodes}


def _short_type(gadget: GadgetDef) -> str:
    if gadget.type is None:
        return f"#{gadget.number}" if gadget.number is not None else ""
    return gadget.type.rsplit(".", 1)[-1]


def _layout(
    app: AppDef, graph: nx.MultiDiGraph
) -> tuple[dict[Node, tuple[float, float]], list[tuple[CircuitDef, float, float, float, float]]]:
    """Node positions, and one box (circuit, x0, y0, x1, y1) per circuit."""
    pos: dict[Node, tuple[float, float]] = {}
    boxes = []
    x = 0.0
    for circuit in app.circuits:
        nodes = list(dict.fromkeys((circuit.name, g.name) for g in circuit.gadgets))
        layer = _layers(graph, nodes)
        columns: dict[int, list[Node]] = {}
        for n in nodes:
            columns.setdefault(layer[n], []).append(n)
        for depth, column in columns.items():
            for row, n in enumerate(column):
                pos[n] = (x + depth * _DX, ((len(column) - 1) / 2 - row) * _DY)
        width = max(columns, default=0) * _DX
        height = max((len(c) for c in columns.values()), default=1)
        half = (height - 1) / 2 * _DY
        boxes.append((circuit, x - 0.9, -half - 0.8, x + width + 0.9, half + 1.1))
        x += width + 1.8 + _GAP
    return pos, boxes


def draw_app(app: AppDef, out: Path) -> None:
    """Draw ``app`` to ``out``: SVG or PNG, chosen by the file suffix.

    Gadgets are grouped in one coloured box per circuit; wires inside a
    circuit are solid grey, wires between circuits (MQTT) dashed and
    coloured; every wire is labelled ``out->in``.  Raises ValueError for
    another suffix.
    """
    out = Path(out)
    fmt = _FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot draw {out}: the file name must end in .svg or .png")

    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle as CirclePatch
    from matplotlib.patches import FancyBboxPatch

    graph = app_graph(app)
    pos, boxes = _layout(app, graph)
    x0 = min((b[1] for b in boxes), default=-1.0)
    x1 = max((b[3] for b in boxes), default=1.0)
    y0 = min((b[2] for b in boxes), default=-1.0)
    y1 = max((b[4] for b in boxes), default=1.0) + 0.8
    scale = 0.9  # inches per unit
    size = (min(max((x1 - x0) * scale, 4.0), 60.0), min(max((y1 - y0) * scale, 3.0), 60.0))
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(x0 - 0.3, x1 + 0.3)
    ax.set_ylim(y0 - 0.3, y1)
    ax.axis("off")
    ax.text((x0 + x1) / 2, y1 - 0.35, f"app {app.name}", ha="center", va="center", fontsize=13)

    palette = colormaps["tab10"]
    colour: dict[str, Any] = {}
    for i, (circuit, bx0, by0, bx1, by1) in enumerate(boxes):
        colour[circuit.name] = palette(i % 10)
        ax.add_patch(
            FancyBboxPatch(
                (bx0, by0),
                bx1 - bx0,
                by1 - by0,
                boxstyle="round,pad=0.05,rounding_size=0.2",
                facecolor=(*colour[circuit.name][:3], 0.12),
                edgecolor=colour[circuit.name],
                linewidth=1.5,
            )
        )
        ax.text(
            bx0 + 0.15,
            by1 - 0.3,
            f"{circuit.name} ({circuit.container})",
            fontsize=10,
            fontweight="bold",
            va="center",
            color=colour[circuit.name],
        )

    nodes = list(graph.nodes)
    if nodes:
        nx.draw_networkx_nodes(
            graph,
            pos,
            nodelist=nodes,
            node_color=[colour[graph.nodes[n]["circuit"]] for n in nodes],
            node_size=1500,
            alpha=0.9,
            ax=ax,
        )
        labels = {n: f"{n[1]}\n{_short_type(graph.nodes[n]['gadget'])}".rstrip() for n in nodes}
        nx.draw_networkx_labels(graph, pos, labels=labels, font_size=7, ax=ax)

    seen: dict[tuple[Node, Node], int] = {}
    for u, v, data in graph.edges(data=True):
        pair = (min(u, v), max(u, v))
        nth = seen.get(pair, 0)
        seen[pair] = nth + 1
        style = "-" if data["internal"] else "--"
        tint = "dimgray" if data["internal"] else "tab:red"
        (ux, uy), (vx, vy) = pos[u], pos[v]
        if u == v:
            radius = 0.35 + 0.12 * nth
            ax.add_patch(
                CirclePatch(
                    (ux, uy + 0.45 + radius - 0.35),
                    radius,
                    fill=False,
                    linestyle=style,
                    edgecolor=tint,
                )
            )
            ax.text(ux, uy + 0.5 + 2 * radius, data["label"], fontsize=7, ha="center", color=tint)
            continue
        rad = 0.15 * (nth + 1) * (1 if nth % 2 == 0 else -1)
        ax.annotate(
            "",
            xy=(vx, vy),
            xytext=(ux, uy),
            arrowprops={
                "arrowstyle": "-|>",
                "connectionstyle": f"arc3,rad={rad}",
                "linestyle": style,
                "color": tint,
                "shrinkA": 21,
                "shrinkB": 21,
            },
        )
        dx, dy = vx - ux, vy - uy
        # the label sits on the arc, 40% of the way from the source (so the
        # labels of wires crossing in opposite directions do not overlap)
        cx, cy = (ux + vx) / 2 + rad * dy, (uy + vy) / 2 - rad * dx
        t = 0.4
        lx = (1 - t) ** 2 * ux + 2 * (1 - t) * t * cx + t**2 * vx
        ly = (1 - t) ** 2 * uy + 2 * (1 - t) * t * cy + t**2 * vy
        angle = math.degrees(math.atan2(dy, dx))
        if angle > 90 or angle < -90:
            angle += 180
        ax.text(
            lx,
            ly,
            data["label"],
            fontsize=7,
            ha="center",
            va="center",
            color=tint,
            rotation=angle,
            rotation_mode="anchor",
            bbox={
                "boxstyle": "round,pad=0.1",
                "facecolor": "white",
                "edgecolor": "none",
                "alpha": 0.8,
            },
        )
    fig.savefig(out, format=fmt)
