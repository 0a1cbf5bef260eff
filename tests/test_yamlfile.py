"""Loading circuit files: the model produced, and file:line errors for bad files."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jet.definition.check import check_app
from jet.definition.files import CircuitFileError, _parse, load_app, loads_app
from jet.definition.model import PortRef, WireDef
from jet.definition.schema import schema
from jet.runtime.registry import Registry

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
HEATER = REPO / "circuits" / "heater.yaml"
DEMO = REPO / "circuits" / "demo.yaml"


def load_text(tmp_path: Path, text: str, name: str = "app.yaml") -> Any:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_app(path)


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(CircuitFileError) as info:
        load_text(tmp_path, text)
    return str(info.value).replace(str(tmp_path / "app.yaml"), "app.yaml")


# --- good files ----------------------------------------------------------------------


def test_heater_loads_as_in_the_spec() -> None:
    app = load_app(HEATER)
    assert app.name == "heater"
    assert app.source == str(HEATER)
    assert [c.name for c in app.circuits] == ["boiler", "control", "panel"]
    boiler, control, panel = app.circuits
    assert (boiler.container, boiler.node, boiler.line) == ("node", 5, 3)
    water, relay = boiler.gadgets
    assert (water.name, water.number, water.outputs, water.inputs) == ("water", 0, ("celsius",), ())
    # `on` is a string (YAML 1.2 booleans are only true/false)
    assert (relay.name, relay.number, relay.inputs) == ("relay", 1, ("on",))
    thermostat = control.gadget("thermostat")
    assert thermostat is not None
    assert thermostat.type == "jet.lib.Thermostat"
    assert thermostat.params == {"setpoint": 55.0, "hysteresis": 2.0}
    assert thermostat.line == 12
    assert panel.container == "web"
    assert panel.gadget("setpoint") is not None
    assert [str(w) for w in app.wires] == [
        "boiler.water.celsius -> control.thermostat.temp",
        "control.thermostat.heat -> boiler.relay.on",
        "boiler.water.celsius -> control.history.in",
        "control.history.out -> panel.chart.in",
        "panel.setpoint.value -> control.thermostat.setpoint",
    ]
    assert [w.line for w in app.wires] == [20, 21, 22, 23, 24]
    assert all(w.qos == 1 for w in app.wires)


def test_demo_loads_with_internal_and_cross_circuit_wires() -> None:
    app = load_app(DEMO)
    assert [c.name for c in app.circuits] == ["source", "alarm"]
    assert all(c.container == "pack" for c in app.circuits)
    source, alarm = app.circuits
    assert [str(w) for w in source.wires] == ["ticker.out -> average.in"]
    assert [str(w) for w in alarm.wires] == ["threshold.out -> log_above.in"]
    assert [str(w) for w in app.wires] == [
        "source.average.out -> alarm.log_average.in",
        "source.average.out -> alarm.threshold.in",
    ]


def test_app_wire_inside_one_circuit_becomes_internal(tmp_path: Path) -> None:
    app = load_text(
        tmp_path,
        """\
        app: x
        circuits:
          c:
            gadgets:
              a: {type: jet.lib.Ticker}
              b: {type: jet.lib.Logger}
        wires:
          - c.a.out -> c.b.in qos=0
        """,
    )
    assert app.wires == ()
    (wire,) = app.circuits[0].wires
    assert wire == WireDef(PortRef("a", "out"), PortRef("b", "in"), qos=0)
    assert wire.line == 8


def test_wire_forms_and_qos(tmp_path: Path) -> None:
    app = load_text(
        tmp_path,
        """\
        app: x
        circuits:
          a: {gadgets: {t: {type: jet.lib.Ticker}}}
          b: {gadgets: {l: {type: jet.lib.Logger}, m: {type: jet.lib.Logger}}}
        wires:
          - a.t.out->b.l.in
          - {from: a.t.out, to: b.m.in, qos: 2}
          - "a.t.out -> b.l.in   qos=0"
        """,
    )
    assert [(str(w), w.qos, w.line) for w in app.wires] == [
        ("a.t.out -> b.l.in", 1, 6),
        ("a.t.out -> b.m.in", 2, 7),
        ("a.t.out -> b.l.in", 0, 8),
    ]
    assert app.wires[1].src == PortRef("t", "out", "a")


def test_node_ports_with_codecs_and_explicit_ids(tmp_path: Path) -> None:
    app = load_text(
        tmp_path,
        """\
        app: x
        circuits:
          room:
            container: node
            node: 7
            group: 100
            gadgets:
              - name: sensor
                outputs:
                  - {name: celsius, codec: "<h", scale: 0.01, type: float}
                  - humidity
              - {name: led, id: 12, inputs: [{name: on, codec: B}]}
        """,
    )
    sensor, led = app.circuits[0].gadgets
    assert sensor.number == 0 and sensor.outputs == ("celsius", "humidity")
    assert sensor.params == {
        "codecs": {"celsius": {"codec": "<h", "scale": 0.01}},
        "types": {"celsius": "float"},
    }
    assert led.number == 12 and led.inputs == ("on",)
    assert led.params == {"codecs": {"on": {"codec": "B", "scale": 1}}}


def test_subcircuits_are_carried_by_the_circuits_using_them(tmp_path: Path) -> None:
    app = load_text(
        tmp_path,
        """\
        app: h
        subcircuits:
          smooth:
            inputs: {in: avg.in}
            outputs: {out: avg.out}
            gadgets:
              avg: {type: jet.lib.MovingAverage, params: {size: 3}}
          twice:
            inputs: {in: a.in}
            outputs: {out: b.out}
            gadgets:
              a: {type: smooth}
              b: {type: smooth}
            wires: [a.out -> b.in]
        circuits:
          c:
            gadgets:
              s: {type: twice}
          plain:
            gadgets:
              t: {type: jet.lib.Ticker}
        """,
    )
    c, plain = app.circuits
    assert set(c.subcircuits) == {"twice", "smooth"}
    twice = c.subcircuits["twice"]
    assert twice.inputs == {"in": PortRef("a", "in")}
    assert twice.outputs == {"out": PortRef("b", "out")}
    assert [str(w) for w in twice.wires] == ["a.out -> b.in"]
    assert set(twice.subcircuits) == {"smooth"}
    assert c.subcircuits["smooth"].inputs == {"in": PortRef("avg", "in")}
    assert plain.subcircuits == {}


OLD_KEY_APP = """\
app: h
circuits:
  c:
    gadgets:
      s: {type: smooth}
definitions:
  smooth:
    inputs: {in: avg.in}
    outputs: {out: avg.out}
    gadgets:
      avg: {type: jet.lib.MovingAverage, params: {size: 3}}
"""


def test_old_key_definitions_still_loads_with_a_warning_naming_file_and_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "old.yaml"
    path.write_text(OLD_KEY_APP)
    with caplog.at_level("WARNING", logger="jet.yamlfile"):
        app = load_app(path)
    new = loads_app(OLD_KEY_APP.replace("definitions:", "subcircuits:"), str(path))
    assert app == new
    assert app.circuits[0].subcircuits["smooth"].inputs == {"in": PortRef("avg", "in")}
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}:6: 'definitions' is deprecated: rename it 'subcircuits'"
    ]
    assert check_app(app, Registry()) == []


def test_new_key_subcircuits_loads_without_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="jet.yamlfile"):
        app = loads_app(OLD_KEY_APP.replace("definitions:", "subcircuits:"))
    assert set(app.circuits[0].subcircuits) == {"smooth"}
    assert caplog.records == []


def test_an_unknown_key_beside_the_old_key_is_the_one_named(tmp_path: Path) -> None:
    assert load_error(tmp_path, "app: x\ndefinitions: {}\nextra: 1\n") == (
        "app.yaml:3: top level: unknown key 'extra'"
        " (expected: app, circuits, levels, subcircuits, wires)"
    )


def test_old_and_new_key_together_is_an_error(tmp_path: Path) -> None:
    text = OLD_KEY_APP + "subcircuits: {}\n"
    assert load_error(tmp_path, text) == (
        "app.yaml:6: 'definitions' is the old name of 'subcircuits': use only one"
    )


def test_empty_sections_are_allowed(tmp_path: Path) -> None:
    app = load_text(tmp_path, "app: nothing\ncircuits:\nwires:\n")
    assert (app.name, app.circuits, app.wires) == ("nothing", (), ())


# --- bad files: exactly what the user sees ------------------------------------------------

BAD_FILES = [
    (
        "bad_yaml.yaml",
        "6: invalid YAML: expected ',' or '}', but got ':'"
        " (while parsing a flow mapping started at line 5)",
    ),
    (
        "bad_schema_string.yaml",
        "6: circuits.control.gadgets.thermostat: expected a mapping,"
        " got a string ('jet.lib.Thermostat')",
    ),
    (
        "bad_wire_syntax.yaml",
        "8: bad wire 'control.ticker.out => control.log.in':"
        " expected circuit.gadget.port -> circuit.gadget.port [qos=N] [queue=N] [policy=P]",
    ),
]


@pytest.mark.parametrize(("name", "expected"), BAD_FILES)
def test_bad_file_names_file_and_line(name: str, expected: str) -> None:
    path = DATA / name
    with pytest.raises(CircuitFileError) as info:
        load_app(path)
    assert str(info.value) == f"{path}:{expected}"
    assert info.value.path == str(path)
    assert info.value.line == int(expected.split(":")[0])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "app: [unclosed\n",
            "app.yaml:2: invalid YAML: expected ',' or ']', but got '<stream end>'"
            " (while parsing a flow sequence started at line 1)",
        ),
        (
            "app: x\n\tcircuits: {}\n",
            "app.yaml:2: invalid YAML: found character '\\t' that"
            " cannot start any token (while scanning for the next token)",
        ),
        ("", "app.yaml:1: top level: expected a mapping, got nothing"),
        ("- 1\n", "app.yaml:1: top level: expected a mapping, got a list"),
        ("circuits: {}\n", "app.yaml:1: top level: missing required key 'app'"),
        (
            "app: x\nextra: 1\n",
            "app.yaml:2: top level: unknown key 'extra'"
            " (expected: app, circuits, levels, subcircuits, wires)",
        ),
        (
            "app: x\ncircuits: control\n",
            "app.yaml:2: circuits: expected a mapping, got a string ('control')",
        ),
        (
            "app: x\ncircuits:\n  a: {container: cloud}\n",
            "app.yaml:3: circuits.a.container: 'cloud' is not one of: pack, node, web",
        ),
        (
            "app: x\ncircuits:\n  n:\n    container: node\n",
            "app.yaml:3: circuits.n: missing required key 'node'",
        ),
        (
            "app: x\ncircuits:\n  n:\n    container: node\n    node: five\n",
            "app.yaml:5: circuits.n.node: expected an integer, got a string ('five')",
        ),
        (
            "app: x\ncircuits:\n  p:\n    node: 3\n",
            "app.yaml:4: circuits.p.node: 'node' is only allowed in a node circuit",
        ),
        (
            "app: x\ncircuits:\n  w:\n    container: web\n    pack: main\n",
            "app.yaml:5: circuits.w.pack: 'pack' is only allowed in a pack circuit",
        ),
        (
            "app: x\ncircuits:\n  n:\n    container: node\n    node: 3\n    gadgets: {a: 1}\n",
            "app.yaml:6: circuits.n.gadgets: expected a list, got a mapping",
        ),
        (
            "app: x\ncircuits:\n  c:\n    gadgets:\n      g: {params: {}}\n",
            "app.yaml:5: circuits.c.gadgets.g: missing required key 'type'",
        ),
        (
            "app: x\ncircuits:\n  c:\n    gadgets:\n      g: {type: t, parms: {}}\n",
            "app.yaml:5: circuits.c.gadgets.g: unknown key 'parms' (expected: params, type)",
        ),
        (
            "app: x\ncircuits:\n  a: {}\n  a: {}\n",
            "app.yaml:4: duplicate key 'a' (first at line 3)",
        ),
        (
            "app: x\nwires:\n  - 42\n",
            "app.yaml:3: wires[0]: expected a string or a mapping, got a number (42)",
        ),
        ("app: x\nwires:\n  - {from: a.b.c}\n", "app.yaml:3: wires[0]: missing required key 'to'"),
        (
            "app: x\nwires:\n  - a.b -> c.d.e\n",
            "app.yaml:3: bad wire source 'a.b': expected circuit.gadget.port",
        ),
        (
            "app: x\nwires:\n  - a.b.c -> c.d.e qos=3\n",
            "app.yaml:3: bad wire 'a.b.c -> c.d.e qos=3': qos must be 0, 1 or 2",
        ),
        (
            "app: x\nwires:\n  - {from: a.b.c, to: d.e.f, qos: 3}\n",
            "app.yaml:3: wires[0].qos: 3 is not one of: 0, 1, 2",
        ),
        (
            "app: x\ncircuits:\n  c:\n    wires: [a.b.c -> d.e]\n",
            "app.yaml:4: bad wire source 'a.b.c': expected gadget.port",
        ),
        (
            "app: x\nsubcircuits:\n  d:\n    inputs: {in: avg}\n",
            "app.yaml:4: bad input 'in' 'avg': expected gadget.port",
        ),
        (
            "app: x\nsubcircuits:\n  a:\n    gadgets: {g: {type: b}}\n"
            "  b:\n    gadgets: {h: {type: a}}\n",
            "app.yaml:6: sub-circuit 'a' uses itself (a -> b -> a)",
        ),
        (
            "app: x\ncircuits:\n  n: {container: node, node: 1, group: 300}\n",
            "app.yaml:3: circuits.n.group: 300 is out of range 1..250",
        ),
        (
            "app: x\ncircuits:\n  n:\n    container: node\n    node: 1\n    gadgets:\n"
            "      - {name: a, outputs: [{name: b, scale: 2}]}\n",
            "app.yaml:7: circuits.n.gadgets[0].outputs[0]: 'codec' is required with 'scale'",
        ),
        (
            "app: x\n---\napp: y\n",
            "app.yaml:2: invalid YAML: expected a single document in the stream started at"
            " line 1, but found another document",
        ),
        ("app: &x [*x]\n", "app.yaml:1: recursive alias: a value contains itself"),
        ("app: !!binary aGVsbG8=\n", "app.yaml:1: unsupported tag !!binary"),
        ("app: !!int twelve\n", "app.yaml:1: 'twelve' is not a valid int"),
        ("app: x\n? [a, b]\n: c\n", "app.yaml:2: a mapping key must be a plain string"),
    ],
)
def test_bad_text_message(tmp_path: Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text) == expected


def test_merge_keys_and_anchors_work(tmp_path: Path) -> None:
    app = load_text(
        tmp_path,
        """\
        app: x
        circuits:
          a:
            gadgets:
              t: &tick {type: jet.lib.Ticker, params: {interval: 2.0}}
              u: {<<: *tick, params: {interval: 3.0}}
        """,
    )
    t, u = app.circuits[0].gadgets
    assert (t.type, t.params) == ("jet.lib.Ticker", {"interval": 2.0})
    assert (u.type, u.params) == ("jet.lib.Ticker", {"interval": 3.0})


def test_yaml_1_2_scalars(tmp_path: Path) -> None:
    app = load_text(
        tmp_path,
        """\
        app: x
        circuits:
          c:
            gadgets:
              g:
                type: t
                params: {a: yes, b: on, c: true, d: 0777, e: 1:30, f: 2024-01-01, g: 1e3,
                         h: 0x1F, i: .inf, j: ~, k: 12}
        """,
    )
    params = app.circuits[0].gadgets[0].params
    assert params == {
        "a": "yes",
        "b": "on",
        "c": True,
        "d": 777,
        "e": "1:30",
        "f": "2024-01-01",
        "g": 1000.0,
        "h": 31,
        "i": float("inf"),
        "j": None,
        "k": 12,
    }


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(CircuitFileError) as info:
        load_app(missing)
    assert str(info.value).startswith(f"{missing}:1: cannot read file:")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"app: x\n# caf\xe9\n")
    with pytest.raises(CircuitFileError) as info:
        load_app(latin)
    assert str(info.value) == f"{latin}:2: file is not valid UTF-8"


def test_shipped_schema_is_valid_and_accepts_the_examples() -> None:
    jsonschema.Draft202012Validator.check_schema(schema())
    validator = jsonschema.Draft202012Validator(schema())
    validator.validate(yaml.safe_load(DEMO.read_text()))
    # YAML 1.1 parsers read the port `on` as a boolean; the loader reads YAML 1.2
    data, _lines = _parse(str(HEATER), HEATER.read_text())
    validator.validate(data)


def test_schema_returns_a_fresh_copy() -> None:
    first = schema()
    first["title"] = "changed"
    assert schema()["title"] == "JET circuit file"


# --- fuzzing: only CircuitFileError, ever --------------------------------------------------


def must_load_or_refuse(text: str) -> None:
    try:
        app = loads_app(text, "fuzz.yaml")
    except CircuitFileError as exc:
        assert str(exc).startswith("fuzz.yaml:")
        assert exc.line >= 1
        return
    # whatever loads can be checked without crashing
    for problem in check_app(app, Registry()):
        assert str(problem).startswith("fuzz.yaml:")


YAML_ALPHABET = st.sampled_from(
    [
        *"abc.->:{}[],'\"#&*!|>%@` \n\t-?0123456789",
        *["app", "circuits", "wires", "gadgets", "type", "params", "container", "node"],
    ]
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.text())
def test_fuzz_arbitrary_text(text: str) -> None:
    must_load_or_refuse(text)


@FUZZ
@given(st.lists(YAML_ALPHABET, max_size=60).map("".join))
def test_fuzz_yaml_punctuation(text: str) -> None:
    must_load_or_refuse(text)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.sampled_from(["a.b.c -> d.e.f", "a.b -> c.d", "pack", "node", "web", "jet.lib.Ticker"]),
)
yamlish = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "app",
                    "circuits",
                    "wires",
                    "gadgets",
                    "type",
                    "params",
                    "container",
                    "node",
                    "from",
                    "to",
                    "qos",
                    "name",
                    "inputs",
                    "outputs",
                    "subcircuits",
                    "definitions",
                    "x",
                    "c",
                ]
            ),
            children,
            max_size=5,
        ),
    ),
    max_leaves=20,
)

names = st.sampled_from(["a", "b", "c", "Bad", "x.y"])
ports = st.sampled_from(["in", "out", "temp", "heat", "value", "on"])
types = st.sampled_from(
    [
        "jet.lib.Ticker",
        "jet.lib.Scale",
        "jet.lib.Delay",
        "jet.lib.Nope",
        "os.path",
        "web.Chart",
        "web.Slider",
        "d",
        "e",
    ]
)
gadget = st.fixed_dictionaries(
    {"type": types}, optional={"params": st.dictionaries(st.sampled_from(["factor", "x"]), scalars)}
)
node_gadget = st.fixed_dictionaries(
    {"name": names},
    optional={
        "inputs": st.lists(ports, max_size=3),
        "outputs": st.lists(ports, max_size=3),
        "id": st.integers(-2, 2000),
    },
)
wire = st.builds(
    lambda *p: f"{p[0]}.{p[1]}.{p[2]} -> {p[3]}.{p[4]}.{p[5]}",
    names,
    names,
    ports,
    names,
    names,
    ports,
)
local_wire = st.builds(lambda *p: f"{p[0]}.{p[1]} -> {p[2]}.{p[3]}", names, ports, names, ports)
circuit = st.one_of(
    st.fixed_dictionaries(
        {
            "container": st.sampled_from(["pack", "web"]),
            "gadgets": st.dictionaries(names, gadget, max_size=3),
        },
        optional={"wires": st.lists(local_wire, max_size=3)},
    ),
    st.fixed_dictionaries(
        {
            "container": st.just("node"),
            "node": st.integers(-1, 40),
            "gadgets": st.lists(node_gadget, max_size=3),
        },
    ),
)
subcircuit = st.fixed_dictionaries(
    {"gadgets": st.dictionaries(names, gadget, max_size=3)},
    optional={
        "inputs": st.dictionaries(ports, st.builds(lambda g, p: f"{g}.{p}", names, ports)),
        "outputs": st.dictionaries(ports, st.builds(lambda g, p: f"{g}.{p}", names, ports)),
        "wires": st.lists(local_wire, max_size=3),
    },
)
app_like = st.fixed_dictionaries(
    {"app": st.just("fuzz"), "circuits": st.dictionaries(names, circuit, max_size=3)},
    optional={
        "wires": st.lists(wire, max_size=4),
        "subcircuits": st.dictionaries(st.sampled_from(["d", "e"]), subcircuit, max_size=2),
        "definitions": st.dictionaries(st.sampled_from(["f"]), subcircuit, max_size=1),
    },
)


@FUZZ
@given(yamlish)
def test_fuzz_yamlish_structures(data: Any) -> None:
    must_load_or_refuse(yaml.safe_dump(data))


@FUZZ
@given(app_like)
def test_fuzz_circuit_shaped_files(data: Any) -> None:
    must_load_or_refuse(yaml.safe_dump(data, sort_keys=False))
