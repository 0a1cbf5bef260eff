"""Gadget classes for the check/graph tests (allowed with Registry.allowing([MODULE]))."""

from __future__ import annotations

import asyncio
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
