"""Plug-n-process: a circuit per device, started and stopped as devices come and go.

When a device of a class with a ``template`` comes online, its template is filled in
for it (parsed once per version of the class: :class:`~jet.definition.files.AppTemplate`)
and loaded, as an app named ``pnp-<uid>``, into the pack with the fewest circuits (as
known: see below); when it goes offline and stays so for the class's ``grace`` seconds,
the app is unloaded.  At start, and whenever asked, what runs is reconciled with what
should: every online device of such a class has its app (loaded once: a running one is
left alone), and every ``pnp-`` app whose device is not online is unloaded: no
duplicates, no orphans.

Devices that come together are loaded together (docs/performance.md "Devices: 10,000
joining"): :meth:`online` queues a device and waits; one worker takes what has
queued (after ``GATHER`` seconds, at most ``BATCH`` devices), under the one lock that
orders every load and unload, and loads their apps after one read of what runs, a
stream of commands per pack (``IN_FLIGHT`` apps at a time in each).  What runs is
known from that read and kept up to date by the loads and unloads made since; it is
read again after any failure, at each reconcile, and before a device whose app runs is
left alone on a knowledge older than ``KNOWN_FOR`` seconds.

Lifecycle: ``async with PlugAndProcess(session, classes, store)``; the registry
calls :meth:`online` and :meth:`offline`; pending unloads are cancelled at the end
(the apps keep running, as after ``jet load``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from jet.containers.status import Statuses
from jet.definition.check import check_app
from jet.definition.files import AppTemplate, CircuitFileError
from jet.definition.model import AppDef
from jet.devices.classes import DeviceClass, placeholders
from jet.devices.store import Store
from jet.loader import Loader, LoadError
from jet.runtime.registry import Registry
from jet.tasks import cancel_all
from jet.transport import codec
from jet.transport.client import CommandFailed, NoReply, Session

log = logging.getLogger("jet.devices.pnp")

PREFIX = "pnp-"
#: Seconds the worker waits for more devices before it loads what has queued.
GATHER = 0.1
#: Devices loaded after one read of what runs, at most.
BATCH = 1000
#: Apps being loaded into one pack at a time (a pack obeys its commands one at a
#: time: this only hides the round trips).
IN_FLIGHT = 32
#: Seconds a read of every status may take (it grows with the circuits that run).
READ_LIMIT = 30.0
#: Seconds what runs is taken as known for a device whose app runs (then it is read
#: again: a pack may have restarted without its circuits meanwhile).
KNOWN_FOR = 30.0
#: The packs' retained statuses, followed for their comings and goings.
PACK_STATUS = "jet/pack/+/status"
#: Seconds after a pack came or went before what runs is reconciled.
PACK_SETTLE = 1.0
TROUBLE = (LoadError, CommandFailed, NoReply, ConnectionError, OSError, TimeoutError)


def app_name(uid: str) -> str:
    return PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "-", uid)


class _Loader(Loader):
    """A loader of apps :meth:`PlugAndProcess._app` has checked already."""

    def _checked(self, app: AppDef) -> None:
        pass


class PlugAndProcess:
    """Runs each device's circuit (see the module doc)."""

    def __init__(self, session: Session, classes: Mapping[str, DeviceClass], store: Store,
                 registry: Registry | None = None) -> None:
        self.session = session
        self.classes = dict(classes)
        self.store = store
        self.registry = registry or Registry()
        self._leaving: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()  # one batch of loads or unloads at a time, in order
        #: devices to load (uid), apps to unload (name -> its device's uid, if known):
        #: each with the future its callers wait on
        self._coming: dict[str, asyncio.Future[None]] = {}
        self._going: dict[str, tuple[str | None, asyncio.Future[None]]] = {}
        self._worker: asyncio.Task[None] | None = None
        #: what runs, as last read and kept since: pnp app -> {circuit: pack}; None:
        #: to be read again
        self._apps: dict[str, dict[str, str]] | None = None
        #: the online packs and how many circuits each runs (as known)
        self._packs: dict[str, int] = {}
        self._templates: dict[tuple[Path, str], AppTemplate] = {}
        self._read_at = 0.0
        self.loaded = 0
        self.unloaded = 0
        self.reads = 0
        #: each pack's state as its retained status last said it
        self._pack_states: dict[str, str | None] = {}
        self._settling: asyncio.Task[None] | None = None
        self._again = False

    async def __aenter__(self) -> Self:
        # A pack that goes (its circuits with it) or comes (empty, or restored from its
        # state file): what runs is reconciled with what should, with no command.
        self._watch = await self.session.link.subscribe(PACK_STATUS, 1, self._on_pack_status)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError):
            await self.session.link.unsubscribe(self._watch)
        await cancel_all([*self._leaving.values(),
                          *([self._worker] if self._worker is not None else []),
                          *([self._settling] if self._settling is not None else [])])
        for future in [*self._coming.values(), *(f for _, f in self._going.values())]:
            future.cancel()

    def _class_of(self, device: Mapping[str, Any]) -> DeviceClass | None:
        found = self.classes.get(str(device["class"]))
        return found if found is not None and found.template is not None else None

    def _template(self, device_class: DeviceClass) -> AppTemplate:
        """The class's template, parsed once (per version of the class)."""
        assert device_class.template is not None
        key = (device_class.template, device_class.text)
        found = self._templates.get(key)
        if found is None:
            if len(self._templates) > 100:
                self._templates.clear()
            text = device_class.template.read_text(encoding="utf-8")
            found = self._templates[key] = AppTemplate(text, str(device_class.template))
        return found

    def _app(self, device: Mapping[str, Any], device_class: DeviceClass) -> AppDef | None:
        source = f"{device_class.template} for {device['uid']}"
        try:
            app = self._template(device_class).fill(placeholders(device), source)
        except (CircuitFileError, OSError) as exc:
            log.error("%s: %s", device["uid"], exc)
            return None
        app = AppDef(app_name(str(device["uid"])), app.circuits, app.wires, source,
                     app.levels, app.foreign)
        problems = check_app(app, self.registry)
        if problems:
            log.error("%s: template refused: %s", device["uid"], problems[0])
            return None
        return app

    # -- the queue ---------------------------------------------------------------------

    async def online(self, uid: str) -> None:
        """``uid`` is online: its circuit runs (loaded unless it does already).  Returns
        once the batch it was loaded in is done."""
        leaving = self._leaving.pop(uid, None)
        if leaving is not None:
            leaving.cancel()
        future = self._coming.get(uid)
        if future is None:
            future = self._coming[uid] = asyncio.get_running_loop().create_future()
        self._wake()
        await asyncio.shield(future)

    async def _unload(self, name: str, uid: str | None = None) -> None:
        """Unload app ``name`` (unless ``uid``, its device, is online again by then)."""
        queued = self._going.get(name)
        if queued is None:
            queued = self._going[name] = (uid, asyncio.get_running_loop().create_future())
        self._wake()
        await asyncio.shield(queued[1])

    def _wake(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="pnp-worker")

    async def _work(self) -> None:
        while self._coming or self._going:
            await asyncio.sleep(GATHER)  # (devices that come together, loaded together)
            async with self._lock:
                going, self._going = self._going, {}
                uids = list(self._coming)[:BATCH]
                coming = {uid: self._coming.pop(uid) for uid in uids}
                try:
                    if going:
                        await self._unload_batch({name: uid for name, (uid, _) in going.items()})
                    if coming:
                        began, loaded = time.monotonic(), self.loaded
                        await self._load_batch(list(coming))
                        if self.loaded > loaded:
                            log.info("%d devices' circuits loaded in %.1f s (%d running in all;"
                                     " %d more devices queued)", self.loaded - loaded,
                                     time.monotonic() - began, self.loaded - self.unloaded,
                                     len(self._coming))
                except TROUBLE as exc:
                    log.error("%d devices' circuits not loaded: %s", len(coming), exc)
                    self._apps = None
                except Exception:  # (a bug must not stop plug-n-process for good)
                    log.exception("plug-n-process: a batch of %d devices failed", len(coming))
                    self._apps = None
                finally:
                    for future in [*coming.values(), *(f for _, f in going.values())]:
                        if not future.done():
                            future.set_result(None)

    # -- what runs ---------------------------------------------------------------------

    async def _read(self) -> dict[str, dict[str, str]]:
        """What runs: one read of every status (the packs online, the pnp apps)."""
        known = await Statuses.read(self.session, self.registry, limit=READ_LIMIT)
        self.reads += 1
        self._packs = {name.rsplit("/", 1)[-1]: len(c.circuits)
                       for name, c in known.containers.items()
                       if name.startswith("jet/pack/") and c.state == "online"}
        apps: dict[str, dict[str, str]] = {}
        for circuit in known.online():
            if circuit.status.app.startswith(PREFIX) and circuit.kind == "pack":
                pack = circuit.status.container.rsplit("/", 1)[-1]
                if pack not in self._packs:
                    continue  # (its status outlived its pack: a will says only the pack's)
                apps.setdefault(circuit.status.app, {})[circuit.name] = pack
        self._apps = apps
        self._read_at = time.monotonic()
        return apps

    def _least_busy(self) -> str:
        """The pack with the fewest circuits (as known), counting those being loaded."""
        if not self._packs:
            raise LoadError("no pack is online to run devices' circuits")
        return min((count, name) for name, count in self._packs.items())[1]

    # -- loading and unloading ---------------------------------------------------------

    async def _load_batch(self, uids: list[str]) -> None:
        """Load the apps of ``uids`` that do not run: each pack is sent its share as
        the apps are made (``IN_FLIGHT`` loaders each), so loading starts at once."""
        apps = self._apps if self._apps is not None else await self._read()
        if not self._packs:
            log.error("%d devices: their circuits were not loaded: no pack is online to run"
                      " devices' circuits", len(uids))
            self._apps = None
            return
        queues: dict[str, asyncio.Queue[AppDef | None]] = {p: asyncio.Queue()
                                                           for p in self._packs}
        loaders = [asyncio.create_task(self._loading(pack, queue), name=f"pnp-load-{pack}")
                   for pack, queue in queues.items() for _ in range(IN_FLIGHT)]
        try:
            for number, uid in enumerate(uids):
                if number % 20 == 19:
                    await asyncio.sleep(0)  # (the registry's messages, the loaders' replies)
                device = self.store.device_row(uid)
                device_class = self._class_of(device) if device is not None else None
                if device is None or device_class is None:
                    continue
                app = self._app(device, device_class)
                if app is None:
                    continue
                runs = apps.get(app.name, {})
                if runs and time.monotonic() - self._read_at > KNOWN_FOR:
                    apps = await self._read()  # (does it still run?)
                    runs = apps.get(app.name, {})
                if all(c.name in runs for c in app.circuits):
                    continue  # (loaded once: a running app is left alone)
                if runs:  # part of it runs: the whole reload, after a read of its own
                    await self._reload(app)
                    continue
                pack = self._least_busy()
                self._packs[pack] += len(app.circuits)
                queues[pack].put_nowait(app)
            for queue in queues.values():
                for _ in range(IN_FLIGHT):
                    queue.put_nowait(None)
            await asyncio.gather(*loaders)
        finally:
            await cancel_all(loaders)

    async def _loading(self, pack: str, queue: asyncio.Queue[AppDef | None]) -> None:
        """Load the apps put in ``queue`` (none of whose circuits runs) into ``pack``."""
        loader = _Loader(self.session, self.registry, pack=pack)
        loader.running = {None: {}}  # (the apps' own circuits: none runs)
        while (app := await queue.get()) is not None:
            try:
                await loader.load(app, refresh=False)
            except TROUBLE as exc:
                log.error("%s: its circuit was not loaded: %s", app.name[len(PREFIX):], exc)
                self._apps = None  # (what runs is not what we thought: read it again)
                continue
            except Exception:  # (one app's trouble must not stop the others')
                log.exception("%s: its circuit was not loaded", app.name[len(PREFIX):])
                self._apps = None
                continue
            if self._apps is not None:
                self._apps[app.name] = {c.name: pack for c in app.circuits}
            self.loaded += 1
            log.debug("%s: circuit %s running", app.name[len(PREFIX):], app.name)

    async def _reload(self, app: AppDef) -> None:
        try:
            loader = Loader(self.session, self.registry, pack=self._least_busy())
            loader.read_limit = READ_LIMIT
            await loader.reload(app)  # (loads what is missing, keeps what runs)
        except TROUBLE as exc:
            log.error("%s: its circuit was not loaded: %s", app.name[len(PREFIX):], exc)
            self._apps = None
            return
        if self._apps is not None:
            self._apps[app.name] = {c.name: "" for c in app.circuits}
        self.loaded += 1
        log.info("%s: circuit %s running", app.name[len(PREFIX):], app.name)

    async def _unload_batch(self, going: Mapping[str, str | None]) -> None:
        """Unload these apps, after one read of what runs (each unload keeps it)."""
        loader = Loader(self.session, self.registry)
        loader.read_limit = READ_LIMIT
        try:
            await loader.refresh()
        except TROUBLE as exc:
            log.error("%d apps not unloaded: %s", len(going), exc)
            return
        for name, uid in going.items():
            device = self.store.device_row(uid) if uid is not None else None
            if device is not None and device["online"]:
                continue  # (back meanwhile: its circuit stays)
            try:
                # (the app as nothing: a reload unloads every circuit it runs)
                await loader.reload(AppDef(name, source=name), refresh=False)
            except TROUBLE as exc:
                log.error("%s: not unloaded: %s", name, exc)
                self._apps = None
                continue
            if self._apps is not None:
                for pack in self._apps.pop(name, {}).values():
                    if pack in self._packs:
                        self._packs[pack] -= 1
            self.unloaded += 1
            log.info("%s unloaded: its device is gone", name)

    def offline(self, uid: str) -> None:
        """``uid`` is offline: its circuit goes after its class's grace, unless it is back."""
        device = self.store.device_row(uid)
        device_class = self._class_of(device) if device is not None else None
        if device_class is None or uid in self._leaving:
            return
        self._leaving[uid] = asyncio.create_task(self._leave(uid, device_class.grace),
                                                 name=f"pnp-leave-{uid}")

    async def _leave(self, uid: str, grace: float) -> None:
        await asyncio.sleep(grace)
        self._leaving.pop(uid, None)
        device = self.store.device_row(uid)
        if device is not None and device["online"]:
            return
        await self._unload(app_name(uid), uid)

    def _on_pack_status(self, topic: str, payload: bytes) -> None:
        try:
            status = codec.decode(payload) if payload else {}
        except Exception:  # (not a pack's status: the pack's own trouble, said by jet ls)
            return
        state = status.get("state") if isinstance(status, dict) else None
        pack = topic.split("/")[2]
        before = self._pack_states.get(pack, "")
        self._pack_states[pack] = state
        if before == state:
            return  # (a status with more or fewer circuits: ours, or someone's load)
        log.info("pack %s is %s: what runs is reconciled in %g s", pack, state or "gone",
                 PACK_SETTLE)
        self._apps = None  # (what runs is not what we knew)
        self._again = True
        if self._settling is None or self._settling.done():
            self._settling = asyncio.create_task(self._reconcile_soon(), name="pnp-settle")

    async def _reconcile_soon(self) -> None:
        while self._again:  # (packs that came or went while reconciling: once more)
            self._again = False
            await asyncio.sleep(PACK_SETTLE)  # (a pack restoring its state file, its statuses)
            await self.reconcile()

    async def reconcile(self) -> None:
        """Every online device of a class with a template runs its circuit; no ``pnp-``
        app runs for a device that is not online."""
        began, loaded, unloaded = time.monotonic(), self.loaded, self.unloaded
        async with self._lock:
            try:
                running = set(await self._read())
            except TROUBLE as exc:
                log.error("not reconciled: %s", exc)
                self._apps = None
                return
        wanted = {app_name(d["uid"]): d["uid"] for d in self.store.devices()
                  if d["online"] and self._class_of(d) is not None}
        await asyncio.gather(*(self.online(uid) for uid in wanted.values()),
                             *(self._unload(name) for name in sorted(running - set(wanted))))
        log.info("reconciled in %.1f s: %d devices online with a template, %d of their apps"
                 " loaded, %d apps unloaded", time.monotonic() - began, len(wanted),
                 self.loaded - loaded, self.unloaded - unloaded)
