"""The node simulator: a pseudo-terminal that behaves like a JeeLink running RF12demo.

    async with NodeSim(default_nodes(), link="/tmp/ttyJEE0") as sim:
        # `jet hub --port /tmp/ttyJEE0` talks to it as to a real dongle
        ...

It prints what RF12demo version 12 prints (jeelabs/jeelib,
``examples/RF12/RF12demo``), so the hub is tested against the real thing's
behaviour, not a kinder one:

- **Reset on open.** A JeeLink's Arduino resets when the port opens (DTR):
  after ``boot_delay`` it prints a blank line, the banner with the
  configuration (``[RF12demo.12] _ i31 g212 @ 868 MHz q1``), the help text
  (its own wording, in the sketch's shape) and ``Current configuration:`` with
  the configuration line again.  What is typed before that is lost; nothing is
  printed while no one has the port open (counted in ``lines_dropped``).
- **Input as the sketch parses it**: digits build a 16-bit value (it wraps),
  ``,`` pushes it as a byte (truncated) onto a 70-byte stack (more are
  ignored), a letter ``a``..``z`` is echoed (``> 8,195,5s``) and executed;
  any other printable character prints the help.  ``i b g c q x v`` change and
  show the configuration; ``a``/``s`` set up a send.
- **One pending send, from the input stack.** ``...,<n>s`` (or ``a``) is
  sent when the radio is free, ``radio_delay`` later (default: the time the
  packet's bytes take at the RF12's 49.2 kbit/s), and only then confirmed with
  `` -> <len> b``.  The packet's bytes are read from the input stack at that
  moment, as the sketch does: a command typed before the confirmation
  overwrites the pending one (the first value is lost).
- **Packets from nodes**: ``OK <hdr> <bytes>`` (decimal), or ``OKX <hex>``
  with ``hex_output`` 1 (plus an ``ASC`` line with 2); `` (-<rssi>) `` at the
  end of each with ``rf69``; `` -> ack`` after a packet whose header asks for
  an ack (unless in collect mode), and the radio is busy sending that ack.

For tests: :meth:`NodeSim.write_raw` puts arbitrary bytes on the line
(garbage, partial lines), :meth:`NodeSim.send_packet` a packet from any node
with any header flags, :meth:`NodeSim.unplug` / :meth:`NodeSim.replug` close
the pty and open a new one behind the same symlink, as a USB unplug does to
``/dev/ttyUSB0``.  Every send command the driver typed is kept in
:attr:`NodeSim.commands` (an asyncio queue) and every packet that went on air
in :attr:`NodeSim.sent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import tty
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import attrs

from jet.tasks import cancel_all
from jet_rf12.rf12demo import HDR_ACK, HDR_CTL, HDR_DST, MAX_PAYLOAD, NODE_MASK
from jet_rf12.sim_nodes import Output, SimNode

log = logging.getLogger("jet.rf12.sim")

VERSION = 12
BANDS = {4: 433, 8: 868, 9: 915}
#: How often the simulator looks whether the driver has the pty open.
WATCH_INTERVAL = 0.05
#: Time from the port being opened to the banner (the Arduino's bootloader).
BOOT_DELAY = 0.1
#: The RF12's default bit rate (bits/s) and the bytes a packet adds to its data
#: on air: preamble 3, sync 2, header 1, length 1, CRC 2.
BIT_RATE = 49_230
FRAME_BYTES = 9
#: RF12demo's input stack: RF12_MAXDATA + 4 bytes.
STACK_SIZE = MAX_PAYLOAD + 4

#: The help RF12demo prints at start and on an unknown command: a blank line,
#: a heading, one line per command, then the configuration.  (Its own words,
#: in the sketch's shape; the hub reads none of it.)
HELP = (
    "",
    "Available commands:",
    "  <nn> i     - node id of the dongle, 1..30",
    "  <n> b      - band: 4 = 433, 8 = 868, 9 = 915 MHz",
    "  <nnn> g    - group, 0 = listen to all",
    "  <n> c      - collect mode: 1 = never send acks",
    "  ...,<nn> a - send the bytes to node <nn>, ask for an ack",
    "  ...,<nn> s - send the bytes to node <nn>",
    "  <n> q      - quiet: 1 = do not report bad packets",
    "  <n> x      - output: 0 = decimal, 1 = hex, 2 = hex and characters",
    "  v          - version and configuration",
)


def air_time(length: int) -> float:
    """Seconds a packet of ``length`` data bytes takes on air."""
    return (length + FRAME_BYTES) * 8 / BIT_RATE


@attrs.frozen
class SentCommand:
    """A send command the driver typed: ``text`` as typed, and what it asked for
    (what went on air, possibly overwritten meanwhile, is in :attr:`NodeSim.sent`)."""

    text: str
    dest: int
    data: bytes
    ack: bool


@attrs.frozen
class AirPacket:
    """A packet the dongle put on air: header and data."""

    hdr: int
    data: bytes

    @property
    def dest(self) -> int:
        return self.hdr & NODE_MASK if self.hdr & HDR_DST else 0


class NodeSim:
    """A simulated JeeLink on a pty, with simulated nodes behind it.

    ``async with NodeSim(...)`` plugs it in (the pty exists, the nodes run);
    leaving the block (or :meth:`close`) stops the nodes and unplugs it.
    """

    def __init__(
        self,
        nodes: Sequence[SimNode] = (),
        *,
        link: str | Path | None = None,
        group: int = 212,
        band: int = 868,
        dongle_id: int = 31,
        speed: float = 1.0,
        radio_delay: float | None = None,
        hex_output: int = 0,
        rf69: bool = False,
        rssi: int = -60,
        quiet: bool = True,
        collect: bool = False,
        boot_delay: float = BOOT_DELAY,
    ) -> None:
        self.nodes = {n.node_id: n for n in nodes}
        self.link = Path(link) if link is not None else None
        self.group = group
        self.band = band
        self.dongle_id = dongle_id
        self.speed = speed
        self.radio_delay = radio_delay  # None: air_time() of each packet
        self.hex_output = hex_output
        self.rf69 = rf69
        self.rssi = rssi  # dBm reported with every packet of an RF69 build
        self.quiet = quiet
        self.collect = collect
        self.boot_delay = boot_delay
        self.commands: asyncio.Queue[SentCommand] = asyncio.Queue()
        self.sent: list[AirPacket] = []
        self.delivered = 0  # packets sent that have finished their time on air
        self._delivery = asyncio.Event()
        self.input_lost = 0  # characters typed while the sketch was booting
        self.lines_written = 0
        self.lines_dropped = 0  # the port was not open, or its buffer was full
        self.plugged = False
        self.opened = asyncio.Event()  # the driver has the port open and RF12demo has booted
        self._master: int | None = None
        self._slave_path = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._boot: asyncio.TimerHandle | None = None
        # RF12demo's input state: a number being typed, the bytes before it, and
        # the one pending send (whose data is read from the stack when it goes).
        self._value = 0
        self._stack = bytearray(STACK_SIZE)
        self._top = 0
        self._typed = ""
        self._cmd = ""
        self._send_len = 0
        self._dest = 0
        self._send_timer: asyncio.TimerHandle | None = None
        self._radio_free_at = 0.0  # loop time: the radio is receiving or sending until then

    # -- lifecycle ---------------------------------------------------------------

    @property
    def path(self) -> str:
        """What the driver opens: the symlink if there is one, else the pty itself."""
        return str(self.link) if self.link is not None else self._slave_path

    @property
    def slave_path(self) -> str:
        return self._slave_path

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def start(self) -> None:
        self.replug_now()
        self._tasks = [
            asyncio.create_task(self._run_node(node), name=f"sim-node-{node.node_id}")
            for node in self.nodes.values()
        ]
        self._tasks.append(asyncio.create_task(self._watch(), name="sim-watch"))

    async def wait_opened(self) -> None:
        """Until the driver has opened the port and the banner is out."""
        await self.opened.wait()

    async def close(self) -> None:
        await cancel_all(self._tasks)
        self._tasks = []
        self.unplug()

    def unplug(self) -> None:
        """Close the pty (the driver reads end-of-file) and remove the symlink."""
        if not self.plugged:
            return
        self.plugged = False
        self._closed_by_driver()
        if self._master is not None:
            os.close(self._master)
        self._master = None
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
        log.info("sim: unplugged %s", self.path or "pty")

    async def replug(self) -> None:
        self.replug_now()

    def replug_now(self) -> None:
        """Open a new pty (behind the same symlink) and write the banner."""
        if self.plugged:
            return
        if self.link is not None and self.link.exists() and not self.link.is_symlink():
            # Replacing a real file (or a real device node) would be a nasty surprise.
            raise FileExistsError(f"{self.link} exists and is not a symlink")
        master, slave = os.openpty()
        # Raw mode: no echo of what we write back to us, no \n -> \r\n mangling,
        # before the driver opens the line (pyserial sets raw mode too).
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master = master
        self._slave_path = os.ttyname(slave)
        # Only the driver holds the slave open, so the master sees it come and go.
        os.close(slave)
        if self.link is not None:
            tmp = self.link.with_name(f".{self.link.name}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self._slave_path)
            os.replace(tmp, self.link)
        self.plugged = True
        log.info("sim: RF12demo on %s%s", self._slave_path,
                 f" (link {self.link})" if self.link else "")

    async def _watch(self) -> None:
        """Notice the driver opening and closing the pty (a JeeLink resets on open)."""
        poller = select.poll()
        watched: int | None = None
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            master = self._master
            if master is None:
                continue
            if master != watched:
                if watched is not None:
                    with contextlib.suppress(KeyError):
                        poller.unregister(watched)
                poller.register(master, select.POLLIN)
                watched = master
            hung_up = any(ev & select.POLLHUP for _, ev in poller.poll(0))
            if not hung_up and self._boot is None and not self.opened.is_set():
                self._opened_by_driver(master)
            elif hung_up and (self._boot is not None or self.opened.is_set()):
                self._closed_by_driver()

    def _opened_by_driver(self, master: int) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(master, self._readable)
        self._reset()
        self._boot = loop.call_later(self.boot_delay, self._booted)

    def _reset(self) -> None:
        """The Arduino restarts: input state and a pending send are gone."""
        self._value, self._top, self._typed = 0, 0, ""
        self._cmd = ""
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _booted(self) -> None:
        self._boot = None
        self.opened.set()
        self.write_line("")
        self.write_line(f"[RF12demo.{VERSION}]{self._config_text()}")
        self._help()

    def _help(self) -> None:
        for line in HELP:
            self.write_line(line)
        self.write_line("Current configuration:")
        self.write_line(self._config_text())

    def _closed_by_driver(self) -> None:
        if self._boot is not None:
            self._boot.cancel()
            self._boot = None
        if self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
        self._reset()
        self.opened.clear()

    def _config_text(self) -> str:
        """rf12_configDump's line: `` _ i31 g212 @ 868 MHz q1`` (leading space)."""
        letter = chr(ord("@") + self.dongle_id)
        text = f" {letter} i{self.dongle_id}{'*' if self.collect else ''} g{self.group}"
        text += f" @ {self.band} MHz"
        if self.collect:
            text += " c1"
        if self.quiet:
            text += " q1"
        if self.hex_output:
            text += f" x{self.hex_output}"
        return text

    # -- the serial line ---------------------------------------------------------

    def write_raw(self, data: bytes) -> bool:
        """Put bytes on the line as they are (garbage, partial lines)."""
        if self._master is None or not self.opened.is_set():
            self.lines_dropped += 1
            return False
        try:
            os.write(self._master, data)
        except BlockingIOError:
            self.lines_dropped += 1
            return False
        except OSError as exc:
            log.warning("sim: write failed: %s", exc)
            self.lines_dropped += 1
            return False
        return True

    def write_line(self, text: str) -> bool:
        # Arduino's Serial.println ends lines with \r\n.
        if self.write_raw(text.encode("ascii") + b"\r\n"):
            self.lines_written += 1
            return True
        return False

    def send_packet(self, node_id: int, data: bytes, hdr_flags: int = 0) -> bool:
        """Print what RF12demo prints for a packet received from ``node_id`` (with
        DST in ``hdr_flags``: addressed to it): the packet line, the ``ASC``
        line in mode 2, and `` -> ack`` when the header asks for one."""
        hdr = hdr_flags | (node_id & NODE_MASK)
        loop = asyncio.get_running_loop()
        # The radio was busy receiving it until now.
        self._radio_free_at = max(self._radio_free_at, loop.time())
        show = self._show_byte
        line = "OKX" if self.hex_output else "OK"
        if self.group == 0:
            line += f" G{show(212)}"
        line += f" {show(hdr)}"
        line += "".join(show(b) if self.hex_output else f" {b}" for b in data)
        if self.rf69:
            raw = min(255, max(0, -2 * self.rssi))  # RF69's RSSI register: -2 x dBm
            line += f" ({show(raw) if self.hex_output else -(raw >> 1)}) "
        written = self.write_line(line)
        if self.hex_output > 1:
            text = "".join(f" {chr(b) if 32 <= b <= 126 else '.'}" for b in data)
            group = " II " if self.group == 0 else ""
            self.write_line(f"ASC {group}{'>' if hdr & HDR_DST else '<'}"
                            f"{chr(ord('@') + (hdr & NODE_MASK))}{text}")
        if hdr & HDR_ACK and not hdr & HDR_CTL and not self.collect:
            self.write_line(" -> ack")
            # The ack goes on air now: a pending send waits for it.
            self._radio_free_at = loop.time() + self._air(0)
            self._schedule_send()
        return written

    def _show_byte(self, value: int) -> str:
        return f"{value:02X}" if self.hex_output else str(value)

    def _air(self, length: int) -> float:
        return air_time(length) if self.radio_delay is None else self.radio_delay

    def _readable(self) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO: the driver closed the port (the watcher would notice it soon too).
            log.debug("sim: read failed: %s: the driver closed the port", exc)
            self._closed_by_driver()
            return
        if not self.opened.is_set():
            self.input_lost += len(data)  # the bootloader is running, not the sketch
            return
        for char in data.decode("latin-1"):
            self._handle_char(char)

    def _handle_char(self, c: str) -> None:
        """RF12demo's handleInput()."""
        if "0" <= c <= "9":
            self._value = (10 * self._value + ord(c) - ord("0")) & 0xFFFF  # a word
            self._typed += c
            return
        if c == ",":
            if self._top < STACK_SIZE:
                self._stack[self._top] = self._value & 0xFF  # truncated to a byte
                self._top += 1
            self._value = 0
            self._typed += c
            return
        if "a" <= c <= "z":
            shown = "".join(f"{b}," for b in self._stack[: self._top])
            self.write_line(f"> {shown}{self._value}{c}")
        if c > " ":
            self._command(c, self._typed + c)
        self._value, self._top, self._typed = 0, 0, ""

    def _command(self, c: str, text: str) -> None:
        value = self._value
        if c in "as":
            self._cmd, self._send_len, self._dest = c, self._top, value & 0xFF
            sent = SentCommand(text, self._dest, bytes(self._stack[: self._top]), c == "a")
            self.commands.put_nowait(sent)
            self._schedule_send()
            return
        if c == "i":
            self.dongle_id = value & NODE_MASK
        elif c == "b" and value in BANDS:
            self.band = BANDS[value]
        elif c == "g":
            self.group = value & 0xFF
        elif c == "c":
            self.collect = bool(value)
        elif c == "q":
            self.quiet = bool(value)
        elif c == "x":
            self.hex_output = value & 0x03
        elif c == "v":
            self.write_line(f"[RF12demo.{VERSION}]{self._config_text()}")
            return
        elif c == "l":
            return  # the activity LED
        else:
            self._help()
            return
        if c != "b" or value in BANDS:
            self.write_line(self._config_text())  # saveConfig shows the new configuration

    def _schedule_send(self) -> None:
        """The sketch's loop: send the pending command once the radio is free."""
        if not self._cmd:
            return
        loop = asyncio.get_running_loop()
        due = max(self._radio_free_at, loop.time()) + self._air(self._send_len)
        if self._send_timer is not None:
            if self._send_timer.when() >= due:
                return
            self._send_timer.cancel()
        self._send_timer = loop.call_at(due, self._send_now)

    def _send_now(self) -> None:
        self._send_timer = None
        loop = asyncio.get_running_loop()
        if not self._cmd or not self.opened.is_set():
            return
        if loop.time() < self._radio_free_at:  # an ack went out meanwhile
            self._schedule_send()
            return
        self.write_line(f" -> {self._send_len} b")
        hdr = HDR_ACK if self._cmd == "a" else 0
        if self._dest:
            hdr |= HDR_DST | self._dest  # (the sketch does not mask it either)
        packet = AirPacket(hdr, bytes(self._stack[: self._send_len]))
        self._cmd = ""
        self.sent.append(packet)
        self._radio_free_at = loop.time() + self._air(len(packet.data))
        loop.call_at(self._radio_free_at, self._deliver, packet)

    async def wait_delivered(self, count: int) -> None:
        """Until ``count`` packets sent by the driver have reached the nodes."""
        while self.delivered < count:
            self._delivery.clear()
            await self._delivery.wait()

    def _deliver(self, packet: AirPacket) -> None:
        self.delivered += 1
        self._delivery.set()
        if not self.plugged:
            return
        dest = packet.dest
        targets = list(self.nodes.values()) if dest == 0 else (
            [self.nodes[dest]] if dest in self.nodes else [])
        for node in targets:
            if packet.hdr & HDR_ACK and dest:
                # The node's firmware acks: RF12demo shows a CTL packet with no data.
                self.send_packet(node.node_id, b"", HDR_CTL)
            self._report(node, node.receive(packet.data))

    # -- simulated nodes ---------------------------------------------------------

    def _report(self, node: SimNode, outputs: list[Output]) -> None:
        for gadget, port, value in outputs:
            try:
                packet = node.encode(gadget, port, value)
            except ValueError as exc:
                log.warning("sim: node %d cannot encode %r: %s", node.node_id, value, exc)
                continue
            self.send_packet(node.node_id, packet)

    async def _run_node(self, node: SimNode) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(node.interval)
            now = loop.time()
            dt, last = (now - last) * self.speed, now
            if node.running:
                try:
                    outputs = node.tick(dt)
                except Exception:
                    log.exception("sim: node %d model failed", node.node_id)
                    continue
                if self.plugged:
                    self._report(node, outputs)

    def node(self, node_id: int) -> SimNode:
        return self.nodes[node_id]
