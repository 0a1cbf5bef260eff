"""jet.testing.Harness: what a gadget author relies on to test without a broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import pytest

from jet.runtime.gadget import Gadget, GadgetError, function_gadget
from jet.testing import Harness

T = TypeVar("T")


def arun(main: Callable[[], Awaitable[T]]) -> T:
    """Run one async test body on a fresh event loop."""

    async def body() -> T:
        return await main()

    return asyncio.run(body())


@attrs.define(kw_only=True)
class Double(Gadget):
    inputs = ("in",)
    outputs = ("out", "seen")

    factor: int = attrs.field(default=2)

    @factor.validator
    def _positive(self, _attribute: attrs.Attribute[int], value: int) -> None:
        if value <= 0:
            raise ValueError(f"parameter 'factor' must be > 0, got {value}")

    def on_in(self, value: int) -> None:
        self.emit("seen", value)
        self.emit("out", value * self.factor)


@attrs.define(kw_only=True)
class SlowEcho(Gadget):
    """Async handler: echoes after a pause that gets shorter for later calls."""

    inputs = ("in",)
    outputs = ("out",)

    calls: int = attrs.field(default=0, init=False)

    async def on_in(self, value: Any) -> None:
        self.calls += 1
        await asyncio.sleep(0.02 / self.calls)
        self.emit("out", value)


@attrs.define(kw_only=True)
class Beat(Gadget):
    outputs = ("out",)
    interval: float = 0.01
    fail_after: int = 0
    stopped: bool = attrs.field(default=False, init=False)

    async def run(self) -> None:
        n = 0
        try:
            while True:
                self.emit("out", n)
                n += 1
                if self.fail_after and n >= self.fail_after:
                    raise RuntimeError("sensor unplugged")
                await asyncio.sleep(self.interval)
        finally:
            self.stopped = True


@function_gadget
def add(a: float, b: float, *, bias: float = 0.0) -> float:
    return a + b + bias


@function_gadget(outputs=("lo", "hi"))  # type: ignore[untyped-decorator]
def split(x: float) -> tuple[float | None, float | None]:
    return (x, None) if x < 0 else (None, x)


def test_send_records_outputs_by_name_and_in_order() -> None:
    h = Harness(Double, factor=3)
    h.send("in", 1)
    h.send("in", 2)
    assert h.outputs == {"out": [3, 6], "seen": [1, 2]}
    assert h.log == [("seen", 1), ("out", 3), ("seen", 2), ("out", 6)]
    assert h.last("out") == 6
    h.clear()
    assert h.outputs == {"out": [], "seen": []}
    assert h.log == []


def test_last_without_name_needs_a_single_output() -> None:
    h = Harness(add)
    h.send("a", 1)
    h.send("b", 2)
    assert h.last() == 3
    with pytest.raises(GadgetError, match="name the output"):
        Harness(Double).last()


def test_last_before_any_value_is_a_clear_error() -> None:
    with pytest.raises(LookupError, match="nothing on 'out'"):
        Harness(Double).last("out")


def test_unknown_ports_are_named() -> None:
    h = Harness(Double)
    with pytest.raises(GadgetError, match=r"no input 'inn' \(inputs: in\)"):
        h.send("inn", 1)
    with pytest.raises(GadgetError, match=r"no output 'outt' \(outputs: out, seen\)"):
        h.last("outt")


def test_parameters_go_through_instantiate() -> None:
    with pytest.raises(GadgetError, match="unknown parameter 'facter'"):
        Harness(Double, facter=2)
    with pytest.raises(GadgetError, match="parameter 'factor' must be > 0") as info:
        Harness(Double, factor=0)
    assert "\n" not in str(info.value)


def test_accepts_an_instance_but_not_with_params() -> None:
    gadget = Double(factor=5)
    h = Harness(gadget)
    assert h.gadget is gadget
    h.send("in", 2)
    assert h.last("out") == 10
    with pytest.raises(TypeError, match="only accepted with a gadget class"):
        Harness(gadget, factor=1)
    with pytest.raises(TypeError, match="Gadget class or instance"):
        Harness(int)  # type: ignore[type-var]


def test_function_gadgets_wait_for_every_input_and_use_params() -> None:
    h = Harness(add, bias=0.5)
    h.send("a", 1)
    assert h.outputs["out"] == []
    h.send("b", 2)
    h.send("a", 10)
    assert h.outputs["out"] == [3.5, 12.5]


def test_function_gadget_with_several_outputs() -> None:
    h = Harness(split)
    for x in (-1, 2, -3):
        h.send("x", x)
    assert h.outputs == {"lo": [-1, -3], "hi": [2]}


def test_send_refuses_async_handlers_with_a_hint() -> None:
    h = Harness(SlowEcho)
    with pytest.raises(GadgetError, match=r"await h\.asend\('in', value\)"):
        h.send("in", 1)
    assert h.gadget.calls == 0


def test_asend_awaits_async_handlers_one_at_a_time_in_order() -> None:
    async def main() -> None:
        h = Harness(SlowEcho)
        # Later calls sleep less: only serialisation keeps the order.
        await asyncio.gather(*(h.asend("in", i) for i in range(4)))
        assert h.outputs["out"] == [0, 1, 2, 3]
        await h.asend("in", "x")
        assert h.last("out") == "x"

    arun(main)


def test_asend_works_for_sync_handlers_too() -> None:
    async def main() -> None:
        h = Harness(Double)
        await h.asend("in", 4)
        assert h.last("out") == 8

    arun(main)


def test_running_starts_and_cancels_run() -> None:
    async def main() -> None:
        h = Harness(Beat, interval=0.005)
        async with h.running() as same:
            assert same is h
            assert await h.wait_for("out", 3) == [0, 1, 2]
            assert not h.gadget.stopped
        assert h.gadget.stopped
        seen = len(h.outputs["out"])
        await asyncio.sleep(0.02)
        assert len(h.outputs["out"]) == seen

    arun(main)


def test_running_without_run_is_harmless() -> None:
    async def main() -> None:
        h = Harness(Double)
        async with h.running():
            h.send("in", 1)
        assert h.outputs["out"] == [2]

    arun(main)


def test_wait_for_returns_at_once_when_values_are_there() -> None:
    async def main() -> None:
        h = Harness(Double)
        h.send("in", 1)
        h.send("in", 2)
        assert await h.wait_for("out", 2, timeout=0.001) == [2, 4]

    arun(main)


def test_wait_for_times_out_naming_what_arrived() -> None:
    async def main() -> None:
        h = Harness(Double)
        h.send("in", 1)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"for 2 value\(s\) on 'out', got 1: \[2\]"):
            await h.wait_for("out", 2, timeout=0.05)
        assert time.monotonic() - started < 1.0

    arun(main)


def test_wait_for_wakes_on_emission_from_another_task() -> None:
    async def main() -> None:
        h = Harness(Double)
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, h.send, "in", 7)
        started = loop.time()
        assert await h.wait_for("out", 1, timeout=2.0) == [14]
        assert loop.time() - started < 1.0

    arun(main)


def test_run_failure_surfaces_in_wait_for_and_on_exit() -> None:
    async def main() -> None:
        h = Harness(Beat, interval=0.001, fail_after=2)
        with pytest.raises(RuntimeError, match="sensor unplugged"):
            async with h.running():
                await h.wait_for("out", 10, timeout=2.0)
        assert h.outputs["out"] == [0, 1]

        h2 = Harness(Beat, interval=0.001, fail_after=1)
        with pytest.raises(RuntimeError, match="sensor unplugged"):
            async with h2.running():
                await asyncio.sleep(0.01)

    arun(main)
