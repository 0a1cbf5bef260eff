"""Splitting a stream among a group's members on a broker without shared subscriptions.

Where the broker does not hand each message of a shared subscription to one member
(NATS's MQTT grants ``$share/...`` and then delivers nothing on it), every member
subscribes the topics plainly, so every member gets every message, and each handles
the ones whose *key* falls to it among the live members: rendezvous hashing
(:func:`owner`), which every member computes alike from the same membership, and
which moves only a gone member's keys when it goes.

A member keeps the others' messages for :data:`REPLAY_WINDOW` seconds: when one of
them goes, the keys that fall to this member now are replayed from what was kept,
skipping what the caller says the gone one had handled (each user has its own way
of telling: the device registry, the device's last message stored; a pack group, a
window of time before the going was seen).

A member that comes back on a persistent session gets, first, what the broker kept
for it while it was away (the others handled those): :func:`mark` publishes a marker
to itself and waits for it; what came before it is :attr:`Partition.early`, dropped
when other members were live (they handled it), handled when none was.

Users: :class:`jet.devices.fellows.Fellowship` (``jet devices serve --partition``)
and pack groups (``jet pack --group G --partition``, :mod:`jet.cluster.member`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from jet.transport.link import Link

#: Seconds of others' messages a member keeps, to handle a gone member's last ones.
REPLAY_WINDOW = 10.0
#: Messages kept at most for that (and before the marker).
REPLAY_LIMIT = 100_000
#: Seconds a member waits for its marker to come back when it joins.
MARK_TIMEOUT = 30.0

Handler = Callable[[str, bytes], "Awaitable[None] | None"]


def owner(key: str, live: Iterable[str]) -> str:
    """The live member that ``key`` falls to: rendezvous hashing, so a member's going
    moves only what was its own."""
    return max(sorted(live), key=lambda n: hashlib.sha256(f"{key}\0{n}".encode()).digest())


def message_key(topic: str, payload: bytes) -> str:
    """A key every member computes alike for one message (MQTT has no message ids): a
    hash of its topic and payload.  Identical messages on one topic share a key, so
    they always go to the same member."""
    return hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()


@attrs.frozen
class Kept:
    """A message kept: when it came, its key, and where it goes if it is replayed."""

    at: float
    space: str  # (what the membership is of: a circuit, or "" for one membership)
    key: str
    topic: str
    payload: bytes
    handler: Handler


class Partition:
    """One member's part of a partitioned stream (see the module doc)."""

    def __init__(self, me: str, *, window: float = REPLAY_WINDOW,
                 limit: int = REPLAY_LIMIT) -> None:
        self.me = me
        self.window = window
        self.ready = False  # (once the marker is back: see :meth:`marked`)
        self.early: deque[Kept] = deque(maxlen=limit)
        self.kept: deque[Kept] = deque(maxlen=limit)
        self.replayed = 0
        self.dropped_early = 0
        self._limit = limit

    def mine(self, key: str, live: Iterable[str], topic: str, payload: bytes,
             handler: Handler, *, space: str = "") -> bool:
        """Is this message this member's to handle?  Yes when ``key`` falls to it among
        ``live``; another's is kept a while (:meth:`gone` replays it if need be)."""
        now = time.time()
        entry = Kept(now, space, key, topic, payload, handler)
        if not self.ready:
            self.early.append(entry)
            return False
        if owner(key, live) == self.me:
            return True
        kept = self.kept
        kept.append(entry)
        while kept and kept[0].at < now - self.window:
            kept.popleft()
        return False

    def marked(self, others_live: bool) -> list[Kept]:
        """The marker is back: what came before it, to handle when no other member was
        live (else they handled it: dropped, counted)."""
        self.ready = True
        early, self.early = list(self.early), deque(maxlen=self._limit)
        if others_live:
            self.dropped_early += len(early)
            return []
        return early

    def gone(self, gone: set[str], before: set[str], live: set[str], *, space: str = "",
             handled: Callable[[Kept], bool] = lambda _k: False) -> list[Kept]:
        """Members ``gone`` from ``before`` (``live`` now): the kept messages of ``space``
        whose keys fell to them and fall to this member now, less those ``handled``
        says the gone one had handled; the caller hands them on.  Counted in
        :attr:`replayed`."""
        if not gone or not self.ready:
            return []
        found: list[Kept] = []
        kept, self.kept = self.kept, deque(maxlen=self._limit)
        for entry in kept:
            if (entry.space != space or not before or not live
                    or owner(entry.key, before) not in gone or owner(entry.key, live) != self.me):
                self.kept.append(entry)
            elif not handled(entry):
                found.append(entry)
        self.replayed += len(found)
        return found


async def mark(link: Link, topic: str, payload: bytes, timeout: float = MARK_TIMEOUT) -> None:
    """Publish a marker to ourselves on ``topic`` and wait for it to come back: what a
    persistent session held from before comes before it (ConnectionError if it does not
    come back in ``timeout`` seconds)."""
    back = asyncio.Event()
    sub = await link.subscribe(topic, 1, lambda _t, _p: back.set(), retained=False)
    try:
        await link.publish(topic, payload, qos=1)
        try:
            async with asyncio.timeout(timeout):
                await back.wait()
        except TimeoutError:
            raise ConnectionError(f"{link.broker.url}: our marker did not come back within"
                                  f" {timeout:g} s") from None
    finally:
        await link.unsubscribe(sub)


class Split:
    """A pack group member's partition of its copies' inputs (``jet pack --group G
    --partition``): each message's key is :func:`message_key` (its topic and payload),
    its members are those running a live copy of the circuit (``space``), as
    :attr:`live` says (set by the member's group view; until then, this member alone)."""

    def __init__(self, me: str) -> None:
        self.part = Partition(me)
        self.live: Callable[[str], set[str]] = lambda _space: {me}

    def mine(self, space: str, topic: str, payload: bytes, handler: Handler) -> bool:
        return self.part.mine(message_key(topic, payload), self.live(space), topic, payload,
                              handler, space=space)
