"""Taps held by pages: the last values on any port, shown in the tap panel.

A tap is shared by every page that asked for it and ends when the last one
lets go (or disconnects).  An internal output of a pack or web circuit is
published only while tapped, so, like ``jet tap``, the desk sends the
circuit a ``tap`` command with a time to live and renews it while the tap
is held: a server that dies stops costing the circuit anything within
``ttl`` seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any

import attrs

from jet import address
from jet.transport import codec
from jet.transport.client import CommandFailed, NoReply, Replies
from jet.transport.link import Link, Subscription
from jet.web.board import PortAddress, StatusBoard, UnknownPort
from jet.web.jsonvalue import to_json
from jet.web.pages import Page

log = logging.getLogger("jet.web")

__all__ = ["TAP_TTL", "TapDesk", "TapError"]

TAP_TTL = 30.0
#: Values a tap remembers for a page that joins it later.
TAP_RECENT = 20


class TapError(ValueError):
    """The tap cannot be opened; the message says why."""


@attrs.define(eq=False)
class _Tap:
    target: str
    address: PortAddress
    holders: set[Page] = attrs.field(factory=set)
    recent: collections.deque[dict[str, Any]] = attrs.field(
        factory=lambda: collections.deque(maxlen=TAP_RECENT)
    )
    sub: Subscription | None = None
    lease: asyncio.Task[None] | None = None


class TapDesk:
    def __init__(
        self, link: Link, requester: Replies, board: StatusBoard, *, ttl: float = TAP_TTL
    ) -> None:
        self.link = link
        self.requester = requester
        self.board = board
        self.ttl = ttl
        self._taps: dict[str, _Tap] = {}

    async def open(self, page: Page, target: str) -> dict[str, Any]:
        """Start showing ``target`` (``circuit.gadget.port`` or a topic) to ``page``."""
        tap = self._taps.get(target)
        if tap is None:
            tap = await self._start(target)
        tap.holders.add(page)
        for frame in tap.recent:
            page.send(frame)
        return {"target": target, "topic": tap.address.topic}

    async def _start(self, target: str) -> _Tap:
        try:
            where = self.board.resolve(target, output=True)
        except UnknownPort as exc:
            raise TapError(str(exc)) from None
        tap = _Tap(target, where)
        if _needs_lease(where):
            try:
                await self._renew(where)
            except (CommandFailed, NoReply) as exc:
                raise TapError(str(exc)) from None
        if target in self._taps:  # another page opened it while we waited
            return self._taps[target]
        self._taps[target] = tap
        tap.sub = await self.link.subscribe(where.topic, 1, lambda t, p: self._show(tap, t, p))
        if _needs_lease(where):
            tap.lease = asyncio.create_task(self._keep(tap), name=f"web-tap-{target}")
        return tap

    async def _renew(self, where: PortAddress) -> None:
        assert where.conf is not None
        await self.requester.request(
            where.conf, {"cmd": "tap", "output": where.port, "ttl": self.ttl}
        )

    async def _keep(self, tap: _Tap) -> None:
        while True:
            await asyncio.sleep(self.ttl / 2)
            try:
                await self._renew(tap.address)
            except (CommandFailed, NoReply) as exc:
                log.warning("tap %s: renewing failed: %s", tap.target, exc)

    def _show(self, tap: _Tap, topic: str, payload: bytes) -> None:
        frame: dict[str, Any] = {"op": "tap_value", "target": tap.target, "topic": topic}
        try:
            frame["value"] = to_json(codec.decode(payload)) if payload else None
        except codec.PayloadError as exc:
            frame["value"] = None
            frame["error"] = str(exc)
        frame["t"] = time.time()
        tap.recent.append(frame)
        for page in tap.holders:
            page.send(frame)

    async def close(self, page: Page, target: str) -> None:
        tap = self._taps.get(target)
        if tap is None:
            raise TapError(f"{target!r} is not tapped")
        tap.holders.discard(page)
        if not tap.holders:
            await self._end(tap)

    async def release(self, page: Page) -> None:
        """A page went away: let go of everything it held."""
        for tap in list(self._taps.values()):
            tap.holders.discard(page)
            if not tap.holders:
                await self._end(tap)

    async def close_all(self) -> None:
        for tap in list(self._taps.values()):
            await self._end(tap)

    async def _end(self, tap: _Tap) -> None:
        # The circuit's lease is left to expire rather than cut (ttl 0): a
        # `jet tap` elsewhere may hold the same output.
        self._taps.pop(tap.target, None)
        if tap.lease is not None:
            tap.lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tap.lease
        if tap.sub is not None:
            await self.link.unsubscribe(tap.sub)

    def held_by(self, page: Page) -> list[str]:
        return sorted(t for t, tap in self._taps.items() if page in tap.holders)


def _needs_lease(where: PortAddress) -> bool:
    return where.conf is not None and address.rules(where.kind).runs_graph
