"""Packet payloads: msgpack passed through, or a declared struct codec.

By default a node sends the msgpack encoding of each value, and the hub
forwards those bytes unchanged as the MQTT payload once it has checked that
they decode (a corrupted packet must not reach subscribers as a value).

Legacy firmware that sends packed C structs declares a codec per port in its
gadget's params, e.g. ``{"codecs": {"celsius": {"codec": "<h", "scale": 0.01}}}``:
the value is ``unpacked * scale`` (a list when the format has several fields),
and the reverse for values sent to the node.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

import attrs

from jet.transport.codec import PayloadError, decode, encode

__all__ = ["MSGPACK", "PayloadError", "PortCodec", "codec_from_params"]


def _check_format(_: object, __: object, fmt: str | None) -> None:
    if fmt is not None:
        try:
            struct.calcsize(fmt)
        except struct.error as exc:
            raise ValueError(f"bad struct codec {fmt!r}: {exc}") from exc


@attrs.frozen
class PortCodec:
    """How one port's values are laid out in radio packets."""

    fmt: str | None = attrs.field(default=None, validator=_check_format)
    scale: float | None = None

    @property
    def is_msgpack(self) -> bool:
        return self.fmt is None

    def to_mqtt(self, data: bytes) -> bytes:
        """Radio payload -> MQTT payload (msgpack); raises PayloadError."""
        if self.fmt is None:
            decode(data)  # raises PayloadError, also on trailing bytes
            return data
        try:
            fields = struct.unpack(self.fmt, data)
        except struct.error as exc:
            raise PayloadError(
                f"struct {self.fmt!r} wants {struct.calcsize(self.fmt)} bytes, got {len(data)}: "
                f"{exc}"
            ) from exc
        values = [self._scaled(f) for f in fields]
        return encode(values[0] if len(values) == 1 else values)

    def to_radio(self, payload: bytes) -> bytes:
        """MQTT payload (msgpack) -> radio payload; raises PayloadError."""
        value = decode(payload)
        if self.fmt is None:
            return payload
        values = value if isinstance(value, list | tuple) else [value]
        try:
            return struct.pack(self.fmt, *(self._unscaled(v, i) for i, v in enumerate(values)))
        except (struct.error, TypeError, ValueError, OverflowError) as exc:
            raise PayloadError(f"cannot pack {value!r} as {self.fmt!r}: {exc}") from exc

    def _scaled(self, raw: Any) -> Any:
        if self.scale is None or isinstance(raw, bytes):
            return raw
        # 2157 / 100 gives 21.57 where 2157 * 0.01 gives 21.570000000000004:
        # divide by the inverse when the scale is a clean fraction.
        inverse = 1 / self.scale
        if self.scale < 1 and math.isclose(inverse, round(inverse), rel_tol=1e-9):
            return raw / round(inverse)
        return raw * self.scale

    def _unscaled(self, value: Any, index: int) -> Any:
        assert self.fmt is not None
        if isinstance(value, bool):
            value = int(value)
        if self.scale is not None and isinstance(value, int | float):
            value = value / self.scale
        if isinstance(value, float) and _field_is_integer(self.fmt, index):
            return round(value)
        return value


def _field_is_integer(fmt: str, index: int) -> bool:
    kinds = _field_kinds(fmt)
    return index < len(kinds) and kinds[index] in "bBhHiIlLqQnN?"


def _field_kinds(fmt: str) -> list[str]:
    """One struct code per unpacked field (``"<2hB"`` -> ``["h", "h", "B"]``)."""
    kinds: list[str] = []
    count = ""
    for c in fmt.lstrip("@=<>!"):
        if c.isdigit():
            count += c
            continue
        if c.isspace():
            continue
        repeat = int(count) if count else 1
        count = ""
        if c in "sp":
            kinds.append(c)  # "4s" is one bytes field
        elif c != "x":  # pad bytes unpack to nothing
            kinds.extend(c * repeat)
    return kinds


MSGPACK = PortCodec()


def codec_from_params(spec: Mapping[str, Any]) -> PortCodec:
    """``{"codec": "<h", "scale": 0.01}`` -> PortCodec; raises ValueError."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"codec declaration must be a map, got {type(spec).__name__}")
    fmt = spec.get("codec")
    if fmt in (None, "msgpack"):
        return MSGPACK
    if not isinstance(fmt, str):
        raise ValueError(f"codec must be a struct format string, got {fmt!r}")
    scale = spec.get("scale")
    if scale is not None and (not isinstance(scale, int | float) or scale == 0):
        raise ValueError(f"scale must be a non-zero number, got {scale!r}")
    return PortCodec(fmt, None if scale is None else float(scale))
