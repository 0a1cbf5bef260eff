"""Talking to containers: commands with replies, and reading retained status.

:class:`Replies` is the one request/reply waiter: a :class:`Session` (the CLI, the
loader) uses it over a connection of its own, the web container over its shared link.

async with Session(broker.parse(url)) as s:
    result = await s.request("jet/pack/default/conf", {"cmd": "status"})
    statuses = await s.retained("+/+/status")
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from types import TracebackType
from typing import Any, Self

from jet import address
from jet.transport import codec
from jet.transport.broker import Broker
from jet.transport.link import Link, Subscription, is_filter

REPLY_TIMEOUT = 5.0


def deadline(timeout: float) -> float:
    """A command's ``deadline`` field: when its sender stops waiting (epoch seconds, as
    the container compares it with its own clock; docs/protocol.md)."""
    return round(time.time() + timeout, 3)


class CommandFailed(RuntimeError):
    """A container answered a command with ``ok: false`` (the message is its error)."""


class NoReply(TimeoutError):
    """No container answered within the timeout."""


class Replies:
    """Commands with replies over a :class:`~jet.transport.link.Link` someone else opened.

    :meth:`start` subscribes to the reply topic (``jet/reply/<client id>`` unless told
    otherwise); :meth:`request` sends a command with an ``id`` and ``reply_to`` and waits
    for the reply carrying that id: its ``result`` when ``ok``, else :class:`CommandFailed`
    with the container's error, or :class:`NoReply` when none comes within the timeout.
    Every command carries a ``deadline`` (epoch seconds: now + that timeout): a container
    that gets it later (it was down, the command waited in its persistent session) refuses
    it, so a command reported as unanswered never takes effect afterwards.
    Replies nobody waits for (late, unknown id, unreadable) are dropped.  :meth:`stop`
    unsubscribes and cancels the requests still waiting.

    ``wait_sent``: a request first waits until the link has handed over everything queued
    before it (right for a link of its own, like a :class:`Session`'s, where it waits out
    a reconnection rather than time out); a link shared with busy traffic (the web
    container's) queues the command without waiting, and a command the full outbox
    refuses (counted by the link) ends in :class:`NoReply`.  ``id_prefix`` keeps the ids
    of several requesters on one reply topic apart.
    """

    def __init__(
        self,
        link: Link,
        reply_topic: str | None = None,
        *,
        timeout: float = REPLY_TIMEOUT,
        wait_sent: bool = True,
        id_prefix: str = "",
    ) -> None:
        self.link = link
        self.reply_topic = reply_topic or address.reply(link.client_id)
        self.timeout = timeout
        self.wait_sent = wait_sent
        self.id_prefix = id_prefix
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        """Subscribe the reply topic; requests can be made from here on."""
        self._sub = await self.link.subscribe(self.reply_topic, 1, self._on_reply)

    async def stop(self) -> None:
        """Unsubscribe; a request still waiting is cancelled."""
        if self._sub is not None:
            await self.link.unsubscribe(self._sub)
            self._sub = None
        for waiter in self._waiting.values():
            waiter.cancel()

    def _on_reply(self, _topic: str, payload: bytes) -> None:
        try:
            reply = codec.decode(payload)
        except codec.PayloadError:
            return
        if not isinstance(reply, dict):
            return
        waiter = self._waiting.pop(str(reply.get("id")), None)
        if waiter is None or waiter.done():
            return
        if reply.get("ok"):
            waiter.set_result(reply.get("result"))
        else:
            waiter.set_exception(CommandFailed(str(reply.get("error"))))

    async def request(
        self, topic: str, command: dict[str, Any], timeout: float | None = None, *, qos: int = 1
    ) -> Any:
        """Send ``command`` to a conf topic and return the reply's result.

        ``qos`` 0: a question not worth keeping for a container that is away
        (a liveness probe), which a broker does not queue in its session.
        """
        ident = f"{self.id_prefix}{next(self._ids)}"
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = waiter
        limit = self.timeout if timeout is None else timeout
        message = codec.encode(
            {**command, "id": ident, "reply_to": self.reply_topic, "deadline": deadline(limit)}
        )
        try:
            if self.wait_sent:
                await self.link.publish(topic, message, qos=qos)
            else:
                self.link.publish_nowait(topic, message, qos=qos)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
            # cancellation (Ctrl-C) that arrives in the turn the reply does.
            async with asyncio.timeout(limit):
                return await waiter
        except TimeoutError:
            raise NoReply(
                f"no reply on {topic} within {limit:g}s (is its container running?)"
            ) from None
        finally:
            self._waiting.pop(ident, None)


class Session:
    """A connection of its own for commands with replies (:class:`Replies`) and for
    reading retained statuses; ``async with`` connects and disconnects it."""

    def __init__(self, broker: Broker, *, name: str = "cli", timeout: float = REPLY_TIMEOUT):
        self.client_id = f"jet-{name}-{os.getpid()}-{id(self) & 0xFFFF:x}"
        self.link = Link(broker, self.client_id, clean_session=True, connect_timeout=5.0)
        self.replies = Replies(self.link, timeout=timeout)

    async def __aenter__(self) -> Self:
        await self.link.__aenter__()
        await self.replies.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The reply subscription ends with the (clean) session.
        await self.link.close()

    async def request(
        self, topic: str, command: dict[str, Any], timeout: float | None = None
    ) -> Any:
        """Send ``command`` to a conf topic and return the reply's result."""
        return await self.replies.request(topic, command, timeout)

    async def send(self, topic: str, command: dict[str, Any]) -> None:
        """Send a command without asking for a reply (stale after the session's timeout)."""
        message = {**command, "deadline": deadline(self.replies.timeout)}
        await self.link.publish(topic, codec.encode(message), qos=1)

    async def retained(
        self, *topic_filters: str, quiet: float = 0.3, limit: float = 3.0
    ) -> dict[str, Any]:
        """Collect the retained messages under one or more filters.

        The broker sends them right after the subscription; we stop once no
        new one has come for ``quiet`` seconds (bounded by ``limit``), or as
        soon as every topic asked for is there when none is a filter.
        """
        found: dict[str, Any] = {}
        arrived = asyncio.Event()
        exact = set(topic_filters) if not any(map(is_filter, topic_filters)) else None
        seen: set[str] = set()

        def collect(topic: str, payload: bytes) -> None:
            seen.add(topic)
            arrived.set()
            if not payload:
                found.pop(topic, None)
                return
            try:
                found[topic] = codec.decode(payload)
            except codec.PayloadError:
                found[topic] = None

        subs = [await self.link.subscribe(f, 1, collect) for f in topic_filters]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        try:
            while loop.time() < deadline and not (exact is not None and exact <= seen):
                arrived.clear()
                try:
                    async with asyncio.timeout(min(quiet, deadline - loop.time())):
                        await arrived.wait()
                except TimeoutError:
                    break
        finally:
            for sub in subs:
                await self.link.unsubscribe(sub)
        return found
