"""Keeping a container's MQTT connection alive while a gadget holds the event loop.

A gadget's synchronous handler runs on the event loop (that is what makes an
in-process hop cost a function call).  One that takes longer than the
connection's keepalive starves it: no PINGREQ goes out, the broker drops the
connection after 1.5 x keepalive, and the message, never acknowledged, comes
back after the reconnect to block again.  Moving every handler to a thread
would cost each hop a thread switch, so instead one watchdog thread per event
loop watches it:

- every :data:`PROBE_EVERY` seconds it asks the loop to answer; no answer
  within ``detect`` seconds means something is holding the loop;
- it names what, from the loop thread's stack (the ``describe`` function a
  container gives: a gadget, its type and input), in one warning, then one
  more line when the loop is free again;
- while the loop is held (up to each link's ``stuck_limit``) it keeps every
  watched connection alive: it interrupts the loop thread with
  :data:`KEEPALIVE_SIGNAL`, whose handler (run by Python on that thread, between
  two bytecodes of the gadget) sends a PINGREQ, along with whatever paho had
  queued, straight to the socket.  The handler only does that when the
  interrupted code is a gadget's, not paho's, aiomqtt's, asyncio's selector
  or our transport's own code (:func:`_interrupted_safely`), so no half-done
  write or data structure is ever touched.

Signals reach only the main thread: a loop running elsewhere is watched and
its blocker named, but its connection cannot be kept alive.  SIGURG is used
(as Go's runtime does for preemption) because its default action is to do
nothing: a stray one can never stop the process.  A handler stuck for good is
not hidden: past ``stuck_limit`` the pings stop, the broker drops the
connection, and its will says the container is offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

import attrs

__all__ = ["KEEPALIVE_SIGNAL", "PROBE_EVERY", "Keeper", "LoopWatchdog", "unwatch", "watch"]

log = logging.getLogger("jet.watchdog")

PROBE_EVERY = 0.25  # seconds between two questions to a loop that answers
KEEPALIVE_SIGNAL = signal.SIGURG
#: The same blocker is named again, at most this often (seconds).
RENAME_EVERY = 60.0

#: Code that a ping must not interrupt: it may be in the middle of a write or
#: of changing the structures the ping uses.  (Link's own frames that merely
#: call handlers are allowed: see _SAFE_FRAMES.)
_UNSAFE_MODULES = (
    "paho.", "aiomqtt", "selectors", "asyncio.selector_events", "asyncio.sslproto", "ssl",
    "socket", "jet.transport.", "logging", "mqtt5",
)
#: Transport frames that call handlers between, never during, a write or a
#: decode: the link's dispatch; the paho connection's reader, which hands
#: messages over after paho's loop_read() has returned; the MQTT 5 connection's
#: reader (``_received``, ``_message``), which calls the sink between two packets
#: it decoded, and the asyncio frames that called it with the bytes read.
_SAFE_FRAMES = frozenset({
    ("jet.transport.link", "_maintain"),
    ("jet.transport.link", "_dispatch"),
    ("jet.transport.link", "_release"),
    ("jet.transport.connection", "read_burst"),
    ("jet.transport.connection", "hand_over"),
    ("jet.transport.v5", "_received"),
    ("jet.transport.v5", "_message"),
    ("asyncio.selector_events", "_read_ready"),
    ("asyncio.selector_events", "_read_ready__data_received"),
    ("asyncio.sslproto", "_do_read"),
    ("asyncio.sslproto", "_do_read__copied"),
    ("asyncio.sslproto", "_do_read__buffered"),
    ("asyncio.sslproto", "buffer_updated"),
    ("asyncio.selector_events", "_read_ready__get_buffer"),
})


@attrs.define(eq=False)
class Keeper:
    """One connection the watchdog keeps alive (a :class:`~jet.transport.link.Link`'s)."""

    name: str  # for the log: the MQTT client id
    keepalive: float
    stuck_limit: float  # keep it alive for a held loop this long at most
    ping: Callable[[], None]  # on the loop thread, inside the code holding it
    describe: Callable[[FrameType | None], str | None]  # what holds the loop, or None


@attrs.define
class Block:
    """The loop held: since when (monotonic), by what."""

    since: float
    culprit: str
    ended: float | None = None

    def seconds(self) -> float:
        return (self.ended if self.ended is not None else time.monotonic()) - self.since


_watchdogs: dict[asyncio.AbstractEventLoop, LoopWatchdog] = {}
_signal_owner: LoopWatchdog | None = None


def watch(keeper: Keeper) -> LoopWatchdog:
    """Watch the running loop (one watchdog per loop) on behalf of ``keeper``."""
    loop = asyncio.get_running_loop()
    dog = _watchdogs.get(loop)
    if dog is None:
        dog = _watchdogs[loop] = LoopWatchdog(loop)
    dog.keepers.append(keeper)
    dog.start()
    return dog


def unwatch(keeper: Keeper) -> None:
    for loop, dog in list(_watchdogs.items()):
        if keeper in dog.keepers:
            dog.keepers.remove(keeper)
            if not dog.keepers:
                dog.stop()
                del _watchdogs[loop]


def _interrupted_safely(frame: FrameType | None) -> bool:
    """True when the interrupted code (and what called it) may be interrupted by a ping."""
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if module.startswith(_UNSAFE_MODULES) and (
            (module, frame.f_code.co_name) not in _SAFE_FRAMES
        ):
            return False
        frame = frame.f_back
    return True


def _where(frame: FrameType | None) -> str:
    if frame is None:
        return "?"
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


class LoopWatchdog:
    """The watchdog of one event loop (see the module doc); made by :func:`watch`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.keepers: list[Keeper] = []
        self.last_block: Block | None = None
        self._loop_thread = threading.get_ident()  # made by watch(), on the loop
        self._stop = threading.Event()
        self._answered = threading.Event()  # the current question's answer
        self._thread: threading.Thread | None = None
        self._ping_due = threading.Event()
        self._held = threading.Event()  # set while the loop is held
        self._keeping: list[Keeper] = []  # the keepers pinged during this hold
        self._named: dict[str, float] = {}  # culprit -> when last named
        self._previous_handler: object = None

    # -- lifecycle (on the loop thread) ---------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._install_signal()
        self._thread = threading.Thread(target=self._watch, name="jet-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        global _signal_owner
        self._stop.set()
        self._answered.set()  # (the loop is busy here, not held: wake the thread now)
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        if _signal_owner is self:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(KEEPALIVE_SIGNAL, self._previous_handler)  # type: ignore[arg-type]
            _signal_owner = None

    def _install_signal(self) -> None:
        global _signal_owner
        if _signal_owner is not None or threading.current_thread() is not threading.main_thread():
            return
        current = signal.getsignal(KEEPALIVE_SIGNAL)
        if current not in (signal.SIG_DFL, signal.SIG_IGN, None):
            return  # someone else's: leave it (the loop is watched, not kept alive)
        self._previous_handler = current
        signal.signal(KEEPALIVE_SIGNAL, self._on_signal)
        _signal_owner = self

    @property
    def can_keep_alive(self) -> bool:
        return _signal_owner is self

    # -- on the loop thread, interrupted -----------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of whatever holds the loop; must never raise
        # into it, and acts only when the loop is still held and the code there
        # is not one that a ping could disturb.
        if not self._ping_due.is_set() or not self._held.is_set():
            return
        if not _interrupted_safely(frame):
            return
        self._ping_due.clear()
        for keeper in self._keeping:
            with contextlib.suppress(Exception):
                keeper.ping()

    # -- on the watchdog thread ----------------------------------------------------------

    def _detect(self) -> float:
        keepalive = min((k.keepalive for k in self.keepers), default=10.0)
        return max(0.1, min(1.0, keepalive / 4))

    def _watch(self) -> None:
        while not self._stop.is_set():
            answered = self._answered = threading.Event()
            asked = time.monotonic()
            try:
                self.loop.call_soon_threadsafe(answered.set)
            except RuntimeError:  # the loop is closed
                return
            if answered.wait(self._detect()):
                self._stop.wait(PROBE_EVERY)
                continue
            if not self._stop.is_set():
                self._while_held(asked, answered)

    def _while_held(self, since: float, answered: threading.Event) -> None:
        self._held.set()
        try:
            frame = sys._current_frames().get(self._loop_thread)
            culprit = next(
                (found for k in self.keepers if (found := k.describe(frame)) is not None),
                f"code at {_where(frame)}",
            )
        except Exception:  # naming is best effort, keeping alive is not
            frame, culprit = None, "unknown code"
        block = self.last_block = Block(since, culprit)
        now = time.monotonic()
        named = now - self._named.get(culprit, -RENAME_EVERY) >= RENAME_EVERY
        if named:
            self._named[culprit] = now
            how = (
                "keeping the MQTT connection alive meanwhile"
                if self.can_keep_alive
                else "the MQTT connection cannot be kept alive (event loop not in the main thread)"
            )
            log.warning(
                "the event loop is held by %s (at %s): every circuit waits; %s",
                culprit, _where(frame), how,
            )
        self._keeping = list(self.keepers)
        step = self._detect()
        while not answered.wait(step) and not self._stop.is_set():
            held = block.seconds()
            for keeper in [k for k in self._keeping if held >= k.stuck_limit]:
                self._keeping = [k for k in self._keeping if k is not keeper]
                log.error(
                    "%s has held the event loop for %.0f s: no longer keeping %s's MQTT"
                    " connection alive (the broker will report it offline)",
                    culprit, held, keeper.name,
                )
            if self.can_keep_alive and self._keeping:
                self._ping_due.set()
                with contextlib.suppress(OSError, ValueError):
                    signal.pthread_kill(self._loop_thread, KEEPALIVE_SIGNAL)
        block.ended = time.monotonic()
        self._keeping = []
        self._held.clear()
        self._ping_due.clear()
        if named:
            log.warning("the event loop is free again: %s held it for %.1f s", culprit,
                        block.seconds())
