"""Hosting circuits behind MQTT: the circuit boundary and the containers.

Every hosted circuit is a :class:`CircuitBoundary` (wires in, the publish
rule out, counters, status) around a body that its container kind supplies;
every container kind is a :class:`Container` (conf commands one at a time,
:mod:`.conf`, retained statuses and will, state file).  :class:`Pack` hosts
Python gadget networks; the web container is :mod:`jet.web`, the radio hub
``jet_rf12.Hub``.
"""

from .base import Container
from .boundary import Body, CircuitBoundary, CommandError
from .pack import Pack

__all__ = ["Body", "CircuitBoundary", "CommandError", "Container", "Pack"]
