"""Figures 3 and 4: loading circuits into a pack, reloading one, memory per circuit.

For each size (1, 100, 1,000 circuits) a fresh mosquitto and a fresh
``jet pack`` subprocess; :class:`jet.loader.Loader` loads an app of that many
small circuits (:func:`benchlib.netmem.small_circuit`: Scale -> Offset ->
Threshold) exactly as ``jet load`` does, and every command it sends is
timed.  The baseline is the round trip of the cheapest command there is
(``status`` to the pack) measured just before, on the same session: a load
reads as "so many round trips".  In the pack of the largest size, one more
one-circuit app is loaded and then reloaded with a changed wire.

Memory: RSS of the pack process (psutil) before and after loading the
largest app.  Its baseline is a bare Python process building the same
circuits as :class:`jet.network.Network` objects (:mod:`benchlib.netmem`).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from jet import address
from jet.definition.model import AppDef
from jet.loader import Loader
from jet.transport import broker as jet_broker
from jet.transport.client import Session

from .common import REPO, BenchError, Child, figure, goal, mosquitto, pack_process, subprocess_env
from .netmem import small_circuit

MB = 2**20
MEMORY_GOAL = goal("1,000 circuits in one pack under 500 MB", "<", 500.0)
GOAL_CIRCUITS = 1000


class TimedSession(Session):
    """A Session that records how long each command and each retained read took."""

    def __init__(self, url: str) -> None:
        super().__init__(jet_broker.parse(url), name="bench", timeout=30.0)
        self.spans: list[tuple[str, float]] = []

    async def request(
        self, topic: str, command: dict[str, Any], timeout: float | None = None
    ) -> Any:
        start = time.perf_counter()
        try:
            return await super().request(topic, command, timeout)
        finally:
            self.spans.append((str(command.get("cmd")), time.perf_counter() - start))

    async def retained(
        self, *topic_filters: str, quiet: float = 0.3, limit: float = 3.0
    ) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            return await super().retained(*topic_filters, quiet=quiet, limit=limit)
        finally:
            self.spans.append(("retained", time.perf_counter() - start))

    def total(self, kind: str) -> float:
        return sum(s for k, s in self.spans if k == kind)

    def times(self, kind: str) -> list[float]:
        return [s for k, s in self.spans if k == kind]


class TimedLoader(Loader):
    """A Loader that records how long its ``jet check`` of the app took (client side)."""

    check_s = 0.0

    def _checked(self, app: AppDef) -> None:
        start = time.perf_counter()
        try:
            super()._checked(app)
        finally:
            self.check_s += time.perf_counter() - start


def app_of(name: str, n: int) -> AppDef:
    return AppDef(name, circuits=tuple(small_circuit(f"{name}-{i}") for i in range(n)))


async def _round_trip(session: TimedSession, pack_id: str, count: int = 30) -> float:
    conf = address.container_conf("pack", pack_id)
    for _ in range(5):  # warm-up
        await session.request(conf, {"cmd": "status"})
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await session.request(conf, {"cmd": "status"})
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


async def _load(url: str, pack: Child, pack_id: str, n: int, reload: bool) -> dict[str, Any]:
    async with TimedSession(url) as session:
        rtt = await _round_trip(session, pack_id)
        await asyncio.sleep(0.2)
        rss_before = pack.rss()
        app = app_of(f"l{n}", n)
        session.spans.clear()
        loader = TimedLoader(session, pack=pack_id)
        start = time.perf_counter()
        await loader.load(app)
        total = time.perf_counter() - start
        loads = session.times("load")
        await asyncio.sleep(0.5)  # status publishing settles
        rss_after = pack.rss()
        result: dict[str, Any] = {
            "circuits": n,
            "round_trip_ms": _ms(rtt),
            "total_s": round(total, 4),
            "per_circuit_ms": _ms(total / n),
            "check_ms": _ms(loader.check_s),
            "retained_read_ms": _ms(session.total("retained")),
            "load_command_ms": {
                "mean": _ms(statistics.fmean(loads)),
                "median": _ms(statistics.median(loads)),
                "first": _ms(loads[0]),
                "last": _ms(loads[-1]),
                "max": _ms(max(loads)),
            },
            "rss_before": rss_before,
            "rss_after": rss_after,
        }
        if reload:
            result["reload"] = await _reload(session, pack_id, n)
        return result


async def _reload(session: TimedSession, pack_id: str, loaded: int) -> dict[str, Any]:
    """Load a one-circuit app, then reload it with one wire moved (Threshold fed by Scale)."""
    loader = Loader(session, pack=pack_id)
    await loader.load(AppDef("rl", circuits=(small_circuit("rl"),)))
    changed = AppDef("rl", circuits=(small_circuit("rl", changed=True),))
    session.spans.clear()
    start = time.perf_counter()
    await loader.reload(changed)
    total = time.perf_counter() - start
    status = await session.request(address.circuit_conf("pack", "rl"), {"cmd": "status"})
    wires = status["definition"]["wires"]
    if {"from": "s.out", "to": "t.in", "qos": 1} not in wires:
        raise BenchError(f"reload did not take: wires are {wires}")
    return {
        "other_circuits_in_pack": loaded,
        "total_ms": _ms(total),
        "retained_read_ms": _ms(session.total("retained")),
        "reload_command_ms": _ms(session.total("reload")),
        "commands": [[k, _ms(s)] for k, s in session.spans],
    }


def _network_memory(n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchlib.netmem", str(n)],
        capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=120, check=False,
    )
    if out.returncode != 0:
        raise BenchError(f"benchlib.netmem failed: {out.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def run(quick: bool) -> dict[str, dict[str, Any]]:
    """Returns two sections: ``load`` and ``memory``."""
    sizes = (1, 10, 30) if quick else (1, 100, 1000)
    runs: dict[int, dict[str, Any]] = {}
    for n in sizes:
        with mosquitto() as broker:
            pack_id = f"load{n}"
            with pack_process(broker.url, pack_id) as pack:
                runs[n] = asyncio.run(_load(broker.url, pack, pack_id, n, reload=n == sizes[-1]))
    load_figures: list[dict[str, Any]] = []
    for n, r in runs.items():
        rtt = r["round_trip_ms"]
        if n > 1:
            load_figures.append(
                figure(
                    f"load {n:,} circuits, per circuit",
                    r["per_circuit_ms"], "ms",
                    baseline=rtt, baseline_name="status command round trip",
                )
            )
        load_figures.append(
            figure(
                f"load {n:,} circuit{'s' if n > 1 else ''}, total",
                r["total_s"] * 1000, "ms",
                baseline=rtt * n, baseline_name="status command round trip x circuits",
            )
        )
    largest = runs[sizes[-1]]
    reload = largest["reload"]
    load_figures.append(
        figure(
            f"reload 1 circuit, changed wire ({sizes[-1]:,} loaded)",
            reload["total_ms"], "ms",
            baseline=largest["round_trip_ms"], baseline_name="status command round trip",
        )
    )

    n = sizes[-1]
    bare = _network_memory(n)
    grown = largest["rss_after"] - largest["rss_before"]
    per_circuit = grown / n
    # With fewer circuits than the goal names (--quick), the total is extrapolated.
    at_goal = (largest["rss_before"] + per_circuit * GOAL_CIRCUITS) / MB
    memory_figures = [
        figure(
            "pack RSS per circuit",
            per_circuit / 1024, "KB",
            baseline=bare["bytes_per_circuit"] / 1024,
            baseline_name="bare jet.network.Network per circuit, plain process",
            digits=1,
        ),
        figure(
            f"pack RSS with {GOAL_CIRCUITS:,} circuits"
            + (" (extrapolated)" if n < GOAL_CIRCUITS else ""),
            at_goal, "MB",
            baseline=largest["rss_before"] / MB, baseline_name="RSS of the empty pack",
            target=MEMORY_GOAL,
            digits=1,
        ),
    ]
    return {
        "load": {
            "description": "jet.loader.Loader against a pack subprocess; small 3-gadget circuits",
            "figures": load_figures,
            "raw": {"sizes": list(sizes), "runs": {str(k): v for k, v in runs.items()}},
        },
        "memory": {
            "description": "RSS of the pack process (psutil) before/after loading circuits",
            "figures": memory_figures,
            "raw": {
                "circuits": n,
                "pack_rss_before": largest["rss_before"],
                "pack_rss_after": largest["rss_after"],
                "pack_bytes_per_circuit": round(per_circuit),
                "extrapolated_to": GOAL_CIRCUITS if n < GOAL_CIRCUITS else None,
                "bare_networks": bare,
            },
        },
    }
