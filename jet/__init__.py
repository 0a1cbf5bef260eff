"""JET: dataflow circuits of small gadgets, wired over MQTT.

The public surface is small on purpose: write gadgets with :class:`Gadget`
or :func:`function_gadget`; everything else is driven from circuit files and
the ``jet`` command.
"""

from jet.runtime.gadget import Gadget, GadgetError, function_gadget

__all__ = ["Gadget", "GadgetError", "__version__", "function_gadget"]
__version__ = "0.1.0"
