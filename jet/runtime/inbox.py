"""The bounded input queue of a gadget with an async handler.

Each arrival says how long the queue may be and what happens when it is
full (the policy of the wire it came by):

- ``block``: the sender waits for room (used for MQTT wires: the pack stops
  acknowledging, so the broker holds the messages; nothing is lost);
- ``drop-oldest``: the oldest queued message makes room (fresh data wins);
- ``drop-newest``: the arriving message is refused.

Every drop is returned to the caller, which counts it; nothing is silent.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

Item = tuple[str, Any]

DEFAULT_LIMIT = 1000


class Inbox:
    def __init__(self) -> None:
        self._items: collections.deque[Item] = collections.deque()
        self._arrived = asyncio.Event()
        self._freed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._working = False

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
        while len(self._items) >= limit:
            self._freed.clear()
            await self._freed.wait()
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
