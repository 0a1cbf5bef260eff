"""Loading, unloading and reloading apps, one circuit at a time (SPEC section 3).

The loader is a client: it reads the retained circuit statuses to learn
what runs where, then sends commands to containers and circuits and waits
for each reply, so every step is confirmed before the next one and an error
names the command that failed.  A wire into a circuit is always owned by that
circuit (it holds the subscription), so every wire/unwire goes to the
destination circuit's conf topic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from . import topics
from .check import check_app
from .client import Session
from .model import AppDef, CircuitDef, PortRef, WireDef, circuit_to_msgpack
from .ports import ports_of
from .registry import Registry


class LoadError(RuntimeError):
    """Loading cannot go on; the message says which circuit and why."""


@attrs.frozen
class Placement:
    """Where a circuit runs: its topic type and circuit id."""

    kind: str
    circuit_id: str

    @property
    def conf(self) -> str:
        return topics.circuit_conf(self.kind, self.circuit_id)

    @property
    def prefix(self) -> str:
        return topics.circuit_prefix(self.kind, self.circuit_id)


Progress = Callable[[str], None]


def _quiet(_line: str) -> None:
    pass


class Loader:
    def __init__(
        self,
        session: Session,
        registry: Registry | None = None,
        *,
        pack: str = "default",
        hub: str = "hub",
        web: str = "web",
        progress: Progress = _quiet,
    ) -> None:
        self.session = session
        self.registry = registry or Registry()
        self.containers = {"pack": pack, "node": hub, "web": web}
        self.progress = progress
        self.statuses: dict[str, dict[str, Any]] = {}

    # -- what runs now -------------------------------------------------------------------

    async def refresh(self) -> None:
        found = await self.session.circuit_statuses()
        self.statuses = {
            t: s for t, s in found.items() if isinstance(s, dict) and s.get("state") == "online"
        }

    def placement(self, app: AppDef, circuit: CircuitDef) -> Placement | None:
        """Where ``circuit`` of ``app`` runs now, or None when it is not loaded."""
        for topic, status in self.statuses.items():
            kind, cid = topic.split("/")[:2]
            if kind != circuit.container:
                continue
            if kind != "node" and cid == circuit.name:
                return Placement(kind, cid)
            definition = status.get("definition") or {}
            if (
                kind == "node"
                and definition.get("name") == circuit.name
                and (status.get("app") in (None, "", app.name))
            ):
                return Placement(kind, cid)
        return None

    def inputs_of(self, place: Placement) -> dict[str, list[dict[str, Any]]]:
        status = self.statuses.get(topics.circuit_status(place.kind, place.circuit_id), {})
        inputs = status.get("inputs") or {}
        return inputs if isinstance(inputs, dict) else {}

    # -- naming ports on the wire ---------------------------------------------------------

    def _port_index(self, circuit: CircuitDef, ref: PortRef, output: bool) -> tuple[Any, int]:
        gadget = circuit.gadget(ref.gadget)
        if gadget is None:
            raise LoadError(f"{circuit.name} has no gadget {ref.gadget!r}")
        ports = ports_of(gadget, circuit, self.registry)
        names = ports.outputs if output else ports.inputs
        if ref.port not in names:
            raise LoadError(f"{circuit.name}.{ref.gadget} has no port {ref.port!r}")
        gadget_id: Any = gadget.name
        if circuit.container == "node":
            number = gadget.number
            gadget_id = number if number is not None else circuit.gadgets.index(gadget)
        return gadget_id, names.index(ref.port)

    def source_topic(self, app: AppDef, wire: WireDef, place: Placement) -> str:
        circuit = app.circuit(wire.src.circuit or "")
        assert circuit is not None
        gadget_id, index = self._port_index(circuit, wire.src, output=True)
        return topics.output(place.kind, place.circuit_id, gadget_id, index)

    def input_name(self, app: AppDef, wire: WireDef) -> str:
        circuit = app.circuit(wire.dst.circuit or "")
        assert circuit is not None
        if circuit.container == "node":
            gadget_id, index = self._port_index(circuit, wire.dst, output=False)
            return f"{gadget_id}.{index}"
        return f"{wire.dst.gadget}.{wire.dst.port}"

    @staticmethod
    def exports_of(app: AppDef, circuit: CircuitDef) -> dict[str, dict[str, int]]:
        """Outputs of ``circuit`` read by other circuits: {output: {consumer: wire qos}}."""
        exports: dict[str, dict[str, int]] = {}
        for wire in app.wires:
            if wire.src.circuit == circuit.name:
                key = f"{wire.src.gadget}.{wire.src.port}"
                exports.setdefault(key, {})[str(wire.dst)] = wire.qos
        return exports

    # -- commands ---------------------------------------------------------------------------

    async def _wire(self, app: AppDef, wire: WireDef, places: dict[str, Placement]) -> None:
        src, dst = places[wire.src.circuit or ""], places[wire.dst.circuit or ""]
        topic = self.source_topic(app, wire, src)
        command: dict[str, Any] = {
            "cmd": "wire", "input": self.input_name(app, wire), "topic": topic, "qos": wire.qos
        }
        if wire.queue is not None:
            command["queue"] = wire.queue
        if wire.policy is not None:
            command["policy"] = wire.policy
        await self.session.request(dst.conf, command)
        self.progress(f"wired {wire}  ({topic})")

    async def _load_one(self, app: AppDef, circuit: CircuitDef) -> Placement:
        container = (
            circuit.pack
            if circuit.container == "pack" and circuit.pack
            else (self.containers[circuit.container])
        )
        conf_topic = topics.container_conf(circuit.container, container)
        result = await self.session.request(
            conf_topic,
            {
                "cmd": "load",
                "app": app.name,
                "definition": circuit_to_msgpack(circuit),
                "exports": self.exports_of(app, circuit),
            },
        )
        circuit_id = str((result or {}).get("circuit_id", circuit.name))
        self.progress(f"loaded {circuit.name} into {circuit.container} {container} as {circuit_id}")
        return Placement(circuit.container, circuit_id)

    def _checked(self, app: AppDef) -> None:
        problems = check_app(app, self.registry)
        if problems:
            raise LoadError("\n".join(str(p) for p in problems))

    async def load(self, app: AppDef) -> None:
        """Load every circuit of ``app`` in file order, wiring each as it arrives."""
        self._checked(app)
        await self.refresh()
        places: dict[str, Placement] = {}
        for circuit in app.circuits:
            if self.placement(app, circuit) is not None:
                raise LoadError(
                    f"{app.source}: circuit {circuit.name!r} is already loaded"
                    " (use `jet reload` to replace it)"
                )
        for circuit in app.circuits:
            places[circuit.name] = await self._load_one(app, circuit)
            await self._wire_around(app, circuit.name, places)

    async def _wire_around(self, app: AppDef, name: str, places: dict[str, Placement]) -> None:
        # Inputs of the new circuit fed by loaded circuits, then inputs of
        # loaded circuits fed by the new one (SPEC section 3, in that order).
        for wire in app.wires:
            if wire.dst.circuit == name and wire.src.circuit in places:
                await self._wire(app, wire, places)
        for wire in app.wires:
            if wire.src.circuit == name and wire.dst.circuit in places and wire.dst.circuit != name:
                await self._wire(app, wire, places)

    async def unload_app(self, app: AppDef) -> None:
        await self.refresh()
        places = [(c, self.placement(app, c)) for c in app.circuits]
        loaded = [(c.name, p) for c, p in places if p is not None]
        if not loaded:
            raise LoadError(f"{app.source}: no circuit of app {app.name!r} is loaded")
        for name, place in reversed(loaded):
            await self._unload_one(name, place)

    async def unload_id(self, circuit_id: str) -> None:
        await self.refresh()
        for topic in self.statuses:
            kind, cid = topic.split("/")[:2]
            if cid == circuit_id:
                await self._unload_one(circuit_id, Placement(kind, cid))
                return
        raise LoadError(f"no circuit {circuit_id!r} is loaded")

    async def _unload_one(self, name: str, place: Placement) -> None:
        # 1. unwire its inputs
        for port in self.inputs_of(place):
            await self.session.request(place.conf, {"cmd": "unwire", "input": port})
        # 2. drain it
        if place.kind != "node":
            await self.session.request(place.conf, {"cmd": "drain"}, timeout=15)
        # 3. unwire others from it
        for other in self._loaded_places():
            if other == place:
                continue
            for port, wires in self.inputs_of(other).items():
                for wire in wires:
                    if str(wire.get("topic", "")).startswith(place.prefix):
                        await self.session.request(
                            other.conf, {"cmd": "unwire", "input": port, "topic": wire["topic"]}
                        )
        # 4. stop it
        await self.session.request(place.conf, {"cmd": "stop"})
        self.statuses.pop(topics.circuit_status(place.kind, place.circuit_id), None)
        self.progress(f"unloaded {name} ({place.kind}/{place.circuit_id})")

    def _loaded_places(self) -> Iterable[Placement]:
        for topic in list(self.statuses):
            kind, cid = topic.split("/")[:2]
            yield Placement(kind, cid)

    async def reload(self, app: AppDef) -> None:
        """Bring what runs in line with ``app``: load new circuits, replace changed
        ones in place (kept wires keep their subscriptions), unload removed ones."""
        self._checked(app)
        await self.refresh()
        places: dict[str, Placement] = {}
        for circuit in app.circuits:
            place = self.placement(app, circuit)
            if place is None:
                places[circuit.name] = await self._load_one(app, circuit)
                await self._wire_around(app, circuit.name, places)
                continue
            places[circuit.name] = place
            if place.kind != "node":
                await self.session.request(
                    place.conf,
                    {
                        "cmd": "reload",
                        "definition": circuit_to_msgpack(circuit),
                        "exports": self.exports_of(app, circuit),
                    },
                )
                self.progress(f"reloaded {circuit.name}")
            await self._rewire(app, circuit, places)
        await self._unload_missing(app)

    async def _rewire(self, app: AppDef, circuit: CircuitDef, places: dict[str, Placement]) -> None:
        place = places[circuit.name]
        wanted: set[tuple[str, str]] = set()
        for wire in app.wires:
            if wire.dst.circuit == circuit.name and wire.src.circuit in places:
                topic = self.source_topic(app, wire, places[wire.src.circuit])
                wanted.add((self.input_name(app, wire), topic))
                await self._wire(app, wire, places)
        for wire in app.wires:
            if wire.src.circuit == circuit.name and wire.dst.circuit in places:
                await self._wire(app, wire, places)
        app_places = set(places.values())
        for port, wires in self.inputs_of(place).items():
            for wire_status in wires:
                topic = str(wire_status.get("topic"))
                from_app = any(topic.startswith(p.prefix) for p in app_places)
                if from_app and (port, topic) not in wanted:
                    await self.session.request(
                        place.conf, {"cmd": "unwire", "input": port, "topic": topic}
                    )
                    self.progress(f"unwired {circuit.name}.{port} from {topic}")

    async def _unload_missing(self, app: AppDef) -> None:
        names = {c.name for c in app.circuits}
        for topic, status in list(self.statuses.items()):
            kind, cid = topic.split("/")[:2]
            definition = status.get("definition") or {}
            name = definition.get("name", cid)
            if status.get("app") == app.name and name not in names:
                await self._unload_one(name, Placement(kind, cid))
