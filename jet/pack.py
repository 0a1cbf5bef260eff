"""The pack container: many circuits in one process, one event loop, one MQTT link.

    async with Pack(broker.parse(url), "default") as pack:
        await pack.serve_forever()

Commands arrive on ``jet/pack/<id>/conf`` (load, status) and on each
circuit's ``pack/<circuit>/conf``; they are handled one at a time in arrival
order, so a wire never overtakes the load it depends on.  A bad command is
logged as one line naming its topic and answered with an error; it never
stops the pack or another circuit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import msgpack

from . import codec, conf, topics
from .broker import Broker
from .circuit import CommandError, RunningCircuit
from .model import circuit_from_wire
from .mqtt import Link, Will
from .network import BuildError
from .registry import Registry

log = logging.getLogger("jet.pack")

STATS_INTERVAL = 5.0


class Pack:
    kind = "pack"

    def __init__(
        self,
        broker: Broker,
        pack_id: str = "default",
        *,
        registry: Registry | None = None,
        state_file: Path | None = None,
        stats_interval: float = STATS_INTERVAL,
        keepalive: int = 10,
    ) -> None:
        if not topics.NAME_RE.match(pack_id):
            raise ValueError(f"pack id {pack_id!r} must match [a-z0-9_-]+")
        self.id = pack_id
        self.registry = registry or Registry()
        self.state_file = state_file
        self.stats_interval = stats_interval
        self.circuits: dict[str, RunningCircuit] = {}
        self.conf_errors = 0
        self.started_at = time.time()
        self._status_topic = topics.container_status(self.kind, pack_id)
        self._conf_topic = topics.container_conf(self.kind, pack_id)
        self._commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._last_status: dict[str, bytes] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._conf_subs: dict[str, Any] = {}
        self.link = Link(
            broker,
            f"jet-pack-{pack_id}",
            will=Will(self._status_topic, codec.encode(self._presence("offline"))),
            keepalive=keepalive,
            on_connect=self._on_connect,
            connect_timeout=None,
            ack_after_handling=True,
        )

    @property
    def container(self) -> str:
        return f"jet/{self.kind}/{self.id}"

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        # Circuits and their wires are restored before connecting: QoS 1
        # messages the broker kept for this pack's session arrive right after
        # the connection, and each must find its wire already in place.
        await self.link.subscribe(self._conf_topic, 1, self._enqueue)
        await self._restore()
        await self.link.__aenter__()
        self._tasks = [
            asyncio.create_task(self._obey(), name=f"pack-{self.id}-conf"),
            asyncio.create_task(self._report(), name=f"pack-{self.id}-stats"),
        ]
        log.info("pack %s serving on %s", self.id, self.link.broker.url)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
        self.link.publish_nowait(
            self._status_topic, codec.encode(self._presence("online")), qos=1, retain=True
        )
        self._last_status.clear()
        for circuit in self.circuits.values():
            self._publish_status(circuit)

    def _presence(self, state: str) -> dict[str, Any]:
        return {
            "state": state,
            "type": self.kind,
            "id": self.id,
            "circuits": sorted(self.circuits) if state == "online" else [],
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": self.started_at,
            "allow": list(self.registry.allow),
            "conf_errors": self.conf_errors,
            "outbox_dropped": self.link.stats.outbox_dropped if hasattr(self, "link") else 0,
        }

    # -- commands ----------------------------------------------------------------------

    def _enqueue(self, topic: str, payload: bytes) -> None:
        self._commands.put_nowait((topic, payload))

    async def _obey(self) -> None:
        while True:
            topic, payload = await self._commands.get()
            try:
                await self._handle(topic, payload)
            except conf.ConfError as exc:
                self._fail(exc, exc.ident, exc.reply_to)
            except Exception as exc:  # a bug must not take the pack down
                log.exception("%s: command failed", topic)
                self._fail(exc, None, None)

    def _fail(self, exc: Exception, ident: Any, reply_to: str | None) -> None:
        self.conf_errors += 1
        log.error("%s", exc)
        if reply_to:
            self.link.publish_nowait(reply_to, conf.reply_error(ident, str(exc)), qos=1)

    async def _handle(self, topic: str, payload: bytes) -> None:
        if topic == self._conf_topic:
            command = conf.parse(topic, payload, conf.CONTAINER_COMMANDS)
            result = await self._container_command(topic, command)
        else:
            circuit_id = topic.split("/")[1]
            command = conf.parse(topic, payload, conf.CIRCUIT_COMMANDS)
            circuit = self.circuits.get(circuit_id)
            if circuit is None:
                raise conf.ConfError(
                    topic,
                    f"no circuit {circuit_id!r} in pack {self.id}",
                    ident=command.ident,
                    reply_to=command.reply_to,
                )
            try:
                result = await self._circuit_command(circuit, command)
            except (CommandError, BuildError, ValueError, KeyError, TypeError) as exc:
                raise conf.ConfError(
                    topic, f"{command.name}: {exc}", ident=command.ident, reply_to=command.reply_to
                ) from None
        if command.reply_to:
            self.link.publish_nowait(command.reply_to, conf.reply_ok(command.ident, result), qos=1)

    async def _container_command(self, topic: str, command: conf.Command) -> Any:
        if command.name == "status":
            return self._presence("online")
        try:
            definition = circuit_from_wire(command.args["definition"])
        except (KeyError, ValueError, TypeError) as exc:
            raise conf.ConfError(
                topic,
                f"load: bad definition: {exc}",
                ident=command.ident,
                reply_to=command.reply_to,
            ) from None
        try:
            circuit = await self.load(
                definition,
                app=command.args.get("app", ""),
                exports=command.args.get("exports") or {},
                start=command.args.get("start", True),
            )
        except (BuildError, ValueError) as exc:
            raise conf.ConfError(
                topic, f"load: {exc}", ident=command.ident, reply_to=command.reply_to
            ) from None
        return {"circuit_id": circuit.id}

    async def _circuit_command(self, circuit: RunningCircuit, command: conf.Command) -> Any:
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
                circuit.export(args["output"], args["by"], on=command.name == "export")
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
        self._save()
        return result

    # -- circuits ------------------------------------------------------------------------

    async def load(
        self,
        definition: Any,
        *,
        app: str = "",
        exports: dict[str, list[str]] | None = None,
        start: bool = True,
    ) -> RunningCircuit:
        if definition.container != self.kind:
            raise ValueError(f"circuit {definition.name!r} is for a {definition.container}")
        if not topics.NAME_RE.match(definition.name):
            raise ValueError(f"circuit id {definition.name!r} must match [a-z0-9_-]+")
        if definition.name in self.circuits:
            raise ValueError(f"circuit {definition.name!r} is already loaded in pack {self.id}")
        circuit = RunningCircuit(
            definition,
            self.registry,
            self.link,
            app=app,
            container=self.container,
            exports=exports,
        )
        self.circuits[circuit.id] = circuit
        conf_topic = topics.circuit_conf(self.kind, circuit.id)
        self._conf_subs[circuit.id] = await self.link.subscribe(conf_topic, 1, self._enqueue)
        if start:
            circuit.start()
        self._publish_status(circuit)
        self._announce()
        self._save()
        log.info("loaded circuit %s (%d gadgets)", circuit.id, len(definition.gadgets))
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
        self._save()
        log.info("unloaded circuit %s", circuit_id)

    def _announce(self) -> None:
        self.link.publish_nowait(
            self._status_topic, codec.encode(self._presence("online")), qos=1, retain=True
        )

    def _publish_status(self, circuit: RunningCircuit, state: str = "online") -> None:
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
                circuit.measure_rates(self.stats_interval)
                self._publish_status(circuit)

    # -- persisted state -------------------------------------------------------------------

    def _save(self) -> None:
        if self.state_file is None:
            return
        state = {
            cid: {
                "app": c.app,
                "definition": c.status()["definition"],
                "exports": {k: sorted(v) for k, v in c.exports.items()},
                "wires": [
                    [port, topic, w.qos, w.limit, w.policy] for (port, topic), w in c.wires.items()
                ],
            }
            for cid, c in self.circuits.items()
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_bytes(msgpack.packb(state))
        tmp.replace(self.state_file)  # atomic: a crash leaves the old or the new state

    async def _restore(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            state = codec.decode(self.state_file.read_bytes())
        except codec.PayloadError as exc:
            log.error("%s: unreadable state, starting empty: %s", self.state_file, exc)
            return
        for cid, saved in state.items():
            try:
                circuit = await self.load(
                    circuit_from_wire(saved["definition"]),
                    app=saved.get("app", ""),
                    exports=saved.get("exports") or {},
                )
                for port, topic, qos, limit, policy in saved.get("wires", []):
                    await circuit.wire(port, topic, qos, limit, policy)
                self._publish_status(circuit)
            except (BuildError, ValueError, KeyError, TypeError, CommandError) as exc:
                log.error("%s: cannot restore circuit %s: %s", self.state_file, cid, exc)
        self._save()
