"""The hub driver: radio nodes behind RF12demo dongles, as JET node circuits on MQTT.

    async with Hub("mqtt://127.0.0.1:1883", ports=["/dev/ttyUSB0", "/dev/ttyUSB1@100"]):
        ...                          # it runs until the block is left

The hub is a container like a pack (:class:`jet.containers.base.Container`): the
container ``jet/node/<hub_id>`` with a retained status, an MQTT will, one
command queue, one reply format and one state file; each node circuit is a
:class:`jet.containers.boundary.CircuitBoundary` whose body (:class:`NodeBody`) is the
radio node.  What the hub adds (docs/protocol.md, docs/nodes.md):

- every packet a node sends is published on ``node/<uid>/<gadget>/<output>``
  (QoS 1), its payload checked (msgpack) or converted (declared struct codec);
- it answers ``node/+/conf`` for the nodes on its groups, loaded or not: a node
  never loaded can still be wired and injected by number; ``stop`` is also
  forwarded to the node; commands the protocol does not know are forwarded
  to the node on gadget 0 input 7;
- it keeps running through anything a serial line or a peer can deliver: each
  bad input is logged in one line naming its port or topic, and counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import attrs

from jet import address
from jet.containers import conf
from jet.containers.base import Container, NotOurs
from jet.containers.boundary import CircuitBoundary, CommandError
from jet.definition.model import CircuitDef
from jet.tasks import worth_logging
from jet.transport.broker import Broker, parse
from jet.transport.codec import PayloadError, encode
from jet_rf12.dongle import DEFAULT_GROUP, Dongle, DongleSpec, parse_port
from jet_rf12.node_circuit import (
    NodeCircuit,
    NodeCircuitError,
    node_from_definition,
    undeclared_node,
)
from jet_rf12.node_state import NodeBody
from jet_rf12.payload import MSGPACK
from jet_rf12.ratelog import RateLimitedLog
from jet_rf12.rf12demo import MAX_PAYLOAD, Packet, SendError
from jet_rf12.tags import CONF_GADGET, CONF_INPUT, TagError, decode_tag, encode_tag
from jet_rf12.uid import UidMap, load_uid_map

log = logging.getLogger("jet.rf12.hub")

DEFAULT_HUB_ID = "hub"
STATUS_INTERVAL = 5.0

#: ``load`` may name the node's group; ``unwire`` without an input unwires them all.
HUB_CONTAINER_COMMANDS: conf.CommandTable = {
    **conf.CONTAINER_COMMANDS,
    "load": {**conf.CONTAINER_COMMANDS["load"], "group": (int, False)},
}
HUB_CIRCUIT_COMMANDS: conf.CommandTable = {
    **conf.CIRCUIT_COMMANDS,
    "unwire": {"input": (str, False), "topic": (str, False)},
}


@attrs.define
class HubCounters:
    """What the hub counts itself (the dongles count their lines)."""

    published: int = 0
    unknown_packets: int = 0
    oversized: int = 0
    decode_errors: int = 0
    acks: int = 0
    directed: int = 0  # DST packets: node-to-node traffic overheard (docs/nodes.md)
    undeclared: int = 0
    send_errors: int = 0
    wire_messages: int = 0


UidTable = UidMap | Mapping[tuple[int, int], int] | str | Path | None


def _uid_map(table: UidTable) -> UidMap:
    if isinstance(table, UidMap):
        return table
    if isinstance(table, str | Path):
        return load_uid_map(table)
    return UidMap(table)


class Hub(Container):
    """The hub driver daemon, as an async context manager (see the module doc)."""

    kind = "node"
    log = log
    conf_filter = address.circuit_conf("node", "+")
    container_commands = HUB_CONTAINER_COMMANDS
    circuit_commands = HUB_CIRCUIT_COMMANDS
    other_commands = True

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
        self.group = group
        self.uids = _uid_map(uid_table)
        self.publish_unknown = publish_unknown
        self.counters = HubCounters()
        self.nodes: dict[int, CircuitBoundary] = {}  # by node uid: the packet path's index
        self.unknown: dict[tuple[int, int], int] = {}  # (group, node id) -> packets
        self.limited = RateLimitedLog(log)  # bursts of bad input: logged, then counted
        self._last_counters: dict[str, Any] | None = None
        specs = [p if isinstance(p, DongleSpec) else parse_port(p, group) for p in ports]
        self.dongles = [
            Dongle(s.device, s.group, self._on_packet, on_state=self._on_dongle_state,
                   limiter=self.limited, backoff_max=reopen_backoff_max)
            for s in specs
        ]
        super().__init__(
            broker if isinstance(broker, Broker) else parse(broker),
            hub_id,
            stats_interval=status_interval,
            connect_timeout=connect_timeout,
            state_file=Path(state_file) if state_file is not None else None,
        )

    @property
    def hub_id(self) -> str:
        return self.id

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        for dongle in self.dongles:
            dongle.start()
        log.info("hub %r on %s: %s", self.id, self.link.broker.url,
                 ", ".join(f"{d.device} (group {d.group})" for d in self.dongles) or "no ports")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop reading dongles, mark everything offline (retained), disconnect."""
        for dongle in self.dongles:
            await dongle.stop()
        await super().__aexit__(exc_type, exc, tb)

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
            "directed": c.directed,
            "undeclared": c.undeclared,
            "reopens": total("reopens"),
            "sent": total("sent"),
            "send_errors": c.send_errors + total("send_errors"),
            "send_dropped": total("send_dropped"),
            "unconfirmed": total("unconfirmed"),
            "wire_messages": c.wire_messages,
            "bad_commands": self.conf_errors,
        }

    def _presence_extra(self) -> dict[str, Any]:
        return {
            "driver": "rf12demo",
            "counters": self.counter_map(),
            "dongles": [d.to_wire() for d in self.dongles],
            "unknown": [
                {"group": g, "node": n, "uid": self.uids.uid(g, n), "packets": count}
                for (g, n), count in sorted(self.unknown.items())
            ],
        }

    def status(self) -> dict[str, Any]:
        """The container status map (published retained, and the ``status`` reply)."""
        return self._presence("online")

    def _refresh(self) -> None:
        # Counters change with every packet: the retained status is refreshed
        # at a bounded rate, and only when something changed.
        counters = self.counter_map()
        if counters != self._last_counters:
            self._last_counters = counters
            self._announce()

    def _on_dongle_state(self, dongle: Dongle) -> None:
        log.debug("%s: %s", dongle.device, dongle.state)
        if self.link.connected:
            self._announce()

    # -- packets from nodes (the hot path) ----------------------------------------

    def _on_packet(self, dongle: Dongle, packet: Packet) -> None:
        counters = self.counters
        if packet.is_ack:
            counters.acks += 1
            return
        if packet.directed:
            # The id field names the destination and the sender is not on the
            # air: the packet cannot be an output of any node circuit.
            counters.directed += 1
            if worth_logging(counters.directed):
                log.info("%s: packet addressed to node %d (DST flag): node-to-node "
                         "traffic, counted, not published (%d so far): %s",
                         dongle.device, packet.node_id, counters.directed, packet.line)
            return
        data = packet.data
        if len(data) > MAX_PAYLOAD:
            counters.oversized += 1
            self.limited.warning(f"{dongle.device}:oversized",
                                 "%s: packet of %d bytes exceeds %d: %s",
                                 dongle.device, len(data), MAX_PAYLOAD, packet.line)
            return
        group = dongle.group if packet.group is None else packet.group
        node_id = packet.hdr & 0x1F
        uid = self.uids.uid(group, node_id)
        try:
            gadget, port, header = decode_tag(data)
        except TagError as exc:
            counters.decode_errors += 1
            self.limited.warning(f"{dongle.device}:decode", "%s: node %d: %s: %s",
                             dongle.device, node_id, exc, packet.line)
            return
        circuit = self.nodes.get(uid)
        body: NodeBody | None = None
        if circuit is None:
            if not self._unknown_node(dongle, group, node_id, uid):
                return
            codec = MSGPACK
        else:
            body = _node_body(circuit)
            body.seen(packet.rssi)
            found = body.circuit.output_codec(gadget, port)
            if found is None:
                self._undeclared(body, gadget, port, dongle)
                found = MSGPACK
            codec = found
        try:
            payload = codec.to_mqtt(data[header:])
        except PayloadError as exc:
            counters.decode_errors += 1
            if body is not None:
                body.errors += 1
            self.limited.warning(f"{dongle.device}:decode", "%s: node %d output %d.%d: %s: %s",
                             dongle.device, node_id, gadget, port, exc, packet.line)
            return
        if circuit is not None:
            before = circuit.published
            circuit.publish_payload(str(gadget), port, payload)
            counters.published += circuit.published - before
        elif self.link.publish_nowait(address.output("node", str(uid), gadget, port), payload,
                                      qos=1):
            counters.published += 1

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

    def _undeclared(self, body: NodeBody, gadget: int, port: int, dongle: Dongle) -> None:
        self.counters.undeclared += 1
        if (gadget, port) not in body.undeclared_ports:
            body.undeclared_ports.add((gadget, port))
            log.warning("%s: node %d sent on output %d.%d, which its circuit %r does not "
                        "declare (published as msgpack)", dongle.device,
                        body.circuit.node_id, gadget, port, body.circuit.name)

    # -- packets to nodes (a node body's Radio) ----------------------------------

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

    def send(self, circuit: NodeCircuit, gadget: int, port: int, payload: bytes,
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

    async def drain_to(self, circuit: NodeCircuit, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._dongle_for(circuit.group).drain(), timeout)
        except TimeoutError:
            raise CommandError(f"sends to node {circuit.uid} still queued after {timeout}s") \
                from None

    def count_wire_message(self, failed: str | None) -> None:
        self.counters.wire_messages += 1
        if failed is not None:
            self.counters.send_errors += 1

    # -- loading node circuits ---------------------------------------------------

    def _circuit_id(self, definition: CircuitDef, args: Mapping[str, Any]) -> str:
        group = args.get("group", self.group)
        if isinstance(group, bool) or not isinstance(group, int) or not 0 <= group <= 255:
            raise CommandError(f"group must be 0..255, got {group!r}")
        node_id = definition.node if isinstance(definition.node, int) else -1
        return str(self.uids.uid(group, node_id) if node_id >= 0 else -1)

    def _make_body(
        self, circuit_id: str, definition: CircuitDef, app: str, args: Mapping[str, Any]
    ) -> Callable[[Callable[[str, int, Any], None]], NodeBody]:
        group = args.get("group", self.group)
        uid = int(circuit_id)
        if args.get("declared", True):
            circuit = node_from_definition(definition, uid, group, app or None)
        else:
            circuit = undeclared_node(uid, group, int(definition.node or 0))
        if not self._serves(group):
            log.warning("node circuit %r: group %d has no dongle on this hub",
                        definition.name, group)
        self.unknown.pop((group, circuit.node_id), None)  # known from now on
        log.info("loaded node circuit %r: node %d group %d -> uid %d", definition.name,
                 circuit.node_id, group, uid)
        return lambda _emit: NodeBody(circuit, definition, self)

    async def _load_again(
        self, circuit: CircuitBoundary, definition: CircuitDef, args: Mapping[str, Any]
    ) -> None:
        # Loading a node again replaces its declaration (its wires stay).
        circuit.app = str(args.get("app", circuit.app))
        await self.reload(circuit, definition, circuit.exports)
        self._publish_status(circuit)
        self._save()

    def _saved_args(self, circuit: CircuitBoundary) -> dict[str, Any]:
        node = _node_body(circuit).circuit
        return {"group": node.group, "declared": node.declared}

    def _changed(self, circuit_id: str, what: str) -> None:
        uid = int(circuit_id)
        circuit = self.circuits.get(circuit_id)
        if circuit is None:
            self.nodes.pop(uid, None)
        else:
            self.nodes[uid] = circuit

    # -- node commands ------------------------------------------------------------

    async def _circuit_command(self, circuit: CircuitBoundary, command: conf.Command) -> Any:
        name = command.name
        body = _node_body(circuit)
        if name == "stop":
            forwarded = self._forward_stop(body.circuit, command)
            await super()._circuit_command(circuit, command)
            log.info("node circuit %s (%s) stopped", circuit.id, body.circuit.name)
            return {"circuit_id": circuit.id, "forwarded": forwarded}
        if name == "export" or name == "unexport" or name == "tap":
            # A node has no internal wires: every output is always published.
            return {"published": True}
        result = await super()._circuit_command(circuit, command)
        if name == "wire":
            gadget, port = body.resolve_input(command.args["input"])
            return {"input": f"{gadget}.{port}", "topic": command.args["topic"]}
        if name == "unwire":
            return {"unwired": result["removed"]}
        if name == "reload":
            return {"circuit_id": circuit.id}
        if name == "drain":
            return {"drained": True}
        return result

    async def _other_command(self, circuit: CircuitBoundary, command: conf.Command) -> Any:
        return {"forwarded": self._forward(_node_body(circuit).circuit, command)}

    async def _missing_circuit(self, circuit_id: str, command: conf.Command) -> Any:
        """A node no circuit was loaded for: wire and inject by number still work."""
        if not circuit_id.isdecimal():
            raise NotOurs(circuit_id)  # node/<not a uid>/conf belongs to nobody we know
        uid = int(circuit_id)
        place = self.uids.address(uid)
        if place is None or not self._serves(place[0]):
            log.debug("node %d: not on this hub's groups; ignoring %s", uid, command.name)
            raise NotOurs(circuit_id)
        group, node_id = place
        self._refuse_stale(command)
        name = command.name
        if name in ("wire", "inject"):
            undeclared_node(uid, group, node_id).resolve_input(command.args["input"])
            if name == "wire":  # refused before a circuit is made for it
                address.check(command.args["topic"], filter_ok=NodeBody.takes_filters)
            definition = CircuitDef(name=f"node{node_id}", container="node", node=node_id)
            circuit = await self.load(definition, args={"group": group, "declared": False})
            log.info("node %d (group %d node %d): wired without a loaded circuit",
                     uid, group, node_id)
            return await self._circuit_command(circuit, command)
        if name == "status":
            return {"state": "unknown", "type": "node", "id": str(uid),
                    "container": self.container, "node": node_id, "group": group,
                    "packets": self.unknown.get(place, 0)}
        node = undeclared_node(uid, group, node_id)
        if name == "stop":
            return {"circuit_id": str(uid), "forwarded": self._forward_stop(node, command)}
        return {"forwarded": self._forward(node, command)}

    def _forward(self, circuit: NodeCircuit, command: conf.Command) -> int:
        """Send a node-level command to the node on gadget 0 input 7; returns bytes sent."""
        message = encode({"cmd": command.name, **command.args})
        size = self.send(circuit, CONF_GADGET, CONF_INPUT, message, ack=True)
        log.info("node %d: forwarded %r (%d bytes)", circuit.uid, command.name, size)
        return size

    def _forward_stop(self, circuit: NodeCircuit, command: conf.Command) -> int:
        """Tell the node to stop, best effort: the circuit is unloaded either way."""
        try:
            return self._forward(circuit, command)
        except CommandError as exc:
            log.warning("node %d: stop not forwarded: %s", circuit.uid, exc)
            return 0


def _node_body(circuit: CircuitBoundary) -> NodeBody:
    body = circuit.body
    assert isinstance(body, NodeBody)
    return body


__all__ = ["DEFAULT_HUB_ID", "STATUS_INTERVAL", "Hub", "HubCounters", "NodeCircuitError"]
