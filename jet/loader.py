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

from jet import address
from jet.address import CircuitAddress
from jet.definition.check import check_app
from jet.definition.model import AppDef, CircuitDef, PortRef, WireDef, circuit_to_msgpack
from jet.definition.ports import ports_of
from jet.runtime.registry import Registry
from jet.transport.client import CommandFailed, Session


class LoadError(RuntimeError):
    """Loading cannot go on; the message says which circuit and why."""


Progress = Callable[[str], None]
#: Where each circuit of an app runs, by circuit name.
_Places = dict[str, CircuitAddress]


def _unfinished(result: Any) -> str:
    """What a reload reply says the replaced gadgets did not finish, in words ("" if nothing)."""
    unfinished = result.get("unfinished") if isinstance(result, dict) else None
    if not isinstance(unfinished, dict):
        return ""
    parts = [
        f"{gadget}: {counts.get('moved', 0)} queued messages handed to the new gadget,"
        f" {counts.get('lost', 0)} lost"
        for gadget, counts in unfinished.items()
        if isinstance(counts, dict)
    ]
    return f" (not finished in time: {'; '.join(parts)})" if parts else ""


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
        self.unrestored: list[CircuitAddress] = []

    # -- what runs now -------------------------------------------------------------------

    async def refresh(self) -> None:
        found = await self.session.circuit_statuses()
        self.statuses = {
            t: s for t, s in found.items() if isinstance(s, dict) and s.get("state") == "online"
        }
        # Kept in a container's state file but not running (docs/survive-identity.md).
        self.unrestored = [
            place for t, s in found.items()
            if isinstance(s, dict) and s.get("state") == "unrestored"
            and (place := address.circuit_of(t)) is not None
        ]

    def placement(self, app: AppDef, circuit: CircuitDef) -> CircuitAddress | None:
        """Where ``circuit`` of ``app`` runs now, or None when it is not loaded."""
        for topic, status in self.statuses.items():
            place = address.circuit_of(topic)
            if place is None or place.kind != circuit.container:
                continue
            if address.rules(place.kind).ids_are_names:
                if place.id == circuit.name:
                    return place
                continue
            definition = status.get("definition") or {}
            if definition.get("name") == circuit.name and (
                status.get("app") in (None, "", app.name)
            ):
                return place
        return None

    def inputs_of(self, place: CircuitAddress) -> dict[str, list[dict[str, Any]]]:
        status = self.statuses.get(place.status, {})
        inputs = status.get("inputs") or {}
        return inputs if isinstance(inputs, dict) else {}

    # -- naming ports on the wire ---------------------------------------------------------

    def _port(
        self, app: AppDef, ref: PortRef, place: CircuitAddress, *, output: bool
    ) -> address.Port:
        circuit = app.circuit(ref.circuit or "")
        assert circuit is not None
        gadget = circuit.gadget(ref.gadget)
        if gadget is None:
            raise LoadError(f"{circuit.name} has no gadget {ref.gadget!r}")
        ports = ports_of(gadget, circuit, self.registry)
        names = ports.outputs if output else ports.inputs
        if ref.port not in names:
            raise LoadError(f"{circuit.name}.{ref.gadget} has no port {ref.port!r}")
        return address.port_of(place, circuit.gadgets, gadget, names, ref.port)

    def source_topic(self, app: AppDef, wire: WireDef, place: CircuitAddress) -> str:
        """The topic the source of ``wire``, running at ``place``, publishes on."""
        return self._port(app, wire.src, place, output=True).topic

    def input_name(self, app: AppDef, wire: WireDef, place: CircuitAddress) -> str:
        """The destination of ``wire``, running at ``place``, as its circuit's commands name it."""
        return self._port(app, wire.dst, place, output=False).name

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

    async def _wire(self, app: AppDef, wire: WireDef, places: _Places) -> None:
        src, dst = places[wire.src.circuit or ""], places[wire.dst.circuit or ""]
        topic = self.source_topic(app, wire, src)
        command: dict[str, Any] = {
            "cmd": "wire", "input": self.input_name(app, wire, dst), "topic": topic, "qos": wire.qos
        }
        if wire.queue is not None:
            command["queue"] = wire.queue
        if wire.policy is not None:
            command["policy"] = wire.policy
        await self.session.request(dst.conf, command)
        self.progress(f"wired {wire}  ({topic})")

    async def _load_one(self, app: AppDef, circuit: CircuitDef) -> CircuitAddress:
        container = (
            circuit.pack
            if circuit.container == "pack" and circuit.pack
            else (self.containers[circuit.container])
        )
        conf_topic = address.container_conf(circuit.container, container)
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
        return CircuitAddress(circuit.container, circuit_id)

    def _checked(self, app: AppDef) -> None:
        problems = check_app(app, self.registry)
        if problems:
            raise LoadError("\n".join(str(p) for p in problems))

    async def load(self, app: AppDef) -> None:
        """Load every circuit of ``app`` in file order, wiring each as it arrives."""
        self._checked(app)
        await self.refresh()
        places: _Places = {}
        for circuit in app.circuits:
            if self.placement(app, circuit) is not None:
                raise LoadError(
                    f"{app.source}: circuit {circuit.name!r} is already loaded"
                    " (use `jet reload` to replace it)"
                )
        for circuit in app.circuits:
            places[circuit.name] = await self._load_one(app, circuit)
            await self._wire_around(app, circuit.name, places)

    async def _wire_around(self, app: AppDef, name: str, places: _Places) -> None:
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
        for place in self._loaded_places():
            if place.id == circuit_id:
                await self._unload_one(circuit_id, place)
                return
        for place in self.unrestored:
            if place.id == circuit_id:  # nothing runs: its container forgets it
                await self.session.request(place.conf, {"cmd": "stop"})
                self.progress(f"unloaded {circuit_id} ({place}, which was not restored)")
                return
        raise LoadError(f"no circuit {circuit_id!r} is loaded")

    async def _unload_one(self, name: str, place: CircuitAddress) -> None:
        # 1. unwire its inputs
        for port in self.inputs_of(place):
            await self.session.request(place.conf, {"cmd": "unwire", "input": port})
        # 2. drain it (bounded: a stuck gadget is reported, and the unload goes on)
        if address.rules(place.kind).runs_graph:
            try:
                await self.session.request(place.conf, {"cmd": "drain", "timeout": 10}, timeout=15)
            except CommandFailed as exc:
                self.progress(f"{name}: {exc}; unloading it anyway")
        # 3. unwire others from it
        for other in self._loaded_places():
            if other == place:
                continue
            for port, wires in self.inputs_of(other).items():
                for wire in wires:
                    if place.owns(str(wire.get("topic", ""))):
                        await self.session.request(
                            other.conf, {"cmd": "unwire", "input": port, "topic": wire["topic"]}
                        )
        # 4. stop it
        await self.session.request(place.conf, {"cmd": "stop"})
        self.statuses.pop(place.status, None)
        self.progress(f"unloaded {name} ({place})")

    def _loaded_places(self) -> Iterable[CircuitAddress]:
        for topic in list(self.statuses):
            place = address.circuit_of(topic)
            if place is not None:
                yield place

    async def reload(self, app: AppDef) -> None:
        """Bring what runs in line with ``app``: load new circuits, replace changed
        ones in place (kept wires keep their subscriptions), unload removed ones."""
        self._checked(app)
        await self.refresh()
        places: _Places = {}
        for circuit in app.circuits:
            place = self.placement(app, circuit)
            if place is None:
                places[circuit.name] = await self._load_one(app, circuit)
                await self._wire_around(app, circuit.name, places)
                continue
            places[circuit.name] = place
            if address.rules(place.kind).runs_graph:
                result = await self.session.request(
                    place.conf,
                    {
                        "cmd": "reload",
                        "definition": circuit_to_msgpack(circuit),
                        "exports": self.exports_of(app, circuit),
                    },
                    timeout=15,  # the pack bounds its wait for replaced gadgets (3 s)
                )
                self.progress(f"reloaded {circuit.name}{_unfinished(result)}")
            await self._rewire(app, circuit, places)
        await self._unload_missing(app)

    async def _rewire(self, app: AppDef, circuit: CircuitDef, places: _Places) -> None:
        place = places[circuit.name]
        wanted: set[tuple[str, str]] = set()
        for wire in app.wires:
            if wire.dst.circuit == circuit.name and wire.src.circuit in places:
                topic = self.source_topic(app, wire, places[wire.src.circuit])
                wanted.add((self.input_name(app, wire, place), topic))
                await self._wire(app, wire, places)
        for wire in app.wires:
            if wire.src.circuit == circuit.name and wire.dst.circuit in places:
                await self._wire(app, wire, places)
        app_places = set(places.values())
        for port, wires in self.inputs_of(place).items():
            for wire_status in wires:
                topic = str(wire_status.get("topic"))
                from_app = any(p.owns(topic) for p in app_places)
                if from_app and (port, topic) not in wanted:
                    await self.session.request(
                        place.conf, {"cmd": "unwire", "input": port, "topic": topic}
                    )
                    self.progress(f"unwired {circuit.name}.{port} from {topic}")

    async def _unload_missing(self, app: AppDef) -> None:
        names = {c.name for c in app.circuits}
        for topic, status in list(self.statuses.items()):
            place = address.circuit_of(topic)
            if place is None:
                continue
            definition = status.get("definition") or {}
            name = definition.get("name", place.id)
            if status.get("app") == app.name and name not in names:
                await self._unload_one(name, place)
