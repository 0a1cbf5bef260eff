"""The operator view's MQTT side: status board, wire rates, taps and inject.

It shares the web container's link (one connection per server) and pushes
to the pages: a ``board`` frame whenever a retained status changes (at most
every :data:`BOARD_INTERVAL` seconds), a ``rates`` frame every
``rate_interval`` seconds while a page is open, and ``tap_value`` frames to
the pages holding a tap.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from jet import address
from jet.runtime.registry import Registry
from jet.tasks import cancel_all
from jet.transport.client import CommandFailed, NoReply, Replies
from jet.transport.link import Link, Subscription
from jet.web.board import StatusBoard, UnknownPort
from jet.web.container import PageError
from jet.web.pages import Page, Pages
from jet.web.taps import TAP_TTL, TapDesk, TapError
from jet.web.wirerates import WireRates

__all__ = ["Operator"]

BOARD_INTERVAL = 0.2
RATE_INTERVAL = 2.0


class Operator:
    """The operator view's MQTT side, on the web container's link.

    ``async with Operator(link, pages)`` subscribes to every status and
    definition and starts the board, rate and tap tasks; leaving the block
    stops them and unsubscribes.
    """

    def __init__(
        self,
        link: Link,
        pages: Pages,
        *,
        registry: Registry | None = None,
        rate_interval: float = RATE_INTERVAL,
        tap_ttl: float = TAP_TTL,
    ) -> None:
        self.link = link
        self.pages = pages
        self.board = StatusBoard(registry)
        # The container's link carries its circuits' traffic too: never wait on it.
        self.requester = Replies(link, wait_sent=False, id_prefix="w")
        self.taps = TapDesk(link, self.requester, self.board, ttl=tap_ttl)
        self.rates = WireRates(link)
        self.rate_interval = rate_interval
        self._board_changed = asyncio.Event()
        #: called after each board frame (the circuits running changed)
        self.on_board: list[Callable[[], None]] = []
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        await self.requester.start()
        for topic in (
            address.ALL_CONTAINER_STATUS,
            address.ALL_CIRCUIT_DEFINITIONS,
            address.ALL_CIRCUIT_STATUS,
        ):
            self._subs.append(await self.link.subscribe(topic, 1, self._on_status))
        self._tasks = [
            asyncio.create_task(self._push_board(), name="web-board"),
            asyncio.create_task(self._push_rates(), name="web-rates"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await cancel_all(self._tasks)
        await self.taps.close_all()
        await self.rates.watch(set())
        for sub in self._subs:
            await self.link.unsubscribe(sub)
        await self.requester.stop()

    # -- pushing to pages ----------------------------------------------------------------

    def _on_status(self, topic: str, payload: bytes) -> None:
        if self.board.update(topic, payload):
            self._board_changed.set()

    def board_frame(self) -> dict[str, Any]:
        return {"op": "board", **self.board.snapshot()}

    async def _push_board(self) -> None:
        # Coalesced: a burst of statuses (a pack starting with many circuits)
        # becomes one frame.
        while True:
            await self._board_changed.wait()
            await asyncio.sleep(BOARD_INTERVAL)
            self._board_changed.clear()
            self.pages.broadcast(self.board_frame())
            for callback in self.on_board:
                callback()

    async def _push_rates(self) -> None:
        while True:
            await asyncio.sleep(self.rate_interval)
            if len(self.pages):
                rates = self.rates.take()
                await self.rates.watch(self.board.wire_topics())
                self.pages.broadcast({"op": "rates", "rates": rates})
            elif self.rates.topics:
                await self.rates.watch(set())

    def greet(self, page: Page) -> None:
        page.send(self.board_frame())

    # -- what pages ask for ----------------------------------------------------------------

    async def tap(self, page: Page, target: str) -> dict[str, Any]:
        try:
            return await self.taps.open(page, target)
        except TapError as exc:
            raise PageError(f"tap {target}: {exc}") from None

    async def untap(self, page: Page, target: str) -> None:
        try:
            await self.taps.close(page, target)
        except TapError as exc:
            raise PageError(f"untap {target}: {exc}") from None

    async def inject(self, target: str, value: Any) -> dict[str, Any]:
        try:
            address = self.board.resolve(target, output=False)
        except UnknownPort as exc:
            raise PageError(f"inject {target}: {exc}") from None
        assert address.conf is not None
        try:
            await self.requester.request(
                address.conf, {"cmd": "inject", "input": address.port, "value": value}
            )
        except (CommandFailed, NoReply) as exc:
            raise PageError(f"inject {target}: {exc}") from None
        return {"target": target, "conf": address.conf, "input": address.port}

    async def release(self, page: Page) -> None:
        await self.taps.release(page)
