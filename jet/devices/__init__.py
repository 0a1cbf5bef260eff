"""Devices: the MQTT devices people already own, as JET meets them.

:class:`RegistryServer` (``jet devices serve``) discovers the devices on a broker by
their topic layouts (:mod:`jet.devices.layouts`) and keeps them, their latest data
and their statistics in a :class:`Store` (SQLite: :class:`SqliteStore`; PostgreSQL,
which servers on several machines share: :class:`PostgresStore`).
:class:`SimulatedDevices` plays the devices an app's wires name (a Zigbee2MQTT
sensor, a Tasmota plug) for ``jet run FILE --simulate``; :class:`SiteDevices`
(``jet device-sim``) many devices in the site layout.  docs/devices.md.
"""

from .layouts import BUILT_IN, Layout, Sighting, recognise
from .registry import RegistryServer
from .sim import Plug, Room, Sensor, SimulatedDevices, SiteDevices, devices_of
from .store import PostgresStore, SqliteStore, Store, open_store

__all__ = [
    "BUILT_IN", "Layout", "Plug", "PostgresStore", "RegistryServer", "Room", "Sensor", "Sighting",
    "SimulatedDevices", "SiteDevices", "SqliteStore", "Store", "devices_of", "open_store",
    "recognise",
]
