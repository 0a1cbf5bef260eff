"""Simulated devices: for ``jet run FILE --simulate`` (:class:`SimulatedDevices`, the
devices an app's wires name, in one room) and for the registry (:class:`SiteDevices`,
``jet device-sim``: many devices in the site layout, joining and leaving).

Recognised from the app's wires to devices' topics (:func:`devices_of`):

- a wire from ``zigbee2mqtt/<name>`` (or its ``/availability``) is a Zigbee2MQTT
  temperature sensor ``<name>``: it publishes its state as one JSON object
  (``temperature``, ``humidity``, ``battery``, ``linkquality``; retained, as Zigbee2MQTT
  does for a device set to ``retain: true``) every ``period`` seconds, and its
  availability ``{"state": "online"}`` (retained; ``offline`` when it stops);
- a wire to ``cmnd/<topic>/POWER`` is a Tasmota plug ``<topic>``: it takes ``ON``,
  ``OFF``, ``TOGGLE`` (any case), answers on ``stat/<topic>/POWER`` (retained, as
  Tasmota does with ``PowerRetain 1``, so whoever listens later knows the state) and
  ``stat/<topic>/RESULT`` (``{"POWER": "ON"}``), and says ``Online``/``Offline`` on
  ``tele/<topic>/LWT`` (retained).

The room: every plug heats it (a heater behind each), every sensor reads it; it
warms by ``HEATING`` degrees a period per plug that is on and cools towards
``OUTSIDE`` otherwise, so a thermostat's on/off is seen in the readings.

Lifecycle: ``async with SimulatedDevices(app, url)``: the devices come online,
publish and answer until the block ends, then say offline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Self

import attrs

from jet.definition.model import AppDef
from jet.tasks import cancel_all
from jet.transport import Link, broker

log = logging.getLogger("jet.devices.sim")

#: Degrees a period the room warms per plug that is on, and loses towards OUTSIDE.
HEATING = 1.0
LOSS = 0.05
OUTSIDE = 12.0


async def _close_said(link: Link, timeout: float) -> None:
    """Close ``link`` once what was queued on it (the devices saying offline) has gone
    out, waiting at most ``timeout`` seconds for that."""
    try:
        async with asyncio.timeout(timeout):
            await link.flush()
    except (TimeoutError, OSError, ConnectionError):
        log.warning("simulated devices: could not say offline before stopping")
    finally:
        await link.__aexit__(None, None, None)


@attrs.define
class Sensor:
    name: str  # Zigbee2MQTT's friendly name

    @property
    def state_topic(self) -> str:
        return f"zigbee2mqtt/{self.name}"

    @property
    def availability_topic(self) -> str:
        return f"zigbee2mqtt/{self.name}/availability"


@attrs.define
class Plug:
    topic: str  # Tasmota's %topic%
    on: bool = False


@attrs.define
class Room:
    temperature: float = 19.0

    def step(self, heaters_on: int) -> float:
        self.temperature += HEATING * heaters_on - LOSS * (self.temperature - OUTSIDE)
        return self.temperature


def devices_of(app: AppDef) -> tuple[list[Sensor], list[Plug]]:
    """The Zigbee2MQTT sensors and Tasmota plugs the app's wires name (see the module doc)."""
    sensors: dict[str, Sensor] = {}
    plugs: dict[str, Plug] = {}
    for wire in app.foreign:
        levels = wire.topic.split("/")
        sensor = (wire.inbound and levels[0] == "zigbee2mqtt" and len(levels) in (2, 3)
                  and levels[1] not in ("+", "#", "bridge")
                  and levels[2:] in ([], ["availability"]))
        if sensor:
            sensors.setdefault(levels[1], Sensor(levels[1]))
        if not wire.inbound and len(levels) == 3 and levels[0] == "cmnd" and levels[2] == "POWER":
            plugs.setdefault(levels[1], Plug(levels[1]))
    return list(sensors.values()), list(plugs.values())


class SimulatedDevices:
    """The devices of ``app`` (:func:`devices_of`) on the broker at ``url``."""

    def __init__(self, app: AppDef, url: str, *, period: float = 1.0,
                 room: Room | None = None) -> None:
        self.sensors, self.plugs = devices_of(app)
        self.period = period
        self.room = room or Room()
        self.link = Link(broker.parse(url), "jet-simulated-devices", clean_session=True)
        self._tasks: list[asyncio.Task[None]] = []

    def describe(self) -> Sequence[str]:
        return [f"zigbee2mqtt/{s.name} (temperature sensor)" for s in self.sensors] + [
            f"cmnd/{p.topic}/POWER (Tasmota plug)" for p in self.plugs]

    async def __aenter__(self) -> Self:
        await self.link.__aenter__()
        try:
            for plug in self.plugs:
                await self.link.subscribe(f"cmnd/{plug.topic}/POWER", 1, self._command(plug))
                self._publish(f"tele/{plug.topic}/LWT", "Online", retain=True)
                self._say_power(plug)
            for sensor in self.sensors:
                self._publish(sensor.availability_topic, {"state": "online"}, retain=True)
            self._report()  # at once: a thermostat wired now knows the temperature
            await self.link.flush()
        except BaseException:
            await self.link.__aexit__(None, None, None)
            raise
        self._tasks.append(asyncio.create_task(self._run(), name="simulated-devices"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_all(self._tasks)
        for plug in self.plugs:
            self._publish(f"tele/{plug.topic}/LWT", "Offline", retain=True)
        for sensor in self.sensors:
            self._publish(sensor.availability_topic, {"state": "offline"}, retain=True)
        await _close_said(self.link, 2.0)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            self.room.step(sum(plug.on for plug in self.plugs))
            self._report()

    def _report(self) -> None:
        for i, sensor in enumerate(self.sensors):
            self._publish(sensor.state_topic, {
                "battery": 97 - i, "humidity": 45.2, "linkquality": 120 - 7 * i,
                "temperature": round(self.room.temperature, 2), "voltage": 2985,
            }, retain=True)

    def _command(self, plug: Plug) -> Any:
        def on_command(_topic: str, payload: bytes) -> None:
            word = payload.decode("utf-8", "replace").strip().upper()
            if word in ("ON", "1", "TRUE"):
                plug.on = True
            elif word in ("OFF", "0", "FALSE"):
                plug.on = False
            elif word in ("TOGGLE", "2"):
                plug.on = not plug.on
            elif word:  # Tasmota answers an unknown value with an error result
                self._publish(f"stat/{plug.topic}/RESULT", {"Command": "Error"})
                return
            self._say_power(plug)  # (an empty payload asks for the state)

        return on_command

    def _say_power(self, plug: Plug) -> None:
        power = "ON" if plug.on else "OFF"
        self._publish(f"stat/{plug.topic}/RESULT", {"POWER": power})
        self._publish(f"stat/{plug.topic}/POWER", power, retain=True)

    def _publish(self, topic: str, value: Any, *, retain: bool = False) -> None:
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        self.link.publish_nowait(topic, text.encode("utf-8"), qos=1, retain=retain)


class SiteDevices:
    """``count`` devices in the site layout ``<host>/<zone>/<type>/<id>/<post_type>``
    (docs/devices.md), or Homie 4 devices (``homie/<host>-d<n>/...``), on one
    connection: each says it is there (``online`` on ``.../state``, Homie's ``$state``
    ``ready``; retained) as it joins, ``join_rate`` devices a second (0: all at once),
    a ``temperature`` every ``period`` seconds (spread over the period), and, with
    ``leave_every``, one device at a time leaves (``offline`` on its state topic, as its
    will would say; Homie's ``lost``) and comes back a period later.  :attr:`joined`
    is set once every device has joined.

    Lifecycle: ``async with SiteDevices(...) as sim``; they say offline when it ends.
    """

    TYPES = ("thermo", "plug", "meter")
    LAYOUTS = ("site", "homie")

    def __init__(self, where: broker.Broker, count: int, *, host: str = "sim",
                 zones: int = 3, period: float = 5.0, leave_every: float = 0.0,
                 join_rate: float = 0.0, layout: str = "site") -> None:
        if layout not in self.LAYOUTS:
            raise ValueError(f"layout {layout!r}: one of {', '.join(self.LAYOUTS)}")
        self.count = max(0, count)
        self.host = host
        self.zones = max(1, zones)
        self.period = period
        self.leave_every = leave_every
        self.join_rate = join_rate
        self.layout = layout
        self.link = Link(where, f"jet-device-sim-{host}", clean_session=True)
        self.away: set[int] = set(range(self.count))  # (until each has joined)
        self.joined = asyncio.Event()
        self.published = 0
        self._tasks: list[asyncio.Task[None]] = []

    def topic(self, number: int, post_type: str) -> str:
        if self.layout == "homie":
            device = f"homie/{self.host}-d{number:05d}"
            return f"{device}/$state" if post_type == "state" else f"{device}/sensor/{post_type}"
        kind = self.TYPES[number % len(self.TYPES)]
        return f"{self.host}/zone-{number % self.zones}/{kind}/d{number:05d}/{post_type}"

    def _say(self, number: int, post_type: str, value: Any, *, retain: bool = False) -> None:
        if self.layout == "homie" and post_type == "state":
            value = "ready" if value == "online" else "lost"
        text = value if isinstance(value, str) else json.dumps(value)
        if self.link.publish_nowait(self.topic(number, post_type), text.encode(), qos=1,
                                    retain=retain):
            self.published += 1

    async def __aenter__(self) -> Self:
        # (before connecting, as a persistent client would: commands find their handler)
        commands = "homie/+/+/+/set" if self.layout == "homie" else f"{self.host}/+/+/+/set/#"
        await self.link.subscribe(commands, 1, self._command)
        await self.link.__aenter__()
        self._tasks.append(asyncio.create_task(self._join(), name="device-sim-join"))
        self._tasks.append(asyncio.create_task(self._readings(), name="device-sim"))
        if self.leave_every > 0:
            self._tasks.append(asyncio.create_task(self._comings_and_goings(),
                                                   name="device-sim-churn"))
        if self.join_rate <= 0:
            await self.joined.wait()
            await self.link.flush()
        return self

    async def _join(self) -> None:
        started = time.monotonic()
        for number in range(self.count):
            if self.join_rate > 0:  # (on a schedule, not a sleep per device: no drift)
                due = started + number / self.join_rate - time.monotonic()
                if due > 0:
                    await asyncio.sleep(due)
            self.away.discard(number)
            self._say(number, "state", "online", retain=True)
            if number % 500 == 499:
                await asyncio.sleep(0)  # (others' turn: the outbox, commands)
        self.joined.set()

    async def __aexit__(self, *exc: object) -> None:
        await cancel_all(self._tasks)
        for number in range(self.count):
            self._say(number, "state", "offline", retain=True)
        await _close_said(self.link, 5.0)

    async def run_forever(self) -> None:
        await asyncio.Event().wait()

    def _command(self, topic: str, payload: bytes) -> None:
        """``<host>/<zone>/<type>/d<n>/set/<post_type>``: done, and said on the post type's
        own topic (the confirmation), unless the device is away."""
        levels = topic.split("/")
        if self.layout == "homie":  # homie/<host>-d<n>/sensor/<property>/set
            ident, post = levels[1].rpartition("-")[2], levels[3]
        else:
            ident, post = levels[3], levels[-1]
            if len(levels) != 6:
                return
        if not ident.startswith("d") or not ident[1:].isdigit():
            return
        number = int(ident[1:])
        if number >= self.count or number in self.away:
            return
        self._say(number, post, payload.decode("utf-8", "replace"))

    async def _readings(self) -> None:
        step = self.period / max(1, self.count)
        tick = 0
        while True:
            for number in range(self.count):
                if number not in self.away:
                    self._say(number, "temperature", round(20 + (number % 7) + tick % 3 * 0.1, 2))
                await asyncio.sleep(step)
            tick += 1

    async def _comings_and_goings(self) -> None:
        number = 0
        while self.count:
            await asyncio.sleep(self.leave_every)
            self.away.add(number)
            self._say(number, "state", "offline", retain=True)
            await asyncio.sleep(self.period)
            self.away.discard(number)
            self._say(number, "state", "online", retain=True)
            number = (number + 1) % self.count
