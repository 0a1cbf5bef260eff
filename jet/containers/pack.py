"""The pack container: many circuits in one process, one event loop, one MQTT link.

    async with Pack(broker.parse(url), "default") as pack:
        await pack.serve_forever()

Everything a container does with commands, status and state files is in
:class:`~jet.containers.base.Container`, and everything protocol-facing about a
circuit in :class:`~jet.containers.boundary.CircuitBoundary`; a pack adds what is its
own: behind each circuit's ports a :class:`NetworkBody`, the in-process
graph of Python gadgets built from the pack's allow list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jet.containers.base import STATS_INTERVAL, Container
from jet.containers.boundary import CommandError, Wire, definition_map, split_port
from jet.definition.model import CircuitDef
from jet.runtime.network import Network, OnEmit
from jet.runtime.registry import Registry
from jet.transport import codec
from jet.transport.broker import Broker

log = logging.getLogger("jet.pack")


class NetworkBody:
    """A pack circuit's body: a :class:`~jet.runtime.network.Network` of Python gadgets.

    Reload builds the new network completely (gadgets whose definition is
    unchanged keep their instance and state), drains the old one, then swaps
    with no await in between, so a message on a kept wire reaches the old or
    the new graph and is never lost.
    """

    takes_filters = True

    def __init__(self, definition: CircuitDef, registry: Registry, emit: OnEmit) -> None:
        self.registry = registry
        self._emit = emit
        self.network = Network(definition, registry, emit, label=definition.name)
        self.network.activate()

    @property
    def definition(self) -> CircuitDef:
        return self.network.definition

    # -- ports ---------------------------------------------------------------------------

    def resolve_input(self, text: str) -> tuple[str, str]:
        gadget, port = split_port(text)
        slot = self.network.slots.get(gadget)
        if slot is None or port not in slot.inputs:
            slots = self.network.slots.values()
            known = ", ".join(f"{s.name}.{p}" for s in slots for p in s.inputs)
            raise CommandError(
                f"{self.definition.name} has no input {text!r} (inputs: {known or 'none'})"
            )
        return gadget, port

    def resolve_output(self, text: str) -> tuple[str, str]:
        gadget, port = split_port(text)
        slot = self.network.slots.get(gadget)
        if slot is None or port not in slot.outputs:
            raise CommandError(f"{self.definition.name} has no output {text!r}")
        return gadget, port

    def output_ports(self) -> Mapping[str, Sequence[str]]:
        return {name: slot.outputs for name, slot in self.network.slots.items()}

    def wired_inside(self, gadget: str, index: int) -> bool:
        return self.network.wired_inside(gadget, index)

    def receive(
        self, gadget: str, port: str, payload: bytes, limit: int, policy: str
    ) -> Awaitable[None] | None:
        return self.network.deliver_to(gadget, port, codec.decode(payload), limit, policy)

    def inject(self, gadget: str, port: str, value: Any) -> None:
        self.network.deliver_to(gadget, port, value)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.network.start()

    async def drain(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.network.drain(), timeout)
        except TimeoutError:
            raise CommandError(
                f"{self.definition.name}: still {self.network.queued()} messages queued "
                f"after {timeout}s"
            ) from None

    async def stop(self) -> None:
        await self.network.stop()

    async def reload(self, definition: CircuitDef) -> None:
        name = self.definition.name
        if definition.name != name:
            raise CommandError(f"reload of {name} with a definition named {definition.name!r}")
        new = Network(
            definition, self.registry, self._emit, label=name, reuse=self.network.slots
        )
        old = self.network
        await old.drain()
        await old.stop(keep=new.kept)
        new.activate()
        self.network = new
        new.start()

    # -- status ------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        c = self.network.counters
        return {
            "delivered": c.delivered,
            "emitted": c.emitted,
            "errors": c.errors,
            "dropped": c.dropped,
            "queued": self.network.queued(),
        }

    def rate_basis(self) -> tuple[int, int]:
        return self.network.counters.delivered, self.network.counters.emitted

    def wire_fields(self, wire: Wire) -> dict[str, Any]:
        return {"topic": wire.topic, "qos": wire.qos, "queue": wire.limit, "policy": wire.policy}

    def status_fields(self) -> dict[str, Any]:
        return {}

    def definition_map(self) -> dict[str, Any]:
        return definition_map(self.definition)


class Pack(Container):
    """The pack container (see the module doc); state persisted in ``state_file``."""

    kind = "pack"
    log = log

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
        super().__init__(
            broker, pack_id, stats_interval=stats_interval, keepalive=keepalive,
            state_file=state_file, registry=registry,
        )

    def _make_body(
        self, circuit_id: str, definition: CircuitDef, app: str, args: Mapping[str, Any]
    ) -> Callable[[OnEmit], NetworkBody]:
        def make(emit: OnEmit) -> NetworkBody:
            return NetworkBody(definition, self.registry, emit)

        return make

    def _presence_extra(self) -> dict[str, Any]:
        return {"allow": list(self.registry.allow)}
