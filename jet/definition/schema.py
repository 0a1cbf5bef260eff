"""The JSON Schema (draft 2020-12) of circuit files, shipped as package data."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

__all__ = ["schema"]


@cache
def _text() -> str:
    return files("jet.definition").joinpath("schema.json").read_text(encoding="utf-8")


def schema() -> dict[str, Any]:
    """The circuit file schema, as a fresh dict (callers may modify it)."""
    loaded: dict[str, Any] = json.loads(_text())
    return loaded
