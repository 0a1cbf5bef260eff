"""The web container: web circuits whose gadgets are drawn by the pages.

    async with WebContainer(broker.parse(url), "web", pages=pages) as container:
        ...

It is a container like a pack (docs/protocol.md): it answers
``jet/web/<id>/conf`` (``load``, ``status``) and each ``web/<circuit>/conf``,
handles commands one at a time in arrival order, publishes a retained
status for itself (with an MQTT will saying ``offline``) and for each
circuit.  Values wired into a circuit are relayed to every page; values a
page sets on an output are published on ``web/<circuit>/<gadget>/<n>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from types import TracebackType
from typing import Any, Self

from .. import codec, conf, topics
from ..broker import Broker
from ..circuit import CommandError
from ..model import circuit_from_wire
from ..mqtt import Link, Subscription, Will
from .circuit import WebCircuit
from .jsonvalue import to_json
from .pages import Page, Pages

log = logging.getLogger("jet.web")

__all__ = ["PageError", "WebContainer"]

STATS_INTERVAL = 5.0


class PageError(ValueError):
    """What a page asked for cannot be done; the message goes back to the page."""


class WebContainer:
    kind = "web"

    def __init__(
        self,
        broker: Broker,
        container_id: str = "web",
        *,
        pages: Pages,
        stats_interval: float = STATS_INTERVAL,
        keepalive: int = 10,
        connect_timeout: float | None = None,
    ) -> None:
        if not topics.NAME_RE.match(container_id):
            raise ValueError(f"web container id {container_id!r} must match [a-z0-9_-]+")
        self.id = container_id
        self.pages = pages
        self.stats_interval = stats_interval
        self.circuits: dict[str, WebCircuit] = {}
        self.conf_errors = 0
        self.started_at = time.time()
        #: the page's address, shown in the container status once the server listens
        self.url = ""
        self._status_topic = topics.container_status(self.kind, container_id)
        self._conf_topic = topics.container_conf(self.kind, container_id)
        self._commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._conf_subs: dict[str, Subscription] = {}
        self._last_status: dict[str, bytes] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # A clean session: a page shows the present, so nothing is worth
        # queueing while the server is away, and a restarted server must not
        # inherit the subscriptions of the previous one.
        self.link = Link(
            broker,
            f"jet-web-{container_id}",
            will=Will(self._status_topic, codec.encode(self._presence("offline"))),
            clean_session=True,
            keepalive=keepalive,
            on_connect=self._on_connect,
            connect_timeout=connect_timeout,
        )
        pages.on_change.append(lambda _count: self._announce())

    @property
    def container(self) -> str:
        return f"jet/{self.kind}/{self.id}"

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.link.__aenter__()
        await self.link.subscribe(self._conf_topic, 1, self._enqueue)
        self._tasks = [
            asyncio.create_task(self._obey(), name=f"web-{self.id}-conf"),
            asyncio.create_task(self._report(), name=f"web-{self.id}-stats"),
        ]
        log.info("web container %s serving on %s", self.id, self.link.broker.url)
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
            # A clean shutdown is not a crash: offline, definition kept (as a pack does).
            self._publish_status(circuit, state="offline")
        self.link.publish_nowait(
            self._status_topic, codec.encode(self._presence("offline")), qos=1, retain=True
        )
        await self.link.close()

    async def _on_connect(self) -> None:
        # Every (re)connect restates presence: the broker may have lost retained messages.
        self._announce()
        self._last_status.clear()
        for circuit in self.circuits.values():
            self._publish_status(circuit)

    def _presence(self, state: str) -> dict[str, Any]:
        online = state == "online"
        return {
            "state": state,
            "type": self.kind,
            "id": self.id,
            "circuits": sorted(self.circuits) if online else [],
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": self.started_at,
            "url": self.url,
            "pages": len(self.pages) if online else 0,
            "conf_errors": self.conf_errors,
            "outbox_dropped": self.link.stats.outbox_dropped if hasattr(self, "link") else 0,
        }

    def _announce(self) -> None:
        self.link.publish_nowait(
            self._status_topic, codec.encode(self._presence("online")), qos=1, retain=True
        )

    def set_url(self, url: str) -> None:
        self.url = url
        self._announce()

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
            except Exception as exc:  # a bug must not take the container down
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
            call = self._container_command(command)
        else:
            command = conf.parse(topic, payload, conf.CIRCUIT_COMMANDS)
            circuit = self.circuits.get(topic.split("/")[1])
            if circuit is None:
                raise conf.ConfError(
                    topic,
                    f"no circuit {topic.split('/')[1]!r} in web container {self.id}",
                    ident=command.ident,
                    reply_to=command.reply_to,
                )
            call = self._circuit_command(circuit, command)
        try:
            result = await call
        except (CommandError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # (AttributeError: a definition whose parts have the wrong shape)
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
            raise ValueError(f"bad definition: {exc!r}") from None
        circuit = await self.load(
            definition,
            app=command.args.get("app", ""),
            exports=command.args.get("exports") or {},
            start=command.args.get("start", True),
        )
        return {"circuit_id": circuit.id}

    async def _circuit_command(self, circuit: WebCircuit, command: conf.Command) -> Any:
        args = command.args
        result: Any = None
        match command.name:
            case "wire":
                await circuit.wire(args["input"], args["topic"], args.get("qos", 1))
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
                self._show(circuit)
            case "drain":
                pass  # values go to the pages as they arrive: nothing is ever queued here
            case "stop":
                await self.unload(circuit.id)
                return None
            case "reload":
                await circuit.reload(
                    circuit_from_wire(args["definition"]), args.get("exports") or {}
                )
                self._show(circuit)
            case "status":
                return circuit.status()
        self._publish_status(circuit)
        return result

    # -- circuits ------------------------------------------------------------------------

    async def load(
        self,
        definition: Any,
        *,
        app: str = "",
        exports: dict[str, list[str]] | None = None,
        start: bool = True,
    ) -> WebCircuit:
        if definition.name in self.circuits:
            raise ValueError(f"circuit {definition.name!r} is already loaded in web {self.id}")
        circuit = WebCircuit(
            definition,
            self.link,
            deliver=self._relay_input,
            announce=self._relay_output,
            app=app,
            container=self.container,
            exports=exports,
        )
        self.circuits[circuit.id] = circuit
        conf_topic = topics.circuit_conf(self.kind, circuit.id)
        self._conf_subs[circuit.id] = await self.link.subscribe(conf_topic, 1, self._enqueue)
        if start:
            circuit.start()
        self._show(circuit)
        self._publish_status(circuit)
        self._announce()
        log.info("loaded web circuit %s (%d gadgets)", circuit.id, len(definition.gadgets))
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
        self.pages.broadcast({"op": "circuit_gone", "id": circuit_id})
        self._announce()
        log.info("unloaded web circuit %s", circuit_id)

    def _publish_status(self, circuit: WebCircuit, state: str = "online") -> None:
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
        # bounded rate, and only when something changed.
        while True:
            await asyncio.sleep(self.stats_interval)
            for circuit in list(self.circuits.values()):
                circuit.measure_rates(self.stats_interval)
                self._publish_status(circuit)

    # -- the pages ---------------------------------------------------------------------------

    def _picture(self, circuit: WebCircuit) -> list[dict[str, Any]]:
        """What a page needs to draw ``circuit`` as the others see it now."""
        frames: list[dict[str, Any]] = [{"op": "circuit", "circuit": to_json(circuit.describe())}]
        where = {"circuit": circuit.id}
        for (gadget, port), recent in circuit.recent.items():
            if recent:
                points = [[t, to_json(v)] for t, v in recent]
                frames.append(
                    {"op": "history", **where, "gadget": gadget, "port": port, "points": points}
                )
        for (gadget, port), value in circuit.outputs.items():
            frames.append(
                {"op": "output", **where, "gadget": gadget, "port": port, "value": to_json(value)}
            )
        return frames

    def _show(self, circuit: WebCircuit) -> None:
        for frame in self._picture(circuit):
            self.pages.broadcast(frame)

    def _relay_input(
        self, circuit: WebCircuit, gadget: str, port: str, value: Any, t: float
    ) -> None:
        self.pages.broadcast(
            {
                "op": "value",
                "circuit": circuit.id,
                "gadget": gadget,
                "port": port,
                "value": to_json(value),
                "t": t,
            }
        )

    def _relay_output(self, circuit: WebCircuit, gadget: str, port: str, value: Any) -> None:
        self.pages.broadcast(
            {
                "op": "output",
                "circuit": circuit.id,
                "gadget": gadget,
                "port": port,
                "value": to_json(value),
            }
        )

    def greet(self, page: Page) -> None:
        """Send a page that just connected every circuit and the values it has missed."""
        for circuit in self.circuits.values():
            for frame in self._picture(circuit):
                page.send(frame)

    def emit(self, circuit_id: str, gadget: str, port: str, value: Any) -> str:
        """A page sets an output; returns the topic it is published on."""
        circuit = self.circuits.get(circuit_id)
        if circuit is None:
            raise PageError(f"no web circuit {circuit_id!r} in web container {self.id}")
        try:
            circuit.emit(gadget, port, value)
        except (CommandError, codec.PayloadError) as exc:
            raise PageError(str(exc)) from None
        return circuit.output_topic(gadget, port)
