"""`jet run`: broker, pack and loader in one process, for demos and development."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import attrs

from jet.containers.pack import Pack
from jet.definition.model import AppDef
from jet.embedded import Flavour, embedded_broker
from jet.loader import Loader
from jet.runtime.registry import Registry
from jet.transport import broker
from jet.transport.client import REPLY_TIMEOUT, Session

log = logging.getLogger("jet.run")

#: Hook that starts the node side for `--simulate` (set by the hub driver
#: package when installed): ``simulate(app, broker_url)`` is an async
#: context manager yielding nothing.
SimulateHook = Callable[[AppDef, str], contextlib.AbstractAsyncContextManager[Any]]


def without_containers(app: AppDef, kinds: set[str]) -> AppDef:
    """The app minus circuits of the given container types and wires touching them."""
    keep = tuple(c for c in app.circuits if c.container not in kinds)
    names = {c.name for c in keep}
    wires = tuple(w for w in app.wires if w.src.circuit in names and w.dst.circuit in names)
    return attrs.evolve(app, circuits=keep, wires=wires)


def own_container_id() -> str:
    """The id `jet run` gives its pack (and web container) on a broker it shares:
    ``run-<host>-<pid>``, unique on the broker, so it never takes over a `jet pack`
    (or `jet web`) running there under the default id (two containers with one
    id would kick each other off the broker)."""
    host = re.sub(r"[^a-z0-9_-]+", "-", socket.gethostname().lower()).strip("-") or "host"
    return f"run-{host}-{os.getpid()}"


def _simulate_hook() -> SimulateHook | None:
    try:
        from jet_rf12.runner import simulate
    except ImportError:
        return None
    return simulate


@contextlib.asynccontextmanager
async def running(
    app: AppDef,
    *,
    broker_url: str | None = None,
    registry: Registry | None = None,
    simulate: bool = False,
    flavour: Flavour = "auto",
    web: bool = False,
    web_port: int = 0,
    timeout: float = REPLY_TIMEOUT,
    progress: Callable[[str], None] = print,
) -> AsyncIterator[str]:
    """Run ``app`` until the block ends; yields the broker URL in use.

    On a broker of its own the containers have the default ids (``jet load``
    and ``jet ls`` find them as usual); on a given one, ids of their own (see
    :func:`own_container_id`), and a broker that does not answer within
    ``timeout`` is a ``ConnectionError``, not a wait for ever.
    """
    registry = registry or Registry()
    async with contextlib.AsyncExitStack() as stack:
        url = broker_url
        if url is None:
            url = await stack.enter_async_context(embedded_broker(flavour=flavour))
            pack_id, web_id = "default", "web"
        else:
            pack_id = web_id = own_container_id()
        await stack.enter_async_context(
            Pack(broker.parse(url), pack_id, registry=registry, connect_timeout=timeout)
        )
        progress(f"broker {url}")  # once it answers: a broker that does not says only that
        if pack_id != "default":
            progress(f"pack {pack_id} (an id of its own on a shared broker)")
        skipped: set[str] = set()
        if any(c.container == "node" for c in app.circuits):
            hook = _simulate_hook() if simulate else None
            if hook is not None:
                await stack.enter_async_context(hook(app, url))
            else:
                skipped.add("node")
                progress("node circuits skipped: add --simulate to run them on simulated radios")
        if app.foreign and simulate:
            from jet.devices import SimulatedDevices

            devices = await stack.enter_async_context(SimulatedDevices(app, url))
            for device in devices.describe():
                progress(f"simulated device {device}")
        if any(c.container == "web" for c in app.circuits) or web:
            from jet.web import serving

            # The operator view (inject into any input) only on a broker of our own: on a
            # shared one, whoever opens the page could drive every circuit on it.
            page = await stack.enter_async_context(
                serving(url, port=web_port, server_id=web_id, connect_timeout=timeout,
                        operator_view=broker_url is None)
            )
            progress(f"web page {page}")
        session = await stack.enter_async_context(
            Session(broker.parse(url), name="run", timeout=timeout)
        )
        loader = Loader(session, registry, pack=pack_id, web=web_id, progress=progress)
        await loader.reload(without_containers(app, skipped))
        progress(f"app {app.name} running")
        yield url


@contextlib.asynccontextmanager
async def app_on_levels(
    app: AppDef,
    urls: Mapping[str, str],
    *,
    registry: Registry | None = None,
    progress: Callable[[str], None] = print,
    timeout: float = REPLY_TIMEOUT,
) -> AsyncIterator[None]:
    """An app with levels on running levels (``jet run`` of a levels file with ``app:``):
    a pack on each of its levels' brokers (``urls``, by level), in this process, and the
    app loaded across them as `jet load` would; all of it gone when the block ends."""
    async with contextlib.AsyncExitStack() as stack:
        sessions = {}
        for level in app.levels:
            where = broker.parse(urls[level])
            await stack.enter_async_context(
                Pack(where, "default", registry=registry, connect_timeout=timeout)
            )
            sessions[level] = await stack.enter_async_context(
                Session(where, name="run", timeout=timeout)
            )
        loader = Loader(None, registry, progress=progress, levels=sessions)
        await loader.load(attrs.evolve(app, levels={level: urls[level] for level in app.levels}))
        progress(f"app {app.name} running on levels {', '.join(app.levels)}")
        yield


async def run(app: AppDef, duration: float | None = None, **options: Any) -> None:
    async with running(app, **options):
        if duration is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration)
