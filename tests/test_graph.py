"""`jet graph`: the app graph and its pictures."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from jet.definition.files import load_app, loads_app
from jet.definition.graph import app_graph, draw_app
from jet.definition.model import AppDef, CircuitDef, GadgetDef

REPO = Path(__file__).resolve().parent.parent
HEATER = REPO / "circuits" / "heater.yaml"
DEMO = REPO / "circuits" / "demo.yaml"


def test_app_graph_of_the_heater() -> None:
    graph = app_graph(load_app(HEATER))
    assert set(graph.nodes) == {
        ("boiler", "water"),
        ("boiler", "relay"),
        ("control", "thermostat"),
        ("control", "history"),
        ("panel", "chart"),
        ("panel", "setpoint"),
    }
    assert graph.nodes["boiler", "water"]["container"] == "node"
    assert graph.nodes["control", "thermostat"]["gadget"].type == "jet.lib.Thermostat"
    labels = {(u, v, d["label"], d["internal"]) for u, v, d in graph.edges(data=True)}
    assert (("boiler", "water"), ("control", "thermostat"), "celsius->temp", False) in labels
    assert len(labels) == 5
    assert all(not d["internal"] for _, _, d in graph.edges(data=True))


def test_app_graph_marks_internal_wires_and_skips_dangling_ones() -> None:
    app = loads_app(
        """\
app: x
circuits:
  a:
    gadgets:
      t: {type: jet.lib.Ticker}
      s: {type: jet.lib.Scale}
    wires: [t.out -> s.in, t.out -> ghost.in]
  b:
    gadgets:
      l: {type: jet.lib.Logger}
wires:
  - a.s.out -> b.l.in
  - a.s.out -> b.l.in
  - a.s.out -> nowhere.l.in
""",
        "x.yaml",
    )
    graph = app_graph(app)
    edges = sorted(
        (u[1], v[1], d["src_port"], d["dst_port"], d["internal"], d["wire"].line)
        for u, v, d in graph.edges(data=True)
    )
    assert edges == [
        ("s", "l", "out", "in", False, 12),
        ("s", "l", "out", "in", False, 13),
        ("t", "s", "out", "in", True, 7),
    ]


def test_draw_svg_is_valid_xml(tmp_path: Path) -> None:
    out = tmp_path / "heater.svg"
    draw_app(load_app(HEATER), out)
    assert out.stat().st_size > 0
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")
    text = out.read_text()
    # labels are drawn as text (matplotlib writes glyphs as paths, with the text in comments)
    assert "celsius-&gt;temp" in text or "celsius->temp" in text


def test_draw_png(tmp_path: Path) -> None:
    out = tmp_path / "demo.PNG"
    draw_app(load_app(DEMO), out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1024


def test_draw_with_loops_parallel_wires_and_empty_circuits(tmp_path: Path) -> None:
    app = loads_app(
        """\
app: busy
circuits:
  a:
    gadgets:
      p: {type: jet.lib.Scale}
      d: {type: jet.lib.Delay}
    wires: [p.out -> d.in, d.out -> p.in]
  b:
    gadgets:
      q: {type: jet.lib.Scale}
    wires: [q.out -> q.in]
  empty: {}
wires:
  - a.p.out -> b.q.in
  - b.q.out -> a.d.in
""",
        "busy.yaml",
    )
    out = tmp_path / "busy.svg"
    draw_app(app, out)
    ET.parse(out)


def test_draw_empty_app(tmp_path: Path) -> None:
    out = tmp_path / "empty.png"
    draw_app(AppDef("nothing"), out)
    assert out.read_bytes()[:4] == b"\x89PNG"
    draw_app(AppDef("one", (CircuitDef("c", gadgets=(GadgetDef("g", "x.Y"),)),)), out)


@pytest.mark.parametrize("name", ["graph.pdf", "graph", "graph.svg.txt"])
def test_draw_refuses_other_suffixes(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=r"must end in \.svg or \.png"):
        draw_app(AppDef("x"), tmp_path / name)
    assert not (tmp_path / name).exists()
