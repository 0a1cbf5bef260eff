"""Holding a gone client's persistent session until it is back.

A client with a persistent session (``clean_session=false``) that goes away keeps
its subscriptions on the broker, and the broker keeps queueing for it what they
match, its share of every shared subscription (``$share/<group>/...``) included:
nobody else gets that share while it is gone.  A fellow of a group that must not
let that share wait connects *as* the gone client (its client id, the same
persistent session), handles what the session holds and what keeps coming to it,
and lets go when the client is back: the client's own connection takes the
session over (a broker allows one connection per client id), which drops ours.

Who holds which session is the caller's rule (a registry group's rendezvous hash,
:mod:`jet.devices.fellows`; a pack group's leader, :mod:`jet.cluster.member`);
this module holds and lets go.  A holder kicked off a session (the client is back,
or another holder came: two fellows that saw the group differently) lets go at
once and may take it again only after ``retry`` seconds, so two holders settle as
their views agree.  A message in flight at a kick may be handled twice; none is
lost: the session keeps it until it is acknowledged.

Lifecycle: made by its owner; :meth:`HeldSessions.take` and :meth:`let_go` as the
owner's rule says; :meth:`close` lets go of everything.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence

from jet.tasks import cancel_all
from jet.transport.broker import Broker
from jet.transport.link import Handler, Link

log = logging.getLogger("jet.transport.sessions")

#: Seconds a holder that was kicked off a session waits before it tries again.
RETRY = 3.0

#: What a held session subscribes: (topic filter, qos, handler).
Subscriptions = Sequence[tuple[str, int, Handler]]


class HeldSessions:
    """The sessions of gone clients one process holds, by a name of the caller's."""

    def __init__(self, broker: Broker, *, keepalive: int, retry: float = RETRY,
                 what: str = "session", who: str = "this process") -> None:
        self.broker = broker
        self.keepalive = keepalive
        self.retry = retry
        self.what = what  # how log lines name a held session ("share", ...)
        self.who = who  # how they name the holder ("group g: b")
        self.holding: dict[str, Link] = {}  # name -> our link to its session
        self._kicked: dict[str, float] = {}  # when a link of ours was kicked off
        self._letting_go: set[asyncio.Task[None]] = set()

    def may_take(self, name: str) -> bool:
        """Not held by us, and not kicked off it within ``retry`` seconds."""
        return name not in self.holding and (
            time.monotonic() - self._kicked.get(name, -math.inf) >= self.retry
        )

    async def take(self, name: str, client_id: str, subscriptions: Subscriptions) -> bool:
        """Connect as ``client_id`` (its persistent session) with ``subscriptions``; False
        when the broker would not have it (tried again after ``retry``)."""
        link = Link(self.broker, client_id, clean_session=False, ack_after_handling=True,
                    keepalive=self.keepalive, connect_timeout=10.0,
                    on_lost=lambda _reason: self._lost(name))
        for topic, qos, handler in subscriptions:
            await link.subscribe(topic, qos, handler)
        try:
            await link.__aenter__()
        except ConnectionError as exc:
            self._kicked[name] = time.monotonic()
            log.warning("%s's %s not taken: %s", name, self.what, exc)
            return False
        self.holding[name] = link
        return True

    def _lost(self, name: str) -> None:
        # Kicked off (the client is back, or another holder came): let go, no reconnecting.
        link = self.holding.pop(name, None)
        if link is None:
            return
        self._kicked[name] = time.monotonic()
        task = asyncio.create_task(link.close(), name=f"let-go-{name}")
        self._letting_go.add(task)
        task.add_done_callback(self._letting_go.discard)
        log.info("%s let go of %s's %s (its session was taken)", self.who, name, self.what)

    async def let_go(self, name: str) -> bool:
        """Close our link to ``name``'s session; True if we held it."""
        link = self.holding.pop(name, None)
        if link is None:
            return False
        await link.close()
        return True

    async def close(self) -> None:
        await cancel_all(list(self._letting_go))
        for name in list(self.holding):
            await self.let_go(name)
