"""The pack container: many circuits in one process, one event loop, one MQTT link.

    async with Pack(broker.parse(url), "default") as pack:
        await pack.serve_forever()

Everything a container does with commands and status is in
:class:`~jet.container.Container`; a pack adds what is its own: circuits of
Python gadgets built from its allow list, and state persisted to a file so a
restarted pack comes back with the same circuits and wires.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from . import codec
from .broker import Broker
from .circuit import CommandError, RunningCircuit
from .container import STATS_INTERVAL, Container
from .model import CircuitDef, circuit_from_wire
from .network import BuildError
from .registry import Registry

log = logging.getLogger("jet.pack")


class Pack(Container[RunningCircuit]):
    kind = "pack"
    log = log

    def __init__(
        self,
        broker: Broker,
        pack_id: str = "default",
        *,
        registry: Registry | None = None,
        state_file: Path | None = None,
        stats_interval: float = STATS_INTERVAL,
        keepalive: int = 10,
    ) -> None:
        self.registry = registry or Registry()
        self.state_file = state_file
        super().__init__(broker, pack_id, stats_interval=stats_interval, keepalive=keepalive)

    def _build(self, definition: CircuitDef, app: str, exports: dict[str, Any]) -> RunningCircuit:
        return RunningCircuit(
            definition, self.registry, self.link, app=app, container=self.container,
            exports=exports,
        )

    def _presence_extra(self) -> dict[str, Any]:
        return {"allow": list(self.registry.allow)}

    def _changed(self, circuit_id: str, what: str) -> None:
        self._save()

    # -- persisted state -------------------------------------------------------------------

    def _save(self) -> None:
        if self.state_file is None:
            return
        state = {
            cid: {
                "app": c.app,
                "definition": c.status()["definition"],
                "exports": {k: dict(v) for k, v in c.exports.items()},
                "wires": [
                    [port, topic, w.qos, w.limit, w.policy] for (port, topic), w in c.wires.items()
                ],
            }
            for cid, c in self.circuits.items()
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_bytes(codec.encode(state))
        tmp.replace(self.state_file)  # atomic: a crash leaves the old or the new state

    async def _before_connect(self) -> None:
        # Circuits and their wires are restored before connecting: QoS 1
        # messages the broker kept for this pack's session arrive right after
        # the connection, and each must find its wire already in place.
        await self._restore()

    async def _restore(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            state = codec.decode(self.state_file.read_bytes())
        except codec.PayloadError as exc:
            log.error("%s: unreadable state, starting empty: %s", self.state_file, exc)
            return
        for cid, saved in state.items():
            try:
                circuit = await self.load(
                    circuit_from_wire(saved["definition"]),
                    app=saved.get("app", ""),
                    exports=saved.get("exports") or {},
                )
                for port, topic, qos, limit, policy in saved.get("wires", []):
                    await circuit.wire(port, topic, qos, limit, policy)
                self._publish_status(circuit)
            except (BuildError, ValueError, KeyError, TypeError, CommandError) as exc:
                log.error("%s: cannot restore circuit %s: %s", self.state_file, cid, exc)
        self._save()
