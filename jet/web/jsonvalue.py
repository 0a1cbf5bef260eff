"""msgpack values as JSON: what the page can be sent.

A wire value is any msgpack value; JSON has no bytes, no non-string map
keys and no NaN/Infinity (``JSON.parse`` rejects them).  :func:`to_json`
maps each such value onto something JSON holds and the page can show, the
same way every time, so a page never receives a frame it cannot parse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import msgpack

__all__ = ["dumps", "to_json"]

#: Deeper structures are cut (shown as a string) rather than recursing without bound.
MAX_DEPTH = 64


def to_json(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of ``value``.

    bytes become ``{"$bytes": "<hex>"}``, msgpack extension types
    ``{"$ext": code, "data": "<hex>"}``, non-finite floats ``null`` and map
    keys strings.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        return "<nested too deep>"
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, msgpack.ExtType):
        return {"$ext": value.code, "data": value.data.hex()}
    if isinstance(value, Mapping):
        return {str(k): to_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v, depth + 1) for v in value]
    return str(value)


def dumps(frame: Mapping[str, Any]) -> str:
    """One compact JSON text; the caller has made ``frame`` JSON-safe with :func:`to_json`."""
    return json.dumps(frame, separators=(",", ":"), allow_nan=False)
