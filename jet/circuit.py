"""A circuit running in a pack: its network, its MQTT wires, taps and status.

Owns the boundary between in-process and MQTT: wires into the circuit are
subscriptions on the shared :class:`~jet.mqtt.Link` (a message is decoded
once and handed to the input); outputs are published on their topic when
nothing inside the circuit consumes them, or while another circuit has them
exported, or while they are tapped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from typing import Any

import attrs

from . import codec, topics
from .inbox import DEFAULT_LIMIT
from .model import POLICIES, CircuitDef, circuit_to_wire
from .mqtt import Link, Subscription
from .network import EXTERNAL_POLICY, BuildError, Network
from .registry import Registry

log = logging.getLogger("jet.circuit")


@attrs.frozen
class WireState:
    """A wire into this circuit: its subscription and its queue bound."""

    qos: int
    sub: Subscription
    limit: int
    policy: str


class CommandError(ValueError):
    """A circuit command that names something the circuit does not have."""


def normalize_exports(raw: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """``{output: {consumer: qos}}`` from that form or ``{output: [consumer, ...]}`` (QoS 1)."""
    exports: dict[str, dict[str, int]] = {}
    for output, holders in raw.items():
        if isinstance(holders, Mapping):
            chosen = {str(k): v for k, v in holders.items()}
        elif isinstance(holders, list | tuple):
            chosen = {str(h): 1 for h in holders}
        else:
            raise CommandError(f"exports of {output!r}: expected a list or a map of consumers")
        if any(isinstance(q, bool) or q not in (0, 1, 2) for q in chosen.values()):
            raise CommandError(f"exports of {output!r}: qos must be 0, 1 or 2")
        exports[str(output)] = chosen
    return exports


def split_port(text: str) -> tuple[str, str]:
    gadget, dot, port = text.partition(".")
    if not dot or not gadget or not port or "." in port:
        raise CommandError(f"bad port {text!r}: expected gadget.port")
    return gadget, port


class RunningCircuit:
    kind = "pack"

    def __init__(
        self,
        definition: CircuitDef,
        registry: Registry,
        link: Link,
        *,
        app: str = "",
        container: str = "",
        exports: Mapping[str, Any] | None = None,
    ) -> None:
        self.id = definition.name
        self.app = app
        self.container = container
        self.registry = registry
        self.link = link
        self.network = Network(definition, registry, self._on_emit, label=self.id)
        self.network.activate()
        self.wires: dict[tuple[str, str], WireState] = {}
        self.exports = normalize_exports(exports or {})
        self.taps: dict[str, float] = {}  # output -> monotonic expiry
        self.received = 0
        self.published = 0
        self.bad_payloads = 0
        self.started_at = time.time()
        self.rates: dict[str, float] = {"in": 0.0, "out": 0.0}
        self._rate_base = (0, 0)
        self._topics: dict[str, list[str]] = {}
        self._publish: dict[str, list[bool]] = {}
        self._qos: dict[str, list[int]] = {}
        self._refresh_publishing()

    @property
    def definition(self) -> CircuitDef:
        return self.network.definition

    # -- outputs ---------------------------------------------------------------------

    def _refresh_publishing(self) -> None:
        """Decide, per output, whether emissions go to MQTT (see module doc)."""
        now = time.monotonic()
        self.taps = {k: t for k, t in self.taps.items() if t > now}
        for name, slot in self.network.slots.items():
            self._topics[name] = [
                topics.output(self.kind, self.id, name, i) for i in range(len(slot.outputs))
            ]
            self._publish[name] = [
                not self.network.wired_inside(name, i)
                or bool(self.exports.get(f"{name}.{port}"))
                or f"{name}.{port}" in self.taps
                for i, port in enumerate(slot.outputs)
            ]
            # Published at the highest QoS any consumer's wire asks for.
            self._qos[name] = [
                max(self.exports.get(f"{name}.{port}", {}).values(), default=1)
                for port in slot.outputs
            ]

    def _on_emit(self, gadget: str, index: int, value: Any) -> None:
        if not self._publish[gadget][index]:
            return
        try:
            payload = codec.encode(value)
        except codec.PayloadError as exc:
            log.error("%s.%s output %d: %s", self.id, gadget, index, exc)
            self.network.counters.errors += 1
            return
        topic, qos = self._topics[gadget][index], self._qos[gadget][index]
        if self.link.publish_nowait(topic, payload, qos=qos):
            self.published += 1

    def _output(self, text: str) -> str:
        gadget, port = split_port(text)
        slot = self.network.slots.get(gadget)
        if slot is None or port not in slot.outputs:
            raise CommandError(f"{self.id} has no output {text!r}")
        return f"{gadget}.{port}"

    def export(self, output: str, by: str, on: bool, qos: int = 1) -> None:
        key = self._output(output)
        holders = self.exports.setdefault(key, {})
        if on:
            holders[by] = qos
        else:
            holders.pop(by, None)
        self._refresh_publishing()

    def tap(self, output: str, ttl: float) -> None:
        key = self._output(output)
        if ttl > 0:
            self.taps[key] = time.monotonic() + ttl
            asyncio.get_running_loop().call_later(ttl, self._refresh_publishing)
        else:
            self.taps.pop(key, None)
        self._refresh_publishing()

    # -- inputs ----------------------------------------------------------------------

    def _input(self, text: str) -> tuple[str, str]:
        gadget, port = split_port(text)
        slot = self.network.slots.get(gadget)
        if slot is None or port not in slot.inputs:
            slots = self.network.slots.values()
            known = ", ".join(f"{s.name}.{p}" for s in slots for p in s.inputs)
            raise CommandError(f"{self.id} has no input {text!r} (inputs: {known or 'none'})")
        return gadget, port

    async def wire(
        self,
        input_: str,
        topic: str,
        qos: int,
        queue: int | None = None,
        policy: str | None = None,
    ) -> None:
        gadget, port = self._input(input_)
        key = (f"{gadget}.{port}", topic)
        if key in self.wires:
            return  # idempotent: the loader may repeat a wire after a timeout
        if qos not in (0, 1, 2):
            raise CommandError(f"qos must be 0, 1 or 2, not {qos}")
        try:
            topics.check(topic, filter_ok=True)
        except topics.TopicError as exc:
            raise CommandError(str(exc)) from None
        if policy is not None and policy not in POLICIES:
            raise CommandError(f"unknown queue policy {policy!r} (one of {', '.join(POLICIES)})")
        if queue is not None and queue < 1:
            raise CommandError(f"queue must be at least 1, not {queue}")
        limit = queue or DEFAULT_LIMIT
        chosen = policy or EXTERNAL_POLICY

        def on_message(msg_topic: str, payload: bytes) -> Awaitable[None] | None:
            self.received += 1
            try:
                value = codec.decode(payload)
            except codec.PayloadError as exc:
                self.bad_payloads += 1
                log.warning("%s: %s (wire to %s.%s), message dropped", msg_topic, exc, gadget, port)
                return None
            return self.network.deliver_to(gadget, port, value, limit, chosen)

        sub = await self.link.subscribe(topic, qos, on_message)
        self.wires[key] = WireState(qos, sub, limit, chosen)

    async def unwire(self, input_: str, topic: str | None) -> int:
        gadget, port = split_port(input_)
        doomed = [k for k in self.wires if k[0] == f"{gadget}.{port}" and topic in (None, k[1])]
        for key in doomed:
            await self.link.unsubscribe(self.wires.pop(key).sub)
        return len(doomed)

    def inject(self, input_: str, value: Any) -> None:
        gadget, port = self._input(input_)
        self.network.deliver_to(gadget, port, value)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self.network.start()

    async def drain(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.network.drain(), timeout)
        except TimeoutError:
            raise CommandError(
                f"{self.id}: still {self.network.queued()} messages queued after {timeout}s"
            ) from None

    async def stop(self) -> None:
        for wire in self.wires.values():
            await self.link.unsubscribe(wire.sub)
        self.wires.clear()
        await self.network.stop()

    async def reload(self, definition: CircuitDef, exports: Mapping[str, Any]) -> None:
        """Swap in a new graph; wires into inputs that remain keep their subscription.

        The new network is fully built before anything changes, and the swap
        itself has no await in it, so a message arriving on a kept wire is
        delivered either to the old graph or to the new one, never lost.
        """
        if definition.name != self.id:
            raise CommandError(f"reload of {self.id} with a definition named {definition.name!r}")
        new_exports = normalize_exports(exports)  # refused before anything changes
        new = Network(
            definition, self.registry, self._on_emit, label=self.id, reuse=self.network.slots
        )
        old = self.network
        await old.drain()
        await old.stop(keep=new.kept)
        new.activate()
        self.network = new
        self.exports = new_exports
        self._refresh_publishing()
        new.start()
        gone = [k for k in self.wires if not self._has_input(k[0])]
        for key in gone:
            await self.link.unsubscribe(self.wires.pop(key).sub)

    def _has_input(self, text: str) -> bool:
        try:
            self._input(text)
        except CommandError:
            return False
        return True

    def measure_rates(self, interval: float) -> None:
        """Messages per second in (from MQTT or injected) and out (emitted) since last call."""
        now = (self.network.counters.delivered, self.network.counters.emitted)
        self.rates = {
            "in": round((now[0] - self._rate_base[0]) / interval, 2),
            "out": round((now[1] - self._rate_base[1]) / interval, 2),
        }
        self._rate_base = now

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        inputs: dict[str, list[dict[str, Any]]] = {}
        for (port, topic), wire in sorted(self.wires.items()):
            inputs.setdefault(port, []).append(
                {"topic": topic, "qos": wire.qos, "queue": wire.limit, "policy": wire.policy}
            )
        counters = self.network.counters
        return {
            "state": "online",
            "type": self.kind,
            "id": self.id,
            "app": self.app,
            "container": self.container,
            "since": self.started_at,
            "definition": circuit_to_wire(self.definition),
            "inputs": inputs,
            "exports": {k: sorted(v) for k, v in self.exports.items() if v},
            "taps": sorted(self.taps),
            "rates": self.rates,
            "counters": {
                "received": self.received,
                "published": self.published,
                "delivered": counters.delivered,
                "emitted": counters.emitted,
                "errors": counters.errors + self.bad_payloads,
                "dropped": counters.dropped,
                "queued": self.network.queued(),
            },
        }


__all__ = ["BuildError", "CommandError", "RunningCircuit"]
