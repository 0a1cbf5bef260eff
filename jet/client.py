"""Talking to containers: commands with replies, and reading retained status.

async with Session(broker.parse(url)) as s:
    result = await s.request("jet/pack/default/conf", {"cmd": "status"})
    statuses = await s.retained("+/+/status")
"""

from __future__ import annotations

import asyncio
import itertools
import os
from types import TracebackType
from typing import Any, Self

from . import address, codec
from .broker import Broker
from .mqtt import Link

REPLY_TIMEOUT = 5.0


class CommandFailed(RuntimeError):
    """A container answered a command with ``ok: false`` (the message is its error)."""


class NoReply(TimeoutError):
    """No container answered within the timeout."""


class Session:
    def __init__(self, broker: Broker, *, name: str = "cli", timeout: float = REPLY_TIMEOUT):
        self.client_id = f"jet-{name}-{os.getpid()}-{id(self) & 0xFFFF:x}"
        self.link = Link(broker, self.client_id, clean_session=True, connect_timeout=5.0)
        self.timeout = timeout
        self._reply_topic = address.reply(self.client_id)
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Self:
        await self.link.__aenter__()
        await self.link.subscribe(self._reply_topic, 1, self._on_reply)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.link.close()

    def _on_reply(self, _topic: str, payload: bytes) -> None:
        try:
            reply = codec.decode(payload)
        except codec.PayloadError:
            return
        waiter = self._waiting.pop(str(reply.get("id")), None) if isinstance(reply, dict) else None
        if waiter is None or waiter.done():
            return
        if reply.get("ok"):
            waiter.set_result(reply.get("result"))
        else:
            waiter.set_exception(CommandFailed(str(reply.get("error"))))

    async def request(
        self, topic: str, command: dict[str, Any], timeout: float | None = None
    ) -> Any:
        """Send ``command`` to a conf topic and return the reply's result."""
        ident = str(next(self._ids))
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = waiter
        message = {**command, "id": ident, "reply_to": self._reply_topic}
        await self.link.publish(topic, codec.encode(message), qos=1)
        limit = self.timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(waiter, limit)
        except TimeoutError:
            raise NoReply(
                f"no reply on {topic} within {limit:g}s (is its container running?)"
            ) from None
        finally:
            self._waiting.pop(ident, None)

    async def send(self, topic: str, command: dict[str, Any]) -> None:
        """Send a command without asking for a reply."""
        await self.link.publish(topic, codec.encode(command), qos=1)

    async def retained(
        self, *topic_filters: str, quiet: float = 0.3, limit: float = 3.0
    ) -> dict[str, Any]:
        """Collect the retained messages under one or more filters.

        The broker sends them right after the subscription; we stop once no
        new one has come for ``quiet`` seconds (bounded by ``limit``).
        """
        found: dict[str, Any] = {}
        arrived = asyncio.Event()

        def collect(topic: str, payload: bytes) -> None:
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
            while loop.time() < deadline:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), min(quiet, deadline - loop.time()))
                except TimeoutError:
                    break
        finally:
            for sub in subs:
                await self.link.unsubscribe(sub)
        return found

    async def circuit_statuses(self, **wait: float) -> dict[str, Any]:
        """Every retained circuit status by its topic, each with its ``definition``.

        A container publishes a circuit's definition on its own retained topic
        once per load or reload; it is put back into the status here.
        """
        found = await self.retained(
            address.ALL_CIRCUIT_STATUS, address.ALL_CIRCUIT_DEFINITIONS, **wait
        )
        statuses: dict[str, Any] = {}
        for topic, status in found.items():
            parsed = address.parse(topic)
            if parsed is None or parsed.role != "status":
                continue
            if isinstance(status, dict) and "definition" not in status:
                definition = found.get(address.circuit_definition(parsed.kind, parsed.id))
                if definition is not None:
                    status["definition"] = definition
            statuses[topic] = status
        return statuses
