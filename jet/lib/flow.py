"""Flow control: which messages pass, and when."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs

from jet.runtime.gadget import Gadget, period

__all__ = ["ChangeOnly", "Counter", "Delay", "RateLimit"]

_NOTHING: Any = object()


@attrs.define(kw_only=True)
class ChangeOnly(Gadget):
    """Passes a value only when it differs (``!=``) from the last one passed.

    The first value always passes.  Any kind of value is accepted.
    """

    inputs = ("in",)
    outputs = ("out",)

    last: Any = attrs.field(default=_NOTHING, init=False, repr=False)

    def on_in(self, value: Any) -> None:
        if self.last is not _NOTHING and value == self.last:
            return
        self.last = value
        self.emit("out", value)


@attrs.define(kw_only=True)
class Counter(Gadget):
    """Emits the number of messages received so far (1, 2, 3, ...)."""

    inputs = ("in",)
    outputs = ("out",)

    count: int = attrs.field(default=0, init=False)

    def on_in(self, _value: Any) -> None:
        self.count += 1
        self.emit("out", self.count)


class _Timers:
    """The timer handles a gadget has scheduled, cancelled when it stops."""

    def __init__(self) -> None:
        self.handles: set[asyncio.TimerHandle] = set()

    def later(self, seconds: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self.handles.discard(handle)
            callback(*args)

        handle = loop.call_later(seconds, fire)
        self.handles.add(handle)
        return handle

    def cancel(self) -> None:
        for handle in self.handles:
            handle.cancel()
        self.handles.clear()


async def _hold_until_cancelled(timers: _Timers) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        timers.cancel()


@attrs.define(kw_only=True)
class Delay(Gadget):
    """Re-emits each value ``seconds`` later (order is kept).

    Needs a running event loop.  Values still waiting when the circuit stops
    are dropped.
    """

    inputs = ("in",)
    outputs = ("out",)
    delay = True

    seconds: float = attrs.field(default=0.0, validator=period(zero=True))
    _timers: _Timers = attrs.field(factory=_Timers, init=False, repr=False)

    @property
    def pending(self) -> int:
        """How many values are waiting to be emitted."""
        return len(self._timers.handles)

    def on_in(self, value: Any) -> None:
        self._timers.later(self.seconds, self.emit, "out", value)

    async def run(self) -> None:
        await _hold_until_cancelled(self._timers)


@attrs.define(kw_only=True)
class RateLimit(Gadget):
    """At most one output per ``interval`` seconds, never losing the latest value.

    A value arriving when the last output is at least ``interval`` old passes
    at once.  Otherwise it becomes the pending value, emitted when the
    interval ends; a newer value arriving meanwhile replaces it (counted in
    ``dropped``).  Needs a running event loop.
    """

    inputs = ("in",)
    outputs = ("out",)
    delay = True

    interval: float = attrs.field(default=1.0, validator=period())
    dropped: int = attrs.field(default=0, init=False)
    _last_emit: float | None = attrs.field(default=None, init=False, repr=False)
    _pending: Any = attrs.field(default=_NOTHING, init=False, repr=False)
    _timers: _Timers = attrs.field(factory=_Timers, init=False, repr=False)

    def on_in(self, value: Any) -> None:
        now = asyncio.get_running_loop().time()
        if self._pending is not _NOTHING:
            self.dropped += 1
            self._pending = value
            return
        if self._last_emit is None or now - self._last_emit >= self.interval:
            self._last_emit = now
            self.emit("out", value)
            return
        self._pending = value
        self._timers.later(self._last_emit + self.interval - now, self._flush)

    def _flush(self) -> None:
        value, self._pending = self._pending, _NOTHING
        self._last_emit = asyncio.get_running_loop().time()
        self.emit("out", value)

    async def run(self) -> None:
        try:
            await _hold_until_cancelled(self._timers)
        finally:
            self._pending = _NOTHING
