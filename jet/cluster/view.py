"""A pack group as the retained messages show it: its members and its circuits' copies.

Everything here is computed from two kinds of retained message, the same for
every reader (a member, the loader, ``jet ls``):

- each pack's presence ``jet/pack/<id>/status``, whose ``group`` says it is a
  member (its will says ``offline``);
- each copy's status ``pack/<circuit>/replica/<member>/status`` (docs/groups.md).

A copy is *live* when its member's presence says online and lists the circuit;
else it is *gone* (its member died, stopped, or came back without it).

:func:`choose` is the one placement rule: least loaded first (circuits running),
then the lowest id, so two readers of the same view choose alike.
:meth:`GroupView.leader` is the one leader rule: the live member with the
lowest id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from jet import address
from jet.containers.status import why_not_status
from jet.transport import codec
from jet.transport.client import Session


@attrs.frozen
class Member:
    """A pack of a group, as its presence says."""

    id: str
    group: str
    state: str
    host: str
    since: float | None
    circuits: tuple[str, ...]
    pid: int | None = None
    keepalive: float | None = None

    @property
    def live(self) -> bool:
        return self.state == "online"

    @property
    def load(self) -> int:
        """How loaded it is: the circuits it runs (what placement compares)."""
        return len(self.circuits) if self.live else 0

    @classmethod
    def of(cls, pack_id: str, presence: Any) -> Member | None:
        if not isinstance(presence, dict) or not isinstance(presence.get("group"), str):
            return None
        since, pid, keepalive = presence.get("since"), presence.get("pid"), presence.get(
            "keepalive")
        circuits = presence.get("circuits")
        return cls(
            id=pack_id, group=presence["group"], state=str(presence.get("state", "?")),
            host=str(presence.get("host", "?")),
            since=float(since) if isinstance(since, int | float) else None,
            circuits=tuple(str(c) for c in circuits) if isinstance(circuits, list) else (),
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            keepalive=float(keepalive) if isinstance(keepalive, int | float) else None,
        )


@attrs.frozen
class Copy:
    """One copy of a group's circuit, as its retained status says."""

    circuit: str
    member: str
    status: Mapping[str, Any]

    @property
    def group(self) -> str:
        return str(self.status.get("group", ""))

    @property
    def wanted(self) -> int:
        wanted = self.status.get("replicas")
        return wanted if isinstance(wanted, int) and wanted > 0 else 1

    @property
    def app(self) -> str:
        return str(self.status.get("app", ""))

    @property
    def adopted(self) -> str | None:
        adopted = self.status.get("adopted")
        return adopted if isinstance(adopted, str) else None

    @property
    def since(self) -> float:
        since = self.status.get("since")
        return float(since) if isinstance(since, int | float) else 0.0

    def load_command(self, *, adopted: str | None = None) -> dict[str, Any]:
        """The ``load`` that makes this copy again on another member (not started)."""
        return {
            "cmd": "load",
            "app": self.app,
            "definition": self.status.get("definition") or {},
            "exports": dict(self.status.get("exports") or {}),
            "foreign": {
                k: [{f: v for f, v in t.items() if f != "unwritable"} for t in targets]
                for k, targets in (self.status.get("foreign") or {}).items()
            },
            "pack_group": self.group,
            "replicas": self.wanted,
            "start": False,
            **({"adopted": adopted} if adopted else {}),
        }

    def wire_commands(self) -> list[dict[str, Any]]:
        """The ``wire`` commands that give a new copy this one's wires."""
        commands = []
        for port, wires in sorted((self.status.get("inputs") or {}).items()):
            for wire in wires:
                command = {"cmd": "wire", "input": port, "topic": wire["topic"],
                           "qos": wire.get("qos", 1)}
                for key in ("queue", "policy", "payload"):
                    if wire.get(key) is not None:
                        command[key] = wire[key]
                commands.append(command)
        return commands


class GroupView:
    """Every pack group's members and copies, kept from retained messages (see the
    module doc); :meth:`update` takes one (an empty payload: deleted)."""

    FILTERS = (address.container_status("pack", "+"),
               address.replica_status("pack", "+", "+"),
               address.circuit_status("pack", "+"))

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}  # pack id -> member (packs of any group)
        self.copies: dict[str, dict[str, Copy]] = {}  # circuit -> member -> its copy
        #: circuit -> the container its status names (a pack's own circuits, not copies;
        #: whatever their state: a member stopped cleanly still has them to restore)
        self.owners: dict[str, str] = {}

    @classmethod
    async def read(cls, session: Session) -> GroupView:
        return cls.of(await session.retained(*cls.FILTERS))

    @classmethod
    def of(cls, found: Mapping[str, Any]) -> GroupView:
        """What one read of retained messages says (messages of other topics left alone)."""
        view = cls()
        for topic, value in sorted(found.items()):
            view.take(topic, value)
        return view

    def update(self, topic: str, payload: bytes) -> bool:
        try:
            value = codec.decode(payload) if payload else None
        except codec.PayloadError:
            value = None
        return self.take(topic, value)

    def take(self, topic: str, value: Any) -> bool:
        """One decoded retained message; True when it was a member's or a copy's."""
        parsed = address.parse(topic)
        if parsed is None or parsed.kind != "pack":
            return False
        if parsed.role == "container_status":
            member = Member.of(parsed.id, value)
            if member is None:
                return self.members.pop(parsed.id, None) is not None
            self.members[parsed.id] = member
            return True
        if parsed.role == "status":
            container = value.get("container") if isinstance(value, dict) else None
            if isinstance(container, str) and why_not_status("status", value) is None:
                self.owners[parsed.id] = container
            else:
                self.owners.pop(parsed.id, None)
            return False  # (not the group's: no round of the leader for it)
        if parsed.role != "replica_status":
            return False
        copies = self.copies.setdefault(parsed.id, {})
        if value is None or why_not_status("status", value) is not None:
            copies.pop(parsed.member, None)
            if not copies:
                del self.copies[parsed.id]
            return True
        copies[parsed.member] = Copy(parsed.id, parsed.member, value)
        return True

    # -- reading it -----------------------------------------------------------------------

    def groups(self) -> list[str]:
        return sorted({m.group for m in self.members.values()})

    def of_group(self, group: str) -> list[Member]:
        return sorted((m for m in self.members.values() if m.group == group),
                      key=lambda m: m.id)

    def live(self, group: str) -> list[Member]:
        return [m for m in self.of_group(group) if m.live]

    def leader(self, group: str) -> str | None:
        """The live member with the lowest id: the one that places copies."""
        live = self.live(group)
        return live[0].id if live else None

    def is_live(self, copy: Copy) -> bool:
        member = self.members.get(copy.member)
        return member is not None and member.live and copy.circuit in member.circuits

    def copies_in(self, group: str) -> dict[str, list[Copy]]:
        """The group's circuits and all their copies (live and gone), by circuit."""
        found: dict[str, list[Copy]] = {}
        for circuit, copies in sorted(self.copies.items()):
            for _member, copy in sorted(copies.items()):
                if copy.group == group:
                    found.setdefault(circuit, []).append(copy)
        return found

    def live_copies(self, circuit: str) -> list[Copy]:
        return [c for _, c in sorted(self.copies.get(circuit, {}).items()) if self.is_live(c)]

    def own_circuits(self, member: str) -> set[str]:
        """The circuits (not copies) whose retained status names pack ``member``."""
        name = address.container("pack", member)
        return {circuit for circuit, owner in self.owners.items() if owner == name}

    def choose(self, group: str, count: int, *, besides: Iterable[str] = ()) -> list[str]:
        """Where ``count`` new copies go: live members not in ``besides``, least loaded
        first (then the lowest id); fewer when fewer are free."""
        taken = set(besides)
        free = [m for m in self.live(group) if m.id not in taken]
        return [m.id for m in sorted(free, key=lambda m: (m.load, m.id))][:count]
