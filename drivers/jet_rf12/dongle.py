"""One JeeLink: its serial line, what it says, and the packets queued for it.

A dongle listens to one RF12 group.  Lines it reads become packets for the
hub; banner lines update the group it really listens to; bad packets,
garbage and partial lines are counted and logged here, naming the port.

Sends are queued and written one at a time: RF12demo keeps a single send
buffer, so a second command arriving before the first went on air would
overwrite it.  After each command the writer waits for RF12demo's
`` -> <n> b`` (packet handed to the radio) before writing the next one, or
a short timeout for dongles (and test ptys) that never say it.
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
    parse_config,
)
from jet_rf12.serial_port import SerialLine, SerialLineError, State

log = logging.getLogger("jet.rf12.dongle")

SEND_QUEUE = 64
CONFIRM_TIMEOUT = 0.25
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
        backoff_max: float = 5.0,
    ) -> None:
        self.device = device
        self.configured_group = group
        self.group = group
        self.config: DongleConfig | None = None
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
        self._confirmed = asyncio.Event()
        self._confirm_timeout = confirm_timeout
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
            self._opened.set()
        else:
            self._opened.clear()
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
        config = parse_config(line)
        if config is None:
            log.debug("%s: %s", self.device, line)
            return
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
