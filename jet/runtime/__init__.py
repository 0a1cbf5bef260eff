"""The running side, in-process: gadgets and the graph that joins them.

A :class:`Gadget` is built from the types a :class:`Registry` allows; a
:class:`Network` binds one circuit's gadgets to each other's handlers (a
sub-circuit runs as a gadget holding a network of its own), with a bounded
:mod:`.inbox` per async gadget.  Nothing here knows MQTT.
"""

from .gadget import Gadget, GadgetError, function_gadget
from .network import BuildError, Network
from .registry import Registry

__all__ = ["BuildError", "Gadget", "GadgetError", "Network", "Registry", "function_gadget"]
