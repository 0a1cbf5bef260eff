"""A registry group's fellows: who is there, and who holds the share of one who is not.

Each server of a group (``jet devices serve --group G``) says it is there with a
retained presence on ``jet/devices/<group>/fellows/<name>``
(``{"state": "online", "host": ..., "since": ...}``); its will, and its clean leave,
say ``offline``.  Its share of the group's shared subscriptions lives in its
persistent session on the broker (client id ``jet-devices-<name>``): while it is
gone, the broker keeps queueing that share for it, and no other member gets it.

So when a fellow goes, one live fellow connects *as* the gone fellow's session (holding
it is :class:`jet.transport.sessions.HeldSessions`, shared with pack groups) and
handles what the session holds and what keeps coming to it, until the fellow is
back: its own connection then takes the session over (the broker allows one
connection per client id), and the holder lets go.  Nothing waits longer than the
gone fellow's will takes (1.5 keepalives: ``GROUP_KEEPALIVE``).

Which fellow holds a gone one's session: the live fellow (as its presences show it)
that a rendezvous hash of the two names ranks first; every fellow computes it alike,
so one holds it.  Split brain (two fellows seeing different memberships, each
choosing itself): each connection to the session kicks the other; a kicked holder
lets go at once and tries again only after ``RETRY`` seconds if it is still the one,
so the two settle as their views agree.  Meanwhile the session keeps queueing:
nothing is lost; a message in flight at a kick may be handled twice.

Lifecycle: ``async with Fellowship(link, ...)`` on a connected link: says it is
there, follows the others' presences, holds and lets go of sessions as they
change; leaving lets go of every session it holds and says ``offline``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, Self

from jet.devices.store import Store
from jet.tasks import cancel_all
from jet.transport import Link, Redeliver
from jet.transport.connection import Will
from jet.transport.partition import Kept, Partition, mark, owner
from jet.transport.sessions import RETRY, HeldSessions

log = logging.getLogger("jet.devices.fellows")

#: Seconds of keepalive of a group's servers: a dead one's will comes after 1.5 of them.
GROUP_KEEPALIVE = 2
PRESENCE = "jet/devices/{group}/fellows/{name}"
#: A partition's own marker: what its session held comes before it (docs/devices.md).
MARK = "jet/devices/{group}/marks/{name}"
#: A message kept is taken for handled by the gone fellow when it arrived no later than
#: this many seconds after the device's last message stored.
SAME_MESSAGE = 0.02


def _presence(state: str) -> bytes:
    return json.dumps({"state": state, "host": socket.gethostname(),
                       "since": time.time()}).encode()


def session_name(name: str) -> str:
    """The client id of a registry server's persistent session."""
    return f"jet-devices-{name}"


def presence_will(group: str, name: str) -> Will:
    # (its time is when it was set: the will's own comes with the fellows' noticing)
    return Will(PRESENCE.format(group=group, name=name), _presence("offline"), qos=1,
                retain=True)


class Fellowship:
    """One server's place in its group on one broker (see the module doc)."""

    def __init__(self, link: Link, group: str, name: str, filters: list[str],
                 handler: Callable[[str, bytes], None], store: Store, *,
                 partition: bool = False) -> None:
        """``partition``: the broker has no shared subscriptions; every fellow gets every
        message and handles its devices' (:meth:`mine`)."""
        self.partition = partition
        #: what this member keeps of the others' messages (a partition: jet.transport.partition)
        self.part = Partition(name)
        self.part.ready = not partition
        self.link = link
        self.group = group
        self.name = name
        self.filters = filters
        self.handler = handler
        self.store = store
        self.fellows: dict[str, dict[str, Any]] = {}  # name -> its latest presence
        #: the gone fellows' sessions we hold, by the fellow's name
        self.sessions = HeldSessions(link.broker, keepalive=link.keepalive, retry=RETRY,
                                     what="share", who=f"group {group}: {name}")
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def holding(self) -> dict[str, Link]:
        return self.sessions.holding

    async def __aenter__(self) -> Self:
        await self.link.subscribe(PRESENCE.format(group=self.group, name="+"), 1,
                                  self._on_presence)
        if self.partition:
            # What the session held comes before our marker; what comes after is new.
            await mark(self.link, MARK.format(group=self.group, name=self.name),
                       _presence("marking"))
            self._on_mark()
        await self.link.publish(PRESENCE.format(group=self.group, name=self.name),
                                _presence("online"), qos=1, retain=True)
        self._tasks.append(asyncio.create_task(self._keep(), name=f"fellows-{self.group}"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_all(self._tasks)
        await self.sessions.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await self.link.publish(PRESENCE.format(group=self.group, name=self.name),
                                    _presence("offline"), qos=1, retain=True)
            await asyncio.wait_for(self.link.flush(), 2.0)

    def live(self) -> set[str]:
        return {name for name, presence in self.fellows.items()
                if presence.get("state") == "online"} | {self.name}

    def _on_presence(self, topic: str, payload: bytes) -> None:
        name = topic.rsplit("/", 1)[-1]
        try:
            presence = json.loads(payload) if payload else {"state": "offline"}
        except ValueError:
            presence = None
        if not isinstance(presence, dict):
            log.warning("%s: not a fellow's presence (ignored)", topic)
            return
        before = self.live()
        self.fellows[name] = {**self.fellows.get(name, {}), **presence}
        if self.partition and self.ready:
            self._replay(before - self.live(), before)
        if name != self.name:
            online = presence.get("state") == "online"
            self.store.fellow(str(presence.get("host", "?")), name, active=online,
                              role="registry", at=time.time())
        self._changed.set()

    async def _keep(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RETRY):
                    await self._changed.wait()
            self._changed.clear()
            await self._settle()

    # -- a partition (no shared subscriptions) -------------------------------------------

    @property
    def ready(self) -> bool:
        return self.part.ready

    @property
    def replayed(self) -> int:
        return self.part.replayed

    def _on_mark(self) -> None:
        others = sorted(self.live() - {self.name})
        early = self.part.marked(others_live=bool(others))
        if others:  # (they handled it all while we were away)
            log.info("group %s: %d messages our session held were %s's to handle",
                     self.group, self.part.dropped_early, ", ".join(others))
        for entry in early:
            self._handle_kept(entry)

    def _handle_kept(self, entry: Kept) -> None:
        # A kept message was acknowledged as it came (another's then): one the store
        # fails on now cannot come again from the broker; said, and the rest go on.
        try:
            entry.handler(entry.topic, entry.payload)
        except Redeliver:
            log.error("group %s: %s (kept from a fellow) not stored, and the broker will not"
                      " send it again", self.group, entry.topic[:200])

    def mine(self, uid: str, topic: str, payload: bytes) -> bool:
        """Is a message of device ``uid`` this server's to handle?  In a partition: when
        the device falls to it among the live fellows; another's is kept a while, so
        that if that one is gone before it could handle it, this one does."""
        if not self.partition:
            return True
        return self.part.mine(uid, self.live(), topic, payload, self.handler)

    def _replay(self, gone: set[str], before: set[str]) -> None:
        """The messages kept of the devices that fell to us from ``gone`` fellows and that
        they had not stored (arrived later than the device's last message stored)."""
        if not gone:
            return
        last_seen: dict[str, float] = {}

        def handled(entry: Kept) -> bool:
            if entry.key not in last_seen:
                device = self.store.device_row(entry.key)
                last_seen[entry.key] = float(device["last_seen"]) if device else 0.0
            return entry.at <= last_seen[entry.key] + SAME_MESSAGE

        for entry in self.part.gone(gone, before, self.live(), handled=handled):
            self._handle_kept(entry)
        log.info("group %s: %s gone; %s handles its devices (%d of their last messages"
                 " handled here)", self.group, ", ".join(sorted(gone)), self.name,
                 self.replayed)

    async def _settle(self) -> None:
        if self.partition:
            return  # (each member has every message: no session to hold)
        live = self.live()
        for name in sorted(self.fellows):
            mine = (name not in live and owner(name, live) == self.name)
            if mine and self.sessions.may_take(name):
                subscriptions = [(topic, 1, self.handler) for topic in self.filters]
                if await self.sessions.take(name, session_name(name), subscriptions):
                    log.info("group %s: %s holds %s's share while it is gone", self.group,
                             self.name, name)
            elif not mine and await self.sessions.let_go(name):
                log.info("group %s: %s let go of %s's share (it is back)", self.group,
                         self.name, name)
