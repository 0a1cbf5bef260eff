"""Unit-test a gadget without a broker or a runtime.

    from jet.testing import Harness

    def test_scale() -> None:
        h = Harness(Scale, factor=2)
        h.send("in", 3)
        assert h.outputs["out"] == [6]

    def test_ticker() -> None:
        async def main() -> None:
            h = Harness(Ticker, interval=0.01, count=3)
            async with h.running():
                assert await h.wait_for("out", 3) == [0, 1, 2]
        asyncio.run(main())

The harness builds the gadget the way a pack does (``jet.runtime.gadget.instantiate``,
so parameter errors are the same one-line :class:`~jet.runtime.gadget.GadgetError`),
installs an emitter that records every output, and delivers values to input
handlers.  Async handlers are awaited one at a time, in call order, as the
runtime does.  Gadgets that use timers (``Delay``, ``RateLimit``) need a
running event loop: drive them from ``asyncio.run(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from jet.runtime.gadget import Gadget, GadgetError, input_names, instantiate, output_names

__all__ = ["Harness"]

G = TypeVar("G", bound=Gadget)


class Harness(Generic[G]):
    """A gadget under test, with its outputs recorded.

    Attributes:
      gadget: the gadget instance.
      outputs: output name -> list of the values emitted on it, in order.
      log: every emission as ``(output_name, value)``, in order, all outputs.
    """

    def __init__(self, gadget: type[G] | G, /, **params: Any) -> None:
        if isinstance(gadget, type):
            if not issubclass(gadget, Gadget):
                raise TypeError(f"Harness needs a Gadget class or instance, got {gadget!r}")
            built: G = instantiate(gadget, params)  # type: ignore[assignment]
        elif isinstance(gadget, Gadget):
            if params:
                raise TypeError("Harness: parameters are only accepted with a gadget class")
            built = gadget
        else:
            raise TypeError(f"Harness needs a Gadget class or instance, got {gadget!r}")
        self.gadget: G = built
        self._name = type(built).__qualname__
        self._inputs = input_names(type(built))
        self._outputs = output_names(type(built))
        self.outputs: dict[str, list[Any]] = {name: [] for name in self._outputs}
        self.log: list[tuple[str, Any]] = []
        self._waiters: set[asyncio.Event] = set()
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task[Any] | None = None
        built.bind(self._record)

    def __repr__(self) -> str:
        return f"Harness({self.gadget!r})"

    # -- outputs ---------------------------------------------------------

    def _record(self, index: int, value: Any) -> None:
        name = self._outputs[index]
        self.outputs[name].append(value)
        self.log.append((name, value))
        self._wake()

    def _wake(self) -> None:
        for event in self._waiters:
            event.set()

    def _check_output(self, output: str) -> None:
        if output not in self.outputs:
            known = ", ".join(self._outputs) or "none"
            raise GadgetError(f"{self._name} has no output {output!r} (outputs: {known})")

    def last(self, output: str | None = None) -> Any:
        """The latest value emitted on ``output`` (default: the only output)."""
        if output is None:
            if len(self._outputs) != 1:
                raise GadgetError(f"{self._name}: name the output, it has {self._outputs}")
            output = self._outputs[0]
        self._check_output(output)
        values = self.outputs[output]
        if not values:
            raise LookupError(f"{self._name} has emitted nothing on {output!r} yet")
        return values[-1]

    def clear(self) -> None:
        """Forget every recorded output."""
        for values in self.outputs.values():
            values.clear()
        self.log.clear()

    async def wait_for(self, output: str, count: int = 1, timeout: float = 2.0) -> list[Any]:
        """Wait until ``output`` holds at least ``count`` values; return them all.

        Raises TimeoutError (naming what arrived) after ``timeout`` seconds,
        or the exception of the gadget's ``run()`` if it fails meanwhile.
        """
        self._check_output(output)
        values = self.outputs[output]
        event = asyncio.Event()
        self._waiters.add(event)
        try:
            async with asyncio.timeout(timeout):
                while len(values) < count:
                    self._raise_if_run_failed()
                    event.clear()
                    await event.wait()
        except TimeoutError:
            raise TimeoutError(
                f"{self._name}: waited {timeout}s for {count} value(s) on {output!r},"
                f" got {len(values)}: {values!r}"
            ) from None
        finally:
            self._waiters.discard(event)
        return list(values)

    # -- inputs ----------------------------------------------------------

    def _handler(self, input: str) -> tuple[Callable[[Any], Any], bool]:
        if input not in self._inputs:
            known = ", ".join(self._inputs) or "none"
            raise GadgetError(f"{self._name} has no input {input!r} (inputs: {known})")
        handler = self.gadget.handler(input)
        own = getattr(self.gadget, f"on_{input}", None)
        target = own if callable(own) else getattr(self.gadget, "on_message", handler)
        return handler, inspect.iscoroutinefunction(target)

    def send(self, input: str, value: Any) -> None:
        """Deliver ``value`` to a synchronous input handler, now."""
        handler, is_async = self._handler(input)
        if is_async:
            raise GadgetError(
                f"{self._name}: the handler of input {input!r} is async;"
                f" use `await h.asend({input!r}, value)` inside asyncio.run(...)"
            )
        result = handler(value)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise GadgetError(
                f"{self._name}: the handler of input {input!r} returned an awaitable;"
                f" use `await h.asend({input!r}, value)` inside asyncio.run(...)"
            )

    async def asend(self, input: str, value: Any) -> None:
        """Deliver ``value`` to an input handler (sync or async) and await it.

        Concurrent calls are handled one at a time, in call order, like the
        runtime does for one gadget.
        """
        handler, _ = self._handler(input)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            result = handler(value)
            if inspect.isawaitable(result):
                await result

    # -- run() -----------------------------------------------------------

    def _raise_if_run_failed(self) -> None:
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            exc = task.exception()
            if exc is not None:
                raise exc

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Harness[G]]:
        """Run the gadget's ``run()`` (if any) as a task; cancel it on exit.

        An exception raised by ``run()`` is re-raised on exit (and by a
        pending :meth:`wait_for`).
        """
        if self._task is not None:
            raise GadgetError(f"{self._name}: already running")
        run = getattr(self.gadget, "run", None)
        if not callable(run):
            yield self
            return
        task: asyncio.Task[Any] = asyncio.ensure_future(run())
        task.add_done_callback(lambda _task: self._wake())
        self._task = task
        try:
            # Let run() begin, as the runtime does before delivering messages.
            await asyncio.sleep(0)
            yield self
        finally:
            self._task = None
            task.cancel()
            # Awaiting re-raises a failure of run() that happened before the cancel.
            with contextlib.suppress(asyncio.CancelledError):
                await task
