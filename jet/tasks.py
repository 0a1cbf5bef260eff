"""Ending background tasks, and logging repeated trouble, the same way everywhere.

(Below every layer: the transport, the runtime and the containers all use it.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def cancel_all(
    tasks: Iterable[asyncio.Task[Any]], *ignore: type[BaseException], timeout: float | None = None
) -> list[asyncio.Task[Any]]:
    """Cancel every task, then wait for each to finish.

    All are cancelled before any is awaited, so none keeps running while
    another is being waited for.  Their cancellation (and the exception types
    in ``ignore``, raised by a task as it ends) is not passed on.  With a
    ``timeout``, a task that has not ended by then (one that swallows its
    cancellation) is left behind: the tasks left are returned.
    """
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if timeout is None:
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, *ignore):
                await task
        return []
    if not tasks:
        return []
    done, left = await asyncio.wait(tasks, timeout=timeout)
    for task in done:
        if not task.cancelled():
            exc = task.exception()
            if exc is not None and not isinstance(exc, ignore):
                raise exc
    return [task for task in tasks if task in left]


def worth_logging(count: int) -> bool:
    """Trouble that repeats (drops, refusals, gadget errors) is logged the first
    time, then every 1000th time, with the count: never silent, never a flood."""
    return count == 1 or count % 1000 == 0
