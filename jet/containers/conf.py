"""Configuration commands: decoding and checking what arrives on a conf topic.

A command is a msgpack map with ``cmd`` plus fields (docs/protocol.md).  A
malformed one becomes a :class:`ConfError` whose message is one line naming
the topic, so a container can log it, answer it, and carry on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import attrs

from jet import address
from jet.definition.model import queue_limit
from jet.transport import codec

_ANY = object

MAX_SECONDS = 86_400  # a day: longer waits and leases are mistakes, and inf/NaN break timers

#: cmd -> {field: (type, required)}
CommandTable = Mapping[str, Mapping[str, tuple[type | tuple[type, ...], bool]]]

CIRCUIT_COMMANDS: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "wire": {
        "input": (str, True),
        "topic": (str, True),
        "qos": (int, False),
        "queue": (int, False),
        "policy": (str, False),
        "payload": (dict, False),
    },
    "unwire": {"input": (str, True), "topic": (str, False)},
    "export": {"output": (str, True), "by": (str, True), "qos": (int, False)},
    "unexport": {"output": (str, True), "by": (str, True)},
    "tap": {"output": (str, True), "ttl": ((int, float), False)},
    "inject": {"input": (str, True), "value": (_ANY, True)},
    "start": {},
    "drain": {"timeout": ((int, float), False)},
    "stop": {},
    "reload": {
        "definition": (dict, True), "exports": (dict, False), "foreign": (dict, False),
        "replicas": (int, False),  # a group's copy: the copies wanted now (docs/groups.md)
    },
    "status": {},
}

CONTAINER_COMMANDS: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "load": {
        "definition": (dict, True),
        "app": (str, False),
        "start": (bool, False),
        "exports": (dict, False),
        "foreign": (dict, False),
        # a replica of a group's circuit (docs/groups.md)
        "pack_group": (str, False),
        "replicas": (int, False),
        "adopted": (str, False),
    },
    "status": {},
}


def wire_command(
    input_: str,
    topic: str,
    qos: int = 1,
    *,
    queue: int | None = None,
    policy: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``wire`` command (CIRCUIT_COMMANDS), its optional fields only when given."""
    command: dict[str, Any] = {"cmd": "wire", "input": input_, "topic": topic, "qos": qos}
    if queue is not None:
        command["queue"] = queue
    if policy is not None:
        command["policy"] = policy
    if payload is not None:
        command["payload"] = dict(payload)
    return command


class ConfError(ValueError):
    """A conf message that cannot be obeyed; ``str()`` is one line naming the topic."""

    def __init__(
        self, topic: str, message: str, *, ident: Any = None, reply_to: str | None = None
    ) -> None:
        super().__init__(f"{topic}: {message}")
        self.ident = ident
        self.reply_to = reply_to


@attrs.frozen
class Command:
    name: str
    args: Mapping[str, Any]
    ident: Any = None
    reply_to: str | None = None
    #: Absolute time (epoch seconds) after which the sender no longer waits for
    #: it: a command handled later is refused (:meth:`stale`). None: no deadline.
    deadline: float | None = None
    #: The pack whose replica of the circuit is meant (docs/groups.md): the other
    #: replicas on the same conf topic leave the command alone.  None: every one.
    pack: str | None = None

    def stale(self) -> str | None:
        """Why this command must not be carried out any more (None: it may be).

        A sender that gave up (``jet load`` reported "no reply") must not see
        its command take effect later: a persistent session keeps commands
        sent while the container was away and delivers them when it is back.
        """
        if self.deadline is None:
            return None
        late = time.time() - self.deadline
        if late <= 0:
            return None
        return f"stale command, not carried out: its deadline expired {late:.1f} s ago"


#: The fields every command may carry besides its own.
ENVELOPE = ("cmd", "id", "reply_to", "deadline", "pack")


def parse(
    topic: str,
    payload: bytes,
    table: CommandTable,
    *,
    others: bool = False,
) -> Command:
    """Decode and check one command against ``table``; raises ConfError.

    ``others``: a command not in the table is passed on unchecked (the hub
    forwards such commands to its nodes) instead of refused.
    """
    try:
        data = codec.decode(payload)
    except codec.PayloadError as exc:
        raise ConfError(topic, f"bad conf message: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfError(topic, f"bad conf message: expected a map, got {type(data).__name__}")
    ident = data.get("id")
    reply_to = data.get("reply_to")
    if reply_to is not None:
        try:
            address.check(reply_to)
        except address.TopicError as exc:
            raise ConfError(topic, f"bad conf message: reply_to: {exc}") from None

    def fail(message: str) -> ConfError:
        return ConfError(topic, message, ident=ident, reply_to=reply_to)

    deadline = data.get("deadline")
    if deadline is not None and (
        isinstance(deadline, bool) or not isinstance(deadline, int | float)
        or not math.isfinite(deadline)
    ):
        raise fail(f"bad conf message: deadline must be epoch seconds, not {deadline!r}")

    pack = data.get("pack")
    if pack is not None and not isinstance(pack, str):
        raise fail(f"bad conf message: pack must be a pack id, not {pack!r}")

    name = data.get("cmd")
    if not isinstance(name, str):
        raise fail("bad conf message: no 'cmd' string")
    fields = table.get(name)
    args = {k: v for k, v in data.items() if k not in ENVELOPE}
    if fields is None:
        if others:
            return Command(name, args, ident, reply_to, deadline, pack)
        raise fail(f"unknown command {name!r} (known: {', '.join(sorted(table))})")
    for key, (kind, required) in fields.items():
        if key not in args:
            if required:
                raise fail(f"{name}: missing field {key!r}")
            continue
        value = args[key]
        if kind is not _ANY and (
            not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float)))
        ):
            raise fail(f"{name}: field {key!r} has the wrong type ({type(value).__name__})")
    unknown = set(args) - set(fields)
    if unknown:
        raise fail(f"{name}: unknown field {sorted(unknown)[0]!r}")
    if args.get("qos", 1) not in (0, 1, 2):
        raise fail(f"{name}: qos must be 0, 1 or 2, not {args['qos']!r}")
    for key in ("timeout", "ttl"):
        if key in args and not (math.isfinite(args[key]) and 0 <= args[key] <= MAX_SECONDS):
            raise fail(f"{name}: {key} must be 0 to {MAX_SECONDS} seconds, not {args[key]!r}")
    if "queue" in args:
        try:
            queue_limit(args["queue"])  # (the one rule, jet/definition/model.py)
        except ValueError as exc:
            raise fail(f"{name}: {exc}") from None
    return Command(name, args, ident, reply_to, deadline, pack)


def reply_ok(ident: Any, result: Any = None) -> bytes:
    return codec.encode({"id": ident, "ok": True, "result": result})


def reply_error(ident: Any, error: str) -> bytes:
    return codec.encode({"id": ident, "ok": False, "error": error})
