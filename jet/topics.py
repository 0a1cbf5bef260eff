"""Old name of :mod:`jet.address`, which builds and parses every topic.

Kept only while jet/container.py, jet/circuit.py, jet/web/circuit.py and jet/mqtt.py
still say ``from . import topics``; new code imports :mod:`jet.address`.
"""

from . import address
from .address import (
    ALL_CIRCUIT_DEFINITIONS,
    ALL_CIRCUIT_STATUS,
    ALL_CONTAINER_STATUS,
    MAX_TOPIC_BYTES,
    NAME_RE,
    TopicError,
    check,
    circuit_conf,
    circuit_definition,
    circuit_prefix,
    circuit_status,
    container_conf,
    container_status,
    output,
    reply,
)

__all__ = [
    "ALL_CIRCUIT_DEFINITIONS",
    "ALL_CIRCUIT_STATUS",
    "ALL_CONTAINER_STATUS",
    "MAX_TOPIC_BYTES",
    "NAME_RE",
    "TopicError",
    "check",
    "circuit_conf",
    "circuit_definition",
    "circuit_of",
    "circuit_prefix",
    "circuit_status",
    "container_conf",
    "container_status",
    "output",
    "reply",
]


def circuit_of(topic: str) -> str:
    """The circuit id of a circuit's topic ("" when it has none, like ``pack//conf``).

    New code: ``address.circuit_of(topic)``, a :class:`~jet.address.CircuitAddress` or None.
    """
    circuit = address.circuit_of(topic)
    return "" if circuit is None else circuit.id
