"""A pack's part in its group: watching the others, and leading when it is its turn.

Every member follows the group's retained messages (:class:`~jet.cluster.view.GroupView`
on the pack's own link).  The *leader* (the live member with the lowest id, as every
member computes it from the same retained presences) is the only one that places
copies, with no command from anyone:

- **adopt**: a circuit with fewer live copies than it wants, and a copy whose member
  is gone (its will said offline, or it came back without it), gets a new copy:
  on the leader itself when the leader does not run the circuit (so the leader can
  handle the gone member's share, below), else on the least loaded live member that
  does not run it; fewer members than copies wanted: the circuit runs short, and is
  placed again when a member comes;
- **hold the gone member's session**: its persistent session keeps queueing its share
  of each shared subscription; once the leader runs every circuit the gone member ran,
  it connects as that member's session (:class:`~jet.transport.sessions.HeldSessions`)
  and hands each message to its own copy's wire, until the member is back (its own
  connection takes the session over).  Not when the gone member also ran circuits of its
  own (not copies): its session holds their messages too, which a holder has no wire for;
  its share then waits in its session for it;
- **trim**: a circuit with more live copies than it wants (the gone member came back
  from its state file, or two leaders adopted at once) loses the copies adopted from a
  member that runs it again, then the newest; each is unwired, drained and stopped.

Split brain: two members can believe they lead only while their views differ (one
has not yet seen the other's presence); both may adopt a copy, each on itself, and
both may try to hold a session (each kicks the other; the kicked one waits
:data:`~jet.transport.sessions.RETRY` s).  A shared subscription still hands each
message to one copy; once the views agree (one broker is the one source of them),
the one leader trims the extra copy.

A partition (``jet pack --group G --partition``, a broker without shared
subscriptions): every copy subscribes its inputs plainly and handles the messages whose
key falls to its member among the members running a live copy of that circuit
(:class:`jet.transport.partition.Split`); the leader holds no session (every member
has every message).  When a member running a copy goes, each other copy replays the
kept messages of the keys now its own that arrived in the last :func:`takeover_window`
seconds before its going was seen (those the gone one may not have handled).  A member
joining publishes a marker to itself: what its session kept before it, the others
handled.

Lifecycle: ``async with GroupMember(pack)`` inside ``async with pack``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Self

from jet import address
from jet.cluster.view import Copy, GroupView
from jet.containers.base import Container
from jet.tasks import cancel_all
from jet.transport.client import CommandFailed, NoReply, Replies
from jet.transport.link import Subscription
from jet.transport.partition import Kept, mark
from jet.transport.sessions import HeldSessions, Subscriptions

log = logging.getLogger("jet.cluster")

#: Seconds the leader lets a burst of changes settle before it acts on them.
SETTLE = 0.2
#: Seconds a copy the leader placed counts as live before its status says so.
PLACED_GRACE = 10.0
#: A partition member's marker to itself (what its session held comes before it).
MARK = "jet/pack/{id}/mark"


def takeover_window(keepalive: float | None) -> float:
    """Seconds before a gone member's going was seen whose messages of its keys are
    replayed: its will may come 1.5 keepalives after it stopped handling (a host cut
    off), plus a margin for the messages in its hands then."""
    return 1.5 * (keepalive or 10.0) + 1.0


class GroupMember:
    """``pack``'s membership of its group (see the module doc)."""

    def __init__(self, pack: Container, *, settle: float = SETTLE) -> None:
        if pack.cluster_group is None:
            raise ValueError(f"{pack.kind} {pack.id} is in no group")
        self.pack = pack
        self.group: str = pack.cluster_group
        self.settle = settle
        self.view = GroupView()
        self.sessions = HeldSessions(pack.link.broker, keepalive=pack.link.keepalive,
                                     what="share", who=f"group {pack.cluster_group}: {pack.id}")
        self.replies = Replies(pack.link, address.reply(f"{pack.link.client_id}-group"),
                               wait_sent=False, id_prefix="group-")
        self._placed: dict[tuple[str, str], float] = {}  # (circuit, member) -> when
        self._short: set[str] = set()  # circuits said to run short (logged once)
        self._not_held: set[str] = set()  # gone members whose session is not held (logged)
        self._failed: set[tuple[str, str]] = set()  # (circuit, member) placings that failed
        self._changed = asyncio.Event()
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None
        #: a partition: the members running a live copy of each circuit, as last seen
        self.split = pack.cluster_split
        self._split_live: dict[str, set[str]] = {}
        self._replays: set[asyncio.Task[None]] = set()
        if self.split is not None:
            self.split.live = self._copies_live

    @property
    def me(self) -> str:
        return self.pack.id

    async def __aenter__(self) -> Self:
        await self.replies.start()
        for topic in GroupView.FILTERS:
            self._subs.append(await self.pack.link.subscribe(topic, 1, self._on_retained))
        if self.split is not None:
            # (the retained statuses came first: the view knows the others at the marker)
            await mark(self.pack.link, MARK.format(id=self.me), b"marking")
            self._split_live = {c: self._copies_live(c) for c in self.view.copies}
            others = {m for live in self._split_live.values() for m in live} - {self.me}
            early = self.split.part.marked(others_live=bool(others))
            if self.split.part.dropped_early:
                log.info("group %s: %d messages our session held were handled by %s",
                         self.group, self.split.part.dropped_early, ", ".join(sorted(others)))
            await self._hand_on(early)
        self._task = asyncio.create_task(self._keep(), name=f"group-{self.group}")
        log.info("pack %s joined group %s", self.me, self.group)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_all([self._task] if self._task else [])
        await cancel_all(list(self._replays))
        await self.sessions.close()
        for sub in self._subs:
            await self.pack.link.unsubscribe(sub)
        await self.replies.stop()

    def _on_retained(self, topic: str, payload: bytes) -> None:
        if self.view.update(topic, payload):
            self._changed.set()
            if self.split is not None and self.split.part.ready:
                self._split_changed()

    # -- a partition (no shared subscriptions) ------------------------------------------

    def _copies_live(self, circuit: str) -> set[str]:
        """The members a message of ``circuit`` may fall to: those running a live copy
        of it (this one always, when it runs one)."""
        live = {c.member for c in self.view.live_copies(circuit)}
        running = self.pack.circuits.get(circuit)
        if running is not None and running.replica is not None:
            live.add(self.me)
        return live

    def _split_changed(self) -> None:
        """Members gone from a circuit's copies: replay what fell to them and is ours now."""
        assert self.split is not None
        now = time.time()
        found: list[Kept] = []
        for circuit in set(self.view.copies) | set(self._split_live):
            before, live = self._split_live.get(circuit, set()), self._copies_live(circuit)
            self._split_live[circuit] = live
            gone = before - live
            if not gone or self.me not in live:
                continue
            window = max(takeover_window(m.keepalive if m is not None else None)
                         for m in (self.view.members.get(g) for g in gone))
            since = now - window

            def handled(entry: Kept, since: float = since) -> bool:
                return entry.at < since  # (long before its going: it had handled it)

            replay = self.split.part.gone(gone, before, live, space=circuit, handled=handled)
            log.info("group %s: %s gone from %s's copies; %s replays %d of their last"
                     " messages (%d in all)", self.group, ", ".join(sorted(gone)), circuit,
                     self.me, len(replay), self.split.part.replayed)
            found.extend(replay)
        if found:
            task = asyncio.create_task(self._hand_on(found), name=f"replay-{self.group}")
            self._replays.add(task)
            task.add_done_callback(self._replays.discard)

    async def _hand_on(self, entries: list[Kept]) -> None:
        for entry in entries:
            result = entry.handler(entry.topic, entry.payload)
            if result is not None:
                await result

    async def _keep(self) -> None:
        keepalive = max(1.0, float(self.pack.link.keepalive))
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(keepalive):
                    await self._changed.wait()
            await asyncio.sleep(self.settle)  # (a burst of changes, acted on once)
            self._changed.clear()
            try:
                await self.lead()
            except (CommandFailed, NoReply) as exc:
                log.warning("group %s: %s (tried again at the next change)", self.group, exc)
            except Exception:  # a bug must not end the membership
                log.exception("group %s: placing copies failed", self.group)

    # -- the leader's work ------------------------------------------------------------

    async def lead(self) -> None:
        """One round: adopt, hold, trim when this member leads; else hold nothing."""
        if self.view.leader(self.group) != self.me:
            for name in list(self.sessions.holding):
                if await self.sessions.let_go(name):
                    log.info("group %s: %s let go of %s's share (not the leader now)",
                             self.group, self.me, name)
            return
        await self._adopt()
        if self.split is None:  # (a partition: every member has every message)
            await self._hold()
        await self._trim()

    def _live_copies(self, copies: list[Copy]) -> set[str]:
        """The members running a live copy, counting those this leader just placed."""
        now = time.monotonic()
        self._placed = {k: t for k, t in self._placed.items() if now - t < PLACED_GRACE}
        live = {c.member for c in copies if self.view.is_live(c)}
        circuit = copies[0].circuit if copies else ""
        return live | {m for (c, m) in self._placed if c == circuit}

    async def _adopt(self) -> None:
        for circuit, copies in self.view.copies_in(self.group).items():
            wanted = max(c.wanted for c in copies)
            hosts = self._live_copies(copies)
            gone = [c for c in copies if c.member not in hosts]
            missing = min(wanted - len(hosts), len(gone))
            for copy in gone[:max(0, missing)]:
                if self.me not in hosts:
                    target = self.me
                else:
                    chosen = self.view.choose(self.group, 1, besides=hosts)
                    if not chosen:
                        if circuit not in self._short:
                            log.warning("group %s: %s runs %d of %d copies: no other live"
                                        " member", self.group, circuit, len(hosts), wanted)
                            self._short.add(circuit)
                        break
                    target = chosen[0]
                try:
                    await self._place(copy, target)
                except (CommandFailed, NoReply) as exc:  # (the other circuits go on)
                    if (circuit, target) not in self._failed:
                        log.warning("group %s: %s's copy of %s not placed on %s: %s", self.group,
                                    copy.member, circuit, target, exc)
                        self._failed.add((circuit, target))
                    break
                self._failed.discard((circuit, target))
                hosts.add(target)
            if len(hosts) >= wanted:
                self._short.discard(circuit)

    async def _place(self, copy: Copy, target: str) -> None:
        """A new copy of ``copy``'s circuit on ``target``, with its wires, started."""
        conf = address.circuit_conf("pack", copy.circuit)
        await self.replies.request(address.container_conf("pack", target),
                                   copy.load_command(adopted=copy.member))
        self._placed[(copy.circuit, target)] = time.monotonic()
        for command in copy.wire_commands():
            await self.replies.request(conf, {**command, "pack": target})
        await self.replies.request(conf, {"cmd": "start", "pack": target})
        log.info("group %s: %s's copy of %s now runs on %s", self.group, copy.member,
                 copy.circuit, target)

    async def _hold(self) -> None:
        """Hold each gone member's session once this leader runs what it ran."""
        mine = set(self.pack.circuits)
        for member in self.view.of_group(self.group):
            if member.live or member.id == self.me:
                self._not_held.discard(member.id)
                if member.id in self.sessions.holding and await self.sessions.let_go(member.id):
                    log.info("group %s: %s let go of %s's share (it is back)", self.group,
                             self.me, member.id)
                continue
            ran = {c for c, copies in self.view.copies.items() if member.id in copies}
            if not ran or not ran <= mine or not self.sessions.may_take(member.id):
                continue
            own = self.view.own_circuits(member.id)
            if own:
                # Its session also holds what its own circuits' wires are owed: a holder
                # has no wire for that and would lose it.  Its share waits for it instead.
                if member.id not in self._not_held:
                    log.warning("group %s: %s ran circuits of its own (%s): its session is not"
                                " held; its share of the group's circuits waits for it",
                                self.group, member.id, ", ".join(sorted(own)))
                    self._not_held.add(member.id)
                continue
            if await self.sessions.take(member.id, f"jet-pack-{member.id}", self._shares(ran)):
                log.info("group %s: %s holds %s's share while it is gone", self.group,
                         self.me, member.id)

    def _shares(self, ran: set[str]) -> Subscriptions:
        """The shared subscriptions of this member's copies of the circuits ``ran`` (the
        gone member's: the same filters, so its session gains none), each to its wire."""
        found: list[tuple[str, int, Any]] = []
        for circuit in self.pack.circuits.values():
            if circuit.replica is None or circuit.id not in ran:
                continue
            for wire in circuit.wires.values():
                found.append((wire.sub.topic, wire.qos, wire.sub.handler))
        return found

    async def _trim(self) -> None:
        for _circuit, copies in self.view.copies_in(self.group).items():
            live = [c for c in copies if self.view.is_live(c)]
            wanted = max(c.wanted for c in copies)
            if len(live) <= wanted:
                continue
            members = {c.member for c in live}
            # adopted from a member that runs it again first, then the newest
            order = sorted(live, key=lambda c: (c.adopted not in members, -c.since))
            for extra in order[:len(live) - wanted]:
                await self._remove(extra)

    async def _remove(self, copy: Copy) -> None:
        """Unwire, drain and stop one copy (what it holds is handled first)."""
        conf = address.circuit_conf("pack", copy.circuit)
        for port in sorted(copy.status.get("inputs") or {}):
            await self.replies.request(conf, {"cmd": "unwire", "input": port,
                                              "pack": copy.member})
        with contextlib.suppress(CommandFailed):
            await self.replies.request(conf, {"cmd": "drain", "timeout": 3,
                                              "pack": copy.member}, timeout=6)
        await self.replies.request(conf, {"cmd": "stop", "pack": copy.member})
        log.info("group %s: the extra copy of %s on %s stopped (%s)", self.group,
                 copy.circuit, copy.member,
                 f"adopted from {copy.adopted}, which runs it again" if copy.adopted
                 else "the newest")
