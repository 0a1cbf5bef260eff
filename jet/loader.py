"""Loading, unloading and reloading apps, one circuit at a time (SPEC section 3).

The loader is a client: it reads the retained circuit statuses to learn
what runs where, then sends commands to containers and circuits and waits
for each reply, so every step is confirmed before the next one and an error
names the command that failed.  A wire into a circuit is always owned by that
circuit (it holds the subscription), so every wire/unwire goes to the
destination circuit's conf topic.

An app with ``levels`` runs on a tree of levels (docs/levels.md "Circuits at
levels"): the loader holds a session on each level's broker, loads each
circuit on its level's, and makes a wire from a lower level to a higher one
by carrying the output up (the lower level's pump table, :mod:`jet.levels.pump`)
and wiring the input to ``levels/<lower>/data/<output topic>``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

import attrs

from jet import address
from jet.address import CircuitAddress
from jet.cluster import Copy, GroupView
from jet.containers.conf import wire_command
from jet.containers.status import Circuit, Statuses, WireStatus
from jet.definition.check import check_app
from jet.definition.model import AppDef, CircuitDef, PortRef, WireDef, circuit_to_msgpack
from jet.definition.ports import ports_of
from jet.levels import pump
from jet.levels.call import CallError, levels_here
from jet.runtime.registry import Registry
from jet.transport import broker
from jet.transport.client import CommandFailed, NoReply, Session
from jet.transport.formats import Format


class LoadError(RuntimeError):
    """Loading cannot go on; the message says which circuit and why."""


Progress = Callable[[str], None]
#: Where each circuit of an app runs, by circuit name (its level is its definition's).
_Places = dict[str, CircuitAddress]
#: A level's name; None is the one broker of an app without levels.
Level = str | None


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


def level_brokers(app: AppDef) -> dict[str, broker.Broker]:
    """The brokers an app's levels name (its file's ``levels``), each URL checked
    (:class:`LoadError` naming the file and the level)."""
    found = {}
    for level, url in app.levels.items():
        if url is None:
            raise LoadError(f"{app.source}: level {level} names no broker (only `jet run` of"
                            " a levels file that runs this app fills it in)")
        try:
            found[level] = broker.parse(url)
        except broker.BrokerUrlError as exc:
            raise LoadError(f"{app.source}: level {level}: {exc}") from None
    return found


class Loader:
    """Loads, reloads and unloads apps through ``session`` (and, for an app with
    levels, through ``levels``: a session on each level's broker, by level name).
    Each method reads what runs now first (:meth:`refresh`) and confirms every
    command before the next; a failure is a :class:`LoadError` naming what failed."""

    def __init__(
        self,
        session: Session | None,
        registry: Registry | None = None,
        *,
        pack: str = "default",
        hub: str = "hub",
        web: str = "web",
        progress: Progress = _quiet,
        levels: Mapping[str, Session] | None = None,
    ) -> None:
        self.sessions: dict[Level, Session] = {name: s for name, s in (levels or {}).items()}
        if session is not None:
            self.sessions[None] = session
        self.registry = registry or Registry()
        self.containers = {"pack": pack, "node": hub, "web": web}
        self.progress = progress
        self.known = Statuses(self.registry)
        #: seconds a read of every status may take (:meth:`refresh`)
        self.read_limit = 3.0
        #: the circuits online now, by level and where they run (read by :meth:`refresh`)
        self.running: dict[Level, dict[CircuitAddress, Circuit]] = {}
        #: the pack groups on each level's broker (read by :meth:`refresh`)
        self.groups: dict[Level, GroupView] = {}
        #: the members running the copies of each group circuit placed or found by this
        #: loader (every command to such a circuit goes to each copy, by its ``pack``)
        self.copies: dict[str, list[str]] = {}

    def session(self, level: Level) -> Session:
        try:
            return self.sessions[level]
        except KeyError:
            where = f"level {level!r}" if level is not None else "an app without levels"
            raise LoadError(f"no broker for {where}") from None

    # -- what runs now -------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read what runs now on every broker; statuses that are not a container's are
        skipped (warned)."""
        self.running = {}
        for level, session in self.sessions.items():
            # (one read: the circuits, and the pack groups' copies beside them)
            found = await session.retained(*Statuses.FILTERS, *GroupView.FILTERS,
                                           limit=self.read_limit)
            known = Statuses.of(found, self.registry)
            if level is None:
                self.known = known
            self.running[level] = {c.address: c for c in known.online()}
            self.groups[level] = GroupView.of(found)

    # -- pack groups (docs/groups.md) ----------------------------------------------------

    def group_of(self, circuit: CircuitDef) -> str | None:
        """The group ``circuit`` runs in: its ``pack`` names a group when it asks for
        ``replicas``, or when no pack has that id and some pack is in that group."""
        if circuit.container != "pack" or not circuit.pack:
            return None
        if circuit.replicas is not None:
            return circuit.pack
        view = self.groups.get(circuit.level) or GroupView()
        if circuit.pack not in view.members and view.of_group(circuit.pack):
            return circuit.pack
        return None

    def live_copies(self, circuit: CircuitDef) -> list[Copy]:
        view = self.groups.get(circuit.level) or GroupView()
        group = self.group_of(circuit)
        return [c for c in view.live_copies(circuit.name) if c.group == group]

    def _where(self, name: str) -> list[dict[str, Any]]:
        """The fields that address each copy of circuit ``name`` ([{}]: a lone circuit)."""
        return [{"pack": m} for m in self.copies[name]] if name in self.copies else [{}]

    async def _to_circuit(self, level: Level, name: str, place: CircuitAddress,
                          command: dict[str, Any], timeout: float | None = None) -> Any:
        """Send ``command`` to circuit ``name`` at ``place``: to each of its copies."""
        result = None
        for where in self._where(name):
            result = await self.session(level).request(place.conf, {**command, **where},
                                                       timeout)
        return result

    async def _load_copies(self, app: AppDef, circuit: CircuitDef, group: str,
                           command: dict[str, Any]) -> CircuitAddress:
        """Load ``circuit``'s copies on as many members of ``group``, least loaded first."""
        view = self.groups.get(circuit.level) or GroupView()
        wanted = circuit.replicas or 1
        chosen = view.choose(group, wanted)
        if len(chosen) < wanted:
            live = ", ".join(m.id for m in view.live(group)) or "none"
            raise LoadError(
                f"{app.source}:{circuit.line or 0}: circuit {circuit.name!r}: replicas: {wanted}"
                f" but group {group} has {len(chosen)} live members ({live}); each copy runs on"
                " another member"
            )
        for member in chosen:
            await self.session(circuit.level).request(
                address.container_conf("pack", member),
                {**command, "pack_group": group, "replicas": wanted},
            )
        self.copies[circuit.name] = chosen
        self.progress(f"loaded {circuit.name} into group {group}: {wanted} copies, on"
                      f" {', '.join(chosen)}")
        return CircuitAddress("pack", circuit.name)

    async def _unload_copies(self, name: str, level: Level, copies: list[Copy], *,
                             consumers: bool = True) -> None:
        """Unwire, drain and stop each copy; then unwire the circuits it fed (unless
        ``consumers`` is False: other copies of it go on)."""
        session = self.session(level)
        place = CircuitAddress("pack", name)
        for copy in copies:
            for port in sorted(copy.status.get("inputs") or {}):
                await session.request(place.conf, {"cmd": "unwire", "input": port,
                                                   "pack": copy.member})
            try:
                await session.request(place.conf, {"cmd": "drain", "timeout": 10,
                                                   "pack": copy.member}, timeout=15)
            except CommandFailed as exc:
                self.progress(f"{name} on {copy.member}: {exc}; unloading it anyway")
        for at, running in self.running.items() if consumers else ():
            for other in running:
                for port, wires in self.inputs_of(at, other).items():
                    for wire in wires:
                        if self.feeds(wire.topic, at, place, level):
                            await self.session(at).request(
                                other.conf, {"cmd": "unwire", "input": port, "topic": wire.topic}
                            )
        for copy in copies:
            await session.request(place.conf, {"cmd": "stop", "pack": copy.member})
        # The statuses of copies on members that are gone go too: such a member would
        # restore its copy from its status when it comes back (docs/groups.md).
        live = {c.member for c in copies}
        for member in sorted((self.groups.get(level) or GroupView()).copies.get(name, {})):
            if consumers and member not in live:
                await session.link.publish(address.replica_status("pack", name, member), b"",
                                           qos=1, retain=True)
        self.copies.pop(name, None)
        self.progress(f"unloaded {name} (copies on {', '.join(c.member for c in copies)})")

    def placement(self, app: AppDef, circuit: CircuitDef) -> CircuitAddress | None:
        """Where ``circuit`` of ``app`` runs now, or None when it is not loaded."""
        if self.group_of(circuit) is not None:
            copies = self.live_copies(circuit)
            if not copies:
                return None
            self.copies[circuit.name] = [c.member for c in copies]
            return CircuitAddress("pack", circuit.name)
        for place, running in self.running.get(circuit.level, {}).items():
            if place.kind != circuit.container:
                continue
            if address.rules(place.kind).ids_are_names:
                if place.id == circuit.name:
                    return place
                continue
            if running.name == circuit.name and running.status.app in ("", app.name):
                return place
        return None

    def inputs_of(
        self, level: Level, place: CircuitAddress
    ) -> Mapping[str, tuple[WireStatus, ...]]:
        running = self.running.get(level, {}).get(place)
        return running.status.inputs if running is not None else {}

    @staticmethod
    def feeds(topic: str, at: Level, place: CircuitAddress, level: Level) -> bool:
        """Is ``topic``, wired into a circuit at level ``at``, an output of the circuit at
        ``place`` on ``level`` (on the same broker, or carried up from a level below)?"""
        if at == level:
            return place.owns(topic)
        if level is None:
            return False
        carried = address.level_data(level, "")
        return topic.startswith(carried) and place.owns(topic[len(carried):])

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

    def source_topic(self, app: AppDef, wire: WireDef, places: _Places) -> str:
        """The topic the destination of ``wire`` subscribes to: its source's output topic,
        named as it arrives at the destination's level."""
        src, dst = self._circuit(app, wire.src), self._circuit(app, wire.dst)
        topic = self._port(app, wire.src, places[src.name], output=True).topic
        if src.level == dst.level or src.level is None:
            return topic
        return address.level_data(src.level, topic)

    @classmethod
    def _circuit(cls, app: AppDef, ref: PortRef) -> CircuitDef:
        return cls._circuit_named(app, ref.circuit or "")

    def input_name(self, app: AppDef, ref: PortRef, places: _Places) -> str:
        """The input ``ref`` (a wire's destination), as its circuit's commands name it
        where it runs."""
        return self._port(app, ref, places[ref.circuit or ""], output=False).name

    @staticmethod
    def exports_of(app: AppDef, circuit: CircuitDef) -> dict[str, dict[str, int]]:
        """Outputs of ``circuit`` read by other circuits: {output: {consumer: wire qos}}."""
        exports: dict[str, dict[str, int]] = {}
        for wire in app.wires:
            if wire.src.circuit == circuit.name:
                key = f"{wire.src.gadget}.{wire.src.port}"
                exports.setdefault(key, {})[str(wire.dst)] = wire.qos
        return exports

    @staticmethod
    def foreign_of(app: AppDef, circuit: CircuitDef) -> dict[str, list[dict[str, Any]]]:
        """Outputs of ``circuit`` wired to devices' topics: {output: [target]}."""
        foreign: dict[str, list[dict[str, Any]]] = {}
        for wire in app.foreign:
            if not wire.inbound and wire.port.circuit == circuit.name:
                key = f"{wire.port.gadget}.{wire.port.port}"
                target = wire.target()  # (the format as a circuit's status says it back)
                target.update(Format.from_map(target).to_map())
                foreign.setdefault(key, []).append(target)
        return foreign

    # -- commands ---------------------------------------------------------------------------

    async def _wire_devices(self, app: AppDef, circuit: CircuitDef, places: _Places) -> None:
        """Wire the inputs of ``circuit`` that read devices' topics."""
        place = places[circuit.name]
        for wire in app.foreign:
            if not wire.inbound or wire.port.circuit != circuit.name:
                continue
            command = wire_command(
                self.input_name(app, wire.port, places), wire.topic, wire.qos,
                queue=wire.queue, policy=wire.policy, payload=wire.payload,
            )
            await self._to_circuit(circuit.level, circuit.name, place, command)
            self.progress(f"wired {wire}")

    async def _wire(self, app: AppDef, wire: WireDef, places: _Places) -> None:
        dst = self._circuit(app, wire.dst)
        topic = self.source_topic(app, wire, places)
        command = wire_command(self.input_name(app, wire.dst, places), topic, wire.qos,
                               queue=wire.queue, policy=wire.policy)
        await self._to_circuit(dst.level, dst.name, places[dst.name], command)
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
            "foreign": self.foreign_of(app, circuit),
        }
        if address.rules(circuit.container).runs_graph:
            command["start"] = False
        group = self.group_of(circuit)
        if group is not None:
            return await self._load_copies(app, circuit, group, command)
        result = await self.session(circuit.level).request(conf_topic, command)
        circuit_id = str((result or {}).get("circuit_id", circuit.name))
        at = f" at level {circuit.level}" if circuit.level else ""
        self.progress(
            f"loaded {circuit.name} into {circuit.container} {container}{at} as {circuit_id}"
        )
        return CircuitAddress(circuit.container, circuit_id)

    async def _start(self, loaded: Iterable[tuple[Level, CircuitAddress]]) -> None:
        """Start circuits loaded not started, once every wire of the load is made."""
        for level, place in loaded:
            if address.rules(place.kind).runs_graph:
                await self._to_circuit(level, place.id, place, {"cmd": "start"})

    @contextlib.asynccontextmanager
    async def _starting(self) -> AsyncIterator[list[tuple[Level, CircuitAddress]]]:
        """Circuits added to the yielded list (loaded not started) are started when the
        block ends: once every wire of the load is made.  If the block fails, they are
        started anyway before the error goes on, so nothing is left loaded and idle."""
        loaded: list[tuple[Level, CircuitAddress]] = []
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

    async def _in_order(self, app: AppDef) -> list[CircuitDef]:
        """The circuits of ``app`` in the order they are loaded: file order; with levels,
        the higher levels first (a wire only goes up, so every consumer is wired
        before its source starts), after checking that each wire between levels goes
        up the tree the level daemons say they form."""
        if not app.levels:
            return list(app.circuits)
        paths = {level: await self._path_of(level) for level in app.levels}
        for wire in app.wires:
            src, dst = self._circuit(app, wire.src), self._circuit(app, wire.dst)
            if src.level != dst.level and dst.level not in paths[src.level or ""][1:]:
                raise LoadError(
                    f"{app.source}: wire {wire}: level {dst.level} is not above level"
                    f" {src.level} (its levels: {' -> '.join(paths[src.level or ''])});"
                    " a wire between levels goes up the tree"
                )
        return sorted(app.circuits, key=lambda c: len(paths[c.level or ""]))

    async def _path_of(self, level: str) -> list[str]:
        """``level`` and the levels above it, as its daemon says on its broker."""
        try:
            path = await levels_here(self.session(level))
        except CallError as exc:
            raise LoadError(f"level {level}: {exc}") from None
        if not path or path[0] != level:
            raise LoadError(
                f"level {level}: its broker {self.session(level).link.broker.url} is level"
                f" {path[0] if path else '?'}'s; check the file's levels"
            )
        return path

    def carried_up(self, app: AppDef, circuit: CircuitDef, places: _Places) -> list[str]:
        """The outputs of ``circuit`` that circuits at higher levels read: what its level
        carries up for it."""
        return sorted({
            self._port(app, wire.src, places[circuit.name], output=True).topic
            for wire in app.wires
            if wire.src.circuit == circuit.name
            and self._circuit(app, wire.dst).level != circuit.level
        })

    async def _carry_up(self, app: AppDef, circuit: CircuitDef, places: _Places,
                        before: Iterable[str] = ()) -> None:
        """Set ``circuit``'s level's pump table to carry what it must (``before``: what it
        carried for this circuit until now, taken out unless still wanted)."""
        if circuit.level is None:
            return
        wanted = self.carried_up(app, circuit, places)
        if not wanted and not list(before):
            return
        await pump.change(self.session(circuit.level), circuit.level, add=wanted, remove=before)
        if wanted:
            self.progress(f"level {circuit.level} carries up {', '.join(wanted)}")

    async def load(self, app: AppDef, *, refresh: bool = True) -> None:
        """Load every circuit of ``app`` in order (:meth:`_in_order`), wiring each as it
        arrives, and start them once all are wired.  ``refresh=False``: what runs is
        taken to be what :attr:`running` holds (the caller's own knowledge, e.g.
        plug-n-process loading many apps after one read), not read again."""
        self._checked(app)
        if refresh:
            await self.refresh()
        for circuit in app.circuits:
            if self.placement(app, circuit) is not None:
                raise LoadError(
                    f"{app.source}: circuit {circuit.name!r} is already loaded"
                    " (use `jet reload` to replace it)"
                )
        places: _Places = {}
        async with self._starting() as loaded:
            for circuit in await self._in_order(app):
                places[circuit.name] = await self._load_one(app, circuit)
                loaded.append((circuit.level, places[circuit.name]))
                await self._carry_up(app, circuit, places)
                await self._wire_around(app, circuit.name, places)

    async def _wire_around(self, app: AppDef, name: str, places: _Places) -> None:
        # Inputs of the new circuit fed by devices and loaded circuits, then inputs of
        # loaded circuits fed by the new one (SPEC section 3, in that order).
        await self._wire_devices(app, self._circuit_named(app, name), places)
        for wire in app.wires:
            if wire.dst.circuit == name and wire.src.circuit in places:
                await self._wire(app, wire, places)
        for wire in app.wires:
            if wire.src.circuit == name and wire.dst.circuit in places and wire.dst.circuit != name:
                await self._wire(app, wire, places)

    async def unload_app(self, app: AppDef) -> None:
        await self.refresh()
        places = [(c, self.placement(app, c)) for c in await self._in_order(app)]
        loaded = [(c, p) for c, p in places if p is not None]
        if not loaded:
            raise LoadError(f"{app.source}: no circuit of app {app.name!r} is loaded")
        for circuit, place in reversed(loaded):
            if circuit.name in self.copies:
                await self._unload_copies(circuit.name, circuit.level, self.live_copies(circuit))
                continue
            await self._unload_one(circuit.name, circuit.level, place)
            if circuit.level is not None:
                carried = self.carried_up(app, circuit, {circuit.name: place})
                if carried:
                    await pump.change(self.session(circuit.level), circuit.level, remove=carried)

    async def unload_id(self, circuit_id: str) -> None:
        await self.refresh()
        for place in self.running.get(None, {}):
            if place.id == circuit_id:
                await self._unload_one(circuit_id, None, place)
                return
        copies = (self.groups.get(None) or GroupView()).live_copies(circuit_id)
        if copies:
            await self._unload_copies(circuit_id, None, copies)
            return
        for kept in self.known.unrestored():
            if kept.id == circuit_id:
                place = kept.address  # nothing runs: its container forgets it
                await self.session(None).request(place.conf, {"cmd": "stop"})
                self.progress(f"unloaded {circuit_id} ({place}, which was not restored)")
                return
        why = self.known.why_invalid(circuit_id)
        if why is not None:
            raise LoadError(
                f"cannot unload {circuit_id!r}: its retained status is not readable ({why});"
                " nothing was changed"
            )
        raise LoadError(f"no circuit {circuit_id!r} is loaded")

    async def _unload_one(self, name: str, level: Level, place: CircuitAddress) -> None:
        """Unwire, drain, unwire its consumers, stop: all of it, or nothing.

        Everything it needs was read and checked by :meth:`refresh` before the first
        command; if a command fails midway, the wires already removed are made again
        and the error says so in one line.
        """
        session = self.session(level)
        undo: list[tuple[Session, str, dict[str, Any]]] = []  # (where, conf topic, wire)
        step = "unwire its inputs"
        try:
            # 1. unwire its inputs
            for port, wires in self.inputs_of(level, place).items():
                await session.request(place.conf, {"cmd": "unwire", "input": port})
                undo.extend((session, place.conf, wire.command(port)) for wire in wires)
            # 2. drain it (bounded: a stuck gadget is reported, and the unload goes on)
            step = "drain"
            if address.rules(place.kind).runs_graph:
                try:
                    await session.request(place.conf, {"cmd": "drain", "timeout": 10}, timeout=15)
                except CommandFailed as exc:
                    self.progress(f"{name}: {exc}; unloading it anyway")
            # 3. unwire others from it (on its broker, and at the levels above it)
            step = "unwire the circuits it feeds"
            for at, running in self.running.items():
                for other in running:
                    if other == place and at == level:
                        continue
                    for port, wires in self.inputs_of(at, other).items():
                        for wire in wires:
                            if self.feeds(wire.topic, at, place, level):
                                command = {"cmd": "unwire", "input": port, "topic": wire.topic}
                                await self.session(at).request(other.conf, command)
                                undo.append((self.session(at), other.conf, wire.command(port)))
            # 4. stop it
            step = "stop"
            await session.request(place.conf, {"cmd": "stop"})
        except (CommandFailed, NoReply) as exc:
            raise LoadError(await self._roll_back(name, step, exc, undo)) from None
        self.running.get(level, {}).pop(place, None)
        self.progress(f"unloaded {name} ({place})")

    async def _roll_back(
        self,
        name: str,
        step: str,
        error: Exception,
        undo: list[tuple[Session, str, dict[str, Any]]],
    ) -> str:
        """Make again the wires an unload removed; the one line that says how it went."""
        failed = []
        for session, conf_topic, command in reversed(undo):
            try:
                await session.request(conf_topic, command)
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

    async def reload(self, app: AppDef, *, refresh: bool = True) -> None:
        """Bring what runs in line with ``app``: load new circuits, replace changed
        ones in place (kept wires keep their subscriptions), unload removed ones.
        ``refresh=False``: as for :meth:`load` (several reloads after one read: each
        unload keeps :attr:`running` up to date)."""
        self._checked(app)
        if refresh:
            await self.refresh()
        places: _Places = {}
        async with self._starting() as loaded:
            for circuit in await self._in_order(app):
                place = self.placement(app, circuit)
                if place is None:
                    places[circuit.name] = await self._load_one(app, circuit)
                    loaded.append((circuit.level, places[circuit.name]))
                    await self._carry_up(app, circuit, places)
                    await self._wire_around(app, circuit.name, places)
                    continue
                places[circuit.name] = place
                if circuit.name in self.copies:
                    await self._reload_copies(app, circuit, place, loaded)
                elif self._unchanged(app, circuit, self.running[circuit.level][place]):
                    pass  # nothing to replace: its wires are made again below (idempotent)
                elif address.rules(place.kind).runs_graph:
                    result = await self.session(circuit.level).request(
                        place.conf,
                        {
                            "cmd": "reload",
                            "definition": circuit_to_msgpack(circuit),
                            "exports": self.exports_of(app, circuit),
                            "foreign": self.foreign_of(app, circuit),
                        },
                        timeout=15,  # the pack bounds its wait for replaced gadgets (3 s)
                    )
                    self.progress(f"reloaded {circuit.name}{_unfinished(result)}")
                before = self._carried_before(app, circuit.level, place)
                await self._carry_up(app, circuit, places, before)
                await self._rewire(app, circuit, places)
            await self._unwire_stale(app, places)
        await self._unload_missing(app)

    async def _reload_copies(self, app: AppDef, circuit: CircuitDef, place: CircuitAddress,
                             loaded: list[tuple[Level, CircuitAddress]]) -> None:
        """Reload each copy of a group's circuit in place; then as many copies as the file
        asks for now: new ones on the least loaded members not running one (wired by the
        caller, started once wired), or the last ones unwired, drained and stopped."""
        group = self.group_of(circuit)
        assert group is not None
        view = self.groups.get(circuit.level) or GroupView()
        have = list(self.copies[circuit.name])
        wanted = circuit.replicas or 1
        more = view.choose(group, wanted - len(have), besides=have) if wanted > len(have) else []
        if len(have) + len(more) < wanted:
            raise LoadError(
                f"{app.source}:{circuit.line or 0}: circuit {circuit.name!r}: replicas: {wanted}"
                f" but group {group} has {len(have) + len(more)} live members for it; each copy"
                " runs on another member"
            )
        result = await self._to_circuit(circuit.level, circuit.name, place, {
            "cmd": "reload",
            "definition": circuit_to_msgpack(circuit),
            "exports": self.exports_of(app, circuit),
            "foreign": self.foreign_of(app, circuit),
            "replicas": wanted,
        }, timeout=15)
        self.progress(f"reloaded {circuit.name} (copies on {', '.join(have)})"
                      f"{_unfinished(result)}")
        if more:
            command = {
                "cmd": "load", "app": app.name, "definition": circuit_to_msgpack(circuit),
                "exports": self.exports_of(app, circuit),
                "foreign": self.foreign_of(app, circuit), "start": False,
                "pack_group": group, "replicas": wanted,
            }
            for member in more:
                await self.session(circuit.level).request(
                    address.container_conf("pack", member), command)
            self.copies[circuit.name] = have + more
            loaded.append((circuit.level, place))
            self.progress(f"{circuit.name}: {len(more)} more copies, on {', '.join(more)}")
        elif wanted < len(have):
            extras = [c for c in view.live_copies(circuit.name) if c.member in have[wanted:]]
            self.copies[circuit.name] = have[:wanted]
            await self._unload_copies(circuit.name, circuit.level, extras, consumers=False)
            self.copies[circuit.name] = have[:wanted]

    def _unchanged(self, app: AppDef, circuit: CircuitDef, running: Circuit) -> bool:
        """Whether ``circuit`` runs as ``app`` has it now: same definition, same exports,
        same devices' topics written (a reload replaces only what changed)."""
        fields = running.status.fields
        exports = {k: sorted(v) for k, v in self.exports_of(app, circuit).items() if v}
        foreign = {
            k: [{f: v for f, v in target.items() if f != "unwritable"} for target in targets]
            for k, targets in (fields.get("foreign") or {}).items()
        }
        return (
            attrs.evolve(circuit, level=None) == running.definition
            and (fields.get("exports") or {}) == exports
            and foreign == self.foreign_of(app, circuit)
        )

    def _carried_before(self, app: AppDef, level: Level, place: CircuitAddress) -> list[str]:
        """What the circuit at ``place`` had carried up for this app's circuits at higher
        levels and no other app's: what a reload or unload may take out of the pump table."""
        if level is None:
            return []
        carried = address.level_data(level, "")
        ours: set[str] = set()
        others: set[str] = set()
        for at, running in self.running.items():
            for other, circuit in running.items():
                for wires in self.inputs_of(at, other).values():
                    for wire in wires:
                        if at != level and self.feeds(wire.topic, at, place, level):
                            mine = circuit.status.app == app.name
                            (ours if mine else others).add(wire.topic[len(carried):])
        return sorted(ours - others)

    async def _rewire(self, app: AppDef, circuit: CircuitDef, places: _Places) -> None:
        """Make the wires of a kept circuit (into it, and out of it to circuits placed)."""
        await self._wire_devices(app, circuit, places)
        for wire in app.wires:
            if wire.dst.circuit == circuit.name and wire.src.circuit in places:
                await self._wire(app, wire, places)
        for wire in app.wires:
            if wire.src.circuit == circuit.name and wire.dst.circuit in places:
                await self._wire(app, wire, places)

    async def _unwire_stale(self, app: AppDef, places: _Places) -> None:
        """Remove the wires into kept circuits that come from this app's circuits but that
        ``app`` no longer has (once every circuit is placed: a source may come later)."""
        wanted = {
            (wire.dst.circuit, self.input_name(app, wire.dst, places),
             self.source_topic(app, wire, places))
            for wire in app.wires
        } | {
            (wire.port.circuit, self.input_name(app, wire.port, places), wire.topic)
            for wire in app.foreign
            if wire.inbound
        }
        app_places = [(self._circuit_named(app, name).level, p) for name, p in places.items()]
        for circuit in app.circuits:
            place = places[circuit.name]
            for port, wires in self.inputs_of(circuit.level, place).items():
                for wire_status in wires:
                    topic = wire_status.topic
                    from_app = wire_status.payload is not None or any(  # a device's: the app's
                        self.feeds(topic, circuit.level, p, lvl) for lvl, p in app_places
                    )
                    if (circuit.name, port, topic) in wanted or not from_app:
                        continue
                    await self.session(circuit.level).request(
                        place.conf, {"cmd": "unwire", "input": port, "topic": topic}
                    )
                    self.progress(f"unwired {circuit.name}.{port} from {topic}")

    @staticmethod
    def _circuit_named(app: AppDef, name: str) -> CircuitDef:
        circuit = app.circuit(name)
        assert circuit is not None
        return circuit

    async def _unload_missing(self, app: AppDef) -> None:
        """Unload the app's circuits the file no longer has, or has at another level or
        in another kind of container (a new copy runs there now)."""
        wanted = {(c.name, c.level, c.container) for c in app.circuits}
        for level, running_here in list(self.running.items()):
            for place, running in list(running_here.items()):
                here = (running.name, level, place.kind)
                if running.status.app == app.name and here not in wanted:
                    carried = self._carried_before(app, level, place)
                    await self._unload_one(running.name, level, place)
                    if level is not None and carried:
                        await pump.change(self.session(level), level, remove=carried)
