"""Plug-n-process: a circuit per device, started and stopped as devices come and go.

When a device of a class with a ``template`` comes online, its template is filled in
for it (:meth:`DeviceClass.instantiate`) and loaded, as an app named
``pnp-<uid>``, into the pack with the fewest circuits; when it goes offline and
stays so for the class's ``grace`` seconds, the app is unloaded.  At start, and
whenever asked, what runs is reconciled with what should: every online device of
such a class has its app (loaded once: a running one is left alone), and every
``pnp-`` app whose device is not online is unloaded: no duplicates, no orphans.

Lifecycle: ``async with PlugAndProcess(session, classes, store)``; the registry
calls :meth:`online` and :meth:`offline`; pending unloads are cancelled at the end
(the apps keep running, as after ``jet load``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from typing import Any, Self

from jet.containers.status import Statuses
from jet.definition.check import check_app
from jet.definition.files import CircuitFileError, loads_app
from jet.definition.model import AppDef
from jet.devices.classes import DeviceClass
from jet.devices.store import Store
from jet.loader import Loader, LoadError
from jet.runtime.registry import Registry
from jet.tasks import cancel_all
from jet.transport.client import CommandFailed, NoReply, Session

log = logging.getLogger("jet.devices.pnp")

PREFIX = "pnp-"
TROUBLE = (LoadError, CommandFailed, NoReply, ConnectionError, OSError, TimeoutError)


def app_name(uid: str) -> str:
    return PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "-", uid)


class PlugAndProcess:
    """Runs each device's circuit (see the module doc)."""

    def __init__(self, session: Session, classes: Mapping[str, DeviceClass], store: Store,
                 registry: Registry | None = None) -> None:
        self.session = session
        self.classes = dict(classes)
        self.store = store
        self.registry = registry or Registry()
        self._leaving: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()  # one load or unload at a time, in order
        self.loaded = 0
        self.unloaded = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_all(list(self._leaving.values()))

    def _class_of(self, device: Mapping[str, Any]) -> DeviceClass | None:
        found = self.classes.get(str(device["class"]))
        return found if found is not None and found.template is not None else None

    def _app(self, device: Mapping[str, Any], device_class: DeviceClass) -> AppDef | None:
        source = f"{device_class.template} for {device['uid']}"
        try:
            app = loads_app(device_class.instantiate(device), source)
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

    async def _pack(self) -> str:
        """The pack with the fewest circuits now (instances spread over the packs)."""
        known = await Statuses.read(self.session, self.registry)
        packs = [(len(c.circuits), name.rsplit("/", 1)[-1])
                 for name, c in known.containers.items()
                 if name.startswith("jet/pack/") and c.state == "online"]
        if not packs:
            raise LoadError("no pack is online to run devices' circuits")
        return min(packs)[1]

    async def online(self, uid: str) -> None:
        """``uid`` is online: its circuit runs (loaded unless it does already)."""
        leaving = self._leaving.pop(uid, None)
        if leaving is not None:
            leaving.cancel()
        device = self.store.device(uid)
        device_class = self._class_of(device) if device is not None else None
        if device is None or device_class is None:
            return
        app = self._app(device, device_class)
        if app is None:
            return
        async with self._lock:
            try:
                loader = Loader(self.session, self.registry, pack=await self._pack())
                await loader.refresh()
                if all(loader.placement(app, c) is not None for c in app.circuits):
                    return
                await loader.reload(app)  # (loads what is missing, keeps what runs)
            except TROUBLE as exc:
                log.error("%s: its circuit was not loaded: %s", uid, exc)
                return
        self.loaded += 1
        log.info("%s: circuit %s running", uid, app.name)

    def offline(self, uid: str) -> None:
        """``uid`` is offline: its circuit goes after its class's grace, unless it is back."""
        device = self.store.device(uid)
        device_class = self._class_of(device) if device is not None else None
        if device_class is None or uid in self._leaving:
            return
        self._leaving[uid] = asyncio.create_task(self._leave(uid, device_class.grace),
                                                 name=f"pnp-leave-{uid}")

    async def _leave(self, uid: str, grace: float) -> None:
        await asyncio.sleep(grace)
        self._leaving.pop(uid, None)
        device = self.store.device(uid)
        if device is not None and device["online"]:
            return
        await self._unload(app_name(uid))

    async def _unload(self, name: str) -> None:
        async with self._lock:
            try:
                # (the app as nothing: a reload unloads every circuit it runs)
                await Loader(self.session, self.registry).reload(AppDef(name, source=name))
            except TROUBLE as exc:
                log.error("%s: not unloaded: %s", name, exc)
                return
        self.unloaded += 1
        log.info("%s unloaded: its device is gone", name)

    async def reconcile(self) -> None:
        """Every online device of a class with a template runs its circuit; no ``pnp-``
        app runs for a device that is not online."""
        wanted = {app_name(d["uid"]): d["uid"] for d in self.store.devices()
                  if d["online"] and self._class_of(d) is not None}
        for uid in wanted.values():
            await self.online(uid)
        known = await Statuses.read(self.session, self.registry)
        running = {c.status.app for c in known.online() if c.status.app.startswith(PREFIX)}
        for name in sorted(running - set(wanted)):
            await self._unload(name)
