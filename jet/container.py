"""What every container that hosts circuits does, whatever runs them.

A container (a pack, the web server) owns one MQTT link with a will on
``jet/<type>/<id>/status``; answers ``jet/<type>/<id>/conf`` and each
``<type>/<circuit>/conf`` one command at a time in arrival order; publishes
a retained status for itself and each circuit (only when it changed, and at
a bounded rate); and turns every bad command into one logged line and an
``ok: false`` reply, never into a stopped container.

Subclasses say how to build a circuit (:meth:`Container._build`) and may add
to the presence map and react to changes (hooks below).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from . import codec, conf, topics
from .broker import Broker
from .circuit import CommandError
from .model import CircuitDef, circuit_from_wire
from .mqtt import Link, Subscription, Will
from .network import BuildError
from .tasks import cancel_all

STATS_INTERVAL = 5.0


class HostedCircuit(Protocol):
    """What a container needs of the circuits it hosts."""

    @property
    def id(self) -> str: ...

    def status(self) -> dict[str, Any]: ...

    def measure_rates(self, interval: float) -> None: ...

    def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def wire(
        self, input_: str, topic: str, qos: int, queue: int | None, policy: str | None
    ) -> None: ...

    async def unwire(self, input_: str, topic: str | None) -> int: ...

    def export(self, output: str, by: str, on: bool, qos: int = 1) -> None: ...

    def tap(self, output: str, ttl: float) -> None: ...

    def inject(self, input_: str, value: Any) -> None: ...

    async def drain(self, timeout: float) -> None: ...

    async def reload(self, definition: CircuitDef, exports: dict[str, Any]) -> None: ...


C = TypeVar("C", bound=HostedCircuit)


class Container(Generic[C]):
    kind: ClassVar[str]
    log: ClassVar[logging.Logger]

    def __init__(
        self,
        broker: Broker,
        container_id: str,
        *,
        stats_interval: float = STATS_INTERVAL,
        keepalive: int = 10,
        clean_session: bool = False,
        connect_timeout: float | None = None,
    ) -> None:
        if not topics.NAME_RE.match(container_id):
            raise ValueError(f"{self.kind} id {container_id!r} must match [a-z0-9_-]+")
        self.id = container_id
        self.stats_interval = stats_interval
        self.circuits: dict[str, C] = {}
        self.conf_errors = 0
        self.started_at = time.time()
        self._status_topic = topics.container_status(self.kind, container_id)
        self._conf_topic = topics.container_conf(self.kind, container_id)
        self._commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._conf_subs: dict[str, Subscription] = {}
        self._last_status: dict[str, bytes] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.link = Link(
            broker,
            f"jet-{self.kind}-{container_id}",
            will=Will(self._status_topic, codec.encode(self._presence("offline"))),
            clean_session=clean_session,
            keepalive=keepalive,
            on_connect=self._on_connect,
            connect_timeout=connect_timeout,
            # A persistent session keeps what arrives while we are away; then
            # acknowledge only what is handled, so a crash loses nothing.
            ack_after_handling=not clean_session,
        )

    @property
    def container(self) -> str:
        return f"jet/{self.kind}/{self.id}"

    # -- hooks for subclasses ---------------------------------------------------------------

    def _build(self, definition: CircuitDef, app: str, exports: dict[str, Any]) -> C:
        """Make (not start) the circuit a ``load`` asks for; raise ValueError if impossible."""
        raise NotImplementedError

    def _presence_extra(self) -> dict[str, Any]:
        return {}

    def _changed(self, circuit_id: str, what: str) -> None:
        """Called after a change to a circuit: ``what`` is "load", "unload" or a command."""

    async def _before_connect(self) -> None:
        """Work to do before the link connects (the pack restores its circuits here)."""

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.link.subscribe(self._conf_topic, 1, self._enqueue)
        await self._before_connect()
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
        await cancel_all(self._tasks)
        for circuit in list(self.circuits.values()):
            await circuit.stop()
            # A clean shutdown is not a crash: say offline, keep the definition
            # in the retained status so `jet ls` still shows what ran here.
            self._publish_status(circuit, state="offline")
        self.link.publish_nowait(
            self._status_topic, codec.encode(self._presence("offline")), qos=1, retain=True
        )
        await self.link.close()

    async def serve_forever(self) -> None:
        await asyncio.Event().wait()

    async def _on_connect(self) -> None:
        # Every (re)connect restates presence: the broker may have restarted
        # without persistence and lost the retained messages.
        self._announce()
        self._last_status.clear()
        for circuit in self.circuits.values():
            self._publish_status(circuit)

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
            "conf_errors": self.conf_errors,
            "outbox_dropped": link.stats.outbox_dropped if link is not None else 0,
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
        circuit: C | None = None
        if topic == self._conf_topic:
            command = conf.parse(topic, payload, conf.CONTAINER_COMMANDS)
        else:
            command = conf.parse(topic, payload, conf.CIRCUIT_COMMANDS)
            circuit_id = topic.split("/")[1]
            circuit = self.circuits.get(circuit_id)
            if circuit is None:
                raise conf.ConfError(
                    topic,
                    f"no circuit {circuit_id!r} in {self.kind} {self.id}",
                    ident=command.ident,
                    reply_to=command.reply_to,
                )
        try:
            if circuit is None:
                result = await self._container_command(command)
            else:
                result = await self._circuit_command(circuit, command)
        except (
            CommandError, BuildError, ValueError, KeyError, TypeError, AttributeError,
            OverflowError,
        ) as exc:
            # (AttributeError/TypeError/OverflowError: a definition whose parts
            # have the wrong shape or size)
            raise conf.ConfError(
                topic, f"{command.name}: {exc}", ident=command.ident, reply_to=command.reply_to
            ) from None
        if command.reply_to:
            self.link.publish_nowait(command.reply_to, conf.reply_ok(command.ident, result), qos=1)

    async def _container_command(self, command: conf.Command) -> Any:
        if command.name == "status":
            return self._presence("online")
        try:
            definition = circuit_from_wire(command.args["definition"])
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"bad definition: {exc}") from None
        circuit = await self.load(
            definition,
            app=command.args.get("app", ""),
            exports=command.args.get("exports") or {},
            start=command.args.get("start", True),
        )
        return {"circuit_id": circuit.id}

    async def _circuit_command(self, circuit: C, command: conf.Command) -> Any:
        args = command.args
        result: Any = None
        match command.name:
            case "wire":
                await circuit.wire(
                    args["input"], args["topic"], args.get("qos", 1),
                    args.get("queue"), args.get("policy"),
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
                circuit.inject(args["input"], args["value"])
            case "start":
                circuit.start()
            case "drain":
                await circuit.drain(float(args.get("timeout", 10)))
            case "stop":
                await self.unload(circuit.id)
                return None
            case "reload":
                definition = circuit_from_wire(args["definition"])
                await circuit.reload(definition, args.get("exports") or {})
            case "status":
                return circuit.status()
        self._publish_status(circuit)
        self._changed(circuit.id, command.name)
        return result

    # -- circuits ------------------------------------------------------------------------------

    async def load(
        self,
        definition: CircuitDef,
        *,
        app: str = "",
        exports: dict[str, Any] | None = None,
        start: bool = True,
    ) -> C:
        if definition.container != self.kind:
            raise ValueError(f"circuit {definition.name!r} is for a {definition.container}")
        if not topics.NAME_RE.match(definition.name):
            raise ValueError(f"circuit id {definition.name!r} must match [a-z0-9_-]+")
        if definition.name in self.circuits:
            raise ValueError(
                f"circuit {definition.name!r} is already loaded in {self.kind} {self.id}"
            )
        circuit = self._build(definition, app, exports or {})
        circuit.status()  # a circuit that cannot report itself is refused before it is added
        self.circuits[circuit.id] = circuit
        conf_topic = topics.circuit_conf(self.kind, circuit.id)
        self._conf_subs[circuit.id] = await self.link.subscribe(conf_topic, 1, self._enqueue)
        if start:
            circuit.start()
        self._publish_status(circuit)
        self._announce()
        self._changed(circuit.id, "load")
        self.log.info("loaded circuit %s (%d gadgets)", circuit.id, len(definition.gadgets))
        return circuit

    async def unload(self, circuit_id: str) -> None:
        circuit = self.circuits.pop(circuit_id)
        await circuit.stop()
        sub = self._conf_subs.pop(circuit_id, None)
        if sub is not None:
            await self.link.unsubscribe(sub)
        # An empty retained message deletes the retained status.
        self.link.publish_nowait(
            topics.circuit_status(self.kind, circuit_id), b"", qos=1, retain=True
        )
        self._last_status.pop(circuit_id, None)
        self._announce()
        self._changed(circuit_id, "unload")
        self.log.info("unloaded circuit %s", circuit_id)

    def _publish_status(self, circuit: C, state: str = "online") -> None:
        status = circuit.status()
        status["state"] = state
        payload = codec.encode(status)
        if self._last_status.get(circuit.id) == payload:
            return
        self._last_status[circuit.id] = payload
        self.link.publish_nowait(
            topics.circuit_status(self.kind, circuit.id), payload, qos=1, retain=True
        )

    async def _report(self) -> None:
        # Counters change all the time; the retained status is refreshed at a
        # bounded rate (and only when something changed) for `jet ls`.
        while True:
            await asyncio.sleep(self.stats_interval)
            for circuit in list(self.circuits.values()):
                try:
                    circuit.measure_rates(self.stats_interval)
                    self._publish_status(circuit)
                except Exception:  # one broken circuit must not stop the others' reports
                    self.log.exception("%s: status refresh failed", circuit.id)
