"""Addresses (SPEC section 2, docs/protocol.md): every topic, built and taken apart here only.

Three things live in this module and nowhere else:

- **Building topics**: :func:`output`, :func:`circuit_conf`, :func:`container_status`, ...
  and :func:`check`, which refuses what a broker would refuse.
- **Taking topics apart**: :func:`parse` turns a topic into a :class:`Topic` (what it is:
  an output, a circuit's conf or status, a container's conf or status, a reply topic; and
  its kind, id, gadget and output); :func:`circuit_of` gives the circuit a topic belongs to.
- **How a port becomes a topic**, per container kind (:data:`KINDS`): in a pack or web
  circuit a gadget is named by its name and a port as ``gadget.port``; on a node both are
  numbers (a gadget's ``number``, else its place in the circuit; a port's index), because
  the radio packets carry numbers.  :func:`port_of` applies the rule and :func:`find_port`
  resolves a ``circuit.gadget.port`` name among running circuits (``jet tap``, ``jet
  inject``, the operator view).

It imports nothing from the rest of JET, so any module may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Literal, Protocol

import attrs

__all__ = [
    "ALL_CIRCUIT_DEFINITIONS",
    "ALL_CIRCUIT_STATUS",
    "ALL_CONTAINER_STATUS",
    "ALL_REPLICA_STATUS",
    "KINDS",
    "NAME_RE",
    "CircuitAddress",
    "Kind",
    "Port",
    "Topic",
    "TopicError",
    "UnknownPort",
    "check",
    "circuit_conf",
    "circuit_definition",
    "circuit_of",
    "circuit_prefix",
    "circuit_status",
    "container",
    "container_conf",
    "container_status",
    "find_port",
    "gadget_id",
    "gadget_number",
    "output",
    "parse",
    "port_of",
    "replica_status",
    "reply",
    "rules",
    "split_port",
    "split_target",
]

NAME_RE = re.compile(r"^[a-z0-9_-]+$")

MAX_TOPIC_BYTES = 65535
# What MQTT brokers refuse in a topic (mosquitto disconnects the client that
# sends one): NUL, C0 and C1 controls, and Unicode non-characters.
_REFUSED = re.compile("[\x00-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff]")


class TopicError(ValueError):
    """A topic or topic filter a broker would refuse."""


def check(topic: str, *, filter_ok: bool = False) -> str:
    """Return ``topic`` if a broker accepts it (as a filter when ``filter_ok``)."""
    if not isinstance(topic, str) or not topic:
        raise TopicError(f"topic {topic!r} is empty or not text")
    if len(topic.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise TopicError(f"topic of {len(topic)} characters is longer than MQTT allows")
    bad = _REFUSED.search(topic) or re.search("[\ud800-\udfff]", topic)
    if bad:
        raise TopicError(f"topic {topic!r} has a character brokers refuse ({bad.group()!r})")
    # The non-characters beyond the first plane: U+1FFFE, U+1FFFF ... U+10FFFF.
    beyond = next((c for c in topic if ord(c) > 0xFFFF and ord(c) & 0xFFFE == 0xFFFE), None)
    if beyond is not None:
        raise TopicError(f"topic {topic!r} has a character brokers refuse ({beyond!r})")
    levels = topic.split("/")
    for i, level in enumerate(levels):
        wild = "+" in level or "#" in level
        if not wild:
            continue
        if not filter_ok:
            raise TopicError(f"topic {topic!r} has a wildcard (+ or #)")
        if level not in ("+", "#") or (level == "#" and i != len(levels) - 1):
            raise TopicError(f"topic filter {topic!r}: + and # must fill a level, # only last")
    return topic


# -- building -------------------------------------------------------------------------------


def output(kind: str, circuit_id: str, gadget_id: str | int, output_num: int) -> str:
    return f"{kind}/{circuit_id}/{gadget_id}/{output_num}"


def circuit_prefix(kind: str, circuit_id: str) -> str:
    """What every topic of one circuit starts with."""
    return f"{kind}/{circuit_id}/"


def circuit_conf(kind: str, circuit_id: str) -> str:
    return f"{kind}/{circuit_id}/conf"


def circuit_status(kind: str, circuit_id: str) -> str:
    return f"{kind}/{circuit_id}/status"


def circuit_definition(kind: str, circuit_id: str) -> str:
    """Where a circuit's definition is retained, once per load or reload."""
    return f"{kind}/{circuit_id}/definition"


def replica_status(kind: str, circuit_id: str, container_id: str) -> str:
    """The retained status of one replica of a group's circuit: the one its member
    ``container_id`` runs (docs/groups.md)."""
    return f"{kind}/{circuit_id}/replica/{container_id}/status"


def container(kind: str, container_id: str) -> str:
    """``jet/<kind>/<id>``: how a circuit status names its container, and its topics' stem."""
    return f"jet/{kind}/{container_id}"


def container_conf(kind: str, container_id: str) -> str:
    return f"{container(kind, container_id)}/conf"


def container_status(kind: str, container_id: str) -> str:
    return f"{container(kind, container_id)}/status"


def reply(client_id: str) -> str:
    return f"jet/reply/{client_id}"


ALL_CIRCUIT_STATUS = "+/+/status"
ALL_CIRCUIT_DEFINITIONS = "+/+/definition"
ALL_CONTAINER_STATUS = "jet/+/+/status"
ALL_REPLICA_STATUS = "+/+/replica/+/status"


# -- levels (docs/levels.md): a broker per level, children connect upward only -----------------

#: Machine messages: published at any level, carried down to the levels they concern.
MACHINE_FUNCTIONS = "machine/functions"
#: Events: carried through the whole tree, every level's broker once.
MACHINE_EVENTS = "machine/events"
EVENTS_INTERNAL = f"{MACHINE_EVENTS}/internal"
EVENTS_EXTERNAL = f"{MACHINE_EVENTS}/external"
#: Level messages: stay on their level's broker.
LEVEL_FUNCTIONS = "level/functions"


#: Words of the ``levels/...`` layout that cannot name a level.
RESERVED_LEVEL_NAMES = frozenset({"call", "reply", "here", "data"})


def check_level_name(name: str) -> str:
    """A level's name as given (ValueError naming the rule otherwise)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(f"level name {name!r}: lower-case letters, digits, '_' and '-' only")
    if name in RESERVED_LEVEL_NAMES:
        raise ValueError(f"level name {name!r} is reserved (levels/{name}/... means something "
                         f"else): no level may be called {', '.join(sorted(RESERVED_LEVEL_NAMES))}")
    return name


def level_presence(level: str) -> str:
    """A level's presence (retained), on its own broker and on its parent's."""
    return f"levels/{level}/presence"


def level_uplink(level: str) -> str:
    """Whether a level reaches its parent (retained, on its own broker)."""
    return f"levels/{level}/uplink"


ALL_LEVEL_PRESENCE = "levels/+/presence"
ALL_LEVEL_SUBTREES = "levels/+/subtree"
#: Data pumped up: a level's own topic T appears above it as ``levels/<level>/data/T``
#: (two fog sites' circuits never collide), and keeps that name up to the root.
ALL_LEVEL_DATA = "levels/+/data/#"


def level_data(level: str, topic: str) -> str:
    return f"levels/{level}/data/{topic}"


def level_candidates(level: str) -> str:
    """Machine messages offered to a level's relevance circuit (``{id, topic, value}``)."""
    return f"levels/{level}/candidates"


def level_pump(level: str) -> str:
    """Which topics of a level are carried up (retained list of filters, on its broker)."""
    return f"levels/{level}/pump"


def level_subtree(level: str) -> str:
    """A level's report of its subtree (retained), on its own broker and its parent's."""
    return f"levels/{level}/subtree"
#: Each level's broker: which level it is and the levels above it (retained).
LEVEL_HERE = "levels/here"
ALL_LEVEL_CALLS = "levels/call/#"
ALL_LEVEL_REPLIES = "levels/reply/#"


def level_call(level: str, function: str) -> str:
    """A call of ``function`` on ``level``, published on the caller's own broker."""
    return f"levels/call/{level}/{function}"


def level_reply(request_id: str) -> str:
    """Where the answer to call ``request_id`` (``<caller>/<n>``) comes back down."""
    return f"levels/reply/{request_id}"


def event(name: str, *, external: bool = False) -> str:
    return f"{EVENTS_EXTERNAL if external else EVENTS_INTERNAL}/{name}"


# -- taking apart ---------------------------------------------------------------------------

Role = Literal[
    "output", "conf", "status", "definition", "container_conf", "container_status", "reply",
    "replica_status",
]
_CIRCUIT_LEAVES: dict[str, Role] = {"conf": "conf", "status": "status", "definition": "definition"}


@attrs.frozen
class CircuitAddress:
    """A running circuit: its container kind and its circuit id (``pack/kitchen``)."""

    kind: str
    id: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.id}"

    @property
    def conf(self) -> str:
        return circuit_conf(self.kind, self.id)

    @property
    def status(self) -> str:
        return circuit_status(self.kind, self.id)

    @property
    def definition(self) -> str:
        return circuit_definition(self.kind, self.id)

    @property
    def prefix(self) -> str:
        return circuit_prefix(self.kind, self.id)

    def owns(self, topic: str) -> bool:
        """Is ``topic`` one of this circuit's (an output, its conf or status)?"""
        return topic.startswith(self.prefix)


@attrs.frozen
class Topic:
    """A JET topic taken apart by :func:`parse`.

    ``kind`` is the container type ("" for a reply topic); ``id`` the circuit id, the
    container id, or the client id a reply topic belongs to; ``gadget`` and ``output``
    are set for output topics only (``gadget`` as topics name it: a number on a node).
    """

    role: Role
    kind: str
    id: str
    gadget: str = ""
    output: int = -1
    #: the member running the replica (a replica status only)
    member: str = ""

    @property
    def circuit(self) -> CircuitAddress | None:
        """The circuit an output, conf, status or definition topic belongs to."""
        if self.role in ("output", "conf", "status", "definition", "replica_status"):
            return CircuitAddress(self.kind, self.id)
        return None

    @property
    def owner(self) -> str:
        """Who the topic belongs to, as statuses and ``jet ls`` name it:
        ``pack/kitchen`` for a circuit, ``jet/pack/default`` for a container."""
        if self.role in ("container_conf", "container_status"):
            return container(self.kind, self.id)
        if self.role == "reply":
            return reply(self.id)
        return f"{self.kind}/{self.id}"


def parse(topic: str) -> Topic | None:
    """Take a topic apart; None when it is not one of JET's topics.

    ``jet/`` is reserved for containers and replies (so no circuit kind is ``jet``):
    ``jet/<kind>/<id>/conf|status``, ``jet/reply/<client id>``,
    ``<kind>/<circuit id>/conf|status|definition``, ``<kind>/<circuit id>/<gadget>/<n>``,
    ``<kind>/<circuit id>/replica/<member>/status``.
    """
    levels = topic.split("/")
    if not all(levels):
        return None
    if levels[0] == "jet":
        if len(levels) == 3 and levels[1] == "reply":
            return Topic("reply", "", levels[2])
        if len(levels) == 4 and levels[3] in ("conf", "status"):
            role: Role = "container_conf" if levels[3] == "conf" else "container_status"
            return Topic(role, levels[1], levels[2])
        return None
    if len(levels) == 3 and levels[2] in _CIRCUIT_LEAVES:
        return Topic(_CIRCUIT_LEAVES[levels[2]], levels[0], levels[1])
    if len(levels) == 4 and levels[3].isdecimal():
        return Topic("output", levels[0], levels[1], levels[2], int(levels[3]))
    if len(levels) == 5 and levels[2] == "replica" and levels[4] == "status":
        return Topic("replica_status", levels[0], levels[1], member=levels[3])
    return None


def circuit_of(topic: str) -> CircuitAddress | None:
    """The circuit an output, conf, status or definition topic belongs to, else None."""
    parsed = parse(topic)
    return None if parsed is None else parsed.circuit


# -- what each kind of container does differently -------------------------------------------


@attrs.frozen
class Kind:
    """How one container kind names and handles its circuits; the one home of every
    "is it a node?" question that is really a question about naming or hosting."""

    #: Gadgets and ports are named by number in topics and commands (``node/<uid>/3/0``,
    #: ``3.0``), because a node's radio packets carry numbers; else by name
    #: (``pack/kitchen/thermostat/0``, ``thermostat.temperature``).
    numbered: bool
    #: A circuit's id is its name (a node circuit's id is its node's uid, so a loaded node
    #: circuit is found by the name in its definition).
    ids_are_names: bool
    #: The circuit's graph runs in the container: it answers ``drain`` and ``reload``, and
    #: publishes an output wired inside it only while tapped (a tap is a lease).  A node
    #: runs its graph itself; the hub only relays.
    runs_graph: bool


KINDS: dict[str, Kind] = {
    "pack": Kind(numbered=False, ids_are_names=True, runs_graph=True),
    "web": Kind(numbered=False, ids_are_names=True, runs_graph=True),
    "node": Kind(numbered=True, ids_are_names=False, runs_graph=False),
}


def rules(kind: str) -> Kind:
    """The rules of container kind ``kind``; a kind JET does not know is named like a pack."""
    return KINDS.get(kind, KINDS["pack"])


# -- ports ----------------------------------------------------------------------------------


class UnknownPort(LookupError):
    """A ``circuit.gadget.port`` name that names nothing loaded."""


class GadgetLike(Protocol):
    """What the naming rule needs of a gadget (a :class:`jet.definition.model.GadgetDef`)."""

    @property
    def name(self) -> str: ...

    @property
    def number(self) -> int | None: ...


def gadget_number(gadget: GadgetLike, index: int) -> int:
    """A node gadget's number: the one it declares, else ``index``, its place in the circuit."""
    return index if gadget.number is None else gadget.number


def gadget_id(kind: str, gadgets: Sequence[GadgetLike], gadget: GadgetLike) -> str | int:
    """How topics and commands name ``gadget`` (one of ``gadgets``) in a ``kind`` circuit."""
    if not rules(kind).numbered:
        return gadget.name
    return gadget_number(gadget, list(gadgets).index(gadget))


@attrs.frozen
class Port:
    """One port of a running circuit, named the way its container kind names it."""

    circuit: CircuitAddress
    gadget: str | int  # the gadget in topics: its name, or its number on a node
    index: int  # the port's place among the gadget's inputs (or outputs)
    name: str  # the port in commands (wire, unwire, inject, tap): ``gadget.port`` or ``3.0``

    @property
    def conf(self) -> str:
        """Where commands about the port go: its circuit's conf topic."""
        return self.circuit.conf

    @property
    def topic(self) -> str:
        """The topic an output port is published on."""
        return output(self.circuit.kind, self.circuit.id, self.gadget, self.index)


def port_of(
    circuit: CircuitAddress,
    gadgets: Sequence[GadgetLike],
    gadget: GadgetLike,
    names: Sequence[str],
    port: str,
) -> Port:
    """Port ``port`` of ``gadget``, whose inputs (or outputs) are ``names``, in ``circuit``.

    Raises ValueError when ``port`` is not in ``names`` (callers check first, to say so in
    their own words).
    """
    gid = gadget_id(circuit.kind, gadgets, gadget)
    index = list(names).index(port)
    name = f"{gid}.{index}" if rules(circuit.kind).numbered else f"{gadget.name}.{port}"
    return Port(circuit, gid, index, name)


def split_port(text: str) -> tuple[str, str] | None:
    """``gadget.port`` -> (gadget, port); None when ``text`` is not that shape."""
    gadget, dot, port = text.partition(".")
    if not dot or not gadget or not port or "." in port:
        return None
    return gadget, port


def split_target(text: str) -> tuple[str, str, str]:
    """``circuit.gadget.port`` -> its three names; :class:`UnknownPort` when not that shape."""
    parts = text.split(".")
    if len(parts) != 3 or not all(parts):
        raise UnknownPort(f"{text!r}: expected circuit.gadget.port or a topic")
    return parts[0], parts[1], parts[2]


class Running(Protocol):
    """What :func:`find_port` needs of a running circuit."""

    @property
    def address(self) -> CircuitAddress: ...

    @property
    def name(self) -> str: ...

    @property
    def gadgets(self) -> Sequence[GadgetLike]: ...

    def port_names(self, gadget: str, output: bool) -> Sequence[str]:
        """The inputs (or outputs) of gadget ``gadget``, in order."""
        ...


def find_port(target: str, circuits: Iterable[Running], *, output: bool) -> Port:
    """Resolve ``circuit.gadget.port`` (an output when ``output``) among ``circuits``.

    The first circuit whose id or name is ``circuit`` answers; :class:`UnknownPort`
    says what is missing.
    """
    circuit_name, gadget_name, port = split_target(target)
    for c in circuits:
        if circuit_name not in (c.address.id, c.name):
            continue
        gadget = next((g for g in c.gadgets if g.name == gadget_name), None)
        if gadget is None:
            raise UnknownPort(f"{circuit_name} has no gadget {gadget_name!r}")
        names = c.port_names(gadget_name, output)
        if port not in names:
            what = "output" if output else "input"
            raise UnknownPort(f"{circuit_name}.{gadget_name} has no {what} {port!r}")
        return port_of(c.address, c.gadgets, gadget, names, port)
    raise UnknownPort(f"no circuit {circuit_name!r} is loaded")
