"""Message payloads: every value on a wire is sent as its msgpack encoding."""

from __future__ import annotations

import threading
from typing import Any

import msgpack

#: Payloads above this size are refused on decode (a broken or hostile peer
#: must not make a container allocate without bound).  MQTT itself allows 256 MB.
MAX_PAYLOAD = 1 << 20


class PayloadError(ValueError):
    """A payload is not valid msgpack, or too large."""


#: One packer for the loop's thread: ``packb`` builds one per call, five times the
#: cost of packing a small value (docs/performance.md).  msgpack resets it after
#: each value, and after a failed one.
_packer = msgpack.Packer(use_bin_type=True)
_packer_thread = threading.main_thread()


def encode(value: Any) -> bytes:
    try:
        if threading.current_thread() is _packer_thread:
            return _packer.pack(value)  # type: ignore[no-any-return]
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        raise PayloadError(f"cannot encode {type(value).__name__} as msgpack: {exc}") from exc


def decode(payload: bytes | bytearray) -> Any:
    if len(payload) > MAX_PAYLOAD:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # (TypeError: a map key msgpack can decode but Python cannot hash)
        why = str(exc) or type(exc).__name__  # (a reserved byte, 0xc1: FormatError, no text)
        raise PayloadError(f"not usable msgpack ({len(payload)} bytes): {why}") from exc
