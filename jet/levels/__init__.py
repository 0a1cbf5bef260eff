"""Levels: a hierarchy of brokers (device, fog, cloud), children connecting upward only.

:class:`LevelDaemon` is one level's daemon (``jet level``): presence, machine
messages carried down where its :class:`Rules` (:func:`load_rules`) say they
concern it, events carried through the whole tree once.  Topic names are
:mod:`jet.address`'s (``machine/functions``, ``machine/events/...``,
``level/functions``, ``levels/<name>/...``); docs/levels.md has the picture.
"""

from .daemon import LevelCounters, LevelDaemon
from .rules import Rules, RulesError, load_rules

__all__ = ["LevelCounters", "LevelDaemon", "Rules", "RulesError", "load_rules"]
