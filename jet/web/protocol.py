"""Frames from a page: JSON text, checked before anything acts on them.

Every frame a page sends is a JSON object with ``op`` and the fields of
that op (docs/web.md); an optional ``ref`` (number or string) comes back in
the reply so the page can match it.  Anything else -- binary frames, text
that is not JSON, a frame over :data:`MAX_FRAME` bytes, an unknown op, a
missing or mistyped field -- is a :class:`FrameError`, answered on the
WebSocket like any other failed request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["MAX_FRAME", "OPS", "FrameError", "Request", "error_reply", "ok_reply", "parse"]

#: Frames the server reads; bigger ones get an error reply.  (The WebSocket
#: layer closes the connection only above its own, larger, limit.)
MAX_FRAME = 64 * 1024
_ANY = object

#: op -> {field: type}; every field is required.
OPS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "emit": {"circuit": str, "gadget": str, "port": str, "value": _ANY},
    "tap": {"target": str},
    "untap": {"target": str},
    "inject": {"target": str, "value": _ANY},
    "ping": {},
}


class FrameError(ValueError):
    """A frame that cannot be obeyed; ``ref`` is the frame's, when it had one."""

    def __init__(self, message: str, ref: Any = None) -> None:
        super().__init__(message)
        self.ref = ref


@attrs.frozen
class Request:
    op: str
    args: Mapping[str, Any]
    ref: Any = None


def _ref(data: Mapping[str, Any]) -> Any:
    ref = data.get("ref")
    ok = isinstance(ref, int | str) and not isinstance(ref, bool) and len(str(ref)) <= 64
    return ref if ok else None


def parse(frame: str | bytes) -> Request:
    if isinstance(frame, bytes):
        raise FrameError("binary frames are not understood: send JSON text")
    if len(frame) > MAX_FRAME:  # characters <= bytes: checked again on the encoding
        raise FrameError(f"frame of {len(frame)} characters exceeds {MAX_FRAME} bytes")
    if len(frame.encode("utf-8", "surrogatepass")) > MAX_FRAME:
        raise FrameError(f"frame exceeds {MAX_FRAME} bytes")
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise FrameError(f"expected a JSON object, got {type(data).__name__}")
    ref = _ref(data)
    op = data.get("op")
    if not isinstance(op, str):
        raise FrameError("no 'op' string", ref)
    fields = OPS.get(op)
    if fields is None:
        raise FrameError(f"unknown op {op[:40]!r} (known: {', '.join(sorted(OPS))})", ref)
    args = {k: v for k, v in data.items() if k not in ("op", "ref")}
    for key, kind in fields.items():
        if key not in args:
            raise FrameError(f"{op}: missing field {key!r}", ref)
        if kind is not _ANY and not isinstance(args[key], kind):
            raise FrameError(f"{op}: field {key!r} must be a {kind.__name__}", ref)  # type: ignore[union-attr]
    unknown = set(args) - set(fields)
    if unknown:
        raise FrameError(f"{op}: unknown field {sorted(unknown)[0][:40]!r}", ref)
    return Request(op, args, ref)


def ok_reply(ref: Any, result: Any = None) -> dict[str, Any]:
    return {"op": "reply", "ref": ref, "ok": True, "result": result}


def error_reply(ref: Any, error: str) -> dict[str, Any]:
    return {"op": "reply", "ref": ref, "ok": False, "error": error}
