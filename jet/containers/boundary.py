"""The circuit boundary: everything protocol-facing about one hosted circuit.

Whatever runs a circuit (a pack's in-process :class:`~jet.runtime.network.Network`,
the pages of a web container, a radio node behind the hub), the MQTT side
of it is the same, and it is written here once:

- **inputs**: the table of wires, one (input, topic) pair each, made and
  undone idempotently (the loader may repeat a command after a timeout);
  each wire is a subscription on the container's shared
  :class:`~jet.transport.link.Link`; its QoS, topic filter and queue bound are checked
  once, here; wires into inputs that a reload removed are pruned;
- **outputs**: which are published, on which topic and at which QoS — an
  output is published when nothing inside the circuit (or on a device's topic) consumes it, or while
  another circuit has it exported (at the highest QoS its consumers' wires
  ask for), or while it is tapped (a lease that runs out by itself);
- **counters and rates**, and the **status map** published for ``jet ls``.

Back-pressure stays per wire: a wire whose input cannot take more (a full
queue under ``block``) holds its own later messages in its subscription
(:meth:`Link._dispatch <jet.transport.link.Link>`), counted as ``queued``;
everything else keeps flowing.  :meth:`~CircuitBoundary.drain` waits for what
the wires hold, then for the body, within its timeout; stopping drops (and
counts) what they still hold.

What sits behind the ports is the container's :class:`Body`: the boundary
hands it every value that arrives on a wire and the body hands every value
it produces back to :meth:`CircuitBoundary.emit`.  A body never routes and
never touches MQTT, the way a Node-RED node hands its messages to its flow.

Lifecycle (the one vocabulary of every hosted circuit): built by its
container, :meth:`~CircuitBoundary.start`, any number of
:meth:`~CircuitBoundary.reload` and :meth:`~CircuitBoundary.drain`, then
:meth:`~CircuitBoundary.stop` (wires gone, body stopped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from jet import address
from jet.definition.model import POLICIES, CircuitDef, circuit_to_msgpack, queue_limit
from jet.runtime.inbox import DEFAULT_LIMIT
from jet.runtime.network import EXTERNAL_POLICY
from jet.tasks import Burst
from jet.transport import codec
from jet.transport.formats import Format, FormatError
from jet.transport.link import Link, Subscription, is_filter
from jet.transport.partition import Split

log = logging.getLogger("jet.circuit")  # the name operators filter on

class CommandError(ValueError):
    """A circuit command that cannot be carried out; the message is the one-line reply."""


def split_port(text: str) -> tuple[str, str]:
    """``"gadget.port"`` -> ``("gadget", "port")``; CommandError for anything else."""
    found = address.split_port(text) if isinstance(text, str) else None
    if found is None:
        raise CommandError(f"bad port {text!r}: expected gadget.port")
    return found


def normalize_exports(raw: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """``{output: {consumer: qos}}`` from that form or ``{output: [consumer, ...]}`` (QoS 1)."""
    exports: dict[str, dict[str, int]] = {}
    for output, holders in raw.items():
        if isinstance(holders, Mapping):
            chosen = {str(k): v for k, v in holders.items()}
        elif isinstance(holders, list | tuple | set | frozenset):
            chosen = {str(h): 1 for h in holders}
        else:
            raise CommandError(f"exports of {output!r}: expected a list or a map of consumers")
        if any(isinstance(q, bool) or q not in (0, 1, 2) for q in chosen.values()):
            raise CommandError(f"exports of {output!r}: qos must be 0, 1 or 2")
        exports[str(output)] = chosen
    return exports


@attrs.frozen
class Wire:
    """A wire into the circuit: its subscription and its queue bound."""

    gadget: str
    port: str
    topic: str
    qos: int
    limit: int
    policy: str
    sub: Subscription = attrs.field(eq=False, repr=False)
    #: how a device's messages read (a wire from a foreign topic), None: JET's msgpack
    payload: Format | None = None
    #: messages it could not read (``undecodable``), logged once per burst
    trouble: Burst = attrs.field(factory=Burst, eq=False, repr=False)

    @property
    def input(self) -> str:
        return f"{self.gadget}.{self.port}"

    def fields(self) -> dict[str, Any]:
        """What the status says of a wire from a device's topic (nothing for others)."""
        if self.payload is None:
            return {}
        return {"payload": self.payload.to_map(), "undecodable": self.trouble.count}


@attrs.frozen
class Replica:
    """This circuit is one copy of a group's circuit (docs/groups.md): its wires are
    shared subscriptions of ``group`` (each message reaches one copy), its status is
    its own (``<type>/<circuit>/replica/<member>/status``); ``wanted`` copies in all;
    ``adopted``: the member whose copy this one replaced when that member went."""

    group: str
    member: str
    wanted: int = 1
    adopted: str | None = None
    #: the broker has no shared subscriptions: the copies subscribe plainly and each
    #: handles the messages that fall to it (jet.transport.partition.Split)
    split: Split | None = attrs.field(default=None, eq=False, repr=False)

    def fields(self) -> dict[str, Any]:
        return {"group": self.group, "member": self.member, "replicas": self.wanted,
                "adopted": self.adopted}

    def share(self, circuit_id: str, topic: str) -> str:
        """The filter a wire of ``circuit_id`` from ``topic`` subscribes: its copies' share
        of it (``<group>.<circuit>``: two circuits of a group wired to one topic each get
        every message; ``.`` is in no id, so no two shares are named alike)."""
        return f"$share/{self.group}.{circuit_id}/{topic}"


@attrs.frozen
class Target:
    """A device's topic an output writes (a wire to a foreign topic)."""

    topic: str
    payload: Format
    qos: int = 1
    retain: bool = False
    trouble: Burst = attrs.field(factory=Burst, eq=False, repr=False)

    def to_map(self) -> dict[str, Any]:
        return {"topic": self.topic, "qos": self.qos, "retain": self.retain,
                **self.payload.to_map()}


def normalize_foreign(raw: Mapping[str, Any]) -> dict[str, list[Target]]:
    """A load command's ``foreign``: {output: [{topic, qos, retain, format, path, map}]},
    checked (CommandError naming the output)."""
    found: dict[str, list[Target]] = {}
    for output, targets in raw.items():
        if not isinstance(targets, list | tuple):
            raise CommandError(f"foreign of {output!r}: expected a list of topics")
        for spec in targets:
            if not isinstance(spec, Mapping):
                raise CommandError(f"foreign of {output!r}: expected maps, not {spec!r}")
            try:
                topic = address.check(str(spec.get("topic", "")))
                payload = Format.from_map(spec)
            except (address.TopicError, ValueError) as exc:
                raise CommandError(f"foreign of {output!r}: {exc}") from None
            qos, retain = spec.get("qos", 1), spec.get("retain", False)
            if isinstance(qos, bool) or qos not in (0, 1, 2) or not isinstance(retain, bool):
                raise CommandError(f"foreign of {output!r}: qos 0, 1 or 2 and retain true/false")
            found.setdefault(str(output), []).append(Target(topic, payload, qos, retain))
    return found


class Body(Protocol):
    """What sits behind a circuit's ports; one implementation per container kind.

    Port names are ``(gadget, port)`` pairs as the body resolves them; the
    gadget part is also the third level of the circuit's output topics.
    """

    #: May a wire into this body subscribe a topic filter (``+``, ``#``)?  Not a
    #: radio node: everything the filter matched would go over the air.
    takes_filters: bool

    @property
    def definition(self) -> CircuitDef: ...

    def resolve_input(self, text: str) -> tuple[str, str]:
        """The input named by ``text``; CommandError naming what exists if none."""
        ...

    def resolve_output(self, text: str) -> tuple[str, str]: ...

    def output_ports(self) -> Mapping[str, Sequence[str]]:
        """Each gadget's output port names, in output-number order."""
        ...

    def input_ports(self) -> Mapping[str, Sequence[str]]:
        """Each gadget's input port names, in input-number order."""
        ...

    def wired_inside(self, gadget: str, index: int) -> bool:
        """True when something inside the circuit consumes that output."""
        ...

    def receive(
        self, gadget: str, port: str, payload: bytes, limit: int, policy: str
    ) -> Awaitable[None] | None:
        """A message from a wire; may raise :class:`codec.PayloadError`.

        Returns an awaitable only when the input cannot take it yet (its
        queue is full under the ``block`` policy).
        """
        ...

    def receive_value(
        self, gadget: str, port: str, value: Any, limit: int, policy: str
    ) -> Awaitable[None] | None:
        """A value already decoded (a device's message read by its wire's format); as
        :meth:`receive` otherwise."""
        ...

    def inject(self, gadget: str, port: str, value: Any) -> Any: ...

    def start(self) -> None: ...

    async def drain(self, timeout: float) -> None: ...

    async def stop(self) -> None: ...

    async def reload(self, definition: CircuitDef) -> Mapping[str, Any] | None:
        """Swap in a new definition; raises before anything changes.

        Returns what could not be finished in time (reported in the reply), if anything.
        """
        ...

    def counters(self) -> dict[str, int]:
        """The body's own counters, merged into the status (its keys win)."""
        ...

    def rate_basis(self) -> tuple[int, int]:
        """Running totals whose per-second change is the ``in`` and ``out`` rate."""
        ...

    def wire_fields(self, wire: Wire) -> dict[str, Any]:
        """How one wire is described in the status's ``inputs``."""
        ...

    def status_fields(self) -> dict[str, Any]:
        """Fields of the status map that only this kind of circuit has."""
        ...

    def definition_map(self) -> dict[str, Any]:
        """The definition as published and saved."""
        ...


class CircuitBoundary:
    """One hosted circuit as the rest of the system sees it (see the module doc).

    The container makes it with a function that builds the :class:`Body`
    given the boundary's :meth:`emit`, and calls the command methods one at
    a time; the body calls :meth:`emit` (or :meth:`publish_payload`) for
    every value it produces.
    """

    def __init__(
        self,
        kind: str,
        circuit_id: str,
        link: Link,
        make_body: Callable[[Callable[[str, int, Any], None]], Body],
        *,
        app: str = "",
        container: str = "",
        exports: Mapping[str, Any] | None = None,
        foreign: Mapping[str, Any] | None = None,
        replica: Replica | None = None,
    ) -> None:
        self.kind = kind
        self.id = circuit_id
        #: set when this circuit is one copy of a group's (docs/groups.md)
        self.replica = replica
        self.app = app
        self.container = container
        self.link = link
        self.body = make_body(self.emit)  # the body hands its outputs to emit()
        self.wires: dict[tuple[str, str], Wire] = {}  # (input, topic) -> wire
        self.exports = normalize_exports(exports or {})
        self.foreign = normalize_foreign(foreign or {})  # output -> devices' topics it writes
        self.taps: dict[str, float] = {}  # output -> monotonic expiry
        self.received = 0
        self.published = 0
        self.bad_payloads = 0
        self.discarded = 0  # held by a wire when it went away
        self._unwired: list[Wire] = []  # gone, but still handing over what they hold
        self.started_at = time.time()
        self.rates: dict[str, float] = {"in": 0.0, "out": 0.0}
        self._rate_base = (0, 0)
        self._topics: dict[str, list[str]] = {}
        self._publish: dict[str, list[bool]] = {}
        self._qos: dict[str, list[int]] = {}
        self._targets: dict[str, list[list[Target]]] = {}  # gadget -> per output: its targets
        #: (gadget, output index) whose values are state, published retained (set by
        #: the container: a web slider's or switch's, jet/web/retained.py)
        self.retained: set[tuple[str, int]] = set()
        self.refresh_outputs()

    @property
    def definition(self) -> CircuitDef:
        return self.body.definition

    # -- outputs -----------------------------------------------------------------------

    def refresh_outputs(self) -> None:
        """Decide, per output, whether emissions go to MQTT, on which topic, at which QoS."""
        now = time.monotonic()
        self.taps = {k: t for k, t in self.taps.items() if t > now}
        self._topics, self._publish, self._qos, self._targets = {}, {}, {}, {}
        for gadget, ports in self.body.output_ports().items():
            names = [f"{gadget}.{port}" for port in ports]
            if any(name in self.foreign for name in names):
                self._targets[gadget] = [self.foreign.get(name, []) for name in names]
            self._topics[gadget] = [
                address.output(self.kind, self.id, gadget, i) for i in range(len(ports))
            ]
            # (an output wired to a device's topic has its consumer: like one wired inside)
            self._publish[gadget] = [
                not (self.body.wired_inside(gadget, i) or name in self.foreign)
                or bool(self.exports.get(name))
                or name in self.taps
                for i, name in enumerate(names)
            ]
            # Published at the highest QoS any consumer's wire asks for.
            self._qos[gadget] = [
                max(self.exports.get(name, {}).values(), default=1) for name in names
            ]

    def emit(self, gadget: str, index: int, value: Any) -> None:
        """A value on output ``index`` of ``gadget``: written to the devices' topics it is
        wired to, and published on its own if the rule says so."""
        targets = self._targets.get(gadget)
        if targets is not None and targets[index]:
            self._write(targets[index], gadget, index, value)
        if not self._publish[gadget][index]:
            return
        try:
            payload = codec.encode(value)
        except codec.PayloadError as exc:
            log.error("%s.%s output %d: %s", self.id, gadget, index, exc)
            self.bad_payloads += 1
            return
        if self.link.publish_nowait(
            self._topics[gadget][index], payload, qos=self._qos[gadget][index],
            retain=(gadget, index) in self.retained,
        ):
            self.published += 1

    def _write(self, targets: list[Target], gadget: str, index: int, value: Any) -> None:
        for target in targets:
            try:
                payload = target.payload.encode(value)
            except FormatError as exc:
                self.bad_payloads += 1
                if target.trouble.starts():
                    log.warning("%s.%s output %d -> %s: %s (the value is not sent; logged once"
                                " per burst, counted in jet ls)", self.id, gadget, index,
                                target.topic, exc)
                continue
            if self.link.publish_nowait(target.topic, payload, qos=target.qos,
                                        retain=target.retain):
                self.published += 1

    def publish_payload(self, gadget: str, index: int, payload: bytes) -> None:
        """An output whose payload is already encoded (a radio node's own bytes).

        Every output of such a circuit is published: nothing inside it is
        visible to the boundary.
        """
        if self.link.publish_nowait(address.output(self.kind, self.id, gadget, index), payload,
                                    qos=1):
            self.published += 1

    def output_topic(self, gadget: str, port: str) -> str:
        return self._topics[gadget][list(self.body.output_ports()[gadget]).index(port)]

    def export(self, output: str, by: str, on: bool, qos: int = 1) -> None:
        key = "{}.{}".format(*self.body.resolve_output(output))
        holders = self.exports.setdefault(key, {})
        if on:
            holders[by] = qos
        else:
            holders.pop(by, None)
        self.refresh_outputs()

    def tap(self, output: str, ttl: float) -> None:
        key = "{}.{}".format(*self.body.resolve_output(output))
        if ttl > 0:
            self.taps[key] = time.monotonic() + ttl
            asyncio.get_running_loop().call_later(ttl, self.refresh_outputs)
        else:
            self.taps.pop(key, None)
        self.refresh_outputs()

    # -- inputs ------------------------------------------------------------------------

    async def wire(
        self,
        input_: str,
        topic: str,
        qos: int = 1,
        queue: int | None = None,
        policy: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Wire:
        """Subscribe ``topic`` for an input; the same wire again changes nothing.

        ``payload``: the topic is a device's, its messages read as it says
        (:class:`Format`'s map); from a filter, a gadget gets ``{"topic", "value"}``."""
        gadget, port = self.body.resolve_input(input_)
        if isinstance(qos, bool) or qos not in (0, 1, 2):
            raise CommandError(f"qos must be 0, 1 or 2, not {qos!r}")
        try:
            address.check(topic, filter_ok=self.body.takes_filters)
        except address.TopicError as exc:
            if not self.body.takes_filters and "wildcard" in str(exc):
                raise CommandError(
                    f"input {gadget}.{port} of {self.kind} circuit {self.id} takes one topic,"
                    f" not a filter: {exc}"
                ) from None
            raise CommandError(str(exc)) from None
        if policy is not None and policy not in POLICIES:
            raise CommandError(f"unknown queue policy {policy!r} (one of {', '.join(POLICIES)})")
        if queue is not None:
            try:
                queue_limit(queue)
            except ValueError as exc:
                raise CommandError(str(exc)) from None
        reads: Format | None = None
        if payload is not None:
            try:
                reads = Format.from_map(payload)
            except ValueError as exc:
                raise CommandError(f"wire from {topic}: {exc}") from None
        limit = queue or DEFAULT_LIMIT
        chosen = policy or EXTERNAL_POLICY
        existing = self.wires.get((f"{gadget}.{port}", topic))
        if existing is not None:
            if (existing.qos, existing.limit, existing.policy, existing.payload) == (
                qos, limit, chosen, reads
            ):
                return existing  # idempotent: the loader may repeat a wire after a timeout
            await self.unwire(f"{gadget}.{port}", topic)  # the same wire, made otherwise now
        receive, receive_value = self.body.receive, self.body.receive_value
        trouble = Burst()

        def on_message(msg_topic: str, payload: bytes) -> Awaitable[None] | None:
            self.received += 1
            try:
                return receive(gadget, port, payload, limit, chosen)
            except codec.PayloadError as exc:
                self.bad_payloads += 1
                log.warning("%s: %s (wire to %s.%s), message dropped", msg_topic, exc, gadget, port)
                return None

        def on_device_message(msg_topic: str, payload: bytes) -> Awaitable[None] | None:
            # A device's message, read as its wire says, handed on as a value.
            assert reads is not None
            self.received += 1
            try:
                value = reads.decode(payload)
                if wildcard:
                    value = {"topic": msg_topic, "value": value}
                return receive_value(gadget, port, value, limit, chosen)
            except (FormatError, codec.PayloadError) as exc:
                self.bad_payloads += 1
                if trouble.starts():
                    log.warning("%s: %s (wire to %s.%s of %s), message dropped; logged once per"
                                " burst, counted in jet ls", msg_topic, exc, gadget, port, self.id)
                return None

        wildcard = is_filter(topic)
        handler = on_message if reads is None else on_device_message
        split = self.replica.split if self.replica is not None else None
        if split is not None:
            # No shared subscriptions: every copy gets every message and handles its own.
            inner, circuit_id = handler, self.id

            def handler(msg_topic: str, payload: bytes) -> Awaitable[None] | None:
                assert split is not None
                if split.mine(circuit_id, msg_topic, payload, inner):
                    return inner(msg_topic, payload)
                return None

        # A group's copy takes its share of the topic: each message reaches one copy.
        sub = await self.link.subscribe(
            topic if self.replica is None or split is not None
            else self.replica.share(self.id, topic), qos, handler)
        wire = self.wires[(f"{gadget}.{port}", topic)] = Wire(
            gadget, port, topic, qos, limit, chosen, sub, reads, trouble
        )
        return wire

    async def unwire(self, input_: str | None, topic: str | None = None) -> int:
        """Remove the wires into an input (all inputs when None), from ``topic`` or all."""
        name = None if input_ is None else self._input_key(input_)
        doomed = [k for k in self.wires if name in (None, k[0]) and topic in (None, k[1])]
        for key in doomed:
            wire = self.wires.pop(key)
            await self.link.unsubscribe(wire.sub)
            if wire.sub.pending:  # what it holds still reaches the input (drain waits for it)
                self._unwired.append(wire)
        return len(doomed)

    def _input_key(self, text: str) -> str:
        try:
            return "{}.{}".format(*self.body.resolve_input(text))
        except CommandError:
            # An input a reload removed: its wires were pruned, unwiring is a no-op.
            return "{}.{}".format(*split_port(text))

    async def prune(self) -> list[Wire]:
        """Remove the wires into inputs the body no longer has (after a reload)."""
        gone: list[Wire] = []
        for key, wire in list(self.wires.items()):
            try:
                self.body.resolve_input(wire.input)
            except CommandError:
                gone.append(self.wires.pop(key))
                await self.link.unsubscribe(wire.sub)
                self._discard(wire.sub, f"its input {wire.input} is gone")
        return gone

    def _discard(self, sub: Subscription, why: str) -> None:
        count = self.link.discard_held(sub)
        if count:
            self.discarded += count
            log.warning("%s: %d messages held on %s dropped: %s", self.id, count, sub.topic, why)

    def inject(self, input_: str, value: Any) -> Any:
        return self.body.inject(*self.body.resolve_input(input_), value)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.body.start()

    async def drain(self, timeout: float) -> None:
        """Wait until what the wires hold and what the body has queued is handled;
        CommandError naming what is left after ``timeout`` seconds."""
        started = time.monotonic()
        wires = self._holding()
        if not await self.link.released([w.sub for w in wires], timeout):
            held = sum(w.sub.pending for w in wires)
            inputs = ", ".join(sorted({w.input for w in wires if w.sub.pending}))
            raise CommandError(
                f"{self.id}: not drained after {timeout:g} s ({held} messages still wait for"
                f" room in the queue of {inputs})"
            )
        # (a floor: asyncio.wait_for with no time left refuses even an idle body)
        await self.body.drain(max(0.05, timeout - (time.monotonic() - started)))

    def _holding(self) -> list[Wire]:
        """The wires, and the unwired ones still handing over what they hold."""
        self._unwired = [w for w in self._unwired if w.sub.pending]
        return [*self.wires.values(), *self._unwired]

    async def reload(
        self,
        definition: CircuitDef,
        exports: Mapping[str, Any],
        foreign: Mapping[str, Any] | None = None,
    ) -> tuple[list[Wire], Mapping[str, Any] | None]:
        """Swap in a new definition; wires into inputs that remain keep their subscription.

        Everything that can be refused is checked before anything changes.
        Returns the wires pruned because their input is gone, and what the
        body could not finish in time (None: everything).
        """
        new_exports = normalize_exports(exports)
        new_foreign = normalize_foreign(foreign or {})
        unfinished = await self.body.reload(definition)
        self.exports = new_exports
        self.foreign = new_foreign
        self.refresh_outputs()
        return await self.prune(), unfinished

    async def stop(self) -> None:
        for wire in self.wires.values():
            await self.link.unsubscribe(wire.sub)
            self._discard(wire.sub, "the circuit stopped")
        for wire in self._unwired:
            self._discard(wire.sub, "the circuit stopped")
        self._unwired = []
        self.wires.clear()
        await self.body.stop()

    # -- what `jet ls` sees ------------------------------------------------------------

    def measure_rates(self, interval: float) -> None:
        """Messages per second in and out since the last call (see :meth:`Body.rate_basis`)."""
        now = self.body.rate_basis()
        self.rates = {
            "in": round((now[0] - self._rate_base[0]) / interval, 2),
            "out": round((now[1] - self._rate_base[1]) / interval, 2),
        }
        self._rate_base = now

    def status(self, *, definition: bool = True) -> dict[str, Any]:
        """The status map; ``definition`` adds the definition (sent when it changed)."""
        inputs: dict[str, list[dict[str, Any]]] = {}
        for (port, _topic), wire in sorted(self.wires.items()):
            inputs.setdefault(port, []).append({**self.body.wire_fields(wire), **wire.fields()})
        now = time.monotonic()
        counters: dict[str, int] = {
            "received": self.received,
            "published": self.published,
            "errors": 0,
            **self.body.counters(),
        }
        counters["errors"] += self.bad_payloads
        # Messages a wire holds for a full queue wait in this circuit too; those
        # it refused or dropped are this circuit's drops.
        subs = [w.sub for w in self._holding()]
        counters["queued"] = counters.get("queued", 0) + sum(s.pending for s in subs)
        counters["dropped"] = (
            counters.get("dropped", 0) + sum(s.refused for s in subs) + self.discarded
        )
        status: dict[str, Any] = {
            "state": "online",
            "type": self.kind,
            "id": self.id,
            "app": self.app,
            "container": self.container,
            "since": self.started_at,
            "inputs": inputs,
            "exports": {k: sorted(v) for k, v in self.exports.items() if v},
            "foreign": {
                k: [{**t.to_map(), "unwritable": t.trouble.count} for t in v]
                for k, v in self.foreign.items()
            },
            "taps": sorted(k for k, t in self.taps.items() if t > now),
            "rates": self.rates,
            "counters": counters,
            "ports": self.port_names(),
            **self.body.status_fields(),
            **(self.replica.fields() if self.replica is not None else {}),
        }
        if definition:
            status["definition"] = self.body.definition_map()
        return status

    def port_names(self) -> dict[str, list[list[str]]]:
        """Each gadget's ``[inputs, outputs]``, by its name in topics: whoever reads the
        status can name the ports without importing the gadget classes (``jet tap``)."""
        inputs, outputs = self.body.input_ports(), self.body.output_ports()
        return {
            str(gadget): [list(inputs.get(gadget, ())), list(outputs.get(gadget, ()))]
            for gadget in dict.fromkeys([*inputs, *outputs])
        }

    def saved(self) -> dict[str, Any]:
        """What a state file keeps of this circuit to build it again."""
        return {
            "app": self.app,
            "definition": self.body.definition_map(),
            "exports": {k: dict(v) for k, v in self.exports.items()},
            "foreign": {k: [t.to_map() for t in v] for k, v in self.foreign.items()},
            "wires": [
                [w.input, w.topic, w.qos, w.limit, w.policy]
                + ([w.payload.to_map()] if w.payload is not None else [])
                for w in self.wires.values()
            ],
        }


def definition_map(definition: CircuitDef) -> dict[str, Any]:
    """A definition in the form sent in commands and kept in statuses."""
    return circuit_to_msgpack(definition)
