"""The web container: web circuits whose gadgets are drawn by the pages.

    async with WebContainer(broker.parse(url), "web", pages=pages) as container:
        ...

It is a container like a pack (docs/protocol.md): it answers
``jet/web/<id>/conf`` (``load``, ``status``) and each ``web/<circuit>/conf``,
handles commands one at a time in arrival order, publishes a retained
status for itself (with an MQTT will saying ``offline``) and for each
circuit.  Values wired into a circuit are relayed to every page; values a
page sets on an output are published on ``web/<circuit>/<gadget>/<n>``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from jet.containers.base import STATS_INTERVAL, Container
from jet.containers.boundary import CircuitBoundary, CommandError
from jet.definition.model import CircuitDef
from jet.transport import codec
from jet.transport.broker import Broker
from jet.web.circuit import WebBody
from jet.web.jsonvalue import to_json
from jet.web.pages import Page, Pages
from jet.web.retained import read_back, state_outputs

log = logging.getLogger("jet.web")

__all__ = ["PageError", "WebContainer"]

class PageError(ValueError):
    """What a page asked for cannot be done; the message goes back to the page."""


class WebContainer(Container):
    """A container like a pack (see :class:`~jet.containers.base.Container`), whose
    circuits are drawn by the pages instead of run by Python gadgets."""

    kind = "web"
    log = log

    def __init__(
        self,
        broker: Broker,
        container_id: str = "web",
        *,
        pages: Pages,
        stats_interval: float = STATS_INTERVAL,
        keepalive: int = 10,
        connect_timeout: float | None = None,
    ) -> None:
        self.pages = pages
        #: the page's address, shown in the container status once the server listens
        self.url = ""
        # A clean session: a page shows the present, so nothing is worth
        # queueing while the server is away, and a restarted server must not
        # inherit the subscriptions of the previous one.
        super().__init__(
            broker,
            container_id,
            stats_interval=stats_interval,
            keepalive=keepalive,
            clean_session=True,
            connect_timeout=connect_timeout,
        )
        pages.on_change.append(lambda _count: self._announce())

    def _make_body(
        self, circuit_id: str, definition: CircuitDef, app: str, args: Mapping[str, Any]
    ) -> Callable[[Callable[[str, int, Any], None]], WebBody]:
        def make(emit: Callable[[str, int, Any], None]) -> WebBody:
            return WebBody(
                circuit_id, definition, emit, app=app,
                deliver=self._relay_input, announce=self._relay_output,
            )

        return make

    @staticmethod
    def _body(circuit: CircuitBoundary) -> WebBody:
        body = circuit.body
        assert isinstance(body, WebBody)
        return body

    async def _loaded(self, circuit: CircuitBoundary) -> None:
        # The value in force of each control: its retained output (jet/web/retained.py).
        await read_back(self.link, circuit, self._body(circuit), self._relay_output)

    def _presence_extra(self) -> dict[str, Any]:
        pages = getattr(self, "pages", None)
        return {"url": getattr(self, "url", ""), "pages": len(pages) if pages else 0}

    def _changed(self, circuit_id: str, what: str) -> None:
        if what == "unload":
            self.pages.broadcast({"op": "circuit_gone", "id": circuit_id})
        elif what in ("load", "start", "reload"):
            circuit = self.circuits[circuit_id]
            circuit.retained = state_outputs(self._body(circuit))  # jet/web/retained.py
            self._show(circuit)

    def set_url(self, url: str) -> None:
        self.url = url
        self._announce()

    # -- the pages ---------------------------------------------------------------------------

    def _picture(self, circuit: CircuitBoundary) -> list[dict[str, Any]]:
        """What a page needs to draw ``circuit`` as the others see it now."""
        body = self._body(circuit)
        frames: list[dict[str, Any]] = [{"op": "circuit", "circuit": to_json(body.describe())}]
        where = {"circuit": circuit.id}
        for (gadget, port), recent in body.recent.items():
            if recent:
                points = [[t, to_json(v)] for t, v in recent]
                frames.append(
                    {"op": "history", **where, "gadget": gadget, "port": port, "points": points}
                )
        for (gadget, port), value in body.outputs.items():
            frames.append(
                {"op": "output", **where, "gadget": gadget, "port": port, "value": to_json(value)}
            )
        return frames

    def _show(self, circuit: CircuitBoundary) -> None:
        for frame in self._picture(circuit):
            self.pages.broadcast(frame)

    def _relay_input(
        self, circuit: WebBody, gadget: str, port: str, value: Any, t: float
    ) -> None:
        self.pages.broadcast(
            {
                "op": "value",
                "circuit": circuit.id,
                "gadget": gadget,
                "port": port,
                "value": to_json(value),
                "t": t,
            }
        )

    def _relay_output(self, circuit: WebBody, gadget: str, port: str, value: Any) -> None:
        self.pages.broadcast(
            {
                "op": "output",
                "circuit": circuit.id,
                "gadget": gadget,
                "port": port,
                "value": to_json(value),
            }
        )

    def greet(self, page: Page) -> None:
        """Send a page that just connected every circuit and the values it has missed."""
        for circuit in self.circuits.values():
            for frame in self._picture(circuit):
                page.send(frame)

    def emit(self, circuit_id: str, gadget: str, port: str, value: Any) -> str:
        """A page sets an output; returns the topic it is published on."""
        circuit = self.circuits.get(circuit_id)
        if circuit is None:
            raise PageError(f"no web circuit {circuit_id!r} in web container {self.id}")
        body = self._body(circuit)
        try:
            body.page_emit(gadget, port, value)
        except (CommandError, codec.PayloadError) as exc:
            raise PageError(str(exc)) from None
        return body.output_topic(gadget, port)
