"""jet.address: topics taken apart, and how a port becomes a topic per container kind."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest

from jet import address
from jet.address import CircuitAddress, Topic
from jet.definition.model import CircuitDef, GadgetDef


@pytest.mark.parametrize(
    ("topic", "parsed"),
    [
        ("pack/kitchen/thermostat/0", Topic("output", "pack", "kitchen", "thermostat", 0)),
        ("node/21205/3/1", Topic("output", "node", "21205", "3", 1)),
        ("pack/kitchen/conf", Topic("conf", "pack", "kitchen")),
        ("web/panel/status", Topic("status", "web", "panel")),
        ("jet/pack/default/conf", Topic("container_conf", "pack", "default")),
        ("jet/node/hub/status", Topic("container_status", "node", "hub")),
        ("jet/reply/jet-cli-1-a", Topic("reply", "", "jet-cli-1-a")),
        ("pack/kitchen/thermostat/out", None),
        ("pack/kitchen", None),
        ("pack//conf", None),
        ("jet/x/status", None),
        ("bench/jet/in/1/2", None),
    ],
)
def test_parse(topic: str, parsed: Topic | None) -> None:
    assert address.parse(topic) == parsed


def test_parse_inverts_the_builders() -> None:
    built = [
        address.output("pack", "c", "g", 2),
        address.circuit_conf("node", "7"),
        address.circuit_status("web", "w"),
        address.container_conf("pack", "p"),
        address.container_status("web", "w"),
        address.reply("me"),
    ]
    parsed = [address.parse(t) for t in built]
    owners = [p.owner for p in parsed if p is not None]
    assert owners == ["pack/c", "node/7", "web/w", "jet/pack/p", "jet/web/w", "jet/reply/me"]
    assert address.circuit_of(built[0]) == CircuitAddress("pack", "c")
    assert address.circuit_of(built[3]) is None


def test_kinds() -> None:
    assert address.rules("node").numbered and not address.rules("node").runs_graph
    assert not address.rules("pack").numbered and address.rules("web").runs_graph
    assert address.rules("something-new") == address.rules("pack")


NODE = CircuitDef(
    name="heater",
    container="node",
    node=5,
    gadgets=(
        GadgetDef(name="water", outputs=("celsius",)),
        GadgetDef(name="relay", inputs=("on", "off"), number=9),
    ),
)
PACK = CircuitDef(name="control", gadgets=(GadgetDef(name="t", type="jet.lib.Thermostat"),))


def test_port_of_per_kind() -> None:
    node = CircuitAddress("node", "21205")
    water, relay = NODE.gadgets
    out = address.port_of(node, NODE.gadgets, water, water.outputs, "celsius")
    assert (out.gadget, out.index, out.name, out.topic) == (0, 0, "0.0", "node/21205/0/0")
    into = address.port_of(node, NODE.gadgets, relay, relay.inputs, "off")
    assert (into.name, into.conf) == ("9.1", "node/21205/conf")
    pack = CircuitAddress("pack", "control")
    port = address.port_of(pack, PACK.gadgets, PACK.gadgets[0], ("temp", "setpoint"), "setpoint")
    assert (port.name, port.topic) == ("t.setpoint", "pack/control/t/1")


@attrs.frozen
class _Running:
    address: CircuitAddress
    definition: CircuitDef

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def gadgets(self) -> Sequence[GadgetDef]:
        return self.definition.gadgets

    def port_names(self, gadget: str, output: bool) -> Sequence[str]:
        found = self.definition.gadget(gadget)
        assert found is not None
        return found.outputs if output else found.inputs


def test_find_port() -> None:
    running = [_Running(CircuitAddress("node", "21205"), NODE)]
    assert address.find_port("heater.relay.on", running, output=False).name == "9.0"
    assert address.find_port("21205.water.celsius", running, output=True).topic == (
        "node/21205/0/0"
    )
    for target, message in [
        ("heater.relay", "expected circuit.gadget.port"),
        ("heater..on", "expected circuit.gadget.port"),
        ("other.relay.on", "no circuit 'other' is loaded"),
        ("heater.pump.on", "heater has no gadget 'pump'"),
        ("heater.relay.on", "heater.relay has no output 'on'"),
    ]:
        with pytest.raises(address.UnknownPort, match=message):
            address.find_port(target, running, output=True)
