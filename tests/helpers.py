"""Small test utilities: run a coroutine with a hard bound, collect MQTT messages, account
for a numbered stream."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Coroutine
from typing import Any

from conftest import FAULT_REPORT

from jet.transport import broker, codec
from jet.transport.link import Link


def run(coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
    """Run a test coroutine; a hung test fails after ``timeout`` instead of hanging CI."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def account(name: str, sent: int, values: list[Any]) -> dict[str, int]:
    """A numbered stream ``0 .. sent-1`` as it arrived (``values``): sent, delivered, lost,
    duplicated; kept under ``name`` for the fault report at the end of the run."""
    counts = collections.Counter(int(v) for v in values)
    row = {
        "sent": sent,
        "delivered": len(set(counts) & set(range(sent))),
        "lost": sum(1 for n in range(sent) if n not in counts),
        "duplicated": sum(c - 1 for c in counts.values() if c > 1),
    }
    FAULT_REPORT[name] = row
    return row


class Collector:
    """Subscribes to a topic filter and records decoded messages; waits on events."""

    def __init__(self, link: Link, *, raw: bool = False) -> None:
        self.link = link
        self.raw = raw
        self.messages: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()

    async def watch(self, topic_filter: str, qos: int = 1) -> Collector:
        await self.link.subscribe(topic_filter, qos, self._on)
        return self

    def _on(self, topic: str, payload: bytes) -> None:
        value = payload if self.raw else codec.decode(payload) if payload else None
        self.messages.append((topic, value))
        self._changed.set()

    def values(self, topic: str | None = None) -> list[Any]:
        return [v for t, v in self.messages if topic is None or t == topic]

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        """Wait until ``predicate(self)`` is true; raise with what was seen otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate(self):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"timed out; seen {self.messages[-10:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


def link(url: str, name: str) -> Link:
    return Link(broker.parse(url), name, clean_session=True)
