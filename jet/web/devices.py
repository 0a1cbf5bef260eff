"""The Devices tab: the device registry of ``jet devices serve``, as the page shows it.

``jet web --devices DB_OR_URL`` names the registry's store (a SQLite file, or later a
PostgreSQL URL: :func:`jet.devices.store.open_store`).  While a page is open,
:class:`DeviceView` reads the store's devices every :data:`DEVICES_INTERVAL` seconds, in
a thread of its own (a read never holds the event loop), groups them by zone, joins each
device with the circuits of its plug-n-process app (``pnp-<uid>``, from the operator
view's :class:`~jet.web.board.StatusBoard`: which circuits run and in which pack), and
pushes a ``devices`` frame to the pages when something changed.  A store that cannot be
opened or read becomes one line in the frame (``error``) and the next read tries again;
without ``--devices`` the frame says the view is off (``enabled: false``).

Only the store's public reading methods are used (``devices()``); nothing is written.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
import urllib.parse
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from jet.devices.pnp import app_name
from jet.devices.store import Store, open_store
from jet.tasks import Burst, cancel_all
from jet.web.board import StatusBoard
from jet.web.jsonvalue import to_json
from jet.web.pages import Page, Pages

log = logging.getLogger("jet.web.devices")

__all__ = ["DEVICES_INTERVAL", "DeviceView", "shown_store"]

#: Seconds between two reads of the store while a page is open.
DEVICES_INTERVAL = 1.0
#: A read that took t seconds is not followed by another for SLOW_FACTOR * t
#: (a big registry on a slow disk is read less often rather than all the time).
SLOW_FACTOR = 5.0
#: Seconds the server waits, when it stops, for a read under way before closing the store.
CLOSE_TIMEOUT = 5.0

_DEVICE_FIELDS = ("uid", "class", "zone", "layout", "online", "since", "last_seen",
                  "first_seen", "reason")


def shown_store(where: str) -> str:
    """``where`` as it may be shown: a URL's user and password left out."""
    if "://" not in where:
        return where
    parts = urllib.parse.urlsplit(where)
    if parts.username is None and parts.password is None:
        return where
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 300 else line[:299] + "…"


class DeviceView:
    """The Devices tab's data (see the module doc).

    ``async with DeviceView(where, board, pages)`` starts the reading task (none when
    ``where`` is None: the tab says how to turn it on); leaving the block stops it and
    closes the store.  :meth:`board_changed` is called when the circuits running changed,
    :meth:`greet` when a page connects.
    """

    def __init__(self, where: str | None, board: StatusBoard, pages: Pages, *,
                 interval: float = DEVICES_INTERVAL) -> None:
        self.where = where
        self.board = board
        self.pages = pages
        self.interval = interval
        self._store: Store | None = None
        # One thread for every use of the store, in order: opening, reading, closing.
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._devices: list[dict[str, Any]] = []
        self._error = ""
        self._read_once = False
        self._last: Any = None  # the last frame's content pushed (without its "now")
        self._wake = asyncio.Event()
        self._trouble = Burst(quiet=60.0)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def enabled(self) -> bool:
        return self.where is not None

    async def __aenter__(self) -> Self:
        if self.where is not None:
            self._thread = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="jet-web-devices")
            self._tasks.append(asyncio.create_task(self._follow(), name="web-devices"))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await cancel_all(self._tasks)
        if self._thread is None:
            return
        # (after a read under way, in the same thread; bounded: a stuck disk does not
        # keep the server from stopping)
        closing = asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        with contextlib.suppress(TimeoutError, Exception):
            await asyncio.wait_for(closing, CLOSE_TIMEOUT)
        self._thread.shutdown(wait=False)

    # -- in the store's thread -----------------------------------------------------------

    def _read(self) -> list[dict[str, Any]]:
        assert self.where is not None
        if self._store is None:
            self._store = open_store(self.where, must_exist=True)
        try:
            return self._store.devices()
        except BaseException:
            self._close()  # (opened again next time: a replaced file, a database back)
            raise

    def _close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()

    # -- on the event loop -------------------------------------------------------------

    async def _follow(self) -> None:
        assert self._thread is not None
        loop = asyncio.get_running_loop()
        while True:
            if not len(self.pages):
                await self._wake.wait()  # (greet wakes it: nobody looks, nothing is read)
            self._wake.clear()
            started = time.monotonic()
            try:
                devices = await loop.run_in_executor(self._thread, self._read)
            except Exception as exc:
                self._failed(exc)
            else:
                self._devices, self._error = devices, ""
            self._read_once = True
            took = time.monotonic() - started
            self.push()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(self.interval, SLOW_FACTOR * took))

    def _failed(self, exc: Exception) -> None:
        assert self.where is not None
        shown = shown_store(self.where)
        text = _one_line(str(exc).replace(self.where, shown) or type(exc).__name__)
        self._error = f"device registry {shown}: {text}"
        if self._trouble.starts():
            log.warning("%s", self._error)

    def board_changed(self) -> None:
        """The circuits running changed: the devices' apps may have."""
        if self._read_once:
            self.push()

    def greet(self, page: Page) -> None:
        page.send(self.frame())
        self._wake.set()  # a fresh read for the new page

    def push(self) -> None:
        """Send the pages a ``devices`` frame if what it says changed."""
        content = self._content()
        if content == self._last:
            return
        self._last = content
        self.pages.broadcast({"op": "devices", "now": time.time(), **content})

    def frame(self) -> dict[str, Any]:
        return {"op": "devices", "now": time.time(), **self._content()}

    def _content(self) -> dict[str, Any]:
        if self.where is None:
            return {"enabled": False, "error": "", "zones": []}
        return {
            "enabled": True,
            "store": shown_store(self.where),
            "ready": self._read_once,
            "error": self._error,
            "zones": self._zones(),
        }

    def _apps(self) -> dict[str, list[dict[str, Any]]]:
        """app name -> its circuits (key, state, container, pack), from the board."""
        apps: dict[str, list[dict[str, Any]]] = {}
        for key, circuit in sorted(self.board.circuits.items()):
            container = circuit.status.container
            apps.setdefault(circuit.status.app, []).append({
                "key": key,
                "name": circuit.name,
                "kind": circuit.kind,
                "state": self.board.circuit_state(circuit),
                "container": container,
                "pack": container.rsplit("/", 1)[-1] if container else "",
            })
        return apps

    def _zones(self) -> list[dict[str, Any]]:
        apps = self._apps()
        zones: dict[str, list[dict[str, Any]]] = {}
        for device in self._devices:
            zones.setdefault(str(device.get("zone") or ""), []).append(
                self._describe(device, apps))
        # (by name; the devices of no zone, such as JET's own circuits, last)
        return [{"zone": zone, "devices": found}
                for zone, found in sorted(zones.items(), key=lambda z: (not z[0], z[0]))]

    @staticmethod
    def _describe(device: Mapping[str, Any],
                  apps: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
        described: dict[str, Any] = {k: to_json(device.get(k)) for k in _DEVICE_FIELDS}
        described["online"] = bool(device.get("online"))
        today = device.get("today")
        today = today if isinstance(today, Mapping) else {}
        described["today"] = {"attempts": to_json(today.get("attempts", 0)),
                              "failures": to_json(today.get("failures", 0))}
        app = app_name(str(device.get("uid", "")))
        circuits = apps.get(app, [])
        described["app"] = app if circuits else ""
        described["circuits"] = circuits
        return described
