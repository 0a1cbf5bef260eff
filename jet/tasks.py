"""Ending background tasks the same way everywhere."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any


async def cancel_all(tasks: Iterable[asyncio.Task[Any]], *ignore: type[BaseException]) -> None:
    """Cancel every task, then wait for each to finish.

    All are cancelled before any is awaited, so none keeps running while
    another is being waited for.  Their cancellation (and the exception types
    in ``ignore``, raised by a task as it ends) is not passed on.
    """
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, *ignore):
            await task
