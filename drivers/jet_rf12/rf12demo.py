"""The JeeLink RF12demo serial protocol (jeelib, 57600 baud, ASCII lines).

What RF12demo (version 12; ``RF12demo.ino`` in jeelabs/jeelib) prints, one line
per ``\\r\\n``, and how it is read here:

- ``OK <hdr> <b1> ... <bn>``: a good packet, bytes in decimal.  ``hdr & 0x1F``
  is the sender's node id, unless the DST flag (0x40) is set: then it is the
  destination (the sender is not on the air).  A dongle listening to every
  group (``0g``) writes ``OK G<group> <hdr> ...``; sketches before version 10
  wrote ``OKG <group> <hdr> ...``, also read.
- RF69 builds (``RF69_COMPAT``) end every packet line with the signal
  strength: ``OK 5 1 2 (-61) ``; kept as :attr:`Packet.rssi` (dBm).
- Hex output (``1x``): ``OKX 05CA41AC0000``: header then data, two hex digits
  per byte, no spaces (``OKX G<gg> ...`` on group 0; RF69: `` (<hh>) ``, the
  raw RSSI register, reported as -hh/2 dBm).  ``2x`` adds an ``ASC ...`` line
  per packet (the data as characters): read as text.
- `` ? <b1> ...``: a packet with a bad CRC (`` ?X ...`` in hex): counted,
  never published.
- `` -> <n> b``: a host's send was handed to the radio (:func:`is_send_confirmation`);
  `` -> ack``: RF12demo is acknowledging a packet it received, *not* a send
  confirmation.
- anything else: the banner (``[RF12demo.12] A i31 g212 @ 868 MHz q1``), the
  help text, the ``Current configuration:`` block, echoes of commands
  (``> 8,195,5s``).

Sent to the dongle: ``<b1>,<b2>,...,<bn>,<node>s`` (no ack) or ``...a``
(ack requested).  RF12demo ignores the line feed the driver appends; it is
there so a human watching the line sees one command per line.

:class:`LineParser` never raises on what the serial line delivers: partial
lines, binary noise and malformed packets become counted events.
"""

from __future__ import annotations

import re
from typing import Final

import attrs

#: RF12_MAXDATA: the largest payload the RF12 driver sends or receives.
MAX_PAYLOAD: Final = 66
#: Longest line kept; a real RF12demo line is at most ~280 characters.
MAX_LINE: Final = 512
BAUD: Final = 57600

HDR_CTL: Final = 0x80  # an ack packet, not data
HDR_DST: Final = 0x40  # the id field names the destination, not the sender
HDR_ACK: Final = 0x20  # the sender wants an ack
NODE_MASK: Final = 0x1F

#: Decimal: ``OK[ G<grp>| G <grp>] <hdr> <b>... [(<rssi>)]``; ``OKG <grp>`` is the
#: group-0 form of sketches before version 10.
_OK = re.compile(
    rb"OK(?: +G(\d{1,3})|G +(\d{1,3}))?((?: +\d{1,3})+)(?: +\((-?\d{1,3})\))? *"
)
#: Hex (``1x``/``2x``): ``OKX[ G<gg>] <hh><hh>... [(<hh>)]``.
_OKX = re.compile(
    rb"OKX(?: +G([0-9A-Fa-f]{2}))? +((?:[0-9A-Fa-f]{2})+)(?: +\(([0-9A-Fa-f]{2})\))? *"
)
_SENT = re.compile(r"\s*-> +(\d+) +b\s*")
_BANNER = re.compile(r"\[RF12demo\.(\d+)\]")
_NOT_TEXT = re.compile(rb"[^\x20-\x7e\t]")
_CONFIG = re.compile(r"\bi(\d+)\*?\s+g(\d+)\s+@\s+(\d+)\s*MHz")


class SendError(ValueError):
    """A packet cannot be sent through RF12demo (too long, bad node id)."""


@attrs.frozen
class Packet:
    """A good packet: header byte and payload (tag + value)."""

    hdr: int
    data: bytes
    group: int | None = None  # only when the dongle listens to all groups
    line: str = ""
    rssi: int | None = None  # dBm, from an RF69 build

    @property
    def directed(self) -> bool:
        """DST set: ``hdr & 0x1F`` is the destination, not the sender."""
        return bool(self.hdr & HDR_DST)

    @property
    def wants_ack(self) -> bool:
        return bool(self.hdr & HDR_ACK) and not self.hdr & HDR_CTL

    @property
    def node_id(self) -> int:
        return self.hdr & NODE_MASK

    @property
    def is_ack(self) -> bool:
        return bool(self.hdr & HDR_CTL)


@attrs.frozen
class BadPacket:
    """A packet RF12demo received with a bad CRC (radio noise)."""

    line: str


@attrs.frozen
class Other:
    """Banner, command echo, help: text that is not a packet."""

    line: str


@attrs.frozen
class Garbage:
    """Bytes that are neither a packet nor readable text, or an unreadable OK line."""

    line: str
    reason: str


@attrs.frozen
class Partial:
    """A fragment dropped: cut short by a reopen, or too long to be a line."""

    line: str
    reason: str


Event = Packet | BadPacket | Other | Garbage | Partial


@attrs.define
class LineStats:
    lines: int = 0
    packets: int = 0
    bad_packets: int = 0
    other: int = 0
    garbage: int = 0
    partial: int = 0


@attrs.frozen
class DongleConfig:
    """What RF12demo's banner says about its radio settings."""

    node_id: int
    group: int
    band: int  # MHz


def _show(raw: bytes) -> str:
    """A line as it may safely appear in a log."""
    text = raw.decode("ascii", "backslashreplace")
    return text if len(text) <= 80 else text[:77] + "..."


def parse_line(raw: bytes) -> Event:
    """One line without its ``\\n``; never raises."""
    raw = raw.rstrip(b"\r")
    if raw.startswith(b" ?"):
        return BadPacket(_show(raw))
    if len(raw) > MAX_LINE:
        return Garbage(_show(raw), f"line of {len(raw)} bytes is too long")
    if raw.startswith(b"OKX"):
        match = _OKX.fullmatch(raw)
        if match is None:
            return Garbage(_show(raw), "OKX line is not hex bytes")
        numbers = bytes.fromhex(match[2].decode())
        group = None if match[1] is None else int(match[1], 16)
        rssi = None if match[3] is None else -(int(match[3], 16) >> 1)
        return Packet(numbers[0], numbers[1:], group, _show(raw), rssi)
    if raw.startswith(b"OK"):
        match = _OK.fullmatch(raw)
        if match is None:
            return Garbage(_show(raw), "OK line is not decimal bytes")
        found = match[1] or match[2]
        group = None if found is None else int(found)
        try:
            numbers = bytes(int(n) for n in match[3].split())
        except ValueError:
            return Garbage(_show(raw), "OK line has a number above 255")
        if group is not None and group > 255:
            return Garbage(_show(raw), f"group {group} above 255")
        rssi = None if match[4] is None else int(match[4])
        return Packet(numbers[0], numbers[1:], group, _show(raw), rssi)
    if _NOT_TEXT.search(raw):
        return Garbage(_show(raw), "binary bytes")
    return Other(_show(raw))


#: How a line from RF12demo can start; used to tell whether the first bytes
#: read after opening the port are the tail of a line that was cut.
_LINE_STARTS = (b"OK", b" ?", b"[", b"\r", b"\n", b">", b" ->", b"ASC ")


class LineParser:
    """Splits the serial byte stream into lines and classifies them."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.stats = LineStats()
        self._buf = b""
        self._resync = True

    def feed(self, data: bytes) -> list[Event]:
        """Events for every complete line in ``data`` and every fragment dropped."""
        events: list[Event] = []
        buf = self._buf + data
        if self._resync and buf:
            cut = self._resync_cut(buf)
            if cut is None:
                self._buf = buf
                return self._check_overflow(events)
            if cut:
                self._drop(events, buf[:cut], "tail of a line cut before the port was opened")
            buf = buf[cut:]
            self._resync = False
        if b"\n" not in data:
            self._buf = buf
            return self._check_overflow(events)
        *lines, self._buf = buf.split(b"\n")
        stats = self.stats
        for raw in lines:
            if not raw.strip():
                continue
            stats.lines += 1
            event = parse_line(raw)
            kind = type(event)
            if kind is Packet:
                stats.packets += 1
            elif kind is BadPacket:
                stats.bad_packets += 1
            elif kind is Garbage:
                stats.garbage += 1
            else:
                stats.other += 1
            events.append(event)
        return self._check_overflow(events)

    def reset(self) -> Partial | None:
        """Forget a buffered fragment (the port is being reopened)."""
        fragment, self._buf = self._buf, b""
        self._resync = True
        events: list[Event] = []
        self._drop(events, fragment, "line cut by the port closing")
        return events[0] if events and isinstance(events[0], Partial) else None

    def _resync_cut(self, buf: bytes) -> int | None:
        """Where the first whole line starts in ``buf``; None: cannot tell yet."""
        if any(buf.startswith(s) or s.startswith(buf) for s in _LINE_STARTS):
            return 0
        newline = buf.find(b"\n")
        return None if newline < 0 else newline + 1

    def _check_overflow(self, events: list[Event]) -> list[Event]:
        if len(self._buf) > self.max_line:
            # No line feed for this long: noise, or a dongle at the wrong baud rate.
            self._drop(events, self._buf, f"no line feed in {len(self._buf)} bytes")
            self._buf = b""
        return events

    def _drop(self, events: list[Event], fragment: bytes, reason: str) -> None:
        if fragment.strip():
            self.stats.partial += 1
            events.append(Partial(_show(fragment), reason))


def format_send(node_id: int, data: bytes, ack: bool = False) -> bytes:
    """The RF12demo command sending ``data`` to ``node_id`` (0 = broadcast)."""
    if not 0 <= node_id <= NODE_MASK:
        raise SendError(f"node id {node_id} out of range 0..31")
    if len(data) > MAX_PAYLOAD:
        raise SendError(f"packet of {len(data)} bytes exceeds the RF12 limit of {MAX_PAYLOAD}")
    head = ",".join(str(b) for b in data)
    sep = "," if data else ""
    return f"{head}{sep}{node_id}{'a' if ack else 's'}\n".encode("ascii")


def parse_config(line: str) -> DongleConfig | None:
    """The radio settings in a banner or config line, if it is one."""
    match = _CONFIG.search(line)
    if match is None:
        return None
    return DongleConfig(int(match[1]), int(match[2]), int(match[3]))


def is_send_confirmation(line: str) -> bool:
    """RF12demo writes `` -> <n> b`` when it hands the host's packet to the radio
    (and `` -> ack`` when it acknowledges one it received: not this)."""
    return _SENT.fullmatch(line) is not None


def parse_banner(line: str) -> int | None:
    """RF12demo's version, if ``line`` is its start-up banner."""
    match = _BANNER.search(line)
    return None if match is None else int(match[1])
