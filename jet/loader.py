"""Loading, unloading and reloading apps, one circuit at a time (SPEC section 3).

The loader is a client: it reads the retained circuit statuses to learn
what runs where, then sends commands to containers and circuits and waits
for each reply, so every step is confirmed before the next one and an error
names the command that failed.  A wire into a circuit is always owned by that
circuit (it holds the subscription), so every wire/unwire goes to the
destination circuit's conf topic.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from jet import address
from jet.address import CircuitAddress
from jet.containers.status import Circuit, Statuses, WireStatus
from jet.definition.check import check_app
from jet.definition.model import AppDef, CircuitDef, PortRef, WireDef, circuit_to_msgpack
from jet.definition.ports import ports_of
from jet.runtime.registry import Registry
from jet.transport.client import CommandFailed, NoReply, Session


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
        self.known = Statuses(self.registry)
        #: the circuits online now, by where they run (read by :meth:`refresh`)
        self.running: dict[CircuitAddress, Circuit] = {}

    # -- what runs now -------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read what runs now; statuses that are not a container's are skipped (warned)."""
        self.known = await Statuses.read(self.session, self.registry)
        self.running = {c.address: c for c in self.known.online()}

    def placement(self, app: AppDef, circuit: CircuitDef) -> CircuitAddress | None:
        """Where ``circuit`` of ``app`` runs now, or None when it is not loaded."""
        for place, running in self.running.items():
            if place.kind != circuit.container:
                continue
            if address.rules(place.kind).ids_are_names:
                if place.id == circuit.name:
                    return place
                continue
            if running.name == circuit.name and running.status.app in ("", app.name):
                return place
        return None

    def inputs_of(self, place: CircuitAddress) -> Mapping[str, tuple[WireStatus, ...]]:
        running = self.running.get(place)
        return running.status.inputs if running is not None else {}

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
        """Load ``circuit`` not started (when its container runs its graph): its gadgets
        start once it is wired (:meth:`_start`), so a source's first values are not lost."""
        container = (
            circuit.pack
            if circuit.container == "pack" and circuit.pack
            else (self.containers[circuit.container])
        )
        conf_topic = address.container_conf(circuit.container, container)
        command: dict[str, Any] = {
            "cmd": "load",
            "app": app.name,
            "definition": circuit_to_msgpack(circuit),
            "exports": self.exports_of(app, circuit),
        }
        if address.rules(circuit.container).runs_graph:
            command["start"] = False
        result = await self.session.request(conf_topic, command)
        circuit_id = str((result or {}).get("circuit_id", circuit.name))
        self.progress(f"loaded {circuit.name} into {circuit.container} {container} as {circuit_id}")
        return CircuitAddress(circuit.container, circuit_id)

    async def _start(self, places: Iterable[CircuitAddress]) -> None:
        """Start circuits loaded not started, once every wire of the load is made."""
        for place in places:
            if address.rules(place.kind).runs_graph:
                await self.session.request(place.conf, {"cmd": "start"})

    @contextlib.asynccontextmanager
    async def _starting(self) -> AsyncIterator[list[CircuitAddress]]:
        """Circuits added to the yielded list (loaded not started) are started when the
        block ends: once every wire of the load is made.  If the block fails, they are
        started anyway before the error goes on, so nothing is left loaded and idle."""
        loaded: list[CircuitAddress] = []
        try:
            yield loaded
        except Exception:
            with contextlib.suppress(CommandFailed, NoReply):
                await self._start(loaded)
            raise
        await self._start(loaded)

    def _checked(self, app: AppDef) -> None:
        problems = check_app(app, self.registry)
        if problems:
            raise LoadError("\n".join(str(p) for p in problems))

    async def load(self, app: AppDef) -> None:
        """Load every circuit of ``app`` in file order, wiring each as it arrives, and
        start them once all are wired."""
        self._checked(app)
        await self.refresh()
        for circuit in app.circuits:
            if self.placement(app, circuit) is not None:
                raise LoadError(
                    f"{app.source}: circuit {circuit.name!r} is already loaded"
                    " (use `jet reload` to replace it)"
                )
        places: _Places = {}
        async with self._starting() as loaded:
            for circuit in app.circuits:
                places[circuit.name] = await self._load_one(app, circuit)
                loaded.append(places[circuit.name])
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
        for place in self.running:
            if place.id == circuit_id:
                await self._unload_one(circuit_id, place)
                return
        for kept in self.known.unrestored():
            if kept.id == circuit_id:
                place = kept.address  # nothing runs: its container forgets it
                await self.session.request(place.conf, {"cmd": "stop"})
                self.progress(f"unloaded {circuit_id} ({place}, which was not restored)")
                return
        why = self.known.why_invalid(circuit_id)
        if why is not None:
            raise LoadError(
                f"cannot unload {circuit_id!r}: its retained status is not readable ({why});"
                " nothing was changed"
            )
        raise LoadError(f"no circuit {circuit_id!r} is loaded")

    async def _unload_one(self, name: str, place: CircuitAddress) -> None:
        """Unwire, drain, unwire its consumers, stop: all of it, or nothing.

        Everything it needs was read and checked by :meth:`refresh` before the first
        command; if a command fails midway, the wires already removed are made again
        and the error says so in one line.
        """
        undo: list[tuple[str, dict[str, Any]]] = []  # (conf topic, wire command)
        step = "unwire its inputs"
        try:
            # 1. unwire its inputs
            for port, wires in self.inputs_of(place).items():
                await self.session.request(place.conf, {"cmd": "unwire", "input": port})
                undo.extend((place.conf, wire.command(port)) for wire in wires)
            # 2. drain it (bounded: a stuck gadget is reported, and the unload goes on)
            step = "drain"
            if address.rules(place.kind).runs_graph:
                try:
                    await self.session.request(
                        place.conf, {"cmd": "drain", "timeout": 10}, timeout=15
                    )
                except CommandFailed as exc:
                    self.progress(f"{name}: {exc}; unloading it anyway")
            # 3. unwire others from it
            step = "unwire the circuits it feeds"
            for other in self.running:
                if other == place:
                    continue
                for port, wires in self.inputs_of(other).items():
                    for wire in wires:
                        if place.owns(wire.topic):
                            await self.session.request(
                                other.conf, {"cmd": "unwire", "input": port, "topic": wire.topic}
                            )
                            undo.append((other.conf, wire.command(port)))
            # 4. stop it
            step = "stop"
            await self.session.request(place.conf, {"cmd": "stop"})
        except (CommandFailed, NoReply) as exc:
            raise LoadError(await self._roll_back(name, step, exc, undo)) from None
        self.running.pop(place, None)
        self.progress(f"unloaded {name} ({place})")

    async def _roll_back(
        self, name: str, step: str, error: Exception, undo: list[tuple[str, dict[str, Any]]]
    ) -> str:
        """Make again the wires an unload removed; the one line that says how it went."""
        failed = []
        for conf_topic, command in reversed(undo):
            try:
                await self.session.request(conf_topic, command)
            except (CommandFailed, NoReply) as exc:
                failed.append(f"{command['input']} from {command['topic']}: {exc}")
        said = f"unload of {name} failed at '{step}': {error}"
        if not failed:
            wires = f"rewired the {len(undo)} wires it had removed" if undo else "nothing removed"
            return f"{said}; {wires}, {name} is loaded as before"
        return (
            f"{said}; could not rewire {len(failed)} of {len(undo)} wires"
            f" ({'; '.join(failed[:2])}): check with `jet ls`"
        )

    async def reload(self, app: AppDef) -> None:
        """Bring what runs in line with ``app``: load new circuits, replace changed
        ones in place (kept wires keep their subscriptions), unload removed ones."""
        self._checked(app)
        await self.refresh()
        places: _Places = {}
        async with self._starting() as loaded:
            for circuit in app.circuits:
                place = self.placement(app, circuit)
                if place is None:
                    places[circuit.name] = await self._load_one(app, circuit)
                    loaded.append(places[circuit.name])
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
                topic = wire_status.topic
                from_app = any(p.owns(topic) for p in app_places)
                if from_app and (port, topic) not in wanted:
                    await self.session.request(
                        place.conf, {"cmd": "unwire", "input": port, "topic": topic}
                    )
                    self.progress(f"unwired {circuit.name}.{port} from {topic}")

    async def _unload_missing(self, app: AppDef) -> None:
        names = {c.name for c in app.circuits}
        for place, running in list(self.running.items()):
            if running.status.app == app.name and running.name not in names:
                await self._unload_one(running.name, place)
