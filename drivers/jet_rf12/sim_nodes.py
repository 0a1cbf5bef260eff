"""Simulated radio nodes: what the node simulator's firmware does.

A simulated node has numbered gadgets like real firmware.  Every
``interval`` seconds it reports its outputs; values sent to its inputs
arrive through :meth:`SimNode.receive` exactly as the radio delivers them
(tag + payload), and node commands arrive on gadget 0 input 7.

Built in: :class:`BoilerNode`, a water heater with a relay.  Others are
declared in YAML (see :func:`nodes_from_yaml`):

    group: 212                      # optional: the simulated dongle's group
    nodes:
      - node: 5
        model: boiler               # built-in model; params below override defaults
        params: {ambient: 20.0, heat_rate: 0.8}
      - node: 7
        interval: 2.0
        gadgets:
          - name: meter
            outputs: [watts]
            params: {codecs: {watts: {codec: "<h", scale: 0.1}}}   # legacy struct payload
          - name: led
            inputs: [on]
        values:                     # what outputs report each interval
          meter.watts: {ramp: [100.0, 5.0]}   # or {constant: x}, {random: [lo, hi]}
        echo:                       # a value received on an input is sent back on an output
          led.on: meter.watts
"""

from __future__ import annotations

import collections
import logging
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from jet.definition.model import CircuitDef
from jet.transport.codec import PayloadError, decode, encode
from jet_rf12.payload import MSGPACK, PortCodec, codec_from_params
from jet_rf12.tags import CONF_GADGET, CONF_INPUT, TagError, decode_tag, encode_tag

log = logging.getLogger("jet.rf12.sim")

#: (gadget number, output number, value)
Output = tuple[int, int, Any]
RECEIVED_KEPT = 1000


class SimConfigError(ValueError):
    """A simulated node declaration is unusable."""


class _Loader(yaml.SafeLoader):
    """SafeLoader where only true/false are booleans: ``inputs: [on]`` names a port "on"."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


@attrs.frozen
class SimGadget:
    name: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    in_codecs: Mapping[int, PortCodec] = attrs.field(factory=dict)
    out_codecs: Mapping[int, PortCodec] = attrs.field(factory=dict)


class SimNode:
    """A node's firmware: gadgets, a periodic report, inputs and node commands."""

    def __init__(
        self,
        node_id: int,
        gadgets: Sequence[SimGadget] | Mapping[int, SimGadget],
        interval: float = 1.0,
    ) -> None:
        if not 1 <= node_id <= 30:
            raise SimConfigError(f"node id must be 1..30, got {node_id}")
        self.node_id = node_id
        # By number: firmware may leave gaps in its gadget numbering.
        self.gadgets: dict[int, SimGadget] = (
            dict(gadgets) if isinstance(gadgets, Mapping) else dict(enumerate(gadgets))
        )
        self.interval = interval
        self.running = True
        self.inputs: dict[tuple[int, int], Any] = {}  # last value on each input
        # Every value received, in order (the latest RECEIVED_KEPT): what a test checks.
        self.received_values: collections.deque[tuple[int, int, Any]] = collections.deque(
            maxlen=RECEIVED_KEPT)
        self.received = 0
        self.bad_packets = 0
        self.commands: list[dict[str, Any]] = []

    # -- firmware behaviour, overridden by models ----------------------------------

    def tick(self, dt: float) -> list[Output]:
        """Advance the model by ``dt`` simulated seconds; the outputs to report."""
        return []

    def on_input(self, gadget: int, port: int, value: Any) -> list[Output]:
        """A value arrived on an input; outputs to send at once."""
        return []

    def on_command(self, cmd: Mapping[str, Any]) -> None:
        name = cmd.get("cmd")
        if name == "stop":
            self.running = False
        elif name == "start":
            self.running = True

    # -- radio -------------------------------------------------------------------

    def encode(self, gadget: int, port: int, value: Any) -> bytes:
        """The packet the firmware sends for one output value."""
        g = self.gadgets.get(gadget)
        codec = MSGPACK if g is None else g.out_codecs.get(port, MSGPACK)
        return encode_tag(gadget, port) + codec.to_radio(encode(value))

    def receive(self, packet: bytes) -> list[Output]:
        """A packet from the hub; returns outputs to send in answer."""
        self.received += 1
        try:
            gadget, port, header = decode_tag(packet)
            if gadget == CONF_GADGET and port == CONF_INPUT:
                cmd = decode(packet[header:])
                if not isinstance(cmd, dict):
                    raise PayloadError(f"node command is not a map: {cmd!r}")
                self.commands.append(cmd)
                self.on_command(cmd)
                log.info("node %d: command %r", self.node_id, cmd.get("cmd"))
                return []
            g = self.gadgets.get(gadget)
            codec = MSGPACK if g is None else g.in_codecs.get(port, MSGPACK)
            value = decode(codec.to_mqtt(packet[header:]))
        except (TagError, PayloadError) as exc:
            self.bad_packets += 1
            log.warning("node %d: bad packet %s: %s", self.node_id, list(packet), exc)
            return []
        self.inputs[gadget, port] = value
        self.received_values.append((gadget, port, value))
        log.debug("node %d: input %d.%d = %r", self.node_id, gadget, port, value)
        return self.on_input(gadget, port, value)

    def declaration(self) -> dict[str, Any]:
        """The node circuit definition (as sent with ``load``) for this firmware."""
        return {
            "name": f"node{self.node_id}",
            "container": "node",
            "node": self.node_id,
            "gadgets": [
                {"name": g.name, "inputs": list(g.inputs), "outputs": list(g.outputs),
                 "number": i, "params": {}}
                for i, g in sorted(self.gadgets.items())
            ],
        }


class BoilerNode(SimNode):
    """A water heater: the water warms while the relay is on, cools toward ambient otherwise.

    Gadget 0 ``water`` output 0 ``celsius`` (msgpack float, every interval);
    gadget 1 ``relay`` input 0 ``on`` (truthy = heating).  Heating adds
    ``heat_rate`` °C per simulated second up to ``max_temp``; cooling is
    exponential toward ``ambient`` with time constant ``tau`` seconds.
    """

    WATER, CELSIUS = 0, 0
    RELAY, ON = 1, 0

    def __init__(
        self,
        node_id: int = 5,
        *,
        interval: float = 1.0,
        ambient: float = 20.0,
        start: float | None = None,
        heat_rate: float = 0.8,
        tau: float = 120.0,
        max_temp: float = 100.0,
    ) -> None:
        super().__init__(
            node_id,
            [SimGadget("water", outputs=("celsius",)), SimGadget("relay", inputs=("on",))],
            interval,
        )
        self.ambient = ambient
        self.temperature = ambient if start is None else start
        self.heat_rate = heat_rate
        self.tau = tau
        self.max_temp = max_temp

    @property
    def relay(self) -> bool:
        return bool(self.inputs.get((self.RELAY, self.ON), False))

    def tick(self, dt: float) -> list[Output]:
        if self.relay:
            self.temperature = min(self.max_temp, self.temperature + self.heat_rate * dt)
        else:
            decay = math.exp(-dt / self.tau)
            self.temperature = self.ambient + (self.temperature - self.ambient) * decay
        return [(self.WATER, self.CELSIUS, round(self.temperature, 2))]


def _generator(spec: Any, where: str) -> Any:
    """A callable returning the next value of an output, from its YAML spec."""
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise SimConfigError(f"{where}: expected one of constant, ramp, random")
    kind, arg = next(iter(spec.items()))
    if kind == "constant":
        return lambda: arg
    if kind == "ramp" and isinstance(arg, Sequence) and len(arg) == 2:
        state = {"next": float(arg[0])}

        def ramp() -> float:
            value = state["next"]
            state["next"] = value + float(arg[1])
            return value

        return ramp
    if kind == "random" and isinstance(arg, Sequence) and len(arg) == 2:
        lo, hi = float(arg[0]), float(arg[1])
        return lambda: round(random.uniform(lo, hi), 3)
    raise SimConfigError(f"{where}: bad {kind!r} (constant: x, ramp: [start, step], "
                         "random: [lo, hi])")


class DeclaredNode(SimNode):
    """A node declared in YAML: generated output values and input echoes."""

    def __init__(
        self,
        node_id: int,
        gadgets: Sequence[SimGadget] | Mapping[int, SimGadget],
        interval: float = 1.0,
        values: Mapping[str, Any] | None = None,
        echo: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(node_id, gadgets, interval)
        self._values = [
            (*self._port(ref, outputs=True), _generator(spec, f"node {node_id} {ref}"))
            for ref, spec in (values or {}).items()
        ]
        self._echo = {
            self._port(src, outputs=False): self._port(dst, outputs=True)
            for src, dst in (echo or {}).items()
        }

    def _port(self, ref: str, outputs: bool) -> tuple[int, int]:
        gadget, _, port = str(ref).partition(".")
        for number, g in self.gadgets.items():
            names = g.outputs if outputs else g.inputs
            if g.name == gadget and port in names:
                return number, names.index(port)
        kind = "output" if outputs else "input"
        raise SimConfigError(f"node {self.node_id}: no {kind} {ref!r}")

    def tick(self, dt: float) -> list[Output]:
        return [(g, p, make()) for g, p, make in self._values]

    def on_input(self, gadget: int, port: int, value: Any) -> list[Output]:
        target = self._echo.get((gadget, port))
        return [] if target is None else [(*target, value)]


MODELS = {"boiler": BoilerNode}


def _gadgets(specs: Iterable[Any], where: str) -> list[SimGadget]:
    gadgets = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise SimConfigError(f"{where} gadget {i}: expected a map with a name")
        inputs = tuple(str(p) for p in spec.get("inputs") or ())
        outputs = tuple(str(p) for p in spec.get("outputs") or ())
        in_codecs: dict[int, PortCodec] = {}
        out_codecs: dict[int, PortCodec] = {}
        for port, codec in ((spec.get("params") or {}).get("codecs") or {}).items():
            try:
                parsed = codec_from_params(codec)
            except ValueError as exc:
                raise SimConfigError(f"{where} gadget {spec['name']!r}: {exc}") from exc
            if port in inputs:
                in_codecs[inputs.index(port)] = parsed
            if port in outputs:
                out_codecs[outputs.index(port)] = parsed
        gadgets.append(SimGadget(str(spec["name"]), inputs, outputs, in_codecs, out_codecs))
    return gadgets


def node_from_spec(spec: Mapping[str, Any]) -> SimNode:
    """One entry of the ``nodes`` list of a simulator YAML file."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("node"), int):
        raise SimConfigError(f"node entry {spec!r}: needs an integer 'node'")
    node_id = spec["node"]
    interval = float(spec.get("interval", 1.0))
    model = spec.get("model")
    if model is not None:
        if model not in MODELS:
            raise SimConfigError(f"node {node_id}: unknown model {model!r} ({', '.join(MODELS)})")
        try:
            return MODELS[model](node_id, interval=interval, **(spec.get("params") or {}))
        except TypeError as exc:
            raise SimConfigError(f"node {node_id}: bad params for {model}: {exc}") from exc
    gadgets = _gadgets(spec.get("gadgets") or (), f"node {node_id}")
    return DeclaredNode(node_id, gadgets, interval, spec.get("values"), spec.get("echo"))


@attrs.frozen
class SimConfig:
    nodes: tuple[SimNode, ...]
    group: int | None = None


def nodes_from_yaml(path: str | Path) -> SimConfig:
    try:
        data = yaml.load(Path(path).read_text(), Loader=_Loader)  # _Loader is a SafeLoader
    except (OSError, yaml.YAMLError) as exc:
        raise SimConfigError(f"{path}: {exc}") from exc
    if isinstance(data, list):
        data = {"nodes": data}
    if not isinstance(data, Mapping) or not isinstance(data.get("nodes"), list):
        raise SimConfigError(f"{path}: expected a map with a 'nodes' list")
    try:
        nodes = tuple(node_from_spec(n) for n in data["nodes"])
    except SimConfigError as exc:
        raise SimConfigError(f"{path}: {exc}") from exc
    ids = [n.node_id for n in nodes]
    if len(set(ids)) != len(ids):
        raise SimConfigError(f"{path}: a node id is declared twice: {ids}")
    group = data.get("group")
    return SimConfig(nodes, group if isinstance(group, int) else None)


def default_nodes(interval: float = 1.0) -> list[SimNode]:
    """What ``jet node-sim`` runs without a nodes file: the boiler as node 5."""
    return [BoilerNode(5, interval=interval)]


def _is_boiler(circuit: CircuitDef) -> bool:
    shape = [(g.name, tuple(g.inputs), tuple(g.outputs)) for g in circuit.gadgets]
    return shape == [("water", (), ("celsius",)), ("relay", ("on",), ())]


def nodes_for_circuits(circuits: Iterable[CircuitDef], interval: float = 1.0) -> list[SimNode]:
    """Simulated firmware for the node circuits of an app (``jet run --simulate``).

    A node declared with the boiler's gadgets (water.celsius, relay.on) runs
    the boiler model; any other node gets its declared gadgets and stays
    silent until something is sent to it.
    """
    nodes: list[SimNode] = []
    for c in circuits:
        if c.container != "node" or c.node is None:
            continue
        if _is_boiler(c):
            nodes.append(BoilerNode(c.node, interval=interval))
            continue
        specs = [{"name": g.name, "inputs": g.inputs, "outputs": g.outputs, "params": g.params}
                 for g in c.gadgets]
        numbers = [i if g.number is None else g.number for i, g in enumerate(c.gadgets)]
        gadgets = dict(zip(numbers, _gadgets(specs, f"circuit {c.name}"), strict=True))
        nodes.append(DeclaredNode(c.node, gadgets, interval))
    return nodes
