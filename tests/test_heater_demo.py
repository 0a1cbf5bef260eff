"""The heater demo end to end: pack + hub driver + simulated boiler on one broker.

`jet run circuits/heater.yaml --simulate` must close the control loop: the water
heats to the thermostat's setpoint and then stays in its hysteresis band, and
`jet tap` shows the temperature.
"""

from __future__ import annotations

import os
from typing import Any

from cli_helpers import jet, jet_background, read_until, stop
from helpers import Collector, link, run

SETPOINT, HYSTERESIS = 55.0, 2.0  # circuits/heater.yaml
TEMP_TOPIC = "node/21205/0/0"  # node 5 in group 212, gadget 0 output 0
HEAT_TOPIC = "pack/control/thermostat/0"


def test_heater_regulates_around_setpoint(mosquitto: Any) -> None:
    os.environ["JET_SIM_SPEED"] = "10"  # ten simulated seconds per second
    demo = jet_background("run", "circuits/heater.yaml", "--simulate", "--broker", mosquitto.url)
    try:
        read_until(demo, "app heater running")

        async def watch() -> tuple[list[float], list[bool]]:
            async with link(mosquitto.url, "observer") as observer:
                temps = await Collector(observer).watch(TEMP_TOPIC)
                heat = await Collector(observer).watch(HEAT_TOPIC)
                # Heats up to the setpoint ...
                await temps.wait_for(lambda c: any(t >= SETPOINT for t in c.values()), 30)
                reached = len(temps.values())
                # ... then the relay goes off and on again: a full regulation cycle.
                await heat.wait_for(lambda c: [False, True] in _pairs(c.values()), 30)
                await temps.wait_for(lambda c: len(c.values()) >= reached + 20, 30)
                return temps.values()[reached:], heat.values()

        after, heats = run(watch(), timeout=100)
        band = HYSTERESIS / 2 + 1.5  # the band plus one reporting step of overshoot
        assert all(abs(t - SETPOINT) <= band for t in after), after
        assert min(after) < SETPOINT < max(after), "it oscillates around the setpoint"
        assert True in heats and False in heats

        tapped = jet("tap", "boiler.water.celsius", "-n", "3", "--for", "20",
                     "--broker", mosquitto.url)
        assert tapped.returncode == 0, tapped.stderr
        lines = [line for line in tapped.stdout.splitlines() if TEMP_TOPIC in line]
        assert len(lines) == 3
        assert all(abs(float(line.split()[-1]) - SETPOINT) <= band for line in lines)
    finally:
        os.environ.pop("JET_SIM_SPEED", None)
        stop(demo)


def _pairs(values: list[Any]) -> list[list[Any]]:
    changes = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    return [changes[i : i + 2] for i in range(len(changes) - 1)]
