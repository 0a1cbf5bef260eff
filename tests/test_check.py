"""`jet check`: every problem named with file:line and the offending name."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from jet.cli import main
from jet.definition.check import Problem, check_app, compatible
from jet.definition.files import load_app, loads_app
from jet.definition.model import AppDef, CircuitDef, GadgetDef, PortRef, WireDef
from jet.definition.ports import Ports, ports_of
from jet.definition.webcatalog import WEB_GADGETS, WebGadgetSpec
from jet.runtime.registry import Registry, UnknownGadgetType

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
TESTS = "tests.gadgets_for_tests"
REGISTRY = Registry.allowing([TESTS])


def problems(text: str, registry: Registry = REGISTRY) -> list[str]:
    app = loads_app(textwrap.dedent(text), "app.yaml")
    return [str(p) for p in check_app(app, registry)]


def file_problems(name: str) -> list[str]:
    path = DATA / name
    return [str(p).replace(str(path), name) for p in check_app(load_app(path), Registry())]


# --- the shipped examples pass ------------------------------------------------------------


@pytest.mark.parametrize("name", ["heater.yaml", "demo.yaml"])
def test_shipped_circuits_pass_check(name: str) -> None:
    assert check_app(load_app(REPO / "circuits" / name), Registry()) == []


# --- each kind of bad file ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "bad_unknown_type.yaml",
            "bad_unknown_type.yaml:6: gadget control.mystery: unknown gadget type"
            " 'jet.lib.Frobnicator': 'jet.lib' has no 'Frobnicator'",
        ),
        (
            "bad_disallowed_type.yaml",
            "bad_disallowed_type.yaml:5: gadget control.shell: gadget type 'os.system'"
            " is not allowed (allowed modules: jet.lib)",
        ),
        (
            "bad_unknown_port.yaml",
            "bad_unknown_port.yaml:8: wire control.ticker.out -> control.thermostat.temperature:"
            " gadget control.thermostat (jet.lib.Thermostat) has no input 'temperature'"
            " (inputs: temp, setpoint)",
        ),
        (
            "bad_missing_circuit.yaml",
            "bad_missing_circuit.yaml:7: wire control.ticker.out -> display.log.in:"
            " no circuit named 'display' (circuits: control)",
        ),
        (
            "bad_two_wires.yaml",
            "bad_two_wires.yaml:11: input control.log.in has two wires (lines 9 and 11)",
        ),
        (
            "bad_cycle.yaml",
            "bad_cycle.yaml:10: circuit 'control': cycle without a delay through scale,"
            " thermostat: thermostat.heat -> scale.in, scale.out -> thermostat.setpoint",
        ),
        (
            "bad_node_id.yaml",
            "bad_node_id.yaml:3: node circuit 'boiler': node id 42 is outside 1..30",
        ),
    ],
)
def test_bad_file_gives_exactly_one_problem(name: str, expected: str) -> None:
    assert file_problems(name) == [expected]


# --- gadgets and parameters -------------------------------------------------------------


def test_bad_params_are_reported_by_instantiating_the_class() -> None:
    assert problems(
        """\
        app: x
        circuits:
          c:
            gadgets:
              t: {type: jet.lib.Ticker, params: {interval: fast}}
              s: {type: tests.gadgets_for_tests.Typed, params: {gian: 2}}
              ok: {type: tests.gadgets_for_tests.Typed, params: {gain: 2}}
        """
    ) == [
        "app.yaml:5: gadget c.t: Ticker: parameter 'interval' must be float, got 'fast'",
        "app.yaml:6: gadget c.s: Typed: unknown parameter 'gian' (parameters: gain)",
    ]


def test_web_gadgets_come_from_the_catalog() -> None:
    assert problems(
        """\
        app: x
        circuits:
          page:
            container: web
            gadgets:
              chart: {type: web.Chart}
              knob: {type: web.Knob}
              slider: {type: web.Slider, params: {min: low, colour: red}}
              ticker: {type: jet.lib.Ticker}
        """
    ) == [
        "app.yaml:7: gadget page.knob: unknown web gadget type 'web.Knob' (known: web.Button,"
        " web.Chart, web.Gauge, web.Label, web.Slider, web.Switch)",
        "app.yaml:8: gadget page.slider: web.Slider: parameter 'min' must be a number, got 'low'",
        "app.yaml:8: gadget page.slider: web.Slider: unknown parameter 'colour'"
        " (parameters: label, max, min, step, value)",
        "app.yaml:9: gadget page.ticker: unknown web gadget type 'jet.lib.Ticker' (known:"
        " web.Button, web.Chart, web.Gauge, web.Label, web.Slider, web.Switch)",
    ]


def test_web_catalog_declares_the_ports() -> None:
    assert WEB_GADGETS["web.Chart"].inputs == ("in",)
    assert WEB_GADGETS["web.Gauge"].inputs == ("in",)
    assert WEB_GADGETS["web.Label"].inputs == ("in",)
    slider = WEB_GADGETS["web.Slider"]
    assert (slider.inputs, slider.outputs) == ((), ("value",))
    assert {"min", "max", "step", "value"} <= set(slider.params)
    assert WEB_GADGETS["web.Switch"].outputs == ("value",)
    assert WEB_GADGETS["web.Button"].outputs == ("press",)
    assert all(isinstance(s, WebGadgetSpec) for s in WEB_GADGETS.values())


def test_names_must_be_topic_safe() -> None:
    assert problems(
        """\
        app: x
        circuits:
          Control:
            gadgets:
              Big: {type: jet.lib.Ticker}
              ok_1-2: {type: jet.lib.Ticker}
          n:
            container: node
            node: 3
            gadgets: [{name: Water, outputs: [deg C]}]
        """
    ) == [
        "app.yaml:3: circuit name 'Control' must match [a-z0-9_-]+",
        "app.yaml:5: gadget name 'Control.Big' must match [a-z0-9_-]+",
        "app.yaml:10: node circuit 'n': gadget 'Water': port name 'deg C' must match"
        " [A-Za-z0-9_-]+",
    ]


def test_node_gadget_numbers() -> None:
    assert problems(
        """\
        app: x
        circuits:
          n:
            container: node
            node: 30
            gadgets:
              - {name: a, inputs: [i0, i1, i2, i3, i4, i5, i6, i7]}
              - {name: b, id: 1024}
              - {name: c, id: 0}
              - {name: d, id: 1023}
          m:
            container: node
            node: 30
        """
    ) == [
        "app.yaml:7: node circuit 'n': gadget 'a': input 7 ('i7') of gadget 0 is reserved"
        " for configuration messages",
        "app.yaml:8: node circuit 'n': gadget 'b' number 1024 is outside 0..1023",
        "app.yaml:9: node circuit 'n': gadget 'c' has number 0, like gadget 'a' (line 7)",
        "app.yaml:11: node circuit 'm': node id 30 is already used by circuit 'n' (line 3)",
    ]


def test_node_id_zero() -> None:
    assert problems("app: x\ncircuits:\n  n: {container: node, node: 0}\n") == [
        "app.yaml:3: node circuit 'n': node id 0 is outside 1..30"
    ]


def test_duplicate_circuit_names_in_a_python_app() -> None:
    app = AppDef(
        "x",
        (CircuitDef("a", line=3), CircuitDef("a", line=7)),
        source="mem",
    )
    assert [str(p) for p in check_app(app, REGISTRY)] == [
        "mem:7: duplicate circuit name 'a' (first at line 3)"
    ]


# --- wires ----------------------------------------------------------------------------------


def test_wire_to_missing_gadget_and_from_an_input() -> None:
    assert problems(
        """\
        app: x
        circuits:
          a:
            gadgets:
              t: {type: jet.lib.Ticker}
              log: {type: jet.lib.Logger}
        wires:
          - a.tick.out -> a.log.in
          - a.log.in -> a.t.out
        """
    ) == [
        "app.yaml:8: wire a.tick.out -> a.log.in: circuit 'a' has no gadget 'tick'"
        " (gadgets: t, log)",
        "app.yaml:9: wire a.log.in -> a.t.out: gadget a.log (jet.lib.Logger) has no output"
        " 'in' (outputs: none)",
        "app.yaml:9: wire a.log.in -> a.t.out: gadget a.t (jet.lib.Ticker) has no input"
        " 'out' (inputs: none)",
    ]


def test_node_ports_are_checked_against_their_declarations() -> None:
    assert problems(
        """\
        app: x
        circuits:
          boiler:
            container: node
            node: 5
            gadgets:
              - {name: water, outputs: [celsius]}
          control:
            gadgets:
              log: {type: jet.lib.Logger}
        wires:
          - boiler.water.fahrenheit -> control.log.in
        """
    ) == [
        "app.yaml:12: wire boiler.water.fahrenheit -> control.log.in: gadget boiler.water"
        " (node gadget #0) has no output 'fahrenheit' (outputs: celsius)"
    ]


def test_type_mismatch_where_both_ends_declare_types() -> None:
    assert problems(
        """\
        app: x
        circuits:
          n:
            container: node
            node: 1
            gadgets:
              - name: sensor
                outputs: [{name: label, type: str}, {name: reading, type: int}, untyped]
          c:
            gadgets:
              a: {type: tests.gadgets_for_tests.Typed}
              b: {type: tests.gadgets_for_tests.Typed}
              c: {type: tests.gadgets_for_tests.Typed}
        wires:
          - n.sensor.label -> c.a.number
          - n.sensor.reading -> c.b.number
          - n.sensor.untyped -> c.c.number
          - c.a.count -> c.b.text
          - c.b.name -> c.c.text
        """
    ) == [
        "app.yaml:15: wire n.sensor.label -> c.a.number: type mismatch: n.sensor.label gives"
        " str, c.a.number takes float",
        "app.yaml:18: wire c.a.count -> c.b.text: type mismatch: c.a.count gives int,"
        " c.b.text takes str",
    ]


def test_compatible_types() -> None:
    assert compatible(int, float)
    assert compatible(bool, int)
    assert compatible(str, object)
    assert compatible(None, str)
    assert compatible("float", float)
    assert not compatible(float, int)
    assert not compatible(str, float)


def test_two_wires_in_the_same_circuit_file_order() -> None:
    assert problems(
        """\
        app: x
        circuits:
          a:
            gadgets:
              t: {type: jet.lib.Ticker}
          b:
            gadgets:
              log: {type: jet.lib.Logger}
        wires:
          - a.t.out -> b.log.in
          - {from: a.t.out, to: b.log.in}
          - a.t.out -> b.log.in
        """
    ) == [
        "app.yaml:11: input b.log.in has two wires (lines 10 and 11)",
        "app.yaml:12: input b.log.in has two wires (lines 10 and 12)",
    ]


# --- cycles -------------------------------------------------------------------------------


def test_cycle_through_a_delay_gadget_is_fine() -> None:
    assert (
        problems(
            """\
            app: x
            circuits:
              c:
                gadgets:
                  p: {type: tests.gadgets_for_tests.Pass}
                  h: {type: tests.gadgets_for_tests.Hold}
                  d: {type: jet.lib.Delay}
                  q: {type: tests.gadgets_for_tests.Pass}
                wires:
                  - p.out -> h.in
                  - h.out -> p.in
                  - q.out -> d.in
                  - d.out -> q.in
            """
        )
        == []
    )


def test_cycle_across_circuits_or_through_nodes_is_fine() -> None:
    assert (
        problems(
            """\
            app: x
            circuits:
              a:
                gadgets: {p: {type: tests.gadgets_for_tests.Pass}}
              b:
                gadgets: {p: {type: tests.gadgets_for_tests.Pass}}
              n:
                container: node
                node: 2
                gadgets: [{name: echo, inputs: [in], outputs: [out]}]
                wires: [echo.out -> echo.in]
            wires:
              - a.p.out -> b.p.in
              - b.p.out -> a.p.in
            """
        )
        == []
    )


def test_self_loop_without_delay() -> None:
    assert problems(
        """\
        app: x
        circuits:
          c:
            gadgets: {p: {type: tests.gadgets_for_tests.Pass}}
        wires:
          - c.p.out -> c.p.in
        """
    ) == ["app.yaml:6: circuit 'c': cycle without a delay through p: p.out -> p.in"]


# --- sub-circuits -------------------------------------------------------------------------

HIERARCHY = """\
app: h
subcircuits:
  smooth:
    inputs: {in: avg.in}
    outputs: {out: scale.count}
    gadgets:
      avg: {type: tests.gadgets_for_tests.Pass}
      scale: {type: tests.gadgets_for_tests.Typed}
    wires:
      - avg.out -> scale.number
  slow:
    inputs: {in: a.in}
    outputs: {out: b.out}
    gadgets:
      a: {type: smooth}
      b: {type: tests.gadgets_for_tests.Hold}
    wires: [a.out -> b.in]
circuits:
  c:
    gadgets:
      src: {type: tests.gadgets_for_tests.Source}
      s: {type: smooth}
      w: {type: slow}
    wires:
      - src.out -> s.in
      - w.out -> w.in
"""


def test_sub_circuit_gadgets_export_ports_and_delay() -> None:
    app = loads_app(HIERARCHY, "h.yaml")
    c = app.circuits[0]
    s, w = c.gadget("s"), c.gadget("w")
    assert s is not None and w is not None
    smooth = ports_of(s, c, REGISTRY)
    assert (smooth.inputs, smooth.outputs, smooth.delay) == (("in",), ("out",), False)
    assert smooth.output_types == {"out": int}
    assert smooth.input_types == {}
    slow = ports_of(w, c, REGISTRY)
    assert (slow.inputs, slow.outputs, slow.delay) == (("in",), ("out",), True)
    assert check_app(app, REGISTRY) == []


def test_sub_circuit_loop_without_delay_and_bad_subcircuits() -> None:
    text = HIERARCHY.replace("      - src.out -> s.in\n", "      - s.out -> s.in\n").replace(
        "    outputs: {out: b.out}", "    outputs: {out: b.out, more: b.in}"
    )
    text = text.replace("    inputs: {in: avg.in}", "    inputs: {in: avg.in, x: nobody.in}")
    assert [str(p) for p in check_app(loads_app(text, "h.yaml"), REGISTRY)] == [
        "h.yaml:3: sub-circuit 'smooth': input 'x' names missing gadget 'nobody'"
        " (gadgets: avg, scale)",
        "h.yaml:11: sub-circuit 'slow': output 'more': gadget slow.b"
        " (tests.gadgets_for_tests.Hold) has no output 'in' (outputs: out)",
        "h.yaml:25: circuit 'c': cycle without a delay through s: s.out -> s.in",
    ]


def test_subcircuit_problems_are_reported_once() -> None:
    text = """\
    app: h
    subcircuits:
      d:
        inputs: {in: a.in}
        gadgets:
          a: {type: jet.lib.Nope}
    circuits:
      c1: {gadgets: {x: {type: d}, y: {type: d, params: {k: 1}}}}
      c2: {gadgets: {x: {type: d}}}
    """
    assert problems(text) == [
        "app.yaml:6: gadget d.a: unknown gadget type 'jet.lib.Nope': 'jet.lib' has no 'Nope'",
        "app.yaml:8: gadget c1.y: sub-circuit 'd' takes no parameters (got k)",
    ]


def test_jet_check_passes_a_file_with_the_old_key_definitions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(HIERARCHY.replace("subcircuits:", "definitions:"))
    with caplog.at_level("WARNING", logger="jet.yamlfile"):
        assert main(["check", "--allow", TESTS, str(path)]) == 0
    assert f"{path}: ok (1 circuits, 3 gadgets, 2 wires)" in capsys.readouterr().out
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}:2: 'definitions' is deprecated: rename it 'subcircuits'"
    ]


# --- ports_of -------------------------------------------------------------------------------


def test_ports_of_each_kind() -> None:
    pack = CircuitDef("p", gadgets=(GadgetDef("t", "tests.gadgets_for_tests.Typed"),))
    ports = ports_of(pack.gadgets[0], pack, REGISTRY)
    assert ports == Ports(
        ("number", "text"),
        ("count", "name"),
        {"number": float, "text": str},
        {"count": int, "name": str},
        False,
    )
    web = CircuitDef("w", container="web", gadgets=(GadgetDef("s", "web.Slider"),))
    assert ports_of(web.gadgets[0], web, REGISTRY) == Ports((), ("value",))
    node_gadget = GadgetDef("g", inputs=("on",), outputs=("t",), params={"types": {"t": "float"}})
    node = CircuitDef("n", container="node", node=1, gadgets=(node_gadget,))
    assert ports_of(node_gadget, node, REGISTRY) == Ports(("on",), ("t",), {}, {"t": float})
    delay = GadgetDef("d", "jet.lib.Delay")
    assert ports_of(delay, CircuitDef("p"), Registry()).delay is True


@pytest.mark.parametrize(
    ("gadget", "container", "message"),
    [
        (GadgetDef("g", "jet.lib.Nope"), "pack", "unknown gadget type 'jet.lib.Nope'"),
        (GadgetDef("g", "Nope"), "pack", "unknown gadget type 'Nope'"),
        (GadgetDef("g"), "pack", "gadget 'g' has no type"),
        (GadgetDef("g", "web.Nope"), "web", "unknown web gadget type 'web.Nope'"),
    ],
)
def test_ports_of_unknown_types(gadget: GadgetDef, container: str, message: str) -> None:
    circuit = CircuitDef("c", container=container, gadgets=(gadget,))  # type: ignore[arg-type]
    with pytest.raises(UnknownGadgetType, match=message):
        ports_of(gadget, circuit, Registry())


def test_problem_str() -> None:
    assert str(Problem("f.yaml", 3, "bad")) == "f.yaml:3: bad"


def test_wire_refs_in_python_built_app() -> None:
    app = AppDef(
        "x",
        (CircuitDef("a", gadgets=(GadgetDef("t", "jet.lib.Ticker", line=2),), line=1),),
        (WireDef(PortRef("t", "out", "a"), PortRef("q", "in", "zz"), line=9),),
        source="mem",
    )
    assert [str(p) for p in check_app(app, Registry())] == [
        "mem:9: wire a.t.out -> zz.q.in: no circuit named 'zz' (circuits: a)"
    ]
