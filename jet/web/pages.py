"""The pages connected to the server, and what is sent to them.

Everything the MQTT side has for the pages goes through :class:`Pages`
without waiting on a browser: each :class:`Page` has a bounded outbox that a
sender task writes to its WebSocket.  A page that cannot keep up loses
frames (counted, and told so once it catches up) instead of making the
server buffer without bound or stall the MQTT dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from jet.web.jsonvalue import dumps

log = logging.getLogger("jet.web")

__all__ = ["OUTBOX_FRAMES", "Page", "Pages"]

OUTBOX_FRAMES = 2000

#: ``send(text)``: writes one text frame to the page's WebSocket.
Sender = Callable[[str], Awaitable[None]]

_page_numbers = itertools.count(1)


class Page:
    """One browser page (one WebSocket connection)."""

    def __init__(self, send: Sender, *, limit: int = OUTBOX_FRAMES) -> None:
        self.number = next(_page_numbers)
        self.dropped = 0
        self._send = send
        self._outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=limit)
        self._unreported = 0
        self._task = asyncio.create_task(self._write(), name=f"web-page-{self.number}")

    def __repr__(self) -> str:
        return f"<Page {self.number}>"

    def send(self, frame: Mapping[str, Any]) -> None:
        self.send_text(dumps(frame))

    def send_text(self, text: str) -> None:
        try:
            self._outbox.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped += 1
            self._unreported += 1

    async def _write(self) -> None:
        while True:
            text = await self._outbox.get()
            await self._send(text)
            if self._unreported and self._outbox.empty():
                lost, self._unreported = self._unreported, 0
                await self._send(
                    dumps(
                        {
                            "op": "dropped",
                            "count": lost,
                            "error": f"page too slow: {lost} frames dropped",
                        }
                    )
                )

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task


class Pages:
    """The set of connected pages; ``broadcast`` encodes a frame once for all of them."""

    def __init__(self) -> None:
        self._pages: dict[int, Page] = {}
        #: called with the number of pages after one joins or leaves
        self.on_change: list[Callable[[int], None]] = []

    def __len__(self) -> int:
        return len(self._pages)

    def __iter__(self) -> Iterator[Page]:
        return iter(list(self._pages.values()))

    def add(self, page: Page) -> None:
        self._pages[page.number] = page
        self._changed()

    def remove(self, page: Page) -> None:
        if self._pages.pop(page.number, None) is not None:
            self._changed()

    def _changed(self) -> None:
        for callback in self.on_change:
            callback(len(self._pages))

    def broadcast(self, frame: Mapping[str, Any]) -> None:
        if not self._pages:
            return
        text = dumps(frame)
        for page in self._pages.values():
            page.send_text(text)
