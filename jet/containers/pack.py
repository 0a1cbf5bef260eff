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
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from jet.containers.base import STATS_INTERVAL, Container
from jet.containers.boundary import CommandError, Wire, definition_map, split_port
from jet.definition.model import CircuitDef
from jet.runtime.inbox import InboxClosed
from jet.runtime.network import Network, OnEmit
from jet.runtime.registry import Registry
from jet.transport import codec
from jet.transport.broker import Broker
from jet.transport.link import STUCK_LIMIT

log = logging.getLogger("jet.pack")

#: How long a reload waits for the gadgets it replaces to finish their queues.
#: Below the loader's reply timeout (5 s), so a stuck gadget is reported, not
#: mistaken for a pack that does not answer.
RELOAD_DRAIN_TIMEOUT = 3.0
#: Times a message waiting for room follows its gadget to a reloaded network, at most.
FOLLOW_RELOADS = 10


class NetworkBody:
    """A pack circuit's body: a :class:`~jet.runtime.network.Network` of Python gadgets.

    Its counters are the circuit's, not one network's: a reload keeps them.

    Reload builds the new network completely (gadgets whose definition is
    unchanged keep their instance, state and queue), drains the gadgets being
    replaced for at most :data:`RELOAD_DRAIN_TIMEOUT`, then swaps with no await
    in between, so a message on a kept wire reaches the old or the new graph
    and is never lost.  What a replaced gadget did not finish in time (a stuck
    one) is handed to its namesake in the new graph, or counted lost, and
    reported in the reload's reply.
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

    def input_ports(self) -> Mapping[str, Sequence[str]]:
        return {name: slot.inputs for name, slot in self.network.slots.items()}

    def wired_inside(self, gadget: str, index: int) -> bool:
        return self.network.wired_inside(gadget, index)

    def receive(
        self, gadget: str, port: str, payload: bytes, limit: int, policy: str
    ) -> Awaitable[None] | None:
        return self.receive_value(gadget, port, codec.decode(payload), limit, policy)

    def receive_value(
        self, gadget: str, port: str, value: Any, limit: int, policy: str
    ) -> Awaitable[None] | None:
        waiting = self.network.deliver_to(gadget, port, value, limit, policy)
        if waiting is None:
            return None
        return self._deliver_when_room(waiting, gadget, port, value, limit, policy)

    async def _deliver_when_room(
        self, waiting: Coroutine[Any, Any, None], gadget: str, port: str, value: Any,
        limit: int, policy: str,
    ) -> None:
        for _ in range(FOLLOW_RELOADS):
            try:
                await waiting
                return
            except InboxClosed:
                # The gadget was replaced (reload) while this message waited for
                # room: it goes to the gadget that runs now.
                again = self.network.deliver_to(gadget, port, value, limit, policy)
                if again is None:
                    return
                waiting = again
        waiting.close()
        self.network.counters.dropped += 1
        log.error("%s.%s.%s: a message waiting for room outlived %d reloads; dropped",
                  self.definition.name, gadget, port, FOLLOW_RELOADS)

    def inject(self, gadget: str, port: str, value: Any) -> None:
        waiting = self.network.deliver_to(gadget, port, value)
        if waiting is not None:  # a command cannot wait for a full queue
            waiting.close()
            raise CommandError(f"{gadget}.{port}: queue full; value not injected")

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self.network.start()

    async def drain(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self.network.drain(), timeout)
        except TimeoutError:
            left = "; ".join(f"{g}: {what}" for g, what in self.network.unfinished().items())
            raise CommandError(
                f"{self.definition.name}: not drained after {timeout:g} s ({left or 'busy'})"
            ) from None

    async def stop(self) -> None:
        await self.network.stop()

    async def reload(self, definition: CircuitDef) -> dict[str, Any] | None:
        name = self.definition.name
        if definition.name != name:
            raise CommandError(f"reload of {name} with a definition named {definition.name!r}")
        # The circuit's counters go on across the reload (the same object: what
        # the old gadgets still do while they drain is counted too).
        new = Network(
            definition, self.registry, self._emit, label=name, reuse=self.network.slots,
            counters=self.network.counters,
        )
        old = self.network
        # Kept gadgets keep their queue and go on working: only the replaced
        # ones are drained, and a stuck one does not hold the reload (nor the
        # pack's commands) for longer than the bound.
        replaced = [s for s in old.slots.values() if s.name not in new.kept]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(old.drain(replaced), RELOAD_DRAIN_TIMEOUT)
        # No await from here to the swap: nothing arrives in between.
        left = old.close_inboxes(replaced)
        new.activate()
        self.network = new
        new.start()
        unfinished = new.adopt(left)
        await old.stop(keep=new.kept)
        if not unfinished:
            return None
        for gadget, counts in unfinished.items():
            log.warning(
                "%s.%s: not finished %g s into the reload: %d queued messages handed to the"
                " new %s, %d lost", name, gadget, RELOAD_DRAIN_TIMEOUT, counts["moved"],
                gadget, counts["lost"],
            )
        return {"unfinished": unfinished}

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
        stuck_limit: float = STUCK_LIMIT,
        connect_timeout: float | None = None,
        group: str | None = None,
        partition: bool = False,
    ) -> None:
        """``connect_timeout``: None (a daemon) waits for its broker as long as it
        takes; a number (`jet run`) makes a broker that does not answer a
        ``ConnectionError`` after that many seconds."""
        super().__init__(
            broker, pack_id, stats_interval=stats_interval, keepalive=keepalive,
            state_file=state_file, registry=registry, stuck_limit=stuck_limit,
            connect_timeout=connect_timeout, group=group, partition=partition,
        )

    def _make_body(
        self, circuit_id: str, definition: CircuitDef, app: str, args: Mapping[str, Any]
    ) -> Callable[[OnEmit], NetworkBody]:
        def make(emit: OnEmit) -> NetworkBody:
            return NetworkBody(definition, self.registry, emit)

        return make

    def _presence_extra(self) -> dict[str, Any]:
        return {"allow": list(self.registry.allow)}
