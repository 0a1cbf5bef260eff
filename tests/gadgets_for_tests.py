"""Gadget classes for the tests (allowed with Registry.allowing([MODULE])): the check/graph
ones, a slow consumer, and faulty gadgets that block, sleep or raise SystemExit."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import attrs

from jet.runtime.gadget import Gadget, PortSpec

MODULE = "tests.gadgets_for_tests"


@attrs.define
class Source(Gadget):
    outputs = ("out",)


@attrs.define
class Pass(Gadget):
    inputs = ("in",)
    outputs = ("out",)

    def on_in(self, value: Any) -> None:
        self.emit("out", value)


@attrs.define
class Hold(Gadget):
    """A delay: emits later than it receives."""

    inputs = ("in",)
    outputs = ("out",)
    delay = True

    def on_in(self, value: Any) -> None:  # pragma: no cover - never run here
        pass


@attrs.define
class Typed(Gadget):
    """Declares port types so ``jet check`` can compare them."""

    inputs: ClassVar[PortSpec] = {"number": float, "text": str}
    outputs: ClassVar[PortSpec] = {"count": int, "name": str}
    gain: float = 1.0

    def on_message(self, port: str, value: Any) -> None:  # pragma: no cover
        pass


@attrs.define(kw_only=True)
class Slow(Gadget):
    """A consumer slower than its input: each value takes ``seconds`` to handle."""

    inputs = ("in",)
    outputs = ("out",)
    seconds: float = 0.01

    async def on_in(self, value: Any) -> None:
        await asyncio.sleep(self.seconds)
        self.emit("out", value)


# -- faulty gadgets (tests/test_survive_gadgets.py) ------------------------------------------


@attrs.define
class Stuck(Gadget):
    """An async consumer that never finishes its first message: its queue fills up."""

    inputs = ("in",)
    outputs = ("out",)

    async def on_in(self, value: Any) -> None:
        await asyncio.Event().wait()


@attrs.define(kw_only=True)
class Sleepy(Gadget):
    """A synchronous handler that holds the event loop for ``seconds`` (time.sleep)."""

    inputs = ("in",)
    outputs = ("out",)
    seconds: float = 1.0

    def on_in(self, value: Any) -> None:
        time.sleep(self.seconds)
        self.emit("out", value)


@attrs.define
class Exiting(Gadget):
    """Raises SystemExit on the value "exit" (KeyboardInterrupt on "interrupt"); passes the rest."""

    inputs = ("in",)
    outputs = ("out",)

    def on_in(self, value: Any) -> None:
        if value == "exit":
            raise SystemExit(3)
        if value == "interrupt":
            raise KeyboardInterrupt
        self.emit("out", value)


@attrs.define
class AsyncExiting(Gadget):
    """An async handler that raises SystemExit on "exit"; passes the rest."""

    inputs = ("in",)
    outputs = ("out",)

    async def on_in(self, value: Any) -> None:
        if value == "exit":
            raise SystemExit(4)
        self.emit("out", value)


@attrs.define
class ExitingRun(Gadget):
    """Its run() raises SystemExit as soon as the circuit starts."""

    outputs = ("out",)

    async def run(self) -> None:
        raise SystemExit(5)
