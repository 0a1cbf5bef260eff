"""Sub-circuits at run time: a circuit used as a gadget, nested, over a real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import Collector, link, run

from jet.containers.pack import Pack
from jet.definition.files import load_app
from jet.definition.model import PortRef, circuit_from_msgpack, circuit_to_msgpack
from jet.loader import Loader
from jet.transport import broker
from jet.transport.client import Session

APP = """
app: nested
subcircuits:
  smooth:
    inputs: {in: avg.in}
    outputs: {out: avg.out}
    gadgets:
      avg: {type: jet.lib.MovingAverage, params: {size: 2}}
  scaled_smooth:
    inputs: {in: double.in}
    outputs: {out: s.out}
    gadgets:
      double: {type: jet.lib.Scale, params: {factor: 2}}
      s: {type: smooth}
    wires: [double.out -> s.in]
circuits:
  main:
    gadgets:
      f: {type: scaled_smooth}
      plus: {type: jet.lib.Offset, params: {offset: 1}}
    wires:
      - f.out -> plus.in
"""


def test_nested_subcircuit_runs_as_a_gadget(mosquitto: Any, tmp_path: Path) -> None:
    path = tmp_path / "nested.yaml"
    path.write_text(APP)

    async def scenario() -> list[Any]:
        url = broker.parse(mosquitto.url)
        async with (
            Pack(url, "p1"),
            Session(url) as session,
            link(mosquitto.url, "observer") as observer,
        ):
            await Loader(session, pack="p1").load(load_app(path))
            out = await Collector(observer).watch("pack/main/plus/0")
            for value in (1, 3, 5):
                await session.request(
                    "pack/main/conf", {"cmd": "inject", "input": "f.in", "value": value}
                )
            await out.wait_for(lambda c: len(c.values()) == 3)
            status = await session.request("pack/main/conf", {"cmd": "status"})
            assert "scaled_smooth" in status["definition"]["subcircuits"]
            return out.values()

    # doubled: 2, 6, 10; averaged over two: 2, 4, 8; plus one: 3, 5, 9
    assert run(scenario()) == [3.0, 5.0, 9.0]


def test_msgpack_form_round_trips_and_reads_the_old_port_keys(tmp_path: Path) -> None:
    path = tmp_path / "nested.yaml"
    path.write_text(APP)
    main = load_app(path).circuits[0]
    form = circuit_to_msgpack(main)
    assert circuit_from_msgpack(form) == main
    # An older loader (or a pack state file it wrote) named the ports "exports_in"/"exports_out".
    old = {**form, "subcircuits": {}}
    for name, sub in form["subcircuits"].items():
        renamed = {k: v for k, v in sub.items() if k not in ("inputs", "outputs")}
        old["subcircuits"][name] = {
            **renamed, "exports_in": sub["inputs"], "exports_out": sub["outputs"]
        }
    assert "inputs" not in old["subcircuits"]["smooth"]
    assert circuit_from_msgpack(old) == main
    assert main.subcircuits["smooth"].inputs == {"in": PortRef("avg", "in")}
