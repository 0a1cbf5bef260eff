"""One JeeLink: its serial line, what it says, and the packets queued for it.

A dongle listens to one RF12 group.  Lines it reads become packets for the
hub; banner lines update the group it really listens to; bad packets,
garbage and partial lines are counted and logged here, naming the port.

Sends are queued and written one at a time: RF12demo keeps a single pending
send, and sends from the buffer its input parser fills, so anything typed
before that send went on air overwrites it (the value is lost).  After each
command the writer waits for RF12demo's `` -> <n> b`` (the packet handed to
the radio; `` -> ack``, printed when RF12demo acknowledges a packet it
received, is not it) before writing the next one, or :data:`CONFIRM_TIMEOUT`
for dongles (and test ptys) that never say it.

A JeeLink resets when its port is opened: nothing is written before the
sketch has started, shown by its banner (or its configuration line, or a
packet line), or :data:`BANNER_TIMEOUT` after opening, logged.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import Any

import attrs

from jet.tasks import cancel_all
from jet_rf12.ratelog import RateLimitedLog
from jet_rf12.rf12demo import (
    BadPacket,
    DongleConfig,
    Garbage,
    LineParser,
    Other,
    Packet,
    format_send,
    is_send_confirmation,
    parse_banner,
    parse_config,
)
from jet_rf12.serial_port import SerialLine, SerialLineError, State

log = logging.getLogger("jet.rf12.dongle")

SEND_QUEUE = 64
#: Seconds to wait for `` -> <n> b``: RF12demo sends when the channel is quiet,
#: after any packet it is receiving and any ack it owes (a few ms each).
CONFIRM_TIMEOUT = 1.0
#: Seconds from opening the port to the first command when no banner comes.
BANNER_TIMEOUT = 3.0
DEFAULT_GROUP = 212


@attrs.frozen
class DongleSpec:
    """A serial device and the RF12 group its dongle listens to."""

    device: str
    group: int = DEFAULT_GROUP


def parse_port(text: str, default_group: int = DEFAULT_GROUP) -> DongleSpec:
    """``/dev/ttyUSB0`` or ``/dev/ttyUSB0@100`` (device on group 100)."""
    device, sep, group = text.rpartition("@")
    if sep and device and group.isdecimal():
        if int(group) > 255:
            raise ValueError(f"port {text!r}: group must be 0..255")
        return DongleSpec(device, int(group))
    return DongleSpec(text, default_group)


class Dongle:
    """A serial RF12demo dongle on one group, read and written by the hub."""

    def __init__(
        self,
        device: str,
        group: int,
        on_packet: Callable[[Dongle, Packet], None],
        *,
        on_state: Callable[[Dongle], None] | None = None,
        limiter: RateLimitedLog | None = None,
        send_queue: int = SEND_QUEUE,
        confirm_timeout: float = CONFIRM_TIMEOUT,
        banner_timeout: float = BANNER_TIMEOUT,
        backoff_max: float = 5.0,
    ) -> None:
        self.device = device
        self.configured_group = group
        self.group = group
        self.config: DongleConfig | None = None
        self.version: int | None = None  # RF12demo's, from its banner
        self.no_banner = 0  # opens after which the sketch never showed itself
        self.parser = LineParser()
        self.line = SerialLine(device, self._on_data, on_state=self._line_state,
                               backoff_max=backoff_max)
        self.sent = 0
        self.send_errors = 0
        self.send_dropped = 0
        self.unconfirmed = 0
        self._on_packet = on_packet
        self._on_state = on_state
        self._log = limiter or RateLimitedLog(log)
        self._queue: collections.deque[bytes] = collections.deque()
        self._queue_max = send_queue
        self._queued = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._opened = asyncio.Event()
        self._started = asyncio.Event()  # the sketch runs: banner, config or packet seen
        self._confirmed = asyncio.Event()
        self._confirm_timeout = confirm_timeout
        self._banner_timeout = banner_timeout
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.line.run(), name=f"dongle-{self.device}"),
            asyncio.create_task(self._writer(), name=f"dongle-send-{self.device}"),
        ]

    async def stop(self) -> None:
        self.line.close()
        await cancel_all(self._tasks)
        self._tasks = []

    @property
    def state(self) -> State:
        return self.line.state

    def _line_state(self, state: State) -> None:
        if state == "open":
            self._started.clear()  # a JeeLink resets when its port opens
            self._opened.set()
        else:
            self._opened.clear()
            self._started.clear()
            fragment = self.parser.reset()
            if fragment is not None:
                self._log.warning(f"{self.device}:partial", "%s: dropped partial line %r (%s)",
                                  self.device, fragment.line, fragment.reason)
        if self._on_state is not None:
            self._on_state(self)

    # -- receiving ---------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            if isinstance(event, Packet):
                self._started.set()
                self._on_packet(self, event)
            elif isinstance(event, Other):
                self._on_text(event.line)
            elif isinstance(event, BadPacket):
                log.debug("%s: bad packet (CRC): %s", self.device, event.line)
            elif isinstance(event, Garbage):
                self._log.warning(f"{self.device}:garbage", "%s: garbage line %r (%s)",
                                  self.device, event.line, event.reason)
            else:
                self._log.warning(f"{self.device}:partial", "%s: dropped partial line %r (%s)",
                                  self.device, event.line, event.reason)

    def _on_text(self, line: str) -> None:
        if is_send_confirmation(line):
            self._confirmed.set()
            return
        version = parse_banner(line)
        if version is not None:
            self.version = version
            self._started.set()
        config = parse_config(line)
        if config is None:
            log.debug("%s: %s", self.device, line)
            return
        self._started.set()
        if config == self.config:
            return  # (the banner and the help text's "Current configuration:" repeat it)
        self.config = config
        if config.group not in (self.group, 0):
            log.warning("%s: dongle reports group %d (configured %d): using %d",
                        self.device, config.group, self.configured_group, config.group)
            self.group = config.group
        log.info("%s: RF12demo node %d, group %d, %d MHz", self.device,
                 config.node_id, config.group, config.band)

    # -- sending -----------------------------------------------------------------

    def send(self, node_id: int, packet: bytes, ack: bool = False) -> None:
        """Queue ``packet`` for ``node_id``; raises SendError if it cannot be sent."""
        command = format_send(node_id, packet, ack)
        if len(self._queue) >= self._queue_max:
            # The dongle is gone or stuck: the oldest value is the least useful one.
            self._queue.popleft()
            self.send_dropped += 1
            self._log.warning(f"{self.device}:send", "%s: send queue full (%d): dropped the oldest",
                              self.device, self._queue_max)
        self._queue.append(command)
        self._idle.clear()
        self._queued.set()

    async def drain(self) -> None:
        """Wait until every queued command has been written (or given up on)."""
        await self._idle.wait()

    async def _writer(self) -> None:
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                await self._opened.wait()
                if not await self._wait_started():
                    continue  # closed meanwhile: wait for the next open
                if not self._queue:
                    break
                command = self._queue.popleft()
                self._confirmed.clear()
                self.line.eager = True
                try:
                    await self._send_one(command)
                finally:
                    self.line.eager = False
            self._idle.set()

    async def _wait_started(self) -> bool:
        """Until the sketch has started (or the banner timeout); False if the
        port closed meanwhile."""
        if self._started.is_set():
            return True
        try:
            await asyncio.wait_for(self._started.wait(), self._banner_timeout)
        except TimeoutError:
            if not self._opened.is_set():
                return False
            self.no_banner += 1
            log.warning("%s: no RF12demo banner within %gs of opening the port "
                        "(is it a JeeLink running RF12demo at 57600 baud?); sending anyway",
                        self.device, self._banner_timeout)
            self._started.set()
        return self._opened.is_set()

    async def _send_one(self, command: bytes) -> None:
        try:
            await self.line.write(command)
        except SerialLineError as exc:
            self.send_errors += 1
            self._log.warning(f"{self.device}:send", "%s: cannot send %r: %s",
                              self.device, command.decode().strip(), exc)
            return
        self.sent += 1
        log.debug("%s: sent %s", self.device, command.decode().strip())
        try:
            await asyncio.wait_for(self._confirmed.wait(), self._confirm_timeout)
        except TimeoutError:
            self.unconfirmed += 1
            self._log.warning(f"{self.device}:unconfirmed",
                              "%s: RF12demo did not confirm %r within %gs (sending the next)",
                              self.device, command.decode().strip(), self._confirm_timeout)

    # -- status ------------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        s = self.parser.stats
        return {
            "port": self.device,
            "group": self.group,
            "state": self.line.state,
            "reopens": self.line.reopens,
            "open_failures": self.line.open_failures,
            "last_error": self.line.last_error,
            "rf12demo": self.version,
            "no_banner": self.no_banner,
            "radio": None if self.config is None else {
                "node_id": self.config.node_id, "group": self.config.group,
                "band": self.config.band,
            },
            "lines": s.lines,
            "packets": s.packets,
            "bad_packets": s.bad_packets,
            "garbage": s.garbage,
            "partial": s.partial,
            "sent": self.sent,
            "send_errors": self.send_errors,
            "send_dropped": self.send_dropped,
            "unconfirmed": self.unconfirmed,
            "queued": len(self._queue),
        }
