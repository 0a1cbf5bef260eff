"""The definition side: circuits as data, before anything runs.

Circuit files become an :class:`AppDef` (:mod:`.files`, checked against
:mod:`.schema`), which ``jet check`` checks (:mod:`.check`: ports, types,
single feed, cycles) and ``jet graph`` draws (:mod:`.graph`); :mod:`.ports`
says which ports any gadget has (Python class, web gadget, node declaration,
sub-circuit) and :mod:`.webcatalog` which web gadgets exist.
"""

from .model import AppDef, CircuitDef, GadgetDef, PortRef, WireDef

__all__ = ["AppDef", "CircuitDef", "GadgetDef", "PortRef", "WireDef"]
