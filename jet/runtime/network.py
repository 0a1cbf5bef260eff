"""The in-process graph of one circuit: gadgets joined by direct calls.

A :class:`Network` builds the gadgets of a :class:`~jet.definition.model.CircuitDef`,
binds each gadget's emitter to the handlers its outputs are wired to, and
runs the gadgets' ``run()`` tasks.  Sync handlers are called directly (the
hot path: no queue, no task); async handlers get a bounded inbox worked by
one task per gadget, so each gadget sees its messages one at a time and in
order.  A full inbox refuses the message and counts it.

Gadget code is the one place where anything may be raised: whatever a
handler or ``run()`` raises, ``SystemExit`` and ``KeyboardInterrupt``
included, loses that one message (or that one ``run()``), is counted in the
gadget's errors and logged (the first time with the gadget's own frames,
then one line every 1000th), and the circuit goes on.  When a gadget holds
the event loop, :func:`running_gadget` names it from the stack.

Every emission also goes to ``on_emit(gadget, output_index, value)``, which
the owner (a running circuit, or a sub-circuit gadget) uses to publish.

A gadget whose type names one of the circuit's ``subcircuits`` is a
:class:`SubcircuitGadget`, which runs that sub-circuit in a network of its
own.  The two are defined in this one module because each builds the other.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable, Coroutine, Iterable, Mapping
from types import FrameType, TracebackType
from typing import Any

import attrs

from jet.definition.model import CircuitDef, GadgetDef
from jet.runtime.gadget import Gadget, GadgetError, input_names, instantiate, is_async, output_names
from jet.runtime.inbox import DEFAULT_LIMIT, Inbox, Item
from jet.runtime.registry import Registry, UnknownGadgetType
from jet.tasks import cancel_all, worth_logging

log = logging.getLogger("jet.network")

INTERNAL_POLICY = "drop-oldest"  # a synchronous emit cannot wait for room
EXTERNAL_POLICY = "block"  # an MQTT wire can: the broker holds what we do not take

OnEmit = Callable[[str, int, Any], None]

#: How long a stopped gadget's tasks get to end once cancelled; one that
#: swallows its cancellation is left behind (logged) so a stop cannot hang.
STOP_TIMEOUT = 1.0

#: Frames shown with a gadget's first error, at most (its own, innermost last).
ERROR_FRAMES = 8


def _cancelled() -> bool:
    """True in a task that has been asked to stop (as opposed to a gadget
    raising ``CancelledError`` of its own accord)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _gadget_frames(tb: TracebackType | None) -> str:
    """The frames of a gadget's error below the network's call into it, as
    ``File …, line …`` lines (no Python traceback header: this is the gadget's
    story, not a crash of the pack)."""
    frames = [f for f in traceback.extract_tb(tb) if f.filename != __file__]
    return "".join(traceback.format_list(frames[-ERROR_FRAMES:])).rstrip()


class BuildError(ValueError):
    """A circuit definition cannot be built in this container (one line)."""


@attrs.define(eq=False)
class Counters:
    delivered: int = 0
    emitted: int = 0
    errors: int = 0
    dropped: int = 0


@attrs.frozen
class Target:
    """One internal wire's far end, with its queue bound and policy."""

    slot: Slot
    port: str
    limit: int = DEFAULT_LIMIT
    policy: str = INTERNAL_POLICY


@attrs.define(eq=False)
class Slot:
    """One gadget in place: its instance, where its outputs go, its inbox."""

    name: str
    definition: GadgetDef
    gadget: Gadget
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    # targets[i]: where output i goes inside the circuit
    targets: list[list[Target]] = attrs.field(factory=list)
    handlers: dict[str, Callable[[Any], Any]] = attrs.field(factory=dict)
    inbox: Inbox | None = None
    tasks: list[asyncio.Task[None]] = attrs.field(factory=list)
    errors: int = 0  # raised by this gadget's handlers or run(), for rate-limited logging


class Network:
    def __init__(
        self,
        definition: CircuitDef,
        registry: Registry,
        on_emit: OnEmit,
        *,
        label: str,
        reuse: Mapping[str, Slot] | None = None,
        counters: Counters | None = None,
    ) -> None:
        """Build every gadget; raises BuildError before anything runs.

        ``reuse`` holds slots of a previous network (reload): a gadget whose
        definition is unchanged keeps its instance, state and running task.
        ``counters``: the previous network's, to count on from (a reload).
        """
        self.definition = definition
        self.label = label
        self.counters = counters if counters is not None else Counters()
        self._on_emit = on_emit
        self._running = False
        self.slots: dict[str, Slot] = {}
        self.kept: set[str] = set()
        for gdef in definition.gadgets:
            old = (reuse or {}).get(gdef.name)
            if old is not None and old.definition == gdef:
                self.slots[gdef.name] = old
                self.kept.add(gdef.name)
            else:
                self.slots[gdef.name] = self._build(gdef, definition, registry)
        # Targets are computed aside and installed by activate(): kept slots
        # still serve the old network until the swap.
        self._targets: dict[str, list[list[Target]]] = {
            name: [[] for _ in s.outputs] for name, s in self.slots.items()
        }
        for wire in definition.wires:
            src = self._slot(wire.src.gadget, f"wire {wire}")
            dst = self._slot(wire.dst.gadget, f"wire {wire}")
            if wire.src.port not in src.outputs:
                raise BuildError(f"{label}: wire {wire}: no output {wire.src.port!r}")
            if wire.dst.port not in dst.inputs:
                raise BuildError(f"{label}: wire {wire}: no input {wire.dst.port!r}")
            if wire.policy == "block":
                raise BuildError(
                    f"{label}: wire {wire}: policy 'block' needs a wire between circuits"
                    " (a gadget's emit cannot wait)"
                )
            target = Target(
                dst, wire.dst.port, wire.queue or DEFAULT_LIMIT, wire.policy or INTERNAL_POLICY
            )
            self._targets[src.name][src.outputs.index(wire.src.port)].append(target)

    def activate(self) -> None:
        """Point every gadget's outputs at this network's wiring."""
        for name, slot in self.slots.items():
            slot.targets = self._targets[name]
            slot.gadget.bind(self._emitter(slot))

    def _slot(self, name: str, where: str) -> Slot:
        slot = self.slots.get(name)
        if slot is None:
            raise BuildError(f"{self.label}: {where}: no gadget {name!r}")
        return slot

    def _build(self, gdef: GadgetDef, circuit: CircuitDef, registry: Registry) -> Slot:
        where = f"{self.label}.{gdef.name}"
        if gdef.type is None:
            raise BuildError(f"{where}: no gadget type")
        try:
            sub = circuit.subcircuits.get(gdef.type)
            if sub is not None:
                cls: type[Gadget] = subcircuit_gadget_class(sub, registry, label=where)
            else:
                cls = registry.resolve(gdef.type)
            gadget = instantiate(cls, gdef.params)
        except (UnknownGadgetType, GadgetError, BuildError) as exc:
            raise BuildError(f"{where}: {exc}") from None
        ins, outs = input_names(cls), output_names(cls)
        slot = Slot(gdef.name, gdef, gadget, ins, outs)
        for port in ins:
            try:
                slot.handlers[port] = gadget.handler(port)
            except GadgetError as exc:
                raise BuildError(f"{where}: {exc}") from None
        methods = [
            getattr(gadget, f"on_{p}", None) or getattr(gadget, "on_message", None) for p in ins
        ]
        if any(m is not None and is_async(m) for m in methods):
            slot.inbox = Inbox()
        return slot

    def _emitter(self, slot: Slot) -> Callable[[int, Any], None]:
        targets = slot.targets
        name = slot.name
        on_emit = self._on_emit
        counters = self.counters

        def emit(index: int, value: Any) -> None:
            counters.emitted += 1
            for t in targets[index]:
                self.deliver(t.slot, t.port, value, t.limit, t.policy)
            on_emit(name, index, value)

        return emit

    # -- delivery ------------------------------------------------------------------

    def deliver_to(
        self,
        gadget: str,
        port: str,
        value: Any,
        limit: int = DEFAULT_LIMIT,
        policy: str = EXTERNAL_POLICY,
    ) -> Coroutine[Any, Any, None] | None:
        """Deliver a value arriving from outside (a wire, an injection).

        Returns an awaitable only when the input's queue is full and the
        policy is ``block``: the caller waits on it before taking more (it
        raises :class:`~jet.runtime.inbox.InboxClosed` if the gadget is
        replaced meanwhile).
        """
        slot = self.slots.get(gadget)
        if slot is None or port not in slot.handlers:
            self.counters.errors += 1
            log.warning("%s: no input %s.%s; value dropped", self.label, gadget, port)
            return None
        return self.deliver(slot, port, value, limit, policy)

    def deliver(
        self,
        slot: Slot,
        port: str,
        value: Any,
        limit: int = DEFAULT_LIMIT,
        policy: str = INTERNAL_POLICY,
    ) -> Coroutine[Any, Any, None] | None:
        self.counters.delivered += 1
        if slot.inbox is None:
            try:
                slot.handlers[port](value)
            except BaseException as exc:  # gadget code: even SystemExit is its fault
                self._handler_failed(slot, port, exc)
            return None
        try:
            dropped = slot.inbox.put_nowait((port, value), limit, policy)
        except asyncio.QueueFull:
            return slot.inbox.put((port, value), limit)
        if dropped:
            self._count_drop(slot, policy, limit)
        return None

    def _count_drop(self, slot: Slot, policy: str, limit: int) -> None:
        self.counters.dropped += 1
        dropped = self.counters.dropped
        if worth_logging(dropped):
            log.warning(
                "%s.%s: queue full (%d, %s): %d messages dropped so far",
                self.label, slot.name, limit, policy, dropped,
            )

    def _handler_failed(self, slot: Slot, port: str, exc: BaseException) -> None:
        # A faulty gadget loses that one message; the circuit keeps running.
        # Its first error shows where in the gadget it happened; after that,
        # a gadget failing on every message must not flood the log.
        self.counters.errors += 1
        slot.errors += 1
        where = f"{self.label}.{slot.name}.{port}"
        what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        lost = "run() ended" if port == "run()" else "message lost"
        if slot.errors == 1:
            log.error(
                "%s: %s (%s; further errors of this gadget are counted, one line every 1000th)"
                "\n%s", where, what, lost, _gadget_frames(exc.__traceback__),
            )
        elif worth_logging(slot.errors):
            log.error("%s: %d errors so far; the last: %s (%s)", where, slot.errors, what, lost)

    async def _work_inbox(self, slot: Slot) -> None:
        assert slot.inbox is not None
        while not _cancelled():
            port, value = await slot.inbox.get()
            try:
                result = slot.handlers[port](value)
                if asyncio.iscoroutine(result):
                    await result
            except BaseException as exc:  # gadget code: even SystemExit is its fault
                if _cancelled():
                    raise asyncio.CancelledError from None  # we are being stopped
                self._handler_failed(slot, port, exc)
            finally:
                slot.inbox.done()

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        for slot in self.slots.values():
            if slot.tasks:
                continue  # kept across a reload: already running
            if slot.inbox is not None:
                slot.tasks.append(asyncio.create_task(self._work_inbox(slot)))
            run = getattr(slot.gadget, "run", None)
            if callable(run):
                slot.tasks.append(asyncio.create_task(self._run_gadget(slot, run)))

    async def _run_gadget(self, slot: Slot, run: Callable[[], Any]) -> None:
        try:
            await run()
        except BaseException as exc:  # gadget code: even SystemExit is its fault
            if _cancelled():
                raise asyncio.CancelledError from None  # we are being stopped
            self._handler_failed(slot, "run()", exc)

    async def drain(self, slots: Iterable[Slot] | None = None) -> None:
        """Wait until every inbox (of ``slots``, default all) is empty and its
        last message handled.  Unbounded: callers bound it with a timeout."""
        for slot in self.slots.values() if slots is None else slots:
            if slot.inbox is not None and slot.tasks:
                await slot.inbox.join()

    def unfinished(self, slots: Iterable[Slot] | None = None) -> dict[str, str]:
        """What each gadget (of ``slots``, default all) has not finished, in words."""
        found: dict[str, str] = {}
        for slot in self.slots.values() if slots is None else slots:
            inbox = slot.inbox
            if inbox is not None and (len(inbox) or inbox.busy):
                busy = "busy on a message, " if inbox.busy else ""
                found[slot.name] = f"{busy}{len(inbox)} queued"
        return found

    def close_inboxes(self, slots: Iterable[Slot]) -> dict[str, tuple[list[Item], bool]]:
        """Close the inboxes of ``slots`` (being replaced): by gadget, what was
        still queued and whether the gadget was busy on a message."""
        left: dict[str, tuple[list[Item], bool]] = {}
        for slot in slots:
            if slot.inbox is not None:
                busy = slot.inbox.busy
                items = slot.inbox.close()
                if items or busy:
                    left[slot.name] = (items, busy)
        return left

    def adopt(self, left: Mapping[str, tuple[list[Item], bool]]) -> dict[str, dict[str, int]]:
        """Deliver what replaced gadgets left queued to their namesakes in this
        network, in order; returns, by gadget, how many were ``moved`` and ``lost``."""
        report: dict[str, dict[str, int]] = {}
        for name, (items, busy) in left.items():
            slot = self.slots.get(name)
            moved = 0
            for port, value in items:
                if slot is not None and port in slot.handlers:
                    # A fresh inbox: it takes them all, whatever its usual bound.
                    self.deliver(slot, port, value, limit=len(items) + DEFAULT_LIMIT)
                    moved += 1
            lost = len(items) - moved + int(busy)
            self.counters.dropped += lost
            report[name] = {"moved": moved, "lost": lost}
        return report

    async def stop(self, keep: set[str] | frozenset[str] = frozenset()) -> None:
        """Cancel gadget tasks, except those of gadgets named in ``keep``.

        Bounded: a gadget whose task does not end within :data:`STOP_TIMEOUT`
        of its cancellation is left behind and logged.
        """
        self._running = False
        stopping = [s for s in self.slots.values() if s.name not in keep]
        for slot in stopping:
            if slot.inbox is not None:
                slot.inbox.close()  # a sender waiting for room must not wait forever
        tasks = [t for s in stopping for t in s.tasks]
        left = await cancel_all(tasks, timeout=STOP_TIMEOUT)
        for slot in stopping:
            if any(t in left for t in slot.tasks):
                log.error(
                    "%s.%s: still running %.0f s after being stopped (it ignores"
                    " cancellation); left behind", self.label, slot.name, STOP_TIMEOUT,
                )
            slot.tasks.clear()

    def queued(self) -> int:
        return sum(len(s.inbox) for s in self.slots.values() if s.inbox is not None)

    def wired_inside(self, gadget: str, index: int) -> bool:
        """True when output ``index`` of ``gadget`` feeds a wire inside this circuit."""
        return bool(self._targets[gadget][index])


# -- sub-circuits ----------------------------------------------------------------------------


class SubcircuitGadget(Gadget):
    """A sub-circuit used as a gadget; :func:`subcircuit_gadget_class` makes one class per use.

    Its inputs and outputs are the sub-circuit's ``inputs``/``outputs``;
    inside, a :class:`Network` runs the sub-circuit.  The inner wires stay
    in-process and are not published: only values reaching one of the
    sub-circuit's outputs leave it, as this gadget's emissions.
    """

    definition: CircuitDef
    registry: Registry
    label: str

    def __init__(self) -> None:
        out_index = {
            (ref.gadget, ref.port): i for i, ref in enumerate(self.definition.outputs.values())
        }
        inner = self.definition

        def forward(gadget: str, index: int, value: Any) -> None:
            slot = self.network.slots[gadget]
            i = out_index.get((gadget, slot.outputs[index]))
            if i is not None:
                self.emit(i, value)

        self.network = Network(inner, self.registry, forward, label=self.label)
        self.network.activate()
        self._routes = dict(inner.inputs)

    def on_message(self, port: str, value: Any) -> None:
        ref = self._routes[port]
        # A gadget's input cannot wait: a full inner queue drops (and counts) like
        # any wire inside a circuit.
        self.network.deliver_to(ref.gadget, ref.port, value, policy=INTERNAL_POLICY)

    async def run(self) -> None:
        self.network.start()
        try:
            await asyncio.Event().wait()  # lives as long as the enclosing circuit
        finally:
            await self.network.stop()


def subcircuit_gadget_class(
    definition: CircuitDef, registry: Registry, *, label: str
) -> type[Gadget]:
    """The gadget class for one use of sub-circuit ``definition`` (``label`` names it in logs)."""
    body = {
        "inputs": tuple(definition.inputs),
        "outputs": tuple(definition.outputs),
        "definition": definition,
        "registry": registry,
        "label": label,
    }
    return type(f"Subcircuit_{definition.name}", (SubcircuitGadget,), body)


# -- naming what holds the event loop ----------------------------------------------------------

_CALLS_INTO_GADGETS = {
    Network.deliver.__code__: "input",
    Network._work_inbox.__code__: "input",
    Network._run_gadget.__code__: "run",
}


def running_gadget(frame: FrameType | None) -> str | None:
    """The gadget running in ``frame`` or a caller of it (the innermost one), in
    words: ``circuit.gadget (type) on input port`` or ``… in run()``; None when no
    gadget is being called.  For the event-loop watchdog, from its thread."""
    while frame is not None:
        kind = _CALLS_INTO_GADGETS.get(frame.f_code)
        if kind is not None:
            found = frame.f_locals
            network, slot = found.get("self"), found.get("slot")
            if isinstance(network, Network) and isinstance(slot, Slot):
                what = "in run()" if kind == "run" else f"on input {found.get('port')}"
                return f"{network.label}.{slot.name} ({slot.definition.type}) {what}"
        frame = frame.f_back
    return None
