"""The statuses containers publish, read back: the one place a status from the broker is checked.

A container publishes, retained, its own status on ``jet/<kind>/<id>/status``, each circuit's
status on ``<kind>/<circuit>/status`` and each circuit's definition on
``<kind>/<circuit>/definition`` (:mod:`jet.containers.base`, :mod:`jet.containers.boundary`).
Anyone on the broker may publish on those topics too, so every reader of them (``jet ls``,
``jet tap``, ``jet inject``, ``jet unload``, the loader, the operator view) goes through
:class:`Statuses`: a message that is not what a container writes (not msgpack, not a map, a
field of the wrong type) is skipped with one warning line naming its topic, and never reaches
code that trusts its shape.  What is kept is typed: :class:`ContainerStatus`,
:class:`CircuitStatus` (with its wires as :class:`WireStatus`), and :class:`Circuit`, a
running circuit as status and definition together describe it.

A circuit's port names come from its status (``ports``, published by its container, which
imported the gadget classes), so a reader needs none of a user's gadget modules; for a
status without them (an older container) they come from the definition, when this process
can resolve the gadget types.

Lifecycle: a :class:`Statuses` is plain data with no I/O; it is fed one message at a time
(:meth:`Statuses.update` with the raw payload, the operator view's way) or filled by one
retained read (:meth:`Statuses.read`, the CLI's and the loader's way).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from jet import address
from jet.address import CircuitAddress, UnknownPort
from jet.containers.conf import wire_command
from jet.definition.model import CircuitDef, GadgetDef, circuit_from_msgpack
from jet.definition.ports import ports_of
from jet.runtime.registry import Registry
from jet.transport import codec
from jet.transport.client import Session

__all__ = [
    "BadStatus",
    "Circuit",
    "CircuitStatus",
    "ContainerStatus",
    "GadgetPorts",
    "Statuses",
    "WireStatus",
]

log = logging.getLogger("jet.status")


class BadStatus(ValueError):
    """A retained status or definition that is not what a container publishes."""


# -- checking fields ------------------------------------------------------------------------

Check = Callable[[Any], str | None]  # why the value is wrong, None when it is fine


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) else "expected text"


def _count(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    return None if ok else "expected a whole number"


def _number(value: Any) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return None if ok else "expected a finite number"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "expected true or false"


def _list_of(item: Check) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return "expected a list"
        for i, entry in enumerate(value):
            why = item(entry)
            if why is not None:
                return f"[{i}]: {why}"
        return None

    return check


def _map_of(item: Check) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return "expected a map"
        for key, entry in value.items():
            if not isinstance(key, str):
                return f"key {key!r}: expected text"
            why = item(entry)
            if why is not None:
                return f"{key!r}: {why}"
        return None

    return check


def _fields(table: Mapping[str, Check], required: Sequence[str] = ()) -> Check:
    """A map whose listed fields have the listed shapes (other fields are let be)."""

    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"expected a map, got {_kind(value)}"
        for key in required:
            if key not in value:
                return f"no {key!r}"
        for key, field_check in table.items():
            if key in value:
                why = field_check(value[key])
                if why is not None:
                    return f"{key}: {why}"
        return None

    return check


def _qos(value: Any) -> str | None:
    return _count(value) or (None if value in (0, 1, 2) else "expected 0, 1 or 2")


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _map(value: Any) -> str | None:
    return None if isinstance(value, dict) else f"expected a map, got {_kind(value)}"


_WIRE = _fields(
    {"topic": _text, "qos": _qos, "queue": _count, "policy": _text, "name": _text,
     "payload": _map, "undecodable": _count},
    required=("topic",),
)
_PORT_NAMES = _list_of(_text)


def _port_pair(value: Any) -> str | None:
    if not isinstance(value, list) or len(value) != 2:
        return "expected [inputs, outputs]"
    return _PORT_NAMES(value[0]) or _PORT_NAMES(value[1])


_CONTAINER = _fields(
    {
        "state": _text, "type": _text, "id": _text, "circuits": _list_of(_text), "pid": _count,
        "host": _text, "url": _text, "pages": _count, "conf_errors": _count,
        "outbox_dropped": _count, "since": _number,
    },
    required=("state",),
)
_CIRCUIT = _fields(
    {
        "state": _text, "type": _text, "id": _text, "app": _text, "container": _text,
        "since": _number, "inputs": _map_of(_list_of(_WIRE)),
        "exports": _map_of(_list_of(_text)), "taps": _list_of(_text),
        "rates": _map_of(_number), "counters": _map_of(_count), "started": _flag,
        "ports": _map_of(_port_pair),
    },
    required=("state",),
)


def why_not_status(role: str, value: Any) -> str | None:
    """Why ``value`` is not what a container publishes on a topic of ``role``
    (``"container_status"`` or ``"status"``); None when it is."""
    if role == "container_status":
        return _CONTAINER(value)
    return _CIRCUIT(value)


def _definition(raw: Any) -> CircuitDef:
    """A definition as a container publishes it; :class:`BadStatus` says why not."""
    if not isinstance(raw, dict):
        raise BadStatus(f"definition: expected a map, got {_kind(raw)}")
    try:
        return circuit_from_msgpack(raw)
    except _BAD_DEFINITION as exc:
        raise BadStatus(f"not a circuit definition: {exc}") from None


#: What decoding a definition of the wrong shape may raise.
_BAD_DEFINITION = (KeyError, ValueError, TypeError, AttributeError, OverflowError, RecursionError)


# -- what is kept ---------------------------------------------------------------------------


@attrs.frozen
class ContainerStatus:
    """A container's status (checked): ``name`` is ``jet/<kind>/<id>``; ``fields`` the map."""

    name: str
    fields: Mapping[str, Any]

    @property
    def state(self) -> str:
        return str(self.fields["state"])

    @property
    def circuits(self) -> Sequence[str]:
        return tuple(self.fields.get("circuits") or ())

    @property
    def pid(self) -> int | None:
        pid = self.fields.get("pid")
        return pid if isinstance(pid, int) else None

    @property
    def outbox_dropped(self) -> int:
        return int(self.fields.get("outbox_dropped") or 0)


@attrs.frozen
class WireStatus:
    """One wire into a circuit as its status lists it (what a ``wire`` command would need)."""

    topic: str
    qos: int = 1
    queue: int | None = None
    policy: str | None = None
    #: a device's topic: how its messages read (jet.transport.formats.Format's map)
    payload: Mapping[str, Any] | None = None
    #: a device's messages it could not read
    undecodable: int = 0

    def command(self, input_: str) -> dict[str, Any]:
        """The ``wire`` command that makes this wire again."""
        return wire_command(input_, self.topic, self.qos, queue=self.queue, policy=self.policy,
                            payload=self.payload)


@attrs.frozen
class CircuitStatus:
    """A circuit's status (checked).  ``ports``: gadget (as topics name it) -> its
    (inputs, outputs), when its container published them; ``fields``: the whole map."""

    state: str
    app: str
    container: str
    inputs: Mapping[str, tuple[WireStatus, ...]]
    rates: Mapping[str, float]
    counters: Mapping[str, int]
    ports: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] | None
    fields: Mapping[str, Any]

    @classmethod
    def parse(cls, value: Any) -> CircuitStatus:
        """A status map as a container writes it; :class:`BadStatus` says why not."""
        why = _CIRCUIT(value)
        if why is not None:
            raise BadStatus(why)
        inputs = {
            port: tuple(
                WireStatus(w["topic"], w.get("qos", 1), w.get("queue"), w.get("policy"),
                           w.get("payload"), w.get("undecodable", 0))
                for w in wires
            )
            for port, wires in (value.get("inputs") or {}).items()
        }
        raw_ports = value.get("ports")
        ports = None if raw_ports is None else {
            gadget: (tuple(pair[0]), tuple(pair[1])) for gadget, pair in raw_ports.items()
        }
        return cls(
            state=value["state"], app=value.get("app", ""), container=value.get("container", ""),
            inputs=inputs, rates=value.get("rates") or {}, counters=value.get("counters") or {},
            ports=ports, fields=value,
        )


@attrs.frozen
class GadgetPorts:
    """A gadget's port names; ``known`` is False when they are only guessed from the
    circuit's wires (no ports in the status, and a type this process cannot resolve)."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    known: bool = True


@attrs.frozen
class Circuit:
    """A running circuit as its retained status and definition describe it
    (an :class:`address.Running`: ``circuit.gadget.port`` names resolve against it)."""

    address: CircuitAddress
    status: CircuitStatus
    definition: CircuitDef
    ports: Mapping[str, GadgetPorts]  # by gadget name

    @property
    def key(self) -> str:
        return str(self.address)  # "<kind>/<circuit_id>"

    @property
    def kind(self) -> str:
        return self.address.kind

    @property
    def id(self) -> str:
        return self.address.id

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def gadgets(self) -> Sequence[GadgetDef]:
        return self.definition.gadgets

    def port_names(self, gadget: str, output: bool) -> Sequence[str]:
        """The gadget's inputs (or outputs) in order; :class:`UnknownPort` when they are
        not known for sure (a wrong guess would name the wrong topic)."""
        found = self.ports.get(gadget)
        if found is None or not found.known:
            raise UnknownPort(
                f"{self.name}.{gadget}: its ports are unknown here (its status names none"
                " and this process cannot resolve its type)"
            )
        return found.outputs if output else found.inputs

    def drawn_ports(self, gadget: str) -> GadgetPorts:
        """The gadget's ports as far as they are known (guessed ones included): for drawing."""
        return self.ports.get(gadget) or GadgetPorts((), (), known=False)

    def gadget_id(self, gadget: GadgetDef) -> str | int:
        """The gadget's name in topics: its name, or its number on a node."""
        return address.gadget_id(self.kind, self.gadgets, gadget)

    def by_gadget_id(self, gid: str) -> GadgetDef | None:
        for gadget in self.definition.gadgets:
            if str(self.gadget_id(gadget)) == gid:
                return gadget
        return None


def _ports_from_definition(
    definition: CircuitDef, registry: Registry
) -> dict[str, GadgetPorts]:
    """Each gadget's ports as this process can tell from the definition alone."""
    found = {}
    for gadget in definition.gadgets:
        try:
            ports = ports_of(gadget, definition, registry)
            found[gadget.name] = GadgetPorts(ports.inputs, ports.outputs)
        except (LookupError, ImportError, TypeError, ValueError, AttributeError):
            # A type this process may not import (a user's module, another pack's
            # allow list): the ports its wires name are still worth drawing.
            ins = [w.dst.port for w in definition.wires if w.dst.gadget == gadget.name]
            outs = [w.src.port for w in definition.wires if w.src.gadget == gadget.name]
            found[gadget.name] = GadgetPorts(
                tuple(dict.fromkeys(ins)), tuple(dict.fromkeys(outs)), known=False
            )
    return found


class Statuses:
    """Every container and circuit status (and circuit definition) read from the broker,
    checked; see the module doc.

    ``containers`` by ``jet/<kind>/<id>``, ``circuits`` by ``<kind>/<circuit id>``;
    ``invalid``: topic -> why, for each message skipped (warned about once while it stays
    invalid).  ``registry`` resolves gadget types for statuses that carry no ports.
    """

    def __init__(
        self, registry: Registry | None = None, *, warn: Callable[[str], None] | None = None
    ) -> None:
        self.registry = registry or Registry()
        self.containers: dict[str, ContainerStatus] = {}
        self.circuits: dict[str, Circuit] = {}
        self.invalid: dict[str, str] = {}
        self._warn = warn or log.warning
        self._statuses: dict[str, CircuitStatus] = {}
        self._definitions: dict[str, tuple[CircuitDef, dict[str, GadgetPorts]]] = {}

    #: What :meth:`read` reads.
    FILTERS = (
        address.ALL_CONTAINER_STATUS, address.ALL_CIRCUIT_DEFINITIONS, address.ALL_CIRCUIT_STATUS,
    )

    @classmethod
    async def read(cls, session: Session, registry: Registry | None = None, *,
                   limit: float = 3.0) -> Statuses:
        """Everything retained now, in one read (a CLI command's or the loader's view),
        taking at most ``limit`` seconds (thousands of circuits may need more than 3)."""
        return cls.of(await session.retained(*cls.FILTERS, limit=limit), registry)

    @classmethod
    def of(cls, found: Mapping[str, Any], registry: Registry | None = None) -> Statuses:
        """What one read of retained messages (``Session.retained``, under at least
        :data:`FILTERS`) says; messages of other topics are left alone."""
        statuses = cls(registry)
        for topic, value in sorted(found.items()):
            # (Session.retained gives None for a payload it could not decode.)
            statuses.take(topic, value, unreadable=value is None)
        return statuses

    # -- feeding ---------------------------------------------------------------------------

    def update(self, topic: str, payload: bytes) -> bool:
        """Take one raw retained message (empty: deleted); True when what is known changed."""
        if not payload:
            self.invalid.pop(topic, None)
            return self._forget(topic)
        try:
            value = codec.decode(payload)
        except codec.PayloadError as exc:
            return self._refuse(topic, str(exc))
        return self.take(topic, value)

    def take(self, topic: str, value: Any, *, unreadable: bool = False) -> bool:
        """Take one decoded retained message; True when what is known changed."""
        parsed = address.parse(topic)
        if parsed is None or parsed.role not in ("status", "container_status", "definition"):
            return False
        if unreadable:
            return self._refuse(topic, "not msgpack")
        place = CircuitAddress(parsed.kind, parsed.id)
        try:
            if parsed.role == "container_status":
                why = why_not_status(parsed.role, value)
                if why is not None:
                    raise BadStatus(why)
                self.containers[parsed.owner] = ContainerStatus(parsed.owner, value)
            elif parsed.role == "definition":
                self._definitions[str(place)] = self._resolved(_definition(value))
            else:
                status = CircuitStatus.parse(value)
                # The status that follows a load or reload also carries the definition.
                if "definition" in value:
                    self._definitions[str(place)] = self._resolved(_definition(value["definition"]))
                self._statuses[str(place)] = status
        except BadStatus as exc:
            return self._refuse(topic, str(exc))
        self.invalid.pop(topic, None)
        self._assemble(place)
        return True

    def _resolved(self, definition: CircuitDef) -> tuple[CircuitDef, dict[str, GadgetPorts]]:
        """A definition with its ports, resolved once per load or reload, not per status."""
        return definition, _ports_from_definition(definition, self.registry)

    def _assemble(self, place: CircuitAddress) -> None:
        key = str(place)
        status = self._statuses.get(key)
        if status is None:
            self.circuits.pop(key, None)
            return
        definition, ports = self._definitions.get(key) or (CircuitDef(name=place.id), {})
        if status.ports is not None:
            ports = dict(ports)
            for gadget in definition.gadgets:
                gid = address.gadget_id(place.kind, definition.gadgets, gadget)
                published = status.ports.get(str(gid))
                if published is not None:
                    ports[gadget.name] = GadgetPorts(*published)
        self.circuits[key] = Circuit(place, status, definition, ports)

    def _forget(self, topic: str) -> bool:
        """Forget what ``topic`` said; True when something was known from it."""
        parsed = address.parse(topic)
        if parsed is None:
            return False
        key = parsed.owner
        if parsed.role == "container_status":
            return self.containers.pop(key, None) is not None
        if parsed.role == "definition":
            gone = self._definitions.pop(key, None) is not None
            self._assemble(CircuitAddress(parsed.kind, parsed.id))
            return gone
        if parsed.role == "status":
            self._statuses.pop(key, None)
            return self.circuits.pop(key, None) is not None
        return False

    def _refuse(self, topic: str, why: str) -> bool:
        """Skip a message, warning about its topic once while it stays invalid.

        What that topic said before is forgotten: the last message on a retained
        topic is what stands, and it is not a container's any more."""
        if topic not in self.invalid:
            self._warn(f"{topic}: ignored, not what a container publishes: {_short(why)}")
        self.invalid[topic] = why
        return self._forget(topic)

    # -- reading ---------------------------------------------------------------------------

    def state_of(self, circuit: Circuit) -> str:
        """The circuit's state, ``offline`` when its container's will says it is gone."""
        container = self.containers.get(circuit.status.container)
        if container is not None and container.state == "offline":
            return "offline"
        return circuit.status.state

    def online(self) -> list[Circuit]:
        """The circuits whose status says online, in topic order."""
        return [c for _, c in sorted(self.circuits.items()) if c.status.state == "online"]

    def unrestored(self) -> list[Circuit]:
        """The circuits a container keeps in its state file but could not rebuild
        (docs/survive-identity.md): nothing runs, the entry waits for a retry."""
        return [c for _, c in sorted(self.circuits.items()) if c.status.state == "unrestored"]

    def find_port(self, target: str, *, output: bool) -> address.Port:
        """``circuit.gadget.port`` among the loaded circuits (:func:`address.find_port`)."""
        circuits = sorted(self.circuits.values(), key=lambda c: c.key)
        return address.find_port(target, circuits, output=output)

    def why_invalid(self, circuit_id: str) -> str | None:
        """Why a status topic of circuit ``circuit_id`` was skipped, if one was."""
        for topic, why in sorted(self.invalid.items()):
            place = address.circuit_of(topic)
            if place is not None and place.id == circuit_id:
                return f"{topic}: {_short(why)}"
        return None


def _short(text: str, limit: int = 160) -> str:
    """One line, bounded: a stranger's payload can make an error message of any size."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
