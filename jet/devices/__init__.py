"""Devices: the MQTT devices people already own, as JET meets them.

:class:`SimulatedDevices` plays the devices an app's wires name (a Zigbee2MQTT
sensor, a Tasmota plug) on a broker, so an app for them runs with
``jet run FILE --simulate`` and nothing else to own.
"""

from .sim import Plug, Room, Sensor, SimulatedDevices, devices_of

__all__ = ["Plug", "Room", "Sensor", "SimulatedDevices", "devices_of"]
