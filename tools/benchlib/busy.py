"""A CPU-bound gadget for the pack-group figure (``tools/bench --only groups``)."""

from __future__ import annotations

import hashlib
from typing import Any

import attrs

from jet.runtime.gadget import Gadget


def burn(rounds: int) -> bytes:
    """``rounds`` chained SHA-256 hashes: CPU work that holds the GIL, like Python code."""
    digest = b"jet"
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest


@attrs.define(kw_only=True)
class Busy(Gadget):
    """Passes each value on after ``rounds`` hashes of CPU work."""

    inputs = ("in",)
    outputs = ("out",)

    rounds: int = 2000

    def on_in(self, value: Any) -> None:
        burn(self.rounds)
        self.emit("out", value)
