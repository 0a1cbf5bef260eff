"""A hub driver on a simulated dongle, in-process (``jet run --simulate``).

    async with simulate(app, broker_url):          # the hook jet.runner calls
        ...   # load the app: its node circuits are answered by the hub "hub"

    async with simulated_hub(broker_url, app.circuits, speed=10.0) as (hub, sim):
        ...   # the same, with both objects at hand (tests, benchmarks)

The simulator runs the firmware the app's node circuits declare (the boiler
model for a node with ``water.celsius`` and ``relay.on``), and the hub reads
it through a real pseudo-terminal, exactly as it reads a JeeLink.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

from jet.definition.model import AppDef, CircuitDef
from jet.transport.broker import Broker
from jet_rf12.dongle import DEFAULT_GROUP
from jet_rf12.hub import DEFAULT_HUB_ID, STATUS_INTERVAL, Hub
from jet_rf12.sim import NodeSim
from jet_rf12.sim_nodes import SimNode, default_nodes, nodes_for_circuits

log = logging.getLogger("jet.rf12.run")

#: ``JET_SIM_SPEED=10 jet run app.yaml --simulate`` runs the node models 10x faster.
SPEED_VAR = "JET_SIM_SPEED"


@contextlib.asynccontextmanager
async def simulated_hub(
    broker: Broker | str | None,
    circuits: Iterable[CircuitDef] = (),
    *,
    nodes: Sequence[SimNode] | None = None,
    speed: float = 1.0,
    interval: float = 1.0,
    hub_id: str = DEFAULT_HUB_ID,
    group: int = DEFAULT_GROUP,
    link: str | Path | None = None,
    state_file: str | Path | None = None,
    status_interval: float = STATUS_INTERVAL,
) -> AsyncIterator[tuple[Hub, NodeSim]]:
    """A NodeSim running ``nodes`` (default: firmware for ``circuits``, else the
    boiler) and a Hub reading it, both stopped on exit."""
    if nodes is None:
        nodes = nodes_for_circuits(circuits, interval) or default_nodes(interval)
    async with (
        NodeSim(nodes, link=link, group=group, speed=speed) as sim,
        Hub(broker, ports=[sim.path], hub_id=hub_id, group=group, state_file=state_file,
            status_interval=status_interval) as hub,
    ):
        yield hub, sim


@contextlib.asynccontextmanager
async def simulate(app: AppDef, broker_url: str, *, speed: float | None = None,
                   interval: float | None = None) -> AsyncIterator[None]:
    """The node side of ``jet run --simulate``: firmware for the app's node
    circuits on a simulated dongle, and the hub ``hub`` reading it.

    ``speed`` defaults to ``$JET_SIM_SPEED`` (else 1); ``interval`` (between
    node reports) to 1 s, shortened when the models run faster so that each
    report is still about one simulated second apart.
    """
    if speed is None:
        try:
            speed = float(os.environ.get(SPEED_VAR, "1"))
        except ValueError:
            log.warning("%s=%r is not a number: using 1", SPEED_VAR, os.environ[SPEED_VAR])
            speed = 1.0
        if speed <= 0:
            log.warning("%s must be above 0: using 1", SPEED_VAR)
            speed = 1.0
    if interval is None:
        interval = min(1.0, max(0.1, 1.0 / speed))
    async with simulated_hub(broker_url, app.circuits, speed=speed, interval=interval) as (
        _,
        sim,
    ):
        log.info("simulated dongle %s: nodes %s", sim.slave_path,
                 ", ".join(str(n) for n in sorted(sim.nodes)) or "none")
        yield
