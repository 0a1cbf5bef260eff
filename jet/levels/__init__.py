"""Levels: a hierarchy of brokers (device, fog, cloud), children connecting upward only.

:class:`LevelDaemon` is one level's daemon (``jet level``): presence, machine
messages carried down where its :class:`Rules` (:func:`load_rules`) say they
concern it, events carried through the whole tree once, calls of its
:func:`level_function` functions from the levels below (:func:`call`,
``jet call``).  Topic names are
:mod:`jet.address`'s (``machine/functions``, ``machine/events/...``,
``level/functions``, ``levels/<name>/...``); docs/levels.md has the picture.
"""

from .call import CallError, call, calls
from .daemon import LevelCounters, LevelDaemon
from .functions import level_function
from .rules import Rules, RulesError, load_rules

__all__ = [
    "CallError",
    "LevelCounters",
    "LevelDaemon",
    "Rules",
    "RulesError",
    "call",
    "calls",
    "level_function",
    "load_rules",
]
