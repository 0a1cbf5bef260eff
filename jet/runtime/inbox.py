"""The bounded input queue of a gadget with an async handler.

Each arrival says how long the queue may be and what happens when it is
full (the policy of the wire it came by):

- ``block``: the sender waits for room (used for MQTT wires: the wire's later
  messages wait in its subscription, in order, while the rest of the pack
  goes on: see :mod:`jet.transport.link`; nothing is dropped below that bound);
- ``drop-oldest``: the oldest queued message makes room (fresh data wins);
- ``drop-newest``: the arriving message is refused.

Every drop is returned to the caller, which counts it; nothing is silent.

A gadget replaced by a reload has its inbox closed: what is still queued is
taken out (the reload hands it to the new gadget), and a sender waiting for
room gets :class:`InboxClosed`, so it can deliver to the new gadget instead
of waiting forever on one that no longer runs.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

Item = tuple[str, Any]

DEFAULT_LIMIT = 1000


class InboxClosed(Exception):
    """The gadget this inbox belonged to was replaced or stopped."""


class Inbox:
    def __init__(self) -> None:
        self._items: collections.deque[Item] = collections.deque()
        self._arrived = asyncio.Event()
        self._freed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._working = False
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    def full(self, limit: int) -> bool:
        return len(self._items) >= limit

    def put_nowait(self, item: Item, limit: int, policy: str) -> int:
        """Queue ``item``; returns how many messages were dropped (0 or 1).

        With ``block`` on a full queue it raises ``asyncio.QueueFull``: the
        caller must ``await put()`` instead.
        """
        dropped = 0
        if self._closed:
            return 1  # an emission of a gadget that outlived its network
        if len(self._items) >= limit:
            if policy == "drop-newest":
                return 1
            if policy == "drop-oldest":
                self._items.popleft()
                dropped = 1
            else:
                raise asyncio.QueueFull
        self._items.append(item)
        self._idle.clear()
        self._arrived.set()
        return dropped

    async def put(self, item: Item, limit: int) -> None:
        """Queue ``item``, waiting while the queue holds ``limit`` or more."""
        while len(self._items) >= limit and not self._closed:
            self._freed.clear()
            await self._freed.wait()
        if self._closed:
            raise InboxClosed
        self.put_nowait(item, limit, "block")

    async def get(self) -> Item:
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        self._working = True
        item = self._items.popleft()
        self._freed.set()
        return item

    def done(self) -> None:
        """The item from the last get() is handled."""
        self._working = False
        if not self._items:
            self._idle.set()

    async def join(self) -> None:
        """Wait until the queue is empty and its last item handled."""
        await self._idle.wait()

    @property
    def busy(self) -> bool:
        """True while an item taken by get() is being handled."""
        return self._working

    def close(self) -> list[Item]:
        """Refuse everything from now on; returns what was still queued, in order.

        Senders waiting in :meth:`put` get :class:`InboxClosed`.
        """
        self._closed = True
        left = list(self._items)
        self._items.clear()
        self._freed.set()
        return left
