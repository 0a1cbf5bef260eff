"""`jet devices serve`: discovery and the device registry (docs/devices.md).

A :class:`RegistryServer` connects to a broker with a persistent session (clean
session off, QoS 1), subscribes to its layouts' topic filters
(:mod:`jet.devices.layouts`) and, for every message, recognises the device,
records it in its :class:`~jet.devices.store.Store`, and only then lets its link
acknowledge the message: what the broker was told is handled is in the database.
A message the store fails on (a database locked or down) is not acknowledged
(:class:`~jet.transport.link.Redeliver`): said in one line, and the broker sends
it again after the link reconnects, until it is stored; the server goes on.

A device is online from its first message (or its announcement) until its will or
its ``$state`` says otherwise, or it has been silent longer than ``silence``
seconds.  A message's payload is read as JSON when it is JSON, as text otherwise.

Lifecycle: ``async with RegistryServer(...) as server: await server.serve_forever()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import watchfiles

from jet.devices.classes import DeviceClass, digest, load_classes
from jet.devices.config import Source
from jet.devices.fellows import GROUP_KEEPALIVE, Fellowship, presence_will, session_name
from jet.devices.layouts import BUILT_IN, Layout, Sighting, recognise
from jet.devices.pnp import PlugAndProcess
from jet.devices.store import Store
from jet.tasks import Burst, cancel_all
from jet.transport import Link, Redeliver
from jet.transport.broker import Broker
from jet.transport.formats import FormatError, payload_value

log = logging.getLogger("jet.devices")

#: Seconds a device may be silent before it is taken for offline (a class may say otherwise).
SILENCE = 300.0
#: Milliseconds without a change to the class directory before it is read again.
CLASS_DEBOUNCE_MS = 300
#: Words a will or a state message says a device is offline with.
OFFLINE_WORDS = frozenset({"offline", "lost", "disconnected", "dead", "0", "false"})


class RegistryServer:
    """Discovers devices on one broker and keeps them in ``store`` (see the module doc)."""

    def __init__(self, sources: Broker | Sequence[Source], store: Store, *, name: str = "",
                 layouts: Iterable[Layout] = BUILT_IN.values(), silence: float = SILENCE,
                 check_every: float = 1.0, group: str = "",
                 classes: Mapping[str, DeviceClass] | None = None,
                 pnp: PlugAndProcess | None = None, class_dir: Path | None = None,
                 keepalive: int | None = None, partition: bool = False) -> None:
        """``sources``: the brokers to listen to (one :class:`Source` each; a bare
        broker: its layouts' filters).  ``group``: servers sharing the work (MQTT
        shared subscriptions ``$share/<group>/...``): each message is handled by one of
        them, and a server that goes has its share taken over (:mod:`.fellows`).
        ``keepalive``: seconds (a group's default is short: a dead server's will, and
        so the take-over, comes after 1.5 keepalives).  ``partition``: the brokers have
        no shared subscriptions (NATS): a group's servers each get every message and
        handle the devices that fall to them among the live ones."""
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.store = store
        self.layouts = list(layouts)
        self.silence = silence
        self.check_every = check_every
        self.group = group
        self.partition = partition and bool(group)
        self.classes = dict(classes or {})
        self.class_dir = class_dir
        self.pnp = pnp
        self._pnp_tasks: set[asyncio.Task[None]] = set()
        self.sources = ([Source(sources)] if isinstance(sources, Broker) else list(sources))
        keepalive = keepalive or (GROUP_KEEPALIVE if group else 10)
        # Persistent, acknowledged once stored: what devices say while the server is
        # away waits for it, and what it was told is handled is in the database.
        self.links: list[Link] = []
        self.fellowships: list[Fellowship | None] = []
        for source in self.sources:
            link = Link(source.broker, session_name(self.name), clean_session=False,
                        connect_timeout=10.0, ack_after_handling=True, keepalive=keepalive,
                        will=presence_will(group, self.name) if group else None)
            self.links.append(link)
            self.fellowships.append(Fellowship(
                link, group, self.name, self.filters(source), self._handler(len(self.links) - 1),
                store, partition=self.partition) if group else None)
        self.handled = 0
        self.unrecognised = 0
        self.unstored = 0  # messages not stored (a database error), left to the broker
        self._trouble = Burst()
        self._unreadable = Burst()
        self._silence_trouble = Burst()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def link(self) -> Link:
        """The first broker's link."""
        return self.links[0]

    def filters(self, source: Source) -> list[str]:
        """What this server subscribes to on ``source`` (shared in a group)."""
        share = f"$share/{self.group}/" if self.group and not self.partition else ""
        topics = source.topics or [layout.topic_filter() for layout in self.layouts]
        return [share + topic for topic in dict.fromkeys(topics)]

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            for n, (source, link) in enumerate(zip(self.sources, self.links, strict=True)):
                # Subscribed before connecting: what the persistent session kept for us
                # arrives as soon as we connect, and must find its handler.
                for topic in self.filters(source):
                    await link.subscribe(topic, 1, self._handler(n))
                await stack.enter_async_context(link)
            for fellowship in self.fellowships:
                if fellowship is not None:
                    await stack.enter_async_context(fellowship)
            self.store.fellow(socket.gethostname(), self.name, active=True, role="registry",
                              at=time.time())
            self._stack = stack.pop_all()
        self._tasks.append(asyncio.create_task(self._watch_silence(), name="devices-silence"))
        if self.pnp is not None:  # what runs, in line with who is online
            self._spawn(self.pnp.reconcile())
        if self.class_dir is not None:
            self._record_classes()
            self._tasks.append(asyncio.create_task(self._watch_classes(self.class_dir),
                                                   name="devices-classes"))
        for source in self.sources:
            log.info("device registry %s on %s: %s", self.name, source.broker.url,
                     ", ".join(self.filters(source)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await cancel_all([*self._tasks, *self._pnp_tasks])
        try:
            self.store.fellow(socket.gethostname(), self.name, active=False, role="registry",
                              at=time.time())
        finally:
            await self._stack.aclose()

    async def serve_forever(self) -> None:
        await asyncio.Event().wait()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work, name="devices-pnp")
        self._pnp_tasks.add(task)
        task.add_done_callback(self._pnp_tasks.discard)

    def _came(self, uid: str) -> None:
        if self.pnp is not None:
            self._spawn(self.pnp.online(uid))

    def _went(self, uid: str) -> None:
        if self.pnp is not None:
            self.pnp.offline(uid)

    # -- messages ----------------------------------------------------------------------

    def _handler(self, source: int) -> Callable[[str, bytes], None]:
        """The handler of the messages of the ``source``-th broker."""
        def on_message(topic: str, payload: bytes) -> None:
            self._on_message(topic, payload, source)
        return on_message

    def _on_message(self, topic: str, payload: bytes, source: int = 0) -> None:
        sighting = recognise(topic, self.layouts)
        if sighting is None:
            self.unrecognised += 1
            return
        fellowship = self.fellowships[source] if self.partition else None
        if fellowship is not None and not fellowship.mine(sighting.uid, topic, payload):
            return  # (another's, or before we are in: see jet/devices/fellows.py)
        try:
            self.handle(sighting, topic, payload, time.time())
        except Exception as exc:  # a database error: said, and the message is not lost
            if self._trouble.starts():
                log.error("device registry: %s from %s not stored: %s (not acknowledged:"
                          " the broker sends it again)", topic[:200], sighting.uid,
                          " ".join(str(exc).split()) or type(exc).__name__)
            self.unstored += 1
            raise Redeliver from exc
        self.handled += 1

    def handle(self, sighting: Sighting, topic: str, payload: bytes, at: float) -> None:
        """Record what one message says of its device."""
        store, uid = self.store, sighting.uid
        if sighting.kind == "state":
            word = str(payload_value(payload)).strip().lower() if payload else "offline"
            if word in OFFLINE_WORDS or word in ("init", "sleeping", "alert"):
                store.seen(uid, sighting.fields, sighting.layout, topic, at)
                if store.set_online(uid, False, at, f"{sighting.post_type}: {word}"):
                    self._went(uid)
                return
        if sighting.kind == "status":
            value = payload_value(payload) if payload else None
            state = value.get("state") if isinstance(value, dict) else None
            if not payload or state == "offline":
                if store.set_online(uid, False, at, "status: offline"):
                    log.info("device %s offline (its status)", uid)
                    self._went(uid)
                return
        if sighting.kind == "announce" and not payload:
            if store.set_online(uid, False, at, "announcement removed"):
                self._went(uid)
            return
        came = store.seen(uid, sighting.fields, sighting.layout, topic, at)
        if came == "new":
            log.info("device %s found (%s, zone %s)", uid, sighting.layout,
                     sighting.zone or "-")
        if came:
            self._came(uid)
        if sighting.kind == "announce":
            store.describe(uid, payload_value(payload))
        elif sighting.kind == "data":
            # (a post type with data subtopics: kept as a dictionary of them, not dropped)
            store.record(uid, sighting.post_type, self._read(sighting, topic, payload), at,
                         "/".join(sighting.data))

    def _read(self, sighting: Sighting, topic: str, payload: bytes) -> Any:
        """A data message's value: decoded in its post type's format when the device's
        class describes the post type (``node/property`` for Homie), else (or when it does
        not read in that format: said, and kept as it came) JSON when it is, else text."""
        device_class = self.classes.get(sighting.device_class)
        post = (device_class.posts.get("/".join((sighting.post_type, *sighting.data)))
                if device_class is not None else None)
        if post is not None:
            try:
                return post.read(payload)
            except FormatError as exc:
                if self._unreadable.starts():
                    log.warning("device registry: %s does not read as class %s's %s: %s"
                                " (kept as it came)", topic[:200], sighting.device_class,
                                post.name, exc)
        return payload_value(payload)

    async def _watch_classes(self, directory: Path) -> None:
        """New and changed class files applied as they are saved, refused ones said in one
        line each (their class stays as it was), every applied version recorded."""
        async for _changes in watchfiles.awatch(directory, debounce=CLASS_DEBOUNCE_MS,
                                                recursive=False):
            classes, errors = load_classes(directory, self.classes)
            for error in errors:
                log.error("%s (refused: the class stays as it was)", error)
            self.classes = classes
            if self.pnp is not None:
                self.pnp.classes = dict(classes)
            self._record_classes()

    def _record_classes(self) -> None:
        for device_class in self.classes.values():
            sha, text = digest(device_class)
            version = self.store.record_config(device_class.name, device_class.kind, sha,
                                               text)
            log.info("class %s: version %d applied (%s)", device_class.name, version,
                     device_class.source)

    def _silence_of(self, device_class: str) -> float:
        found = self.classes.get(device_class)
        return found.silence if found is not None and found.silence else self.silence

    async def _watch_silence(self) -> None:
        while True:
            await asyncio.sleep(self.check_every)
            try:
                self._check_silence()
            except Exception as exc:  # a database error: said, and tried again
                if self._silence_trouble.starts():
                    log.error("device registry: silences not checked: %s (tried again every"
                              " %g s)", " ".join(str(exc).split()) or type(exc).__name__,
                              self.check_every)

    def _check_silence(self) -> None:
        shortest = min([self.silence, *(c.silence for c in self.classes.values() if c.silence)])
        now = time.time()
        for uid, device_class, last_seen in self.store.silent(now - shortest):
            limit = self._silence_of(device_class)
            if now - last_seen <= limit:
                continue
            if self.store.set_online(uid, False, now, f"silent for {limit:g} s"):
                log.info("device %s offline: silent for %g s", uid, limit)
                self._went(uid)
