"""Packet tags: which gadget port a radio packet belongs to.

Every packet between a node and the hub starts with a tag naming a port:
an *output* in packets from the node, an *input* in packets to the node.

- short form, one byte: ``gadget << 3 | port`` for gadget 0..30, port 0..7;
- escaped form, three bytes: ``0xFF`` then a 16-bit big-endian field
  ``gadget << 6 | port`` for gadget 0..1023, port 0..63.

Gadget 31 never uses the short form: ``31 << 3 | 7`` would be the escape
byte itself, so the whole row is left to the escape (a one-byte tag
0xF8..0xFE is rejected as malformed rather than guessed at).
Gadget 0 input 7 is reserved for configuration messages to the node.
"""

from __future__ import annotations

ESCAPE = 0xFF
SHORT_MAX_GADGET = 30
SHORT_MAX_PORT = 7
MAX_GADGET = 1023
MAX_PORT = 63

#: The input that carries node-level commands (msgpack maps) to a node.
CONF_GADGET = 0
CONF_INPUT = 7


class TagError(ValueError):
    """A tag is out of range, malformed or truncated."""


def encode_tag(gadget: int, port: int) -> bytes:
    """The shortest tag for ``gadget.port``."""
    if not 0 <= gadget <= MAX_GADGET:
        raise TagError(f"gadget {gadget} out of range 0..{MAX_GADGET}")
    if not 0 <= port <= MAX_PORT:
        raise TagError(f"port {port} out of range 0..{MAX_PORT}")
    if gadget <= SHORT_MAX_GADGET and port <= SHORT_MAX_PORT:
        return bytes((gadget << 3 | port,))
    field = gadget << 6 | port
    return bytes((ESCAPE, field >> 8, field & 0xFF))


def decode_tag(data: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """``(gadget, port, header_len)`` from the start of a packet."""
    if len(data) < 1:
        raise TagError("empty packet: no tag")
    first = data[0]
    if first != ESCAPE:
        gadget, port = first >> 3, first & 0x07
        if gadget > SHORT_MAX_GADGET:
            raise TagError(f"tag 0x{first:02X}: gadget 31 must use the 0xFF escape")
        return gadget, port, 1
    if len(data) < 3:
        raise TagError(f"escaped tag truncated: {len(data)} of 3 bytes")
    field = data[1] << 8 | data[2]
    return field >> 6, field & 0x3F, 3


def is_conf_input(gadget: int, port: int) -> bool:
    return gadget == CONF_GADGET and port == CONF_INPUT
