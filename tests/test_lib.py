"""jet.lib: the standard gadgets, tested the way a gadget author would."""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import jet.lib
from jet.lib import (
    ChangeOnly,
    Clamp,
    Constant,
    Counter,
    Delay,
    Logger,
    MovingAverage,
    Offset,
    RateLimit,
    Scale,
    Thermostat,
    Threshold,
    Ticker,
    TimeSeries,
)
from jet.runtime.gadget import Gadget, GadgetError, input_names, instantiate, output_names
from jet.runtime.registry import Registry
from jet.testing import Harness

T = TypeVar("T")

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


def arun(main: Callable[[], Awaitable[T]]) -> T:
    """Run one async test body on a fresh event loop."""

    async def body() -> T:
        return await main()

    return asyncio.run(body())


# -- the contract other files rely on ---------------------------------------

PORTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Constant": (("trigger",), ("out",)),
    "Ticker": ((), ("out",)),
    "Scale": (("in",), ("out",)),
    "Offset": (("in",), ("out",)),
    "Clamp": (("in",), ("out",)),
    "Threshold": (("in",), ("out",)),
    "ChangeOnly": (("in",), ("out",)),
    "RateLimit": (("in",), ("out",)),
    "MovingAverage": (("in",), ("out",)),
    "TimeSeries": (("in",), ("out", "stats")),
    "Thermostat": (("temp", "setpoint"), ("heat",)),
    "Delay": (("in",), ("out",)),
    "Logger": (("in",), ()),
    "Counter": (("in",), ("out",)),
    "LevelCall": (("args",), ("result", "outcomes")),
}


def test_public_names_and_ports() -> None:
    assert sorted(jet.lib.__all__) == sorted(PORTS)
    registry = Registry()
    for name, (ins, outs) in PORTS.items():
        cls = registry.resolve(f"jet.lib.{name}")
        assert cls is getattr(jet.lib, name)
        assert (input_names(cls), output_names(cls)) == (ins, outs), name


def test_delay_flags() -> None:
    delayed = {name for name in PORTS if getattr(jet.lib, name).delay}
    assert delayed == {"RateLimit", "Delay"}


def test_spec_example_parameters() -> None:
    t = instantiate(Thermostat, {"setpoint": 55.0, "hysteresis": 2.0})
    assert isinstance(t, Thermostat)
    assert (t.setpoint, t.hysteresis) == (55.0, 2.0)
    ts = instantiate(TimeSeries, {"window": 3600})
    assert isinstance(ts, TimeSeries)
    assert ts.window == 3600.0


# -- parameter validation ---------------------------------------------------

BAD_PARAMS: list[tuple[type[Gadget], dict[str, Any], str]] = [
    (Ticker, {"interval": 0}, "interval"),
    (Ticker, {"interval": -1.5}, "interval"),
    (Ticker, {"interval": "fast"}, "interval"),
    (Ticker, {"count": -1}, "count"),
    (Ticker, {"count": 2.5}, "count"),
    (Ticker, {"start": float("nan")}, "start"),
    (Scale, {"factor": "x"}, "factor"),
    (Offset, {"offset": True}, "offset"),
    (Clamp, {"low": 5, "high": 1}, "low"),
    (Clamp, {"low": 0}, "high"),
    (Threshold, {"hysteresis": -0.1}, "hysteresis"),
    (Thermostat, {"hysteresis": -1}, "hysteresis"),
    (Thermostat, {"setpoint": "warm"}, "setpoint"),
    (RateLimit, {"interval": 0}, "interval"),
    (MovingAverage, {"size": 0}, "size"),
    (MovingAverage, {"size": 1.5}, "size"),
    (TimeSeries, {"window": 0}, "window"),
    (TimeSeries, {"max_points": 0}, "max_points"),
    (Delay, {"seconds": -1}, "seconds"),
    (Logger, {"level": "loud"}, "level"),
    (Logger, {"colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("cls", "params", "name"), BAD_PARAMS)
def test_bad_parameters_give_one_line_naming_the_parameter(
    cls: type[Gadget], params: dict[str, Any], name: str
) -> None:
    with pytest.raises(GadgetError) as info:
        instantiate(cls, params)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{cls.__qualname__}: ")
    assert repr(name) in message or name in message


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ValueError, match=r"'interval' must be from 0\.001 to 31536000 seconds"):
        Ticker(interval=0)
    with pytest.raises(TypeError, match="'factor' must be a number"):
        Scale(factor="2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'low' must be <= parameter 'high'"):
        Clamp(low=1, high=0)


# -- wrong kinds of values ----------------------------------------------------

NUMERIC_INPUTS: list[tuple[type[Gadget], dict[str, Any], str]] = [
    (Scale, {}, "in"),
    (Offset, {}, "in"),
    (Clamp, {"low": 0, "high": 1}, "in"),
    (Threshold, {}, "in"),
    (Thermostat, {}, "temp"),
    (Thermostat, {}, "setpoint"),
    (MovingAverage, {}, "in"),
    (TimeSeries, {}, "in"),
]


@pytest.mark.parametrize("bad", ["21.5", None, True, [1, 2], {"t": 1}, float("nan")])
@pytest.mark.parametrize(("cls", "params", "port"), NUMERIC_INPUTS)
def test_non_numbers_are_logged_once_and_ignored(
    cls: type[Gadget],
    params: dict[str, Any],
    port: str,
    bad: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    h = Harness(cls, **params)
    with caplog.at_level(logging.WARNING, logger="jet.lib"):
        h.send(port, bad)
    assert h.log == []
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert "\n" not in message
    assert cls.__qualname__ in message
    assert repr(bad) in message
    # The gadget still works afterwards.
    h.send(port, 1)
    if port != "setpoint":
        assert len(h.log) >= 1


def test_thermostat_setpoint_rejects_non_numbers_and_keeps_the_old_one() -> None:
    h = Harness(Thermostat, setpoint=20.0)
    h.send("setpoint", "hot")
    assert h.gadget.setpoint == 20.0


# -- sources ----------------------------------------------------------------


def test_constant_emits_on_start_and_on_every_trigger() -> None:
    async def main() -> None:
        h = Harness(Constant, value={"mode": "eco"})
        async with h.running():
            assert await h.wait_for("out", 1) == [{"mode": "eco"}]
            h.send("trigger", None)
            h.send("trigger", "anything")
        assert h.outputs["out"] == [{"mode": "eco"}] * 3

    arun(main)


def test_constant_default_value_is_zero() -> None:
    h = Harness(Constant)
    h.send("trigger", 1)
    assert h.outputs["out"] == [0]


def test_ticker_schedule() -> None:
    interval = 0.04

    async def main() -> None:
        loop = asyncio.get_running_loop()
        h = Harness(Ticker, interval=interval, start=10, step=5, count=5)
        arrivals = []
        async with h.running():
            t0 = loop.time()
            for n in range(1, 6):
                await h.wait_for("out", n)
                arrivals.append(loop.time() - t0)
        assert h.outputs["out"] == [10, 15, 20, 25, 30]
        assert all(isinstance(v, int) for v in h.outputs["out"])
        for n, at in enumerate(arrivals):
            assert at >= n * interval - 0.005, arrivals  # never early
        # No drift: the 5th tick is due at 4 intervals, whatever the jitter before.
        assert arrivals[-1] < 4 * interval + 0.1, arrivals

    arun(main)


def test_ticker_stops_after_count() -> None:
    async def main() -> None:
        h = Harness(Ticker, interval=0.001, count=3)
        async with h.running():
            await h.wait_for("out", 3)
            with pytest.raises(TimeoutError):
                await h.wait_for("out", 4, timeout=0.05)
        assert h.outputs["out"] == [0, 1, 2]

    arun(main)


def test_ticker_fractional_values() -> None:
    async def main() -> None:
        h = Harness(Ticker, interval=0.001, start=0.5, step=0.1, count=3)
        async with h.running():
            values = await h.wait_for("out", 3)
        assert values == pytest.approx([0.5, 0.6, 0.7])

    arun(main)


def test_ticker_skips_missed_ticks_instead_of_bursting() -> None:
    interval = 0.02

    async def main() -> None:
        h = Harness(Ticker, interval=interval)
        async with h.running():
            await h.wait_for("out", 1)
            time.sleep(5 * interval)  # the event loop is blocked: ticks are missed
            await h.wait_for("out", 2)
            for _ in range(10):
                await asyncio.sleep(0)
            assert h.outputs["out"] == [0, 1]  # one late tick, not a burst of five
            assert await h.wait_for("out", 3) == [0, 1, 2]

    arun(main)


# -- arithmetic -------------------------------------------------------------


def test_scale_and_offset() -> None:
    s = Harness(Scale, factor=0.5)
    o = Harness(Offset, offset=-273.15)
    for x in (0, 10, -4.0):
        s.send("in", x)
        o.send("in", x)
    assert s.outputs["out"] == [0, 5, -2]
    assert o.outputs["out"] == pytest.approx([-273.15, -263.15, -277.15])
    assert Harness(Scale).gadget.factor == 1.0


def test_clamp_limits_both_ways() -> None:
    h = Harness(Clamp, low=0, high=100)
    for x in (-5, 0, 42, 100, 1e9):
        h.send("in", x)
    assert h.outputs["out"] == [0, 0, 42, 100, 100]


def test_clamp_accepts_equal_bounds_and_infinity() -> None:
    h = Harness(Clamp, low=float("-inf"), high=3)
    h.send("in", -1e300)
    h.send("in", 4)
    assert h.outputs["out"] == [-1e300, 3]
    Harness(Clamp, low=2, high=2)


@given(low=finite, span=st.floats(0, 1e6), x=finite)
def test_clamp_output_within_bounds(low: float, span: float, x: float) -> None:
    h = Harness(Clamp, low=low, high=low + span)
    h.send("in", x)
    out = h.last("out")
    assert low <= out <= low + span
    if low <= x <= low + span:
        assert out == x


# -- control ----------------------------------------------------------------


def test_threshold_hysteresis() -> None:
    h = Harness(Threshold, level=10.0, hysteresis=2.0)  # band 9 .. 11
    for x in (10, 10.9, 11.1, 10, 9.5, 9.0, 8.9, 10, 11, 11.01):
        h.send("in", x)
    assert h.outputs["out"] == [False, False, True, True, True, True, False, False, False, True]


def test_threshold_without_hysteresis() -> None:
    h = Harness(Threshold, level=0)
    for x in (1, 0, -1, 0):
        h.send("in", x)
    assert h.outputs["out"] == [True, True, False, False]


def test_thermostat_band_both_ways() -> None:
    h = Harness(Thermostat, setpoint=20.0, hysteresis=1.0)  # band 19.5 .. 20.5
    temps = [20.0, 19.6, 19.4, 19.5, 20.0, 20.5, 20.6, 20.0, 19.5, 19.49]
    for t in temps:
        h.send("temp", t)
    assert h.outputs["heat"] == [
        False,  # starts off, in the band
        False,
        True,  # below 19.5
        True,  # on the edge: unchanged
        True,  # inside: stays on while warming
        True,
        False,  # above 20.5
        False,  # inside: stays off while cooling
        False,
        True,
    ]


def test_thermostat_refreshes_heat_on_every_temp() -> None:
    h = Harness(Thermostat, setpoint=20.0)
    for _ in range(3):
        h.send("temp", 15)
    assert h.outputs["heat"] == [True, True, True]


def test_thermostat_setpoint_change() -> None:
    h = Harness(Thermostat, setpoint=20.0, hysteresis=1.0)
    h.send("setpoint", 30)  # no temperature yet: nothing to say
    assert h.outputs["heat"] == []
    assert h.gadget.setpoint == 30
    h.send("temp", 25)
    assert h.outputs["heat"] == [True]
    h.send("setpoint", 25.2)  # 25 is inside the new band: unchanged, no message
    assert h.outputs["heat"] == [True]
    h.send("setpoint", 20)  # now too warm: heating stops at once
    assert h.outputs["heat"] == [True, False]
    h.send("temp", 20.4)
    h.send("temp", 19.4)
    assert h.outputs["heat"] == [True, False, False, True]


def band_step_ok(before: bool, after: bool, x: float, low: float, high: float) -> bool:
    """A hysteresis switch (on above ``high``, off below ``low``) moved legally."""
    if x > high:
        return after
    if x < low:
        return not after
    return after == before


@given(
    level=finite,
    hysteresis=st.floats(0, 100),
    xs=st.lists(st.floats(-200, 200), max_size=40),
)
def test_threshold_never_flips_inside_the_band(
    level: float, hysteresis: float, xs: list[float]
) -> None:
    h = Harness(Threshold, level=level, hysteresis=hysteresis)
    state = False
    for x in xs:
        h.send("in", level + x)
        new = h.last("out")
        low, high = level - hysteresis / 2, level + hysteresis / 2
        assert band_step_ok(state, new, level + x, low, high)
        state = new
    assert len(h.outputs["out"]) == len(xs)


@given(
    setpoint=st.floats(-50, 100),
    hysteresis=st.floats(0, 10),
    xs=st.lists(st.floats(-20, 20), max_size=40),
)
def test_thermostat_never_flips_inside_the_band(
    setpoint: float, hysteresis: float, xs: list[float]
) -> None:
    h = Harness(Thermostat, setpoint=setpoint, hysteresis=hysteresis)
    heat = False
    for x in xs:
        t = setpoint + x
        h.send("temp", t)
        new = h.last("heat")
        low, high = setpoint - hysteresis / 2, setpoint + hysteresis / 2
        # Heating is "on below low, off above high": the mirror image of Threshold.
        assert band_step_ok(not heat, not new, t, low, high)
        heat = new


# -- flow -------------------------------------------------------------------


def test_change_only() -> None:
    h = Harness(ChangeOnly)
    for v in (1, 1, 2, 2, 2, 1, "a", "a", None, None, [1], [1]):
        h.send("in", v)
    assert h.outputs["out"] == [1, 2, 1, "a", None, [1]]


@given(st.lists(st.integers(0, 3), max_size=50))
def test_change_only_drops_exactly_the_repeats(values: list[int]) -> None:
    h = Harness(ChangeOnly)
    for v in values:
        h.send("in", v)
    expected = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    assert h.outputs["out"] == expected


def test_counter() -> None:
    h = Harness(Counter)
    for v in ("a", None, 3):
        h.send("in", v)
    assert h.outputs["out"] == [1, 2, 3]


def test_rate_limit_keeps_the_latest_value() -> None:
    interval = 0.05

    async def main() -> None:
        loop = asyncio.get_running_loop()
        h = Harness(RateLimit, interval=interval)
        t0 = loop.time()
        h.send("in", 1)
        assert h.outputs["out"] == [1]  # the first passes at once
        for v in (2, 3, 4):
            h.send("in", v)
        assert h.outputs["out"] == [1]
        assert await h.wait_for("out", 2) == [1, 4]
        assert loop.time() - t0 >= interval - 0.005
        assert h.gadget.dropped == 2
        # Right after the flush a new value waits for the next interval again.
        h.send("in", 5)
        assert h.outputs["out"] == [1, 4]
        t1 = loop.time()
        assert await h.wait_for("out", 3) == [1, 4, 5]
        assert loop.time() - t1 >= interval * 0.5
        assert h.gadget.dropped == 2

    arun(main)


def test_rate_limit_passes_values_spaced_by_the_interval() -> None:
    async def main() -> None:
        h = Harness(RateLimit, interval=0.01)
        loop = asyncio.get_running_loop()
        h.send("in", "a")
        done = asyncio.Event()

        def later() -> None:
            h.send("in", "b")
            done.set()

        loop.call_later(0.03, later)
        await done.wait()
        assert h.outputs["out"] == ["a", "b"]
        assert h.gadget.dropped == 0

    arun(main)


def test_rate_limit_stop_cancels_the_pending_value() -> None:
    async def main() -> None:
        h = Harness(RateLimit, interval=0.02)
        async with h.running():
            h.send("in", 1)
            h.send("in", 2)
        with pytest.raises(TimeoutError):
            await h.wait_for("out", 2, timeout=0.05)

    arun(main)


def test_delay_reemits_later_in_order() -> None:
    seconds = 0.03

    async def main() -> None:
        loop = asyncio.get_running_loop()
        h = Harness(Delay, seconds=seconds)
        t0 = loop.time()
        for v in ("a", "b", "c"):
            h.send("in", v)
        assert h.outputs["out"] == []
        assert h.gadget.pending == 3
        assert await h.wait_for("out", 3) == ["a", "b", "c"]
        assert loop.time() - t0 >= seconds - 0.005
        assert h.gadget.pending == 0

    arun(main)


def test_delay_zero_still_defers_to_the_event_loop() -> None:
    async def main() -> None:
        h = Harness(Delay)
        h.send("in", 1)
        assert h.outputs["out"] == []  # breaks an in-process cycle
        assert await h.wait_for("out", 1) == [1]

    arun(main)


def test_delay_stop_drops_pending_values() -> None:
    async def main() -> None:
        h = Harness(Delay, seconds=0.02)
        async with h.running():
            h.send("in", 1)
        assert h.gadget.pending == 0
        with pytest.raises(TimeoutError):
            await h.wait_for("out", 1, timeout=0.05)

    arun(main)


# -- statistics -------------------------------------------------------------


def test_moving_average_window() -> None:
    h = Harness(MovingAverage, size=3)
    for x in (3, 6, 9, 12, 0):
        h.send("in", x)
    assert h.outputs["out"] == [3, 4.5, 6, 9, 7]


def test_moving_average_survives_huge_values() -> None:
    h = Harness(MovingAverage, size=2)
    h.send("in", 1.5e308)
    h.send("in", 1.5e308)
    assert h.last("out") == 1.5e308


@settings(max_examples=50)
@given(size=st.integers(1, 8), xs=st.lists(finite, min_size=1, max_size=30))
def test_moving_average_is_the_mean_of_the_last_n(size: int, xs: list[float]) -> None:
    h = Harness(MovingAverage, size=size)
    for i, x in enumerate(xs):
        h.send("in", x)
        expected = statistics.fmean(xs[max(0, i + 1 - size) : i + 1])
        assert math.isclose(h.last("out"), expected, rel_tol=1e-9, abs_tol=1e-9)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_time_series_points_and_stats() -> None:
    clock = FakeClock()
    h = Harness(TimeSeries, window=10)
    h.gadget.clock = clock
    h.send("in", 5)
    assert h.log == [
        ("out", [clock.now, 5]),
        ("stats", {"min": 5, "max": 5, "mean": 5, "count": 1}),
    ]
    clock.now += 4
    h.send("in", 1)
    clock.now += 4
    h.send("in", 6)
    assert h.last("stats") == {"min": 1, "max": 6, "mean": 4, "count": 3}
    clock.now += 5  # the first point (13 s old) leaves the window
    h.send("in", 2)
    assert h.last("stats") == {"min": 1, "max": 6, "mean": 3, "count": 3}
    assert [v for _, v in h.gadget.points()] == [1, 6, 2]


def test_time_series_uses_wall_clock_seconds() -> None:
    h = Harness(TimeSeries)
    before = time.time()
    h.send("in", 1.0)
    t, value = h.last("out")
    assert isinstance(t, float)
    assert before <= t <= time.time()
    assert value == 1.0


def test_time_series_max_points() -> None:
    clock = FakeClock()
    h = Harness(TimeSeries, max_points=3)
    h.gadget.clock = clock
    for x in range(10):
        clock.now += 1
        h.send("in", x)
    assert h.last("stats") == {"min": 7, "max": 9, "mean": 8, "count": 3}
    assert len(h.outputs["out"]) == 10


# -- sinks ------------------------------------------------------------------


def test_logger_label_and_level(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="jet.lib.logger"):
        Harness(Logger, label="boiler").send("in", 55.5)
        Harness(Logger, level="warning").send("in", {"a": 1})
        Harness(Logger, label="dbg", level="debug").send("in", "x")
    got = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert got == [
        ("jet.lib.logger", logging.INFO, "boiler 55.5"),
        ("jet.lib.logger", logging.WARNING, "{'a': 1}"),
        ("jet.lib.logger", logging.DEBUG, "dbg x"),
    ]
    assert Harness(Logger).outputs == {}
