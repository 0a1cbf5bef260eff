"""`jet run`: broker, pack and loader in one process, for demos and development."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs

from jet.containers.pack import Pack
from jet.definition.model import AppDef
from jet.embedded import Flavour, embedded_broker
from jet.loader import Loader
from jet.runtime.registry import Registry
from jet.transport import broker
from jet.transport.client import Session

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
    progress: Callable[[str], None] = print,
) -> AsyncIterator[str]:
    """Run ``app`` until the block ends; yields the broker URL in use."""
    registry = registry or Registry()
    async with contextlib.AsyncExitStack() as stack:
        url = broker_url
        if url is None:
            url = await stack.enter_async_context(embedded_broker(flavour=flavour))
        progress(f"broker {url}")
        await stack.enter_async_context(Pack(broker.parse(url), "default", registry=registry))
        skipped: set[str] = set()
        if any(c.container == "node" for c in app.circuits):
            hook = _simulate_hook() if simulate else None
            if hook is not None:
                await stack.enter_async_context(hook(app, url))
            else:
                skipped.add("node")
                progress("node circuits skipped: add --simulate to run them on simulated radios")
        if any(c.container == "web" for c in app.circuits) or web:
            from jet.web import serving

            # The operator view (inject into any input) only on a broker of our own: on a
            # shared one, whoever opens the page could drive every circuit on it.
            page = await stack.enter_async_context(
                serving(url, port=web_port, operator_view=broker_url is None)
            )
            progress(f"web page {page}")
        session = await stack.enter_async_context(Session(broker.parse(url), name="run"))
        loader = Loader(session, registry, progress=progress)
        await loader.reload(without_containers(app, skipped))
        progress(f"app {app.name} running")
        yield url


async def run(app: AppDef, duration: float | None = None, **options: Any) -> None:
    async with running(app, **options):
        if duration is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration)
