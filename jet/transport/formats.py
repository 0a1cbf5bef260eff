"""Payloads of the MQTT devices people already own: JSON, text, raw bytes, msgpack,
and the availability messages of Zigbee2MQTT, Tasmota and Homie.

A wire end on a foreign topic (docs/circuit-files.md "Foreign topics") names a
:class:`Format`; :meth:`Format.decode` turns a message into the value a gadget
gets, :meth:`Format.encode` turns a gadget's value into the message a device
takes.  Either raises :class:`FormatError` with one line saying what was wrong;
the circuit counts it on the wire and goes on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from jet.transport import codec

FormatName = Literal["json", "text", "raw", "msgpack", "presence"]
FORMATS: tuple[FormatName, ...] = ("json", "text", "raw", "msgpack", "presence")

#: What a device's availability message says, read as online (True) or offline (False):
#: Zigbee2MQTT (`online`/`offline`, or `{"state": "online"}`), Tasmota's LWT
#: (`Online`/`Offline`), Homie's `$state` (`ready` is online; `init`, `sleeping`,
#: `disconnected`, `lost`, `alert` are not).
PRESENCE_WORDS = {
    "online": True, "offline": False,
    "ready": True, "init": False, "sleeping": False, "disconnected": False, "lost": False,
    "alert": False,
}


class FormatError(ValueError):
    """A payload that does not read (or a value that does not write) in the wire's format."""


def payload_value(payload: bytes) -> Any:
    """A payload read when no format is said (the device registry): JSON when it is JSON,
    else its text, else its bytes in hex (``{"hex": ...}``)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": payload.hex()}
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _text_value(text: str) -> Any:
    """Text as a device sends it: ``21.5`` and ``42`` are numbers, ``true``/``false``
    booleans, anything else the text itself (``ON`` stays ``ON``: map it)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _key(value: Any) -> str:
    """A value as a ``map`` key (YAML keys are text: true -> "true", 1 -> "1")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@attrs.frozen
class Format:
    """How the payloads on one foreign wire end read and write.

    ``path``: where the value sits in a JSON document (``temperature``,
    ``state.power``, ``channels.0``), or, writing, the key it is put under.
    ``map``: values replaced on the way (read: payload value -> gadget value;
    write: gadget value -> payload value), keys as text (``true``, ``21``).
    """

    name: FormatName = "msgpack"
    path: tuple[str, ...] = ()
    map: Mapping[str, Any] = attrs.field(factory=dict)

    # -- reading ------------------------------------------------------------------------

    def decode(self, payload: bytes) -> Any:
        value = self._decode(payload)
        if self.map:
            value = self.map.get(_key(value), value)
        return value

    def _decode(self, payload: bytes) -> Any:
        if self.name == "raw":
            return payload
        if self.name == "msgpack":
            try:
                return self._at_path(codec.decode(payload))
            except codec.PayloadError as exc:
                raise FormatError(str(exc)) from None
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"not UTF-8 text ({len(payload)} bytes)") from None
        if self.name == "text":
            return _text_value(text)
        if self.name == "presence":
            return "online" if self._online(text) else "offline"
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise FormatError(f"not JSON: {exc} in {text[:60]!r}") from None
        except RecursionError:
            raise FormatError(f"JSON nested too deeply ({len(payload)} bytes)") from None
        return self._at_path(document)

    def _at_path(self, document: Any) -> Any:
        value = document
        for i, step in enumerate(self.path):
            if isinstance(value, Mapping) and step in value:
                value = value[step]
            elif isinstance(value, list) and step.isascii() and step.isdigit() and int(
                step) < len(value):
                value = value[int(step)]
            else:
                where = ".".join(self.path[: i + 1])
                raise FormatError(f"no {where!r} in the document")
        return value

    def _online(self, text: str) -> bool:
        word = text.strip()
        if word.startswith("{"):  # Zigbee2MQTT's JSON availability: {"state": "online"}
            try:
                document = json.loads(word)
            except (ValueError, RecursionError) as exc:
                raise FormatError(f"not an availability message: {exc}") from None
            word = str(document.get("state", "")) if isinstance(document, dict) else ""
        online = PRESENCE_WORDS.get(word.lower())
        if online is None:
            raise FormatError(f"not an availability message: {text[:60]!r}")
        return online

    # -- writing ------------------------------------------------------------------------

    def encode(self, value: Any) -> bytes:
        if self.map:
            value = self.map.get(_key(value), value)
        if self.path:
            for step in reversed(self.path):
                value = {step: value}
        if self.name == "msgpack":
            try:
                return codec.encode(value)
            except codec.PayloadError as exc:
                raise FormatError(str(exc)) from None
        if self.name == "raw":
            if isinstance(value, bytes | bytearray):
                return bytes(value)
            if isinstance(value, str):
                return value.encode("utf-8")
            raise FormatError(f"raw takes bytes or text, not {type(value).__name__}")
        if self.name == "json":
            try:
                return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("utf-8")
            except (TypeError, ValueError, RecursionError) as exc:
                raise FormatError(f"not JSON: {exc}") from None
        if self.name == "presence":
            return (value if isinstance(value, str) else _key(bool(value))).encode("utf-8")
        if isinstance(value, bytes | bytearray):
            raise FormatError("text takes values, not bytes (use format: raw)")
        if isinstance(value, bool):
            return _key(value).encode("utf-8")
        if isinstance(value, dict | list):
            raise FormatError(f"text takes one value, not a {type(value).__name__}")
        return str(value).encode("utf-8")

    # -- its msgpack form (in conf commands and statuses) -------------------------------

    def to_map(self) -> dict[str, Any]:
        found: dict[str, Any] = {"format": self.name}
        if self.path:
            found["path"] = ".".join(self.path)
        if self.map:
            found["map"] = dict(self.map)
        return found

    @classmethod
    def from_map(cls, spec: Mapping[str, Any]) -> Format:
        """From a command's or a file's map; ValueError naming what is wrong."""
        name = spec.get("format", "msgpack")
        if name not in FORMATS:
            raise ValueError(f"unknown format {name!r} (one of {', '.join(FORMATS)})")
        path = spec.get("path") or ""
        if not isinstance(path, str):
            raise ValueError(f"path is text like 'state.temperature', not {path!r}")
        if path and name not in ("json", "msgpack"):
            raise ValueError(f"a path needs format json or msgpack, not {name}")
        mapping = spec.get("map") or {}
        if not isinstance(mapping, Mapping):
            raise ValueError(f"map is a mapping of values, not {mapping!r}")
        return cls(name, tuple(p for p in path.split(".") if p) if path else (),
                   {_key(k): v for k, v in mapping.items()})
