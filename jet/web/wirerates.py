"""Messages per second on the wires between circuits, for the operator view.

A pack's status carries rates per circuit, not per wire; the server counts
the messages on each wire topic itself.  It subscribes (QoS 0, so counting
never slows a sender) only while some page is open: an unwatched server
costs the broker nothing.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from jet.transport.link import Link, Subscription

__all__ = ["WireRates"]


class WireRates:
    def __init__(self, link: Link) -> None:
        self.link = link
        self._subs: dict[str, Subscription] = {}
        self._counts = collections.Counter[str]()
        self._since = time.monotonic()

    @property
    def topics(self) -> set[str]:
        return set(self._subs)

    async def watch(self, wanted: set[str]) -> None:
        """Count exactly the topics in ``wanted`` from now on."""
        for topic in set(self._subs) - wanted:
            await self.link.unsubscribe(self._subs.pop(topic))
            self._counts.pop(topic, None)
        for topic in sorted(wanted - set(self._subs)):
            self._subs[topic] = await self.link.subscribe(topic, 0, self._count_on(topic))

    def _count_on(self, topic: str) -> Callable[[str, bytes], None]:
        def count(_msg_topic: str, _payload: bytes) -> None:
            self._counts[topic] += 1

        return count

    def take(self) -> dict[str, float]:
        """Messages per second on each watched topic since the last call."""
        now = time.monotonic()
        elapsed = max(now - self._since, 1e-3)
        rates = {t: round(self._counts[t] / elapsed, 2) for t in self._subs}
        self._counts.clear()
        self._since = now
        return rates
