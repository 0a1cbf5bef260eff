"""The node simulator: a pseudo-terminal that behaves like a JeeLink running RF12demo.

    async with NodeSim(default_nodes(), link="/tmp/ttyJEE0") as sim:
        # `jet hub --port /tmp/ttyJEE0` talks to it as to a real dongle
        ...

It writes the RF12demo banner, one ``OK <hdr> <bytes>`` line per packet from
a simulated node, and reads the driver's commands character by character
with RF12demo's own state machine (digits, ``,``, a letter), echoing them
(``> 8,195,5s``) and confirming sends (`` -> 2 b``) the way RF12demo does;
a packet sent to a simulated node is delivered to its firmware.

Like a JeeLink, whose Arduino resets when the port is opened (DTR), it
writes the banner shortly after the driver opens the pty, and nothing while
no one has it open (what it would write is counted in ``lines_dropped``).

For tests: :meth:`NodeSim.write_raw` puts arbitrary bytes on the line
(garbage, partial lines), :meth:`NodeSim.unplug` / :meth:`NodeSim.replug`
close the pty and open a new one behind the same symlink, as a USB unplug
does to ``/dev/ttyUSB0``.  Every command the driver wrote is kept in
:attr:`NodeSim.commands` (an asyncio queue).
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
from jet_rf12.rf12demo import HDR_CTL, MAX_PAYLOAD
from jet_rf12.sim_nodes import Output, SimNode

log = logging.getLogger("jet.rf12.sim")

VERSION = 12
BANDS = {4: 433, 8: 868, 9: 915}
#: How often the simulator looks whether the driver has the pty open.
WATCH_INTERVAL = 0.05
#: Time from the port being opened to the banner (the Arduino's bootloader).
BOOT_DELAY = 0.1


@attrs.frozen
class SentCommand:
    """A send command the driver wrote: ``text`` as written, and what it means."""

    text: str
    dest: int
    data: bytes
    ack: bool


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
    ) -> None:
        self.nodes = {n.node_id: n for n in nodes}
        self.link = Path(link) if link is not None else None
        self.group = group
        self.band = band
        self.dongle_id = dongle_id
        self.speed = speed
        self.commands: asyncio.Queue[SentCommand] = asyncio.Queue()
        self.lines_written = 0
        self.lines_dropped = 0  # the port was not open, or its buffer was full
        self.plugged = False
        self.opened = asyncio.Event()  # the driver has the port open and RF12demo has booted
        self._master: int | None = None
        self._slave_path = ""
        self._tasks: list[asyncio.Task[None]] = []
        self._boot: asyncio.TimerHandle | None = None
        # RF12demo's input state: a number being typed, and the values before it.
        self._value = 0
        self._stack: list[int] = []
        self._typed = ""

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
        self._value, self._stack, self._typed = 0, [], ""
        self._boot = loop.call_later(BOOT_DELAY, self._booted)

    def _booted(self) -> None:
        self._boot = None
        self.opened.set()
        self.write_line("")
        self.write_line(f"[RF12demo.{VERSION}] {self._config_text()}")

    def _closed_by_driver(self) -> None:
        if self._boot is not None:
            self._boot.cancel()
            self._boot = None
        if self._master is not None:
            asyncio.get_running_loop().remove_reader(self._master)
        self.opened.clear()

    def _config_text(self) -> str:
        letter = chr(ord("@") + self.dongle_id)
        return f"{letter} i{self.dongle_id} g{self.group} @ {self.band} MHz"

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
        """Write the ``OK`` line RF12demo prints for a packet from ``node_id``."""
        hdr = hdr_flags | (node_id & 0x1F)
        return self.write_line(" ".join(["OK", str(hdr), *map(str, data)]))

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
        for char in data.decode("latin-1"):
            self._handle_char(char)

    def _handle_char(self, c: str) -> None:
        """RF12demo's handleInput(), for the commands a hub uses."""
        if "0" <= c <= "9":
            self._value = 10 * self._value + ord(c) - ord("0")
            self._typed += c
            return
        if c == ",":
            if len(self._stack) < MAX_PAYLOAD + 4:
                self._stack.append(self._value & 0xFF)  # RF12demo keeps bytes
            self._value = 0
            self._typed += c
            return
        if "a" <= c <= "z":
            text = self._typed + c
            self.write_line("> " + ",".join(map(str, self._stack))
                            + ("," if self._stack else "") + f"{self._value}{c}")
            self._command(c, text)
        elif c > " ":
            self.write_line("Available commands: <nn>,...,<nn>,<id>s  <nn>,...,<id>a  <n>g")
        self._value, self._stack, self._typed = 0, [], ""

    def _command(self, c: str, text: str) -> None:
        value, data = self._value, bytes(self._stack)
        if c in "as":
            self.write_line(f" -> {len(data)} b")
            sent = SentCommand(text, value, data, c == "a")
            self.commands.put_nowait(sent)
            self._deliver(sent)
        elif c == "g":
            self.group = value
            self.write_line(self._config_text())
        elif c == "i":
            self.dongle_id = value & 0x1F
            self.write_line(self._config_text())
        elif c == "b" and value in BANDS:
            self.band = BANDS[value]
            self.write_line(self._config_text())

    def _deliver(self, sent: SentCommand) -> None:
        targets = list(self.nodes.values()) if sent.dest == 0 else (
            [self.nodes[sent.dest]] if sent.dest in self.nodes else [])
        for node in targets:
            if sent.ack and sent.dest:
                # The node's firmware acks: RF12demo shows a CTL packet with no data.
                self.send_packet(node.node_id, b"", HDR_CTL)
            self._report(node, node.receive(sent.data))

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
