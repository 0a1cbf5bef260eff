"""Ending background tasks, ending a process on a signal, and logging repeated
trouble, the same way everywhere.

(Below every layer: the transport, the runtime and the containers all use it,
and every long-running command runs its main coroutine with :func:`run_until_signalled`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("jet.tasks")

#: The signals that stop a long-running command the way Ctrl-C does: SIGTERM
#: (systemd, docker stop, kill), SIGHUP (a closed terminal) and SIGINT itself.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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


class Burst:
    """Trouble that comes in bursts (a device sending what its wire cannot read) is
    logged once per burst: :meth:`starts` is True for the first of a burst, the
    rest are counted (:attr:`count`, :attr:`in_burst`) until ``quiet`` seconds pass
    with none, and the next one starts a new burst."""

    def __init__(self, quiet: float = 10.0) -> None:
        self.quiet = quiet
        self.count = 0  # every one so far
        self.in_burst = 0  # the ones of the burst now, the first included
        self._last = -math.inf

    def starts(self) -> bool:
        now = time.monotonic()
        fresh = now - self._last > self.quiet
        self._last = now
        self.count += 1
        self.in_burst = 1 if fresh else self.in_burst + 1
        return fresh


class Signalled(Exception):
    """The command was stopped by a signal, after a clean shutdown.

    Its process should exit with :attr:`exit_code` (128 + the signal number, as
    a shell reports a process a signal ended: 130 for Ctrl-C, 143 for SIGTERM),
    quietly: being asked to stop is not an error.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def run_until_signalled(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)``, ended by any of :data:`STOP_SIGNALS` like by Ctrl-C.

    The first such signal cancels ``main``, so every ``async with`` in it
    unwinds (a pack says offline, an embedded broker is stopped and its temp
    dir removed) before :class:`Signalled` is raised.  Further signals while it
    unwinds are ignored (shutdown is bounded; SIGKILL remains for the impatient):
    a second Ctrl-C must not leave a child broker running.
    """

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        received: list[int] = []

        def stop(signum: int) -> None:
            if received:
                log.info("already stopping (%s)", signal.Signals(signum).name)
                return
            received.append(signum)
            task.cancel()

        installed = []
        for signum in STOP_SIGNALS:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop, signum)
                installed.append(signum)
        try:
            result = await main
        except asyncio.CancelledError:
            if received:
                raise Signalled(received[0]) from None
            raise
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
        if received:  # main swallowed the cancellation, but it did end: still a stop
            raise Signalled(received[0])
        return result

    return asyncio.run(guarded())
