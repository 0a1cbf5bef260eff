"""A serial line that stays open: read without blocking, reopen when it vanishes.

A JeeLink is a USB serial device: unplugging it makes reads fail (or return
end-of-file on a pseudo-terminal) and the device node disappears until it
comes back.  :class:`SerialLine` keeps trying to open the device with
exponential backoff, and while it is open hands every chunk it reads to a
callback on the event loop.

Reading uses ``loop.add_reader`` on the port's file descriptor, so an idle
line costs nothing; transports without one (pyserial URLs such as
``rfc2217://``) are read by a helper thread instead.

After a short read the reader pauses for ``coalesce`` seconds (default
50 ms) so that the lines arriving meanwhile are handled, and published, in
one batch: each wakeup of the event loop and of the MQTT client costs far
more than the parsing of a line, and this keeps the driver under 5% of a
core at the radio's full rate (tools/bench_hub.py).  While an answer from
the dongle is awaited (``eager``), reads are not paused.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Literal

import serial

from jet_rf12.rf12demo import BAUD

log = logging.getLogger("jet.rf12.serial")

State = Literal["closed", "open", "waiting"]

BACKOFF_START = 0.1
BACKOFF_MAX = 5.0
WRITE_TIMEOUT = 1.0
READ_CHUNK = 4096
COALESCE = 0.05
#: A read at least this long means lines are queued up: keep reading, no pause.
BACKLOG = 1024


class SerialLineError(OSError):
    """The line is not open, or a write did not complete."""


def open_serial(device: str, baudrate: int = BAUD) -> Any:
    """Open ``device`` (a path or a pyserial URL) the way a JeeLink wants it."""
    return serial.serial_for_url(
        device,
        baudrate=baudrate,
        timeout=0,
        write_timeout=WRITE_TIMEOUT,
        exclusive=True,  # two hubs on one dongle would each see half the lines
    )


class SerialLine:
    """One serial device, opened, read and reopened for as long as :meth:`run` runs."""

    def __init__(
        self,
        device: str,
        on_data: Callable[[bytes], None],
        *,
        on_state: Callable[[State], None] | None = None,
        baudrate: int = BAUD,
        backoff_start: float = BACKOFF_START,
        backoff_max: float = BACKOFF_MAX,
        coalesce: float = COALESCE,
    ) -> None:
        self.device = device
        self.baudrate = baudrate
        self.state: State = "closed"
        self.opens = 0
        self.reopens = 0
        self.open_failures = 0
        self.bytes_in = 0
        self.last_error: str | None = None
        self._on_data = on_data
        self._on_state = on_state
        self._backoff_start = backoff_start
        self._backoff_max = backoff_max
        self._serial: Any = None
        self._fd: int | None = None
        self._lost: asyncio.Future[str] | None = None
        self._closing = False
        self._coalesce = coalesce
        self._paused: asyncio.TimerHandle | None = None
        self._eager = False

    # -- lifecycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Open, read until the device goes away, wait, open again; until cancelled."""
        backoff = self._backoff_start
        try:
            while not self._closing:
                try:
                    port = await asyncio.to_thread(open_serial, self.device, self.baudrate)
                except (serial.SerialException, OSError, ValueError) as exc:
                    self._open_failed(exc)
                    self._set_state("waiting")
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._backoff_max)
                    continue
                backoff = self._backoff_start
                if self.opens:
                    self.reopens += 1
                self.opens += 1
                if self.reopens:
                    log.info("%s: open again (reopen %d)", self.device, self.reopens)
                else:
                    log.info("%s: open at %d baud", self.device, self.baudrate)
                self.last_error = None
                reason = await self._pump(port)
                self.last_error = reason
                log.warning("%s: lost: %s; reopening", self.device, reason)
                self._set_state("waiting")
        finally:
            self._close_port()
            self._set_state("closed")

    def close(self) -> None:
        """Stop reading and close the device (``run`` returns)."""
        self._closing = True
        if self._lost is not None and not self._lost.done():
            self._lost.set_result("closed by the hub")

    def _open_failed(self, exc: BaseException) -> None:
        self.open_failures += 1
        message = str(exc) or type(exc).__name__
        # Once per distinct error: a dongle left unplugged must not fill the log.
        if message != self.last_error:
            log.warning("%s: cannot open: %s (retrying with backoff)", self.device, message)
        self.last_error = message

    def _set_state(self, state: State) -> None:
        if state == self.state:
            return
        self.state = state
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                log.exception("%s: state callback failed", self.device)

    # -- reading -----------------------------------------------------------------

    async def _pump(self, port: Any) -> str:
        loop = asyncio.get_running_loop()
        self._serial = port
        self._lost = loop.create_future()
        try:
            fd = port.fileno()
        except (AttributeError, NotImplementedError, OSError, ValueError):
            fd = None
        self._fd = fd
        self._set_state("open")
        thread: threading.Thread | None = None
        try:
            if fd is not None:
                loop.add_reader(fd, self._readable, fd)
            else:
                thread = threading.Thread(
                    target=self._read_thread, args=(loop, port), daemon=True,
                    name=f"serial-{self.device}",
                )
                thread.start()
            return await self._lost
        finally:
            if self._paused is not None:
                self._paused.cancel()
                self._paused = None
            if fd is not None:
                loop.remove_reader(fd)
            self._close_port()
            if thread is not None:
                await asyncio.to_thread(thread.join, 2.0)

    def _readable(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lose(f"read failed: {exc}")
            return
        if not data:
            self._lose("end of file (device unplugged)")
            return
        self._deliver(data)
        if self._coalesce > 0 and not self._eager and len(data) < BACKLOG and self._fd == fd:
            loop = asyncio.get_running_loop()
            loop.remove_reader(fd)
            self._paused = loop.call_later(self._coalesce, self._resume, fd)

    def _resume(self, fd: int) -> None:
        self._paused = None
        if self._fd == fd:
            asyncio.get_running_loop().add_reader(fd, self._readable, fd)

    @property
    def eager(self) -> bool:
        return self._eager

    @eager.setter
    def eager(self, value: bool) -> None:
        """True while an answer is awaited: read every line as soon as it arrives."""
        self._eager = value
        paused, fd = self._paused, self._fd
        if value and paused is not None and fd is not None:
            paused.cancel()
            self._resume(fd)

    def _read_thread(self, loop: asyncio.AbstractEventLoop, port: Any) -> None:
        while self._lost is not None and not self._lost.done():
            try:
                data = port.read(READ_CHUNK) or port.read(1)
            except Exception as exc:
                loop.call_soon_threadsafe(self._lose, f"read failed: {exc}")
                return
            if data:
                loop.call_soon_threadsafe(self._deliver, bytes(data))
            else:
                threading.Event().wait(0.05)  # timeout=0 reads do not block

    def _deliver(self, data: bytes) -> None:
        self.bytes_in += len(data)
        try:
            self._on_data(data)
        except Exception:
            # A bug in a consumer must not stop the line from being read.
            log.exception("%s: data handler failed", self.device)

    def _lose(self, reason: str) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)

    def _close_port(self) -> None:
        port, self._serial, self._fd = self._serial, None, None
        if port is not None:
            with contextlib.suppress(Exception):
                port.close()

    # -- writing -----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    async def write(self, data: bytes) -> None:
        """Write all of ``data``; raises SerialLineError if the line is not open or stalls."""
        port, fd = self._serial, self._fd
        if port is None:
            raise SerialLineError(errno.ENODEV, f"{self.device} is not open")
        if fd is None:
            try:
                await asyncio.to_thread(port.write, data)
            except Exception as exc:
                raise SerialLineError(errno.EIO, f"{self.device}: write failed: {exc}") from exc
            return
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await self._wait_writable(fd)
            except OSError as exc:
                raise SerialLineError(exc.errno, f"{self.device}: write failed: {exc}") from exc
            if self._fd != fd:
                raise SerialLineError(errno.EIO, f"{self.device}: closed during a write")

    async def _wait_writable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def writable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(fd, writable)
        try:
            await asyncio.wait_for(ready, WRITE_TIMEOUT)
        except TimeoutError:
            raise SerialLineError(
                errno.ETIMEDOUT, f"{self.device}: write stalled for {WRITE_TIMEOUT}s"
            ) from None
        finally:
            loop.remove_writer(fd)
