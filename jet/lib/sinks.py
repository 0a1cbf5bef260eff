"""Sinks: gadgets that consume values."""

from __future__ import annotations

import logging
from typing import Any

import attrs

from jet.lib._util import one_of
from jet.runtime.gadget import Gadget

__all__ = ["Logger"]

LEVELS = ("debug", "info", "warning", "error")

logger = logging.getLogger("jet.lib.logger")


@attrs.define(kw_only=True)
class Logger(Gadget):
    """Logs every value as ``"<label> <value>"`` on the ``jet.lib.logger`` logger.

    With an empty label only the value is logged.  ``level`` is one of
    debug, info, warning, error.
    """

    inputs = ("in",)

    label: str = ""
    level: str = attrs.field(default="info", validator=one_of(*LEVELS))

    def on_in(self, value: Any) -> None:
        levelno = logging.getLevelNamesMapping()[self.level.upper()]
        if self.label:
            logger.log(levelno, "%s %s", self.label, value)
        else:
            logger.log(levelno, "%s", value)
