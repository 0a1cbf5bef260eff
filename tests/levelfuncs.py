"""What the level tests offer: level functions (`jet level ... --functions levelfuncs`) and a
relevance circuit's gadget (`jet pack --allow levelfuncs`)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from jet import Gadget
from jet.levels import level_function


@level_function
def average(values: list[float]) -> float:
    return sum(values) / len(values)


@level_function(name="nap")
async def sleep_then_answer(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "rested"


@level_function
def refuse(reason: str) -> None:
    raise ValueError(reason)


class NorthOnly(Gadget):
    """A relevance circuit's gadget: sends back the candidates whose payload says site: north."""

    inputs = ("candidate",)
    outputs = ("keep",)

    def on_candidate(self, candidate: Any) -> None:
        value = candidate.get("value") if isinstance(candidate, dict) else None
        if isinstance(value, dict) and value.get("site") == "north":
            self.emit("keep", candidate)


@level_function
def hang() -> None:
    """Never returns (a function stuck on a lock or a device)."""
    threading.Event().wait()
