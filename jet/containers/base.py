"""What every container that hosts circuits does, whatever runs them.

A container (a pack, the web server, the radio hub) owns one MQTT link with
a will on ``jet/<type>/<id>/status``; answers ``jet/<type>/<id>/conf`` and
each ``<type>/<circuit>/conf`` one command at a time in arrival order; keeps
a :class:`~jet.containers.boundary.CircuitBoundary` per hosted circuit; publishes a
retained status for itself and each circuit (only when it changed, and at a
bounded rate), and each circuit's definition once per load or reload on
``<type>/<circuit>/definition``; keeps its circuits in a state file when
given one; and turns every bad command into one logged line and an
``ok: false`` reply, never into a stopped container.

Lifecycle (the one vocabulary of process-level objects)::

    async with Pack(broker, "default") as pack:   # restore state, connect, serve
        await pack.serve_forever()
    # leaving the block: circuits stopped, statuses say offline, link closed

Subclasses say what sits behind a circuit's ports (:meth:`Container._make_body`)
and may refine the hooks below.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import attrs

from jet import address
from jet.containers import conf
from jet.containers.boundary import Body, CircuitBoundary, CommandError, Replica
from jet.containers.census import Census, Holder, IdentityClash, claim, retained_statuses
from jet.definition.check import refusal
from jet.definition.model import CircuitDef, circuit_from_msgpack
from jet.runtime.network import BuildError, running_gadget
from jet.runtime.registry import Registry
from jet.tasks import cancel_all
from jet.transport import codec
from jet.transport.broker import Broker
from jet.transport.link import STUCK_LIMIT, Link, Subscription, Will
from jet.transport.partition import Split

STATS_INTERVAL = 5.0

#: What a refused command may raise: each becomes a one-line ``ok: false`` reply.
#: (AttributeError/TypeError/OverflowError: a definition whose parts have the
#: wrong shape or size.)
REFUSALS = (
    CommandError, BuildError, ValueError, KeyError, TypeError, AttributeError, OverflowError,
)


class NotOurs(Exception):
    """A conf message for a circuit another container answers for: no reply."""


@attrs.frozen
class Unrestored:
    """A state-file entry that could not be built at start (a gadget type no longer
    allowed, a module missing): written back untouched, reported, retried next start.

    A ``load`` of the same circuit id replaces it; a ``stop`` (unload) removes it.
    """

    circuit_id: str
    saved: Mapping[str, Any]
    reason: str


class Container:
    """Base of every container kind; see the module doc for the contract."""

    kind: ClassVar[str]
    log: ClassVar[logging.Logger]
    #: One subscription for every circuit's conf topic (the hub answers for
    #: nodes it was never told about); None: one subscription per circuit.
    conf_filter: ClassVar[str | None] = None
    container_commands: ClassVar[conf.CommandTable] = conf.CONTAINER_COMMANDS
    circuit_commands: ClassVar[conf.CommandTable] = conf.CIRCUIT_COMMANDS
    #: Circuit commands not in the table go to :meth:`_other_command` (else refused).
    other_commands: ClassVar[bool] = False

    def __init__(
        self,
        broker: Broker,
        container_id: str,
        *,
        stats_interval: float = STATS_INTERVAL,
        keepalive: int = 10,
        clean_session: bool = False,
        connect_timeout: float | None = None,
        state_file: Path | None = None,
        registry: Registry | None = None,
        stuck_limit: float = STUCK_LIMIT,
        group: str | None = None,
        partition: bool = False,
    ) -> None:
        if not address.NAME_RE.match(container_id):
            raise ValueError(f"{self.kind} id {container_id!r} must match [a-z0-9_-]+")
        if group is not None and not address.NAME_RE.match(group):
            raise ValueError(f"group {group!r} must match [a-z0-9_-]+")
        self.id = container_id
        #: the group this container is a member of (docs/groups.md), None: none
        self.cluster_group = group
        #: its group's broker has no shared subscriptions: its copies split their inputs
        #: with the other copies by a rule (docs/groups.md, "--partition"), None: shares
        self.cluster_split: Split | None = (
            Split(container_id) if partition and group is not None else None)
        #: the gadget types this container may build (a pack's allow list), and
        #: what every definition it receives is checked against
        self.registry = registry or Registry()
        self.stats_interval = stats_interval
        self.state_file = state_file
        self.circuits: dict[str, CircuitBoundary] = {}
        #: Circuits of the state file that could not be built at start: kept
        #: there untouched (their saved entry) and retried at the next start.
        self.unrestored: dict[str, Unrestored] = {}
        self.conf_errors = 0
        self.started_at = time.time()
        self._status_topic = address.container_status(self.kind, container_id)
        self._conf_topic = address.container_conf(self.kind, container_id)
        self._commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._conf_subs: dict[str, Subscription] = {}
        self._last_status: dict[str, bytes] = {}
        self._definition_due: set[str] = set()  # circuits whose next status carries it
        self._tasks: list[asyncio.Task[None]] = []
        self._restoring = False
        self._connect_timeout = connect_timeout
        self.census = Census(
            self.kind, self.container, self._status_of_mine, self._presence_seen
        )
        #: set when another process took this kind and id over (it started later,
        #: while this one did not answer): this container then stops
        #: (serve_forever raises it)
        self._evicted: asyncio.Future[None] | None = None
        self._closing = False
        will = Will(self._status_topic, codec.encode(self._presence("offline")))
        self.link = Link(
            broker,
            f"jet-{self.kind}-{container_id}",
            will=will,
            clean_session=clean_session,
            keepalive=keepalive,
            on_connect=self._on_connect,
            connect_timeout=connect_timeout,
            # A persistent session keeps what arrives while we are away; then
            # acknowledge only what is handled, so a crash loses nothing.
            ack_after_handling=not clean_session,
            # A gadget holding the event loop is named in the log, and the
            # connection is kept alive meanwhile, for stuck_limit seconds at most.
            blocked_by=running_gadget,
            stuck_limit=stuck_limit,
        )

    @property
    def container(self) -> str:
        return address.container(self.kind, self.id)

    # -- hooks for subclasses ---------------------------------------------------------------

    def _make_body(
        self, circuit_id: str, definition: CircuitDef, app: str, args: Mapping[str, Any],
    ) -> Callable[[Callable[[str, int, Any], None]], Body]:
        """How to build (not start) what sits behind a ``load``'s ports: a function
        of the boundary's emit; raise ValueError (one line) if impossible."""
        raise NotImplementedError

    def _circuit_id(self, definition: CircuitDef, args: Mapping[str, Any]) -> str:
        """The id a ``load`` gives its circuit (a pack: the definition's name)."""
        if not address.NAME_RE.match(definition.name):
            raise ValueError(f"circuit id {definition.name!r} must match [a-z0-9_-]+")
        return definition.name

    async def _load_again(
        self, circuit: CircuitBoundary, definition: CircuitDef, args: Mapping[str, Any]
    ) -> None:
        """A ``load`` of a circuit id already here (refused, unless a kind says otherwise)."""
        raise ValueError(f"circuit {circuit.id!r} is already loaded in {self.kind} {self.id}")

    async def _missing_circuit(self, circuit_id: str, command: conf.Command) -> Any:
        """A command for a circuit that is not here: the result, or raise.

        Raise :class:`NotOurs` to ignore it without a reply.
        """
        raise CommandError(f"no circuit {circuit_id!r} in {self.kind} {self.id}")

    async def _other_command(self, circuit: CircuitBoundary, command: conf.Command) -> Any:
        raise CommandError(f"unknown command {command.name!r}")

    async def _loaded(self, circuit: CircuitBoundary) -> None:
        """Work a kind does once a circuit is loaded (the web container reads back
        its controls' retained values)."""

    def _presence_extra(self) -> dict[str, Any]:
        return {}

    def _changed(self, circuit_id: str, what: str) -> None:
        """Called after a change to a circuit: ``what`` is "load", "unload" or a command."""

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        # Before anything is built or connected under this id: a second container
        # with it would kick the first off the broker, and be kicked back, forever.
        await claim(
            self.link.broker, self.kind, self.id, connect_timeout=self._connect_timeout,
            log=self.log,
        )
        await self.census.start(self.link)
        if self.cluster_group is not None:  # (copies left by an earlier run of this member)
            await self.link.subscribe(
                address.replica_status(self.kind, "+", self.id), 1, self._replica_status_of_mine
            )
        await self.link.subscribe(self._conf_topic, 1, self._enqueue)
        if self.conf_filter is not None:
            await self.link.subscribe(self.conf_filter, 1, self._enqueue)
        # Circuits and their wires are restored before connecting: QoS 1
        # messages the broker kept for this container's session arrive right
        # after the connection, and each must find its wire already in place.
        await self._restore()
        self._evicted = asyncio.get_running_loop().create_future()
        await self.link.__aenter__()
        self._tasks = [
            asyncio.create_task(self._obey(), name=f"{self.kind}-{self.id}-conf"),
            asyncio.create_task(self._report(), name=f"{self.kind}-{self.id}-stats"),
        ]
        self.log.info("%s %s serving on %s", self.kind, self.id, self.link.broker.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing = True
        await cancel_all(self._tasks)
        self._tasks = []
        # Evicted: the id and its retained statuses are another process's now.
        evicted = (
            self._evicted is not None and self._evicted.done() and not self._evicted.cancelled()
        )
        if evicted:
            assert self._evicted is not None
            self._evicted.exception()  # (retrieved: serve_forever may not have waited)
        for circuit in list(self.circuits.values()):
            await circuit.stop()
            # A clean shutdown is not a crash: say offline, keep the definition
            # retained so `jet ls` still shows what ran here.
            if not evicted:
                self._publish_status(circuit, state="offline")
        if not evicted:
            self.link.publish_nowait(
                self._status_topic, codec.encode(self._presence("offline")), qos=1, retain=True
            )
        await self.link.close()

    async def serve_forever(self) -> None:
        """Serve until cancelled; raises :class:`IdentityClash` if another process
        took this kind and id over (see :meth:`_presence_seen`)."""
        assert self._evicted is not None, "serve_forever() inside `async with`"
        # (shielded: cancelling the server, Ctrl-C or SIGTERM, is no eviction)
        await asyncio.shield(self._evicted)

    async def _on_connect(self) -> None:
        # Every (re)connect restates presence: the broker may have restarted
        # without persistence and lost the retained messages.
        self._announce()
        self._last_status.clear()
        for circuit in self.circuits.values():
            self._publish_definition(circuit)
            self._publish_status(circuit)
        for kept in self.unrestored.values():
            self._publish_unrestored(kept)

    def _presence(self, state: str) -> dict[str, Any]:
        online = state == "online"
        link = getattr(self, "link", None)  # the will is built before the link exists
        return {
            "state": state,
            "type": self.kind,
            "id": self.id,
            "circuits": sorted(self.circuits) if online else [],
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": self.started_at,
            "keepalive": link.keepalive if link is not None else None,
            "unrestored": {cid: kept.reason for cid, kept in sorted(self.unrestored.items())},
            "conf_errors": self.conf_errors,
            "outbox_dropped": link.stats.outbox_dropped if link is not None else 0,
            **({"group": self.cluster_group} if self.cluster_group is not None else {}),
            **({"partition": True} if self.cluster_split is not None else {}),
            **self._presence_extra(),
        }

    def _announce(self) -> None:
        self.link.publish_nowait(
            self._status_topic, codec.encode(self._presence("online")), qos=1, retain=True
        )

    # -- commands ----------------------------------------------------------------------------

    def _enqueue(self, topic: str, payload: bytes) -> None:
        self._commands.put_nowait((topic, payload))

    async def _obey(self) -> None:
        while True:
            topic, payload = await self._commands.get()
            try:
                await self._handle(topic, payload)
            except NotOurs:
                pass
            except conf.ConfError as exc:
                self._fail(exc, exc.ident, exc.reply_to)
            except Exception as exc:  # a bug must not take the container down
                self.log.exception("%s: command failed", topic)
                self._fail(exc, None, None)

    def _fail(self, exc: Exception, ident: Any, reply_to: str | None) -> None:
        self.conf_errors += 1
        self.log.error("%s", exc)
        if reply_to:
            self.link.publish_nowait(reply_to, conf.reply_error(ident, str(exc)), qos=1)

    async def _handle(self, topic: str, payload: bytes) -> None:
        if topic == self._conf_topic:
            command = conf.parse(topic, payload, self.container_commands)
            circuit_id = None
        else:
            command = conf.parse(
                topic, payload, self.circuit_commands, others=self.other_commands
            )
            place = address.circuit_of(topic)
            circuit_id = place.id if place is not None else ""
            if command.pack is not None and command.pack != self.id:
                raise NotOurs  # meant for another member's copy of the circuit
        try:
            if circuit_id is None:
                self._refuse_stale(command)
                result = await self._container_command(command)
            elif circuit_id in self.circuits:
                self._refuse_stale(command)
                result = await self._circuit_command(self.circuits[circuit_id], command)
            elif circuit_id in self.unrestored:
                self._refuse_stale(command)
                result = await self._unrestored_command(self.unrestored[circuit_id], command)
            else:
                result = await self._missing_circuit(circuit_id, command)
        except REFUSALS as exc:
            raise conf.ConfError(
                topic, f"{command.name}: {exc}", ident=command.ident, reply_to=command.reply_to
            ) from None
        if command.reply_to:
            self.link.publish_nowait(command.reply_to, conf.reply_ok(command.ident, result), qos=1)

    @staticmethod
    def _refuse_stale(command: conf.Command) -> None:
        """Refuse a command whose sender has stopped waiting for it (see
        :meth:`conf.Command.stale`); called once it is known to be ours, so a
        container never logs stale commands meant for another one."""
        stale = command.stale()
        if stale is not None:
            raise CommandError(stale)

    async def _container_command(self, command: conf.Command) -> Any:
        if command.name == "status":
            return self._presence("online")
        circuit = await self.load(
            self._received(command.args["definition"]),
            app=command.args.get("app", ""),
            exports=command.args.get("exports") or {},
            foreign=command.args.get("foreign") or {},
            start=command.args.get("start", True),
            args=command.args,
        )
        return {"circuit_id": circuit.id}

    async def _circuit_command(self, circuit: CircuitBoundary, command: conf.Command) -> Any:
        args = command.args
        result: Any = None
        match command.name:
            case "wire":
                await circuit.wire(
                    args["input"], args["topic"], args.get("qos", 1),
                    args.get("queue"), args.get("policy"), args.get("payload"),
                )
            case "unwire":
                result = {"removed": await circuit.unwire(args["input"], args.get("topic"))}
            case "export" | "unexport":
                circuit.export(
                    args["output"], args["by"], command.name == "export", args.get("qos", 1)
                )
            case "tap":
                circuit.tap(args["output"], float(args.get("ttl", 60)))
            case "inject":
                result = circuit.inject(args["input"], args["value"])
            case "start":
                circuit.start()
            case "drain":
                await circuit.drain(float(args.get("timeout", 10)))
            case "stop":
                await self.unload(circuit.id)
                return None
            case "reload":
                result = await self.reload(circuit, self._received(args["definition"]),
                                           args.get("exports") or {}, args.get("foreign") or {})
                wanted = args.get("replicas")
                if circuit.replica is not None and isinstance(wanted, int) and wanted > 0:
                    circuit.replica = attrs.evolve(circuit.replica, wanted=wanted)
            case "status":
                return circuit.status()
            case _:
                result = await self._other_command(circuit, command)
        self._publish_status(circuit)
        self._save()
        self._changed(circuit.id, command.name)
        return result

    def _received(self, raw: Any) -> CircuitDef:
        """A definition from a command or the state file, decoded and checked as ``jet check``
        checks a file: nothing the check refuses is ever built (ValueError, one line)."""
        try:
            definition = circuit_from_msgpack(raw)
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad definition: {exc}") from None
        why = refusal(definition, self.registry)
        if why is not None:
            raise ValueError(why)
        return definition

    # -- circuits ------------------------------------------------------------------------------

    async def load(
        self,
        definition: CircuitDef,
        *,
        app: str = "",
        exports: Mapping[str, Any] | None = None,
        foreign: Mapping[str, Any] | None = None,
        start: bool = True,
        args: Mapping[str, Any] | None = None,
    ) -> CircuitBoundary:
        """Build, subscribe and (unless ``start`` is False) start a circuit."""
        if definition.container != self.kind:
            raise ValueError(
                f"circuit {definition.name!r} is for a {definition.container}, not a {self.kind}"
            )
        args = args or {}
        circuit_id = self._circuit_id(definition, args)
        replica = self._replica(args)
        existing = self.circuits.get(circuit_id)
        if existing is not None:
            await self._load_again(existing, definition, args)
            return existing
        elsewhere = None if replica is not None else self.census.running_elsewhere(circuit_id)
        if elsewhere is not None:
            raise ValueError(
                f"circuit {circuit_id!r} already runs in {elsewhere}: unload it there first"
            )
        make_body = self._make_body(circuit_id, definition, app, args)
        circuit = CircuitBoundary(
            self.kind, circuit_id, self.link, make_body, app=app, container=self.container,
            exports=exports, foreign=foreign, replica=replica,
        )
        circuit.status()  # a circuit that cannot report itself is refused before it is added
        self.circuits[circuit.id] = circuit
        if self.unrestored.pop(circuit.id, None) is not None:
            self.log.info("circuit %s: loaded again; its unrestored entry is replaced", circuit.id)
        await self._subscribe_conf(circuit.id)
        if start:
            circuit.start()
        if not self._restoring:  # (restored circuits are announced once connected)
            self._publish_definition(circuit)
            self._publish_status(circuit)
            self._announce()
        self._save()
        self._changed(circuit.id, "load")
        await self._loaded(circuit)
        self.log.info("loaded circuit %s (%d gadgets)", circuit.id, len(definition.gadgets))
        return circuit

    def _replica(self, args: Mapping[str, Any]) -> Replica | None:
        """The group copy a ``load`` asks for (``pack_group``, ``replicas``, ``adopted``), or
        None.  (Not ``group``: a hub's ``load`` has that field, the radio group.)"""
        group = args.get("pack_group")
        if group is None:
            return None
        if group != self.cluster_group:
            mine = f"group {self.cluster_group}" if self.cluster_group else "no group"
            raise ValueError(f"{self.kind} {self.id} is in {mine}, not in group {group}")
        wanted = args.get("replicas", 1)
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
            raise ValueError(f"replicas must be a whole number from 1, not {wanted!r}")
        adopted = args.get("adopted")
        return Replica(group, self.id, wanted, adopted if isinstance(adopted, str) else None,
                       split=self.cluster_split)

    async def reload(
        self,
        circuit: CircuitBoundary,
        definition: CircuitDef,
        exports: Mapping[str, Any],
        foreign: Mapping[str, Any] | None = None,
    ) -> Mapping[str, Any] | None:
        """Swap a circuit's definition; wires into inputs that remain are kept.

        Returns what the replaced parts could not finish in time (the reply says it).
        """
        gone, unfinished = await circuit.reload(definition, exports, foreign)
        for wire in gone:
            self.log.info("%s: input %s is gone: unwired %s", circuit.id, wire.input, wire.topic)
        self._publish_definition(circuit)
        return unfinished

    async def unload(self, circuit_id: str) -> None:
        """Stop a circuit and forget it: no subscription and no retained message left."""
        circuit = self.circuits.pop(circuit_id)
        await circuit.stop()
        await self._forget(circuit_id, circuit.replica)
        self._announce()
        self._save()
        self._changed(circuit_id, "unload")
        self.log.info("unloaded circuit %s", circuit_id)

    # -- statuses ------------------------------------------------------------------------------

    def _publish_definition(self, circuit: CircuitBoundary) -> None:
        """The definition, retained on its own topic: once per load/reload, not per refresh.
        (A group's copy carries it in its own status instead: the copies share the topic.)"""
        if circuit.replica is not None:
            self._definition_due.add(circuit.id)
            return
        definition = circuit.status(definition=True)["definition"]
        self.link.publish_nowait(
            address.circuit_definition(self.kind, circuit.id), codec.encode(definition),
            qos=1, retain=True,
        )
        self._definition_due.add(circuit.id)

    def _publish_status(self, circuit: CircuitBoundary, state: str = "online") -> None:
        # The status that follows a load or reload also carries the definition
        # (a watcher sees what changed); counter refreshes do not.
        due = circuit.id in self._definition_due
        # (a group's copy always carries its definition: whoever adopts it needs it)
        status = circuit.status(definition=due or circuit.replica is not None)
        status["state"] = state
        payload = codec.encode(status)
        if not due and self._last_status.get(circuit.id) == payload:
            return
        self._definition_due.discard(circuit.id)
        self._last_status[circuit.id] = payload
        self.link.publish_nowait(self._status_topic_of(circuit.id, circuit.replica), payload,
                                 qos=1, retain=True)

    def _status_topic_of(self, circuit_id: str, replica: Replica | None) -> str:
        if replica is not None:
            return address.replica_status(self.kind, circuit_id, self.id)
        return address.circuit_status(self.kind, circuit_id)

    async def _report(self) -> None:
        # Counters change all the time; the retained status is refreshed at a
        # bounded rate (and only when something changed) for `jet ls`.
        while True:
            await asyncio.sleep(self.stats_interval)
            self._refresh()
            for circuit in list(self.circuits.values()):
                try:
                    circuit.measure_rates(self.stats_interval)
                    self._publish_status(circuit)
                except Exception:  # one broken circuit must not stop the others' reports
                    self.log.exception("%s: status refresh failed", circuit.id)

    def _refresh(self) -> None:
        """Called every stats interval before the circuits' statuses (the hub's counters)."""

    # -- the state file ------------------------------------------------------------------------

    def _save(self) -> None:
        """Write every circuit to the state file (atomic: a crash leaves the old or the new)."""
        if self.state_file is None or self._restoring:
            return
        state: dict[str, Any] = {cid: kept.saved for cid, kept in self.unrestored.items()}
        state.update(
            {cid: {**c.saved(), "args": {**self._saved_args(c), **self._replica_args(c)}}
             for cid, c in self.circuits.items()}
        )
        tmp = self.state_file.with_name(f".{self.state_file.name}.tmp")
        try:
            tmp.write_bytes(codec.encode({"version": 2, "kind": self.kind, "circuits": state}))
            tmp.replace(self.state_file)
        except (OSError, codec.PayloadError) as exc:
            self.log.error("%s: cannot save state: %s", self.state_file, exc)

    def _read_state(self) -> dict[str, Any]:
        """The saved circuits by id; {} when there is no state file yet."""
        assert self.state_file is not None
        try:
            data = codec.decode(self.state_file.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, codec.PayloadError) as exc:
            self.log.error("%s: unreadable state, starting empty: %s", self.state_file, exc)
            return {}
        if isinstance(data, dict) and data.get("version") == 2:
            circuits = data.get("circuits")
            return circuits if isinstance(circuits, dict) else {}
        if isinstance(data, dict):  # version 1: {circuit id: saved circuit}
            return data
        self.log.error("%s: not a state file, starting empty", self.state_file)
        return {}

    @staticmethod
    def _replica_args(circuit: CircuitBoundary) -> dict[str, Any]:
        """The ``load`` arguments that make a circuit a group's copy again."""
        replica = circuit.replica
        if replica is None:
            return {}
        return {"pack_group": replica.group, "replicas": replica.wanted,
                **({"adopted": replica.adopted} if replica.adopted else {})}

    def _saved_args(self, circuit: CircuitBoundary) -> dict[str, Any]:
        """The ``load`` arguments beyond the definition needed to build it again."""
        return {}

    async def _restore(self) -> None:
        # A group member's copies are also on the broker, in their retained statuses: what
        # it ran before is restored from them when its state file does not have it (a member
        # back without its state file), before connecting, so what its persistent session
        # kept for their shared subscriptions finds their wires (docs/groups.md).
        copies: dict[str, Any] = {}
        if self.cluster_group is not None:
            copies = await retained_statuses(
                self.link.broker, address.replica_status(self.kind, "+", self.id),
                connect_timeout=self._connect_timeout,
            )
        if self.state_file is None and not copies:
            return
        self._restoring = True
        try:
            if self.state_file is not None:
                for cid, saved in self._read_state().items():
                    await self._restore_entry(str(cid), saved, str(self.state_file))
            for topic, status in sorted(copies.items()):
                saved = self._copy_as_saved(status)
                place = address.circuit_of(topic)
                if place is None or saved is None or place.id in self.circuits:
                    continue
                await self._restore_entry(place.id, saved, topic)
        finally:
            self._restoring = False
        self._save()

    def _copy_as_saved(self, status: Any) -> dict[str, Any] | None:
        """A copy's retained status as a state-file entry (None: not this group's copy)."""
        if not isinstance(status, dict) or status.get("group") != self.cluster_group:
            return None
        if status.get("state") not in ("online", "offline") or "definition" not in status:
            return None
        adopted = status.get("adopted")
        return {
            "app": status.get("app", ""),
            "definition": status["definition"],
            "exports": status.get("exports") or {},
            "foreign": {
                k: [{f: v for f, v in t.items() if f != "unwritable"} for t in targets]
                for k, targets in (status.get("foreign") or {}).items()
            },
            "wires": [
                [port, w["topic"], w.get("qos", 1), w.get("queue"), w.get("policy")]
                + ([w["payload"]] if w.get("payload") is not None else [])
                for port, wires in (status.get("inputs") or {}).items() for w in wires
            ],
            "args": {"pack_group": self.cluster_group, "replicas": status.get("replicas", 1),
                     **({"adopted": adopted} if isinstance(adopted, str) else {})},
        }

    async def _restore_entry(self, cid: str, saved: Any, source: str) -> None:
        """Build one saved circuit and its wires; one that cannot be built is kept."""
        try:
            circuit = await self._restore_one(cid, saved)
        except (*REFUSALS, ImportError, LookupError) as exc:
            # Kept as it is: what cannot be built now (a module missing, a
            # type not allowed this time) may be built at the next start.
            reason = " ".join(str(exc).splitlines()) or type(exc).__name__
            self.log.error("%s: cannot restore circuit %s (kept for the next start): %s",
                           source, cid, reason)
            await self._keep_unrestored(cid, saved, reason)
            return
        try:
            for port, topic, qos, limit, policy, *payload in saved.get("wires", []):
                await circuit.wire(port, topic, qos, limit, policy, *payload[:1])
        except REFUSALS as exc:
            self.log.error("%s: circuit %s: a wire not restored: %s", source, cid, exc)

    async def _restore_one(self, circuit_id: str, saved: Mapping[str, Any]) -> CircuitBoundary:
        return await self.load(
            self._received(saved["definition"]),
            app=saved.get("app", ""),
            exports=saved.get("exports") or {},
            foreign=saved.get("foreign") or {},
            args=saved.get("args") or {},
        )

    # -- circuits kept in the state file but not running ------------------------------------

    async def _keep_unrestored(self, circuit_id: str, saved: Any, reason: str) -> None:
        if not address.NAME_RE.match(circuit_id):
            return  # not a circuit id at all: nothing could ever address it
        self.unrestored[circuit_id] = Unrestored(circuit_id, saved, reason)
        await self._subscribe_conf(circuit_id)  # (its commands: status, stop)

    def _unrestored_status(self, kept: Unrestored) -> dict[str, Any]:
        saved = kept.saved if isinstance(kept.saved, Mapping) else {}
        return {
            "state": "unrestored",
            "type": self.kind,
            "id": kept.circuit_id,
            "app": saved.get("app", ""),
            "container": self.container,
            "since": self.started_at,
            "reason": kept.reason,
            "inputs": {},
        }

    def _publish_unrestored(self, kept: Unrestored) -> None:
        """Its retained status says it is not running here and why (`jet ls` shows it)."""
        self.link.publish_nowait(
            address.circuit_status(self.kind, kept.circuit_id),
            codec.encode(self._unrestored_status(kept)), qos=1, retain=True,
        )

    async def _unrestored_command(self, kept: Unrestored, command: conf.Command) -> Any:
        """What a circuit kept unrestored answers: its status, and ``stop`` (unload)."""
        if command.name == "status":
            return self._unrestored_status(kept)
        if command.name == "stop":
            await self._forget(kept.circuit_id)
            self.unrestored.pop(kept.circuit_id, None)
            self._announce()
            self._save()
            self.log.info("unloaded circuit %s (it was not restored)", kept.circuit_id)
            return None
        raise CommandError(
            f"circuit {kept.circuit_id!r} is not running in {self.kind} {self.id}: not"
            f" restored ({kept.reason}); load it again, or unload it"
        )

    async def _forget(self, circuit_id: str, replica: Replica | None = None) -> None:
        """No conf subscription and no retained status or definition left for ``circuit_id``."""
        sub = self._conf_subs.pop(circuit_id, None)
        if sub is not None:
            await self.link.unsubscribe(sub)
        if replica is not None:  # (the definition topic is not a copy's own)
            self.link.publish_nowait(self._status_topic_of(circuit_id, replica), b"", qos=1,
                                     retain=True)
        else:
            self._clear_retained(circuit_id)
        self._last_status.pop(circuit_id, None)
        self._definition_due.discard(circuit_id)

    def _clear_retained(self, circuit_id: str) -> None:
        """Delete the circuit's retained status and definition (an empty retained message)."""
        for topic in (
            address.circuit_status(self.kind, circuit_id),
            address.circuit_definition(self.kind, circuit_id),
        ):
            self.link.publish_nowait(topic, b"", qos=1, retain=True)

    async def _subscribe_conf(self, circuit_id: str) -> None:
        """Take commands on the circuit's conf topic (unless one filter takes them all)."""
        if self.conf_filter is None and circuit_id not in self._conf_subs:
            conf_topic = address.circuit_conf(self.kind, circuit_id)
            self._conf_subs[circuit_id] = await self.link.subscribe(conf_topic, 1, self._enqueue)

    # -- this container's id held by another process --------------------------------------------

    def _presence_seen(self, presence: dict[str, Any] | None) -> None:
        """The retained presence under this container's id changed.

        Ours: nothing to do.  Another process's: the one started earlier stops,
        without a word on the broker, and the other restates its presence.  The
        later one is the one that claimed the id (:func:`~jet.containers.census.claim`)
        when the earlier had stopped answering (frozen, cut off): that one, waking
        up, must not take the id back.  Offline or cleared while this one serves (the
        will of a connection taken over): restated.
        """
        if self._closing or self._evicted is None or self._evicted.done():
            return
        holder = Holder.of(presence)
        if holder is not None and holder.is_this_process():
            if holder.state != "online" and self.link.connected:
                self._announce()
            return
        if holder is None or holder.state != "online":
            if self.link.connected:
                self._announce()
            return
        if holder.since is not None and holder.since > self.started_at:
            self.log.error("%s %s was taken over by %s, started later: this one stops",
                           self.kind, self.id, holder)
            self._evicted.set_exception(IdentityClash(
                f"{self.kind} {self.id} was taken over by {holder} on this broker"
                f" (this one had stopped answering): this one stopped"
            ))
            return
        self.log.warning("%s %s: the presence of %s, started earlier, replaced by this one's",
                         self.kind, self.id, holder)
        self._announce()

    # -- statuses an earlier run of this container left ----------------------------------------

    def _replica_status_of_mine(self, topic: str, payload: bytes) -> None:
        """A retained status of a group's copy naming this container: one this run does
        not have, left by an earlier run, is cleared (the group has adopted it)."""
        parsed = address.parse(topic)
        if parsed is None or not payload or self._closing:
            return
        circuit = self.circuits.get(parsed.id)
        if circuit is not None and circuit.replica is not None:
            return
        try:
            status = codec.decode(payload)
        except codec.PayloadError:
            status = None
        since = status.get("since") if isinstance(status, dict) else None
        if isinstance(since, int | float) and since >= self.started_at:
            return  # this run's own, already unloaded (its clearing is on its way)
        self.log.info("circuit %s: the status of this member's copy was left by an earlier"
                      " run; cleared", parsed.id)
        self.link.publish_nowait(topic, b"", qos=1, retain=True)

    def _status_of_mine(self, circuit_id: str, status: Mapping[str, Any]) -> None:
        """A retained status naming this container: one of a circuit it neither runs nor
        keeps, left by an earlier run (started before this one), is a ghost: cleared, so
        nobody takes it for running and `jet unload` of it says it is not loaded."""
        since = status.get("since")
        circuit = self.circuits.get(circuit_id)
        if circuit is not None:
            if since != circuit.started_at and self.link.connected:
                # Another run's status over this one's (a holder of this id that woke
                # up and published before it stopped): this run's is restated.
                self._last_status.pop(circuit_id, None)
                self._publish_definition(circuit)
                self._publish_status(circuit)
            return
        if circuit_id in self.unrestored:
            return
        if isinstance(since, int | float) and since >= self.started_at:
            return  # this run's own, already unloaded (its clearing is on its way)
        self.log.warning(
            "circuit %s: its retained status (%s) was left by an earlier run of %s %s, which"
            " does not have it now; cleared", circuit_id, status.get("state", "?"), self.kind,
            self.id,
        )
        self._clear_retained(circuit_id)
