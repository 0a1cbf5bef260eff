"""Level functions the level tests offer (`jet level ... --functions levelfuncs`)."""

from __future__ import annotations

import asyncio

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
