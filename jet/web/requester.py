"""Commands with replies over a link the server already has.

:class:`jet.client.Session` opens a connection of its own; the web server
sends its few commands (tap, inject) over the container's link instead, with
replies on ``jet/reply/<its client id>`` and the same errors as a Session.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from .. import codec, topics
from ..client import CommandFailed, NoReply
from ..mqtt import Link, Subscription

__all__ = ["CommandFailed", "NoReply", "Requester"]

REPLY_TIMEOUT = 5.0


class Requester:
    def __init__(self, link: Link, *, timeout: float = REPLY_TIMEOUT) -> None:
        self.link = link
        self.timeout = timeout
        self.reply_topic = topics.reply(link.client_id)
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.link.subscribe(self.reply_topic, 1, self._on_reply)

    async def close(self) -> None:
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

    async def request(self, topic: str, command: dict[str, Any]) -> Any:
        """Send ``command`` to a conf topic and return the reply's result."""
        ident = f"w{next(self._ids)}"
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = waiter
        message = {**command, "id": ident, "reply_to": self.reply_topic}
        try:
            self.link.publish_nowait(topic, codec.encode(message), qos=1)
            return await asyncio.wait_for(waiter, self.timeout)
        except TimeoutError:
            raise NoReply(
                f"no reply on {topic} within {self.timeout:g}s (is its container running?)"
            ) from None
        finally:
            self._waiting.pop(ident, None)
