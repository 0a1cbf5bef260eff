"""The hub driver: radio nodes behind RF12demo dongles, as JET node circuits on MQTT.

    async with Hub("mqtt://127.0.0.1:1883", ports=["/dev/ttyUSB0", "/dev/ttyUSB1@100"]):
        ...                          # it runs until the block is left

What it does (docs/protocol.md, docs/nodes.md):

- every packet a node sends is published on ``node/<uid>/<gadget>/<output>``
  (QoS 1), its payload checked (msgpack) or converted (declared struct codec);
- it is the container ``jet/node/<hub_id>``: retained status with counters and
  an MQTT will, ``load`` and ``status`` commands;
- it answers ``node/<uid>/conf`` for the nodes on its groups: ``wire``/``unwire``
  subscribe to a topic and send each message to the node's input; ``inject``
  sends one value; ``stop`` forgets the node circuit and is forwarded to the
  node; other commands are forwarded to the node on gadget 0 input 7;
- it keeps running through anything a serial line or a peer can deliver: each
  bad input is logged in one line naming its port or topic, and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import attrs

from jet.broker import Broker, parse
from jet.codec import PayloadError, decode, encode
from jet.model import circuit_from_msgpack
from jet.mqtt import Link, Will
from jet.tasks import cancel_all

from .dongle import DEFAULT_GROUP, Dongle, DongleSpec, parse_port
from .node_circuit import NodeCircuit, NodeCircuitError, node_from_definition, undeclared_node
from .node_state import NodeState, Wire
from .payload import MSGPACK
from .ratelog import RateLimitedLog
from .rf12demo import MAX_PAYLOAD, Packet, SendError
from .state import SavedNode, StateFileError, load_state, save_state
from .tags import CONF_GADGET, CONF_INPUT, TagError, decode_tag, encode_tag
from .uid import UidMap, load_uid_map

log = logging.getLogger("jet.rf12.hub")

DEFAULT_HUB_ID = "hub"
STATUS_INTERVAL = 5.0
DRAIN_TIMEOUT = 10.0
#: Fields of a command that only matter to the hub, not sent on to a node.
_REPLY_FIELDS = ("id", "reply_to")


class CommandError(Exception):
    """A command cannot be carried out; the message is the one-line reply error."""


@attrs.define
class HubCounters:
    """What the hub counts itself (the dongles count their lines)."""

    published: int = 0
    unknown_packets: int = 0
    oversized: int = 0
    decode_errors: int = 0
    acks: int = 0
    undeclared: int = 0
    send_errors: int = 0
    bad_commands: int = 0
    wire_messages: int = 0


UidTable = UidMap | Mapping[tuple[int, int], int] | str | Path | None


def _uid_map(table: UidTable) -> UidMap:
    if isinstance(table, UidMap):
        return table
    if isinstance(table, str | Path):
        return load_uid_map(table)
    return UidMap(table)


class Hub:
    """The hub driver daemon, as an async context manager."""

    def __init__(
        self,
        broker: Broker | str | None,
        ports: Sequence[str | DongleSpec] = (),
        hub_id: str = DEFAULT_HUB_ID,
        group: int = DEFAULT_GROUP,
        uid_table: UidTable = None,
        *,
        state_file: str | Path | None = None,
        status_interval: float = STATUS_INTERVAL,
        publish_unknown: bool = True,
        connect_timeout: float | None = 10.0,
        reopen_backoff_max: float = 5.0,
    ) -> None:
        self.broker = broker if isinstance(broker, Broker) else parse(broker)
        self.hub_id = hub_id
        self.group = group
        self.uids = _uid_map(uid_table)
        self.state_file = Path(state_file) if state_file is not None else None
        self.status_interval = status_interval
        self.publish_unknown = publish_unknown
        self.counters = HubCounters()
        self.nodes: dict[int, NodeState] = {}
        self.unknown: dict[tuple[int, int], int] = {}  # (group, node id) -> packets
        self.container_topic = f"jet/node/{hub_id}"
        self._log = RateLimitedLog(log)
        self._connect_timeout = connect_timeout
        self._since = time.time()
        specs = [p if isinstance(p, DongleSpec) else parse_port(p, group) for p in ports]
        self.dongles = [
            Dongle(s.device, s.group, self._on_packet, on_state=self._on_dongle_state,
                   limiter=self._log, backoff_max=reopen_backoff_max)
            for s in specs
        ]
        self._link: Link | None = None
        self._commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_counters: dict[str, Any] | None = None

    # -- lifecycle ---------------------------------------------------------------

    @property
    def link(self) -> Link:
        if self._link is None:
            raise RuntimeError("the hub is not running")
        return self._link

    async def __aenter__(self) -> Self:
        self._since = time.time()
        link = Link(
            self.broker,
            f"jet-node-{self.hub_id}",
            will=Will(f"{self.container_topic}/status",
                      encode({"state": "offline", "type": "node", "id": self.hub_id})),
            on_connect=self._on_connect,
            connect_timeout=self._connect_timeout,
        )
        self._link = link
        # Subscribe (and restore saved wires) before connecting, so whatever
        # the persistent session delivers at once finds its handler.
        await link.subscribe(f"{self.container_topic}/conf", 1, self._on_command)
        await link.subscribe("node/+/conf", 1, self._on_command)
        await self._restore()
        await link.__aenter__()
        self._tasks = [
            asyncio.create_task(self._command_worker(), name=f"hub-{self.hub_id}-commands"),
            asyncio.create_task(self._status_ticker(), name=f"hub-{self.hub_id}-status"),
        ]
        for dongle in self.dongles:
            dongle.start()
        log.info("hub %r on %s: %s", self.hub_id, self.broker.url,
                 ", ".join(f"{d.device} (group {d.group})" for d in self.dongles) or "no ports")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop reading dongles, mark everything offline (retained), disconnect."""
        if self._link is None:
            return
        await cancel_all(self._tasks)
        self._tasks = []
        for dongle in self.dongles:
            await dongle.stop()
        link = self._link
        for state in self.nodes.values():
            link.publish_nowait(self._node_status_topic(state.circuit.uid),
                                encode(self._node_status(state, "offline")), qos=1, retain=True)
        link.publish_nowait(f"{self.container_topic}/status",
                            encode(self.status("offline")), qos=1, retain=True)
        await link.close()
        self._link = None

    async def _on_connect(self) -> None:
        # Retained statuses are republished on every (re)connect: a broker
        # restarted without persistence has forgotten them.
        self._publish_status(force=True)
        for state in self.nodes.values():
            self._publish_node_status(state, force=True)

    # -- status ------------------------------------------------------------------

    def counter_map(self) -> dict[str, int]:
        c = self.counters
        dongles = [d.to_wire() for d in self.dongles]

        def total(key: str) -> int:
            return sum(int(d[key]) for d in dongles)

        return {
            "packets": total("packets"),
            "published": c.published,
            "bad_packets": total("bad_packets"),
            "unknown_nodes": len(self.unknown),
            "unknown_packets": c.unknown_packets,
            "oversized": c.oversized,
            "garbage": total("garbage"),
            "partial": total("partial"),
            "decode_errors": c.decode_errors,
            "acks": c.acks,
            "undeclared": c.undeclared,
            "reopens": total("reopens"),
            "sent": total("sent"),
            "send_errors": c.send_errors + total("send_errors"),
            "send_dropped": total("send_dropped"),
            "wire_messages": c.wire_messages,
            "bad_commands": c.bad_commands,
        }

    def status(self, state: str = "online") -> dict[str, Any]:
        """The container status map (published retained, and the ``status`` reply)."""
        link = self._link
        return {
            "state": state,
            "type": "node",
            "id": self.hub_id,
            "driver": "rf12demo",
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": self._since,
            "circuits": sorted(str(uid) for uid in self.nodes) if state == "online" else [],
            "counters": self.counter_map(),
            "dongles": [d.to_wire() for d in self.dongles],
            "unknown": [
                {"group": g, "node": n, "uid": self.uids.uid(g, n), "packets": count}
                for (g, n), count in sorted(self.unknown.items())
            ],
            "outbox_dropped": 0 if link is None else link.stats.outbox_dropped,
        }

    def _publish_status(self, force: bool = False) -> None:
        if self._link is None:
            return
        counters = self.counter_map()
        if not force and counters == self._last_counters:
            return
        self._last_counters = counters
        self._link.publish_nowait(f"{self.container_topic}/status", encode(self.status()),
                                  qos=1, retain=True)

    async def _status_ticker(self) -> None:
        # Counters change with every packet: retained statuses are refreshed at
        # a bounded rate, and only when something changed.
        while True:
            await asyncio.sleep(self.status_interval)
            self._publish_status()
            for state in self.nodes.values():
                state.measure_rates(self.status_interval)
                self._publish_node_status(state)

    def _on_dongle_state(self, dongle: Dongle) -> None:
        log.debug("%s: %s", dongle.device, dongle.state)
        self._publish_status(force=True)

    @staticmethod
    def _node_status_topic(uid: int) -> str:
        return f"node/{uid}/status"

    def _node_status(self, state: NodeState, online: str = "online") -> dict[str, Any]:
        return state.status(self.container_topic, online)

    def _publish_node_status(self, state: NodeState, force: bool = False) -> None:
        if self._link is None:
            return
        payload = encode(self._node_status(state))
        if force or payload != state.last_status:
            state.last_status = payload
            self._link.publish_nowait(self._node_status_topic(state.circuit.uid), payload,
                                      qos=1, retain=True)

    # -- packets from nodes (the hot path) ----------------------------------------

    def _on_packet(self, dongle: Dongle, packet: Packet) -> None:
        counters = self.counters
        if packet.is_ack:
            counters.acks += 1
            return
        data = packet.data
        if len(data) > MAX_PAYLOAD:
            counters.oversized += 1
            self._log.warning(f"{dongle.device}:oversized", "%s: packet of %d bytes exceeds %d: %s",
                              dongle.device, len(data), MAX_PAYLOAD, packet.line)
            return
        group = dongle.group if packet.group is None else packet.group
        node_id = packet.hdr & 0x1F
        uid = self.uids.uid(group, node_id)
        try:
            gadget, port, header = decode_tag(data)
        except TagError as exc:
            counters.decode_errors += 1
            self._log.warning(f"{dongle.device}:decode", "%s: node %d: %s: %s",
                              dongle.device, node_id, exc, packet.line)
            return
        state = self.nodes.get(uid)
        if state is None:
            if not self._unknown_node(dongle, group, node_id, uid):
                return
            codec = MSGPACK
        else:
            state.packets += 1
            state.last_seen = time.time()
            found = state.circuit.output_codec(gadget, port)
            if found is None:
                self._undeclared(state, gadget, port, dongle)
                found = MSGPACK
            codec = found
        try:
            payload = codec.to_mqtt(data[header:])
        except PayloadError as exc:
            counters.decode_errors += 1
            if state is not None:
                state.errors += 1
            self._log.warning(f"{dongle.device}:decode", "%s: node %d output %d.%d: %s: %s",
                              dongle.device, node_id, gadget, port, exc, packet.line)
            return
        if self.link.publish_nowait(f"node/{uid}/{gadget}/{port}", payload, qos=1):
            counters.published += 1
            if state is not None:
                state.published += 1

    def _unknown_node(self, dongle: Dongle, group: int, node_id: int, uid: int) -> bool:
        """Count a packet from a node with no circuit; True to publish it anyway."""
        self.counters.unknown_packets += 1
        key = (group, node_id)
        seen = self.unknown.get(key)
        self.unknown[key] = (seen or 0) + 1
        if seen is None:
            log.warning("%s: packet from unknown node %d in group %d (uid %d)%s; "
                        "further packets from it are only counted", dongle.device, node_id,
                        group, uid, ", published" if self.publish_unknown else ", dropped")
        return self.publish_unknown

    def _undeclared(self, state: NodeState, gadget: int, port: int, dongle: Dongle) -> None:
        self.counters.undeclared += 1
        if (gadget, port) not in state.undeclared_ports:
            state.undeclared_ports.add((gadget, port))
            log.warning("%s: node %d sent on output %d.%d, which its circuit %r does not "
                        "declare (published as msgpack)", dongle.device,
                        state.circuit.node_id, gadget, port, state.circuit.name)

    # -- packets to nodes ---------------------------------------------------------

    def _dongle_for(self, group: int) -> Dongle:
        candidates = [d for d in self.dongles if d.group == group]
        if not candidates:
            raise CommandError(f"no dongle on group {group}")
        # Prefer one that is open: with two dongles on a group, either can send.
        return next((d for d in candidates if d.state == "open"), candidates[0])

    def _serves(self, group: int) -> bool:
        if not self.dongles:
            return group == self.group
        return any(d.group == group for d in self.dongles)

    def _send(self, circuit: NodeCircuit, gadget: int, port: int, payload: bytes,
              ack: bool = False) -> int:
        """Queue one packet to a node input; returns its size; raises CommandError."""
        packet = encode_tag(gadget, port) + payload
        if len(packet) > MAX_PAYLOAD:
            raise CommandError(f"packet for node {circuit.uid} input {gadget}.{port} is "
                               f"{len(packet)} bytes, the radio carries at most {MAX_PAYLOAD}")
        try:
            self._dongle_for(circuit.group).send(circuit.node_id, packet, ack)
        except SendError as exc:
            raise CommandError(str(exc)) from exc
        return len(packet)

    def _wire_handler(self, uid: int, gadget: int, port: int) -> Callable[[str, bytes], None]:
        def deliver(topic: str, payload: bytes) -> None:
            state = self.nodes.get(uid)
            if state is None:
                return
            self.counters.wire_messages += 1
            circuit = state.circuit
            try:
                radio = circuit.input_codec(gadget, port).to_radio(payload)
                self._send(circuit, gadget, port, radio)
            except PayloadError as exc:
                self.counters.decode_errors += 1
                state.errors += 1
                self._log.warning(f"{topic}:wire", "%s: message for node %d input %d.%d: %s",
                                  topic, uid, gadget, port, exc)
            except CommandError as exc:
                self.counters.send_errors += 1
                state.errors += 1
                self._log.warning(f"{topic}:wire", "%s: cannot send to node %d: %s",
                                  topic, uid, exc)
            else:
                state.sent += 1

        return deliver

    # -- commands ----------------------------------------------------------------

    def _on_command(self, topic: str, payload: bytes) -> None:
        # Commands run one at a time, in arrival order (wire then unwire must
        # not be reordered), off the MQTT dispatch path.
        self._commands.put_nowait((topic, payload))

    async def _command_worker(self) -> None:
        while True:
            topic, payload = await self._commands.get()
            try:
                await self._handle_command(topic, payload)
            except Exception:
                self.counters.bad_commands += 1
                log.exception("%s: command failed", topic)

    async def _handle_command(self, topic: str, payload: bytes) -> None:
        try:
            cmd = decode(payload)
        except PayloadError as exc:
            self.counters.bad_commands += 1
            log.warning("%s: undecodable command: %s", topic, exc)
            return
        if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
            self.counters.bad_commands += 1
            log.warning("%s: a command must be a map with a 'cmd' string, got %r",
                        topic, type(cmd).__name__ if not isinstance(cmd, dict) else cmd)
            self._reply(cmd if isinstance(cmd, dict) else {}, error="missing 'cmd'")
            return
        try:
            if topic == f"{self.container_topic}/conf":
                result = await self._container_command(cmd)
            else:
                uid_text = topic.split("/")[1]
                if not uid_text.isdecimal():
                    return  # node/<not a uid>/conf belongs to nobody we know
                handled = await self._node_command(int(uid_text), cmd)
                if handled is _NOT_OURS:
                    return
                result = handled
        except (CommandError, NodeCircuitError, StateFileError) as exc:
            self.counters.bad_commands += 1
            log.warning("%s: %s failed: %s", topic, cmd["cmd"], exc)
            self._reply(cmd, error=str(exc))
            return
        except (KeyError, TypeError, ValueError) as exc:
            self.counters.bad_commands += 1
            if isinstance(exc, KeyError):
                message = f"{cmd['cmd']!r} command needs a field {exc.args[0]!r}"
            else:
                message = f"bad {cmd['cmd']!r} command: {exc}"
            log.warning("%s: %s", topic, message)
            self._reply(cmd, error=message)
            return
        self._reply(cmd, result=result)

    def _reply(self, cmd: Mapping[str, Any], *, result: Any = None,
               error: str | None = None) -> None:
        reply_to = cmd.get("reply_to")
        if not isinstance(reply_to, str) or not reply_to or self._link is None:
            return
        reply: dict[str, Any] = {"ok": error is None}
        if "id" in cmd:
            reply["id"] = cmd["id"]
        if error is None:
            reply["result"] = result
        else:
            reply["error"] = error
        try:
            self._link.publish_nowait(reply_to, encode(reply), qos=1)
        except (PayloadError, ValueError) as exc:
            log.warning("%s: cannot send reply: %s", reply_to, exc)

    async def _container_command(self, cmd: dict[str, Any]) -> Any:
        name = cmd["cmd"]
        if name == "status":
            return self.status()
        if name == "load":
            group = cmd.get("group", self.group)
            if not isinstance(group, int) or not 0 <= group <= 255:
                raise CommandError(f"group must be 0..255, got {group!r}")
            app = cmd.get("app")
            uid = await self.load(cmd["definition"], group=group,
                                  app=app if isinstance(app, str) else None)
            return {"circuit_id": str(uid)}
        raise CommandError(f"unknown container command {name!r} (load, status)")

    async def load(self, definition: Mapping[str, Any], group: int | None = None,
                   app: str | None = None) -> int:
        """Learn a node circuit (the ``load`` command); returns its node_uid."""
        if not isinstance(definition, Mapping):
            raise CommandError("definition must be a map")
        defn = circuit_from_msgpack(definition)
        group = self.group if group is None else group
        node_id = defn.node if isinstance(defn.node, int) else -1
        uid = self.uids.uid(group, node_id) if node_id >= 0 else -1
        circuit = node_from_definition(defn, uid, group, app)
        if not self._serves(group):
            log.warning("node circuit %r: group %d has no dongle on this hub", defn.name, group)
        state = self.nodes.get(uid)
        self.unknown.pop((group, node_id), None)  # known from now on
        if state is None:
            state = self.nodes[uid] = NodeState(circuit, dict(definition))
        else:
            await self._replace_circuit(state, circuit, dict(definition))
        log.info("loaded node circuit %r: node %d group %d -> uid %d", defn.name, node_id,
                 group, uid)
        self._changed(state)
        return uid

    async def _replace_circuit(self, state: NodeState, circuit: NodeCircuit,
                               definition: Mapping[str, Any] | None) -> None:
        """New declaration for a node: keep the wires whose input still exists."""
        state.circuit = circuit
        state.definition = definition
        state.undeclared_ports.clear()
        for key, wire in list(state.wires.items()):
            try:
                circuit.resolve_input(f"{wire.gadget}.{wire.input}")
            except NodeCircuitError:
                log.info("node %d: input %d.%d is gone: unwiring %s", circuit.uid,
                         wire.gadget, wire.input, wire.topic)
                await self._drop_wire(state, key)

    def _changed(self, state: NodeState | None) -> None:
        if state is not None:
            self._publish_node_status(state)
        self._publish_status(force=True)
        self._save()

    # -- node commands ------------------------------------------------------------

    async def _node_command(self, uid: int, cmd: dict[str, Any]) -> Any:
        state = self.nodes.get(uid)
        name = cmd["cmd"]
        if state is None:
            address = self.uids.address(uid)
            if address is None or not self._serves(address[0]):
                log.debug("node %d: not on this hub's groups; ignoring %s", uid, name)
                return _NOT_OURS
            circuit = undeclared_node(uid, *address)
            if name in ("wire", "inject"):
                # Wiring by number needs no declaration: remember the node from now on.
                circuit.resolve_input(cmd["input"])
                state = self.nodes[uid] = NodeState(circuit)
                self.unknown.pop(address, None)
                log.info("node %d (group %d node %d): wired without a loaded circuit",
                         uid, *address)
            elif name == "status":
                return {"state": "unknown", "type": "node", "id": str(uid),
                        "container": self.container_topic, "node": address[1],
                        "group": address[0], "packets": self.unknown.get(address, 0)}
            elif name == "stop":
                return {"circuit_id": str(uid), "forwarded": self._forward_stop(circuit, cmd)}
            else:
                return {"forwarded": self._forward(circuit, cmd)}
        circuit = state.circuit
        if name == "wire":
            return await self._wire(state, cmd)
        if name == "unwire":
            return await self._unwire(state, cmd)
        if name == "inject":
            gadget, port = circuit.resolve_input(cmd["input"])
            value = encode(cmd["value"])
            size = self._send(circuit, gadget, port, circuit.input_codec(gadget, port)
                              .to_radio(value))
            state.sent += 1
            return {"input": f"{gadget}.{port}", "bytes": size}
        if name == "status":
            return self._node_status(state)
        if name == "stop":
            await self._forget(state)
            return {"circuit_id": str(uid), "forwarded": self._forward_stop(circuit, cmd)}
        if name == "reload":
            if "definition" not in cmd:
                raise CommandError("reload needs a definition")
            defn = circuit_from_msgpack(cmd["definition"])
            if defn.node != circuit.node_id:
                raise CommandError(f"reload cannot move node circuit {uid} from node "
                                   f"{circuit.node_id} to node {defn.node}")
            new = node_from_definition(defn, uid, circuit.group, circuit.app)
            await self._replace_circuit(state, new, dict(cmd["definition"]))
            self._changed(state)
            return {"circuit_id": str(uid)}
        if name == "drain":
            timeout = float(cmd.get("timeout", DRAIN_TIMEOUT))
            try:
                await asyncio.wait_for(self._dongle_for(circuit.group).drain(), timeout)
            except TimeoutError:
                raise CommandError(f"sends to node {uid} still queued after {timeout}s") \
                    from None
            return {"drained": True}
        if name in ("export", "unexport", "tap"):
            # A node has no internal wires: every output is always published.
            return {"published": True}
        return {"forwarded": self._forward(circuit, cmd)}

    def _forward(self, circuit: NodeCircuit, cmd: Mapping[str, Any]) -> int:
        """Send a node-level command to the node on gadget 0 input 7; returns bytes sent."""
        message = encode({k: v for k, v in cmd.items() if k not in _REPLY_FIELDS})
        size = self._send(circuit, CONF_GADGET, CONF_INPUT, message, ack=True)
        log.info("node %d: forwarded %r (%d bytes)", circuit.uid, cmd["cmd"], size)
        return size

    def _forward_stop(self, circuit: NodeCircuit, cmd: Mapping[str, Any]) -> int:
        """Tell the node to stop, best effort: the circuit is unloaded either way."""
        try:
            return self._forward(circuit, cmd)
        except CommandError as exc:
            log.warning("node %d: stop not forwarded: %s", circuit.uid, exc)
            return 0

    async def _wire(self, state: NodeState, cmd: Mapping[str, Any]) -> Any:
        gadget, port = state.circuit.resolve_input(cmd["input"])
        topic = cmd["topic"]
        qos = cmd.get("qos", 1)
        if not isinstance(topic, str) or not topic:
            raise CommandError(f"topic must be a non-empty string, got {topic!r}")
        if qos not in (0, 1, 2):
            raise CommandError(f"qos must be 0, 1 or 2, got {qos!r}")
        key = (gadget, port, topic)
        if key not in state.wires:
            wire = Wire(gadget, port, topic, qos)
            state.wires[key] = wire
            wire.sub = await self.link.subscribe(
                topic, qos, self._wire_handler(state.circuit.uid, gadget, port))
            log.info("node %d: wired %s -> %s", state.circuit.uid, topic,
                     state.circuit.input_name(gadget, port))
            self._changed(state)
        return {"input": f"{gadget}.{port}", "topic": topic}

    async def _unwire(self, state: NodeState, cmd: Mapping[str, Any]) -> Any:
        topic = cmd.get("topic")
        target = None if cmd.get("input") is None else state.circuit.resolve_input(cmd["input"])
        keys = [
            key for key in state.wires
            if (target is None or key[:2] == target) and (topic is None or key[2] == topic)
        ]
        for key in keys:
            await self._drop_wire(state, key)
        if keys:
            self._changed(state)
        return {"unwired": len(keys)}

    async def _drop_wire(self, state: NodeState, key: tuple[int, int, str]) -> None:
        wire = state.wires.pop(key)
        if wire.sub is not None:
            await self.link.unsubscribe(wire.sub)

    async def _forget(self, state: NodeState) -> None:
        uid = state.circuit.uid
        for key in list(state.wires):
            await self._drop_wire(state, key)
        self.nodes.pop(uid, None)
        # An empty retained message deletes the retained status.
        self.link.publish_nowait(self._node_status_topic(uid), b"", qos=1, retain=True)
        log.info("node circuit %d (%s) stopped", uid, state.circuit.name)
        self._changed(None)

    # -- state file --------------------------------------------------------------

    def _save(self) -> None:
        if self.state_file is None:
            return
        try:
            save_state(self.state_file, [s.saved() for s in self.nodes.values()])
        except OSError as exc:
            log.error("%s: cannot save hub state: %s", self.state_file, exc)

    async def _restore(self) -> None:
        if self.state_file is None:
            return
        try:
            saved = load_state(self.state_file)
        except StateFileError as exc:
            log.error("%s (starting without saved nodes)", exc)
            return
        for node in saved:
            try:
                circuit = self._saved_circuit(node)
            except (NodeCircuitError, KeyError, TypeError, ValueError) as exc:
                log.error("%s: node %d not restored: %s", self.state_file, node.uid, exc)
                continue
            state = self.nodes[circuit.uid] = NodeState(circuit, node.definition)
            for w in node.wires:
                wire = Wire(w.gadget, w.input, w.topic, w.qos)
                wire.sub = await self.link.subscribe(
                    w.topic, w.qos, self._wire_handler(circuit.uid, w.gadget, w.input))
                state.wires[w.gadget, w.input, w.topic] = wire
        if self.nodes:
            log.info("%s: restored %d node circuits", self.state_file, len(self.nodes))

    def _saved_circuit(self, node: SavedNode) -> NodeCircuit:
        if node.definition is None:
            return undeclared_node(node.uid, node.group, node.node)
        return node_from_definition(circuit_from_msgpack(node.definition), node.uid, node.group,
                                    node.app)


class _NotOurs:
    """Marker: a node conf message for a node on another hub's group."""


_NOT_OURS = _NotOurs()

