"""A gadget that calls a level function (docs/levels.md) for each value it gets."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs

from jet.levels import call
from jet.levels.call import MODES
from jet.lib._util import one_of, positive
from jet.runtime.gadget import Gadget
from jet.transport import broker
from jet.transport.client import Session


@attrs.define(kw_only=True)
class LevelCall(Gadget):
    """Calls ``function`` on the levels above this pack's level with each value as its
    arguments (a list: positional, a map: keywords, anything else: one argument).

    ``result`` gets the first successful level's result (none when every level failed);
    ``outcomes`` gets every level's outcome, ``[{level, ok, result | error, ms}]``.
    ``broker`` is this level's broker (default ``$JET_BROKER``); ``mode`` sequential
    (default: the levels in order, up to the first success) or concurrent (all at once);
    ``levels`` names them (default: this level and every one above it).  One call at a
    time, in the order the values came; each bounded by ``timeout`` seconds per level.
    """

    inputs = ("args",)
    outputs = ("result", "outcomes")

    function: str = attrs.field(validator=attrs.validators.instance_of(str))
    broker: str | None = None
    mode: str = attrs.field(default="sequential", validator=one_of(*MODES))
    levels: list[str] | None = None
    timeout: float = attrs.field(default=5.0, validator=positive)
    _session: Session | None = attrs.field(default=None, init=False, repr=False)
    _connected: asyncio.Event = attrs.field(factory=asyncio.Event, init=False, repr=False)

    async def run(self) -> None:
        # One connection for the circuit's life, as a device keeps it.
        async with Session(broker.parse(self.broker), name="levelcall") as session:
            self._session = session
            self._connected.set()
            try:
                await asyncio.Event().wait()
            finally:
                self._session = None
                self._connected.clear()

    async def on_args(self, value: Any) -> None:
        async with asyncio.timeout(self.timeout):
            await self._connected.wait()
        session = self._session
        assert session is not None
        outcomes = await call(session.link.broker, self.function, value, mode=self.mode,
                              levels=self.levels, timeout=self.timeout, session=session)
        self.emit("outcomes", outcomes)
        first = next((o for o in outcomes if o["ok"]), None)
        if first is not None:
            self.emit("result", first["result"])
