"""Figure 2: the cross-process hop through mosquitto, JET pack against a paho relay.

Both systems move a message from one topic to another in a separate
process: a ``jet pack`` subprocess hosting a one-gadget circuit
(``jet.lib.Scale``, factor 1.0) whose input is wired to ``bench/jet/in/<qos>``
and whose output is published on ``pack/hop-q<qos>/s/0``; and the plain
paho-mqtt relay of :mod:`benchlib.relay`.  The driver (this process: one
connection, :mod:`benchlib.wire`, publishing the input and subscribed to
the output) measures both the same way:

- throughput: N values sent with at most ``WINDOW`` in flight end to end
  (so no queue anywhere grows without bound and nothing is dropped);
  msg/s from the first send to the last arrival;
- latency: values sent at a fixed offered rate (2,000 msg/s), each carrying
  ``time.perf_counter()`` at send time; the driver receives them itself, so
  one clock measures both ends.

The driver also measures itself with the broker alone (it subscribes to the
topic it publishes: no hop), the floor under both systems; that goes in
``raw`` as ``floor``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgpack
import psutil

from jet import address
from jet.definition.model import CircuitDef, GadgetDef, circuit_to_msgpack
from jet.transport import broker as jet_broker
from jet.transport.client import Session

from .common import TOOLS, BenchError, Child, Mosquitto, figure, goal, mosquitto, pack_process
from .common import percentile as pct
from .wire import MiniMqtt

PACK_ID = "bench"
WINDOW = 500  # messages in flight end to end during the throughput run
RATE = 2000.0  # offered rate of the latency run, msg/s
THROUGHPUT_GOAL = goal("JET >= 70% of the relay's throughput", ">=", 0.70, on="ratio")
LATENCY_GOAL = goal("p99 <= 5 ms at 2,000 msg/s", "<=", 5.0)


def jet_topics(qos: int) -> tuple[str, str]:
    return f"bench/jet/in/{qos}", address.output("pack", f"hop-q{qos}", "s", 0)


def relay_topics(qos: int) -> tuple[str, str]:
    return f"bench/relay/in/{qos}", f"bench/relay/out/{qos}"


class Driver:
    """Producer and consumer on one connection and one thread (one clock for latency)."""

    def __init__(self, port: int, name: str, src: str, dst: str, qos: int) -> None:
        self.src, self.qos = src.encode(), qos
        self.received = 0
        self.last = 0.0
        self.latencies: list[float] | None = None
        self.client = MiniMqtt(port, name, self._on_message)
        self.client.subscribe(dst, qos)

    def _on_message(self, _topic: bytes, payload: bytes, now: float) -> None:
        self.received += 1
        self.last = now
        if self.latencies is not None:
            self.latencies.append(now - msgpack.unpackb(payload))

    def close(self) -> None:
        self.client.close()

    def _wait_received(self, target: int, stall: float) -> bool:
        """Wait until ``target`` messages arrived; False once none came for ``stall`` s."""
        while self.received < target:
            if not self.client.poll(stall):
                return False
        return True

    def throughput(self, n: int, stall: float = 10.0) -> dict[str, Any]:
        base = self.received
        client, pack, clock = self.client, msgpack.packb, time.perf_counter
        src, qos = self.src, self.qos
        sent = 0
        start = clock()
        while sent < n:
            room = min(n - sent, WINDOW - (sent - (self.received - base)))
            for _ in range(room):
                client.publish(src, pack(clock()), qos)
            sent += max(0, room)
            if not client.poll(stall) and sent - (self.received - base) >= WINDOW:
                raise BenchError(
                    f"{self.src.decode()}: stalled, {self.received - base} of {sent} came back"
                )
        complete = self._wait_received(base + n, stall)
        got = self.received - base
        elapsed = self.last - start
        return {
            "sent": n,
            "received": got,
            "complete": complete,
            "seconds": round(elapsed, 4),
            "msg_per_s": got / elapsed if elapsed > 0 else 0.0,
        }

    def latency(self, rate: float, seconds: float, stall: float = 5.0) -> dict[str, Any]:
        self.latencies = []
        base = self.received
        total = int(rate * seconds)
        client, pack, clock = self.client, msgpack.packb, time.perf_counter
        src, qos = self.src, self.qos
        sent = 0
        start = clock()
        while sent < total:
            now = clock()
            due = min(total, int((now - start) * rate) + 1)
            while sent < due:
                client.publish(src, pack(clock()), qos)
                sent += 1
            client.poll(max(0.0, start + sent / rate - clock()))
        offered = total / (clock() - start)
        complete = self._wait_received(base + total, stall)
        samples = sorted(1000 * x for x in self.latencies)
        self.latencies = None
        over = sum(1 for x in samples if x > LATENCY_GOAL["threshold"])
        return {
            "offered_msg_per_s": round(offered, 1),
            "seconds": seconds,
            "sent": total,
            "received": len(samples),
            "complete": complete,
            "p50_ms": round(pct(samples, 50), 3),
            "p90_ms": round(pct(samples, 90), 3),
            "p99_ms": round(pct(samples, 99), 3),
            "max_ms": round(samples[-1], 3) if samples else None,
            "mean_ms": round(statistics.fmean(samples), 3) if samples else None,
            "over_5ms_fraction": round(over / len(samples), 5) if samples else None,
        }


async def _load_hops(url: str) -> None:
    """One circuit per QoS in the pack, its input wired to the driver's topic."""
    async with Session(jet_broker.parse(url), name="bench") as session:
        for qos in (0, 1):
            circuit = CircuitDef(
                f"hop-q{qos}", gadgets=(GadgetDef("s", "jet.lib.Scale", {"factor": 1.0}),)
            )
            await session.request(
                address.container_conf("pack", PACK_ID),
                {
                    "cmd": "load",
                    "app": "bench",
                    "definition": circuit_to_msgpack(circuit),
                    # The bench's consumer reads s.out at this QoS, as a wire would.
                    "exports": {"s.out": {"bench.consumer": qos}},
                },
            )
            await session.request(
                address.circuit_conf("pack", circuit.name),
                {"cmd": "wire", "input": "s.in", "topic": jet_topics(qos)[0], "qos": qos},
            )


def relay_process(port: int, qos: int) -> Child:
    src, dst = relay_topics(qos)
    return Child(
        [str(TOOLS / "benchlib" / "relay.py"), str(port), str(qos), src, dst],
        name=f"relay-{qos}",
        ready="ready",
    )


def _floor(broker: Mosquitto, qos: int, n: int, seconds: float) -> dict[str, Any]:
    """The driver and broker alone: publish to a topic the driver itself subscribes."""
    topic = f"bench/floor/{qos}"
    driver = Driver(broker.port, f"bench-floor-{qos}", topic, topic, qos)
    try:
        driver.throughput(n // 10)
        throughput = driver.throughput(n)
        driver.latency(RATE, 0.5)
        return {"throughput": throughput, "latency": driver.latency(RATE, seconds)}
    finally:
        driver.close()


def _measure(
    broker: Mosquitto,
    hopper: Child,
    system: str,
    qos: int,
    topic_pair: tuple[str, str],
    action: Callable[[Driver], dict[str, Any]],
) -> dict[str, Any]:
    """Run ``action`` with a fresh driver; add the CPU the hop process and broker used."""
    broker_ps = psutil.Process(broker.proc.pid)
    driver = Driver(broker.port, f"bench-driver-{system}-{qos}", *topic_pair, qos)
    try:
        cpu0, bcpu0 = hopper.cpu_seconds(), sum(broker_ps.cpu_times()[:2])
        result = action(driver)
        cpu, bcpu = hopper.cpu_seconds() - cpu0, sum(broker_ps.cpu_times()[:2]) - bcpu0
    finally:
        driver.close()
    got = max(1, result["received"])
    result["hop_process_cpu_us_per_msg"] = round(1e6 * cpu / got, 1)
    result["broker_cpu_us_per_msg"] = round(1e6 * bcpu / got, 1)
    return result


def run(quick: bool) -> dict[str, Any]:
    n = 3_000 if quick else 10_000
    repeats = 1 if quick else 3
    latency_seconds = 1.5 if quick else 4.0
    raw: dict[str, Any] = {
        "window": WINDOW,
        "throughput_values": n,
        "throughput_repeats": repeats,
        "latency_rate": RATE,
        "latency_seconds": latency_seconds,
        "jet_output_qos": 1,  # a pack publishes every output at QoS 1, whatever the wire's
        "statistic": "median of the repeats (throughput)",
    }
    figures: list[dict[str, Any]] = []
    with mosquitto() as broker, pack_process(broker.url, PACK_ID) as pack:
        asyncio.run(_load_hops(broker.url))
        for qos in (0, 1):
            with relay_process(broker.port, qos) as relay:
                systems = (("relay", relay, relay_topics(qos)), ("jet", pack, jet_topics(qos)))
                runs: dict[str, list[dict[str, Any]]] = {"relay": [], "jet": []}
                for system, proc, pair in systems:  # warm-up, not recorded
                    _measure(broker, proc, system, qos, pair, lambda d: d.throughput(n // 10))
                for _ in range(repeats):  # interleaved: machine drift hits both alike
                    for system, proc, pair in systems:
                        runs[system].append(
                            _measure(broker, proc, system, qos, pair, lambda d: d.throughput(n))
                        )
                latency: dict[str, dict[str, Any]] = {}
                for system, proc, pair in systems:
                    _measure(broker, proc, system, qos, pair, lambda d: d.latency(RATE, 0.5))
                    latency[system] = _measure(
                        broker, proc, system, qos, pair,
                        lambda d: d.latency(RATE, latency_seconds),
                    )
            median = {
                s: statistics.median(r["msg_per_s"] for r in runs[s]) for s in ("jet", "relay")
            }
            raw[f"qos{qos}"] = {
                "throughput": runs,
                "latency": latency,
                "floor": _floor(broker, qos, n, min(2.0, latency_seconds)),
            }
            figures.append(
                figure(
                    f"MQTT hop throughput, QoS {qos}",
                    median["jet"],
                    "msg/s",
                    baseline=median["relay"],
                    baseline_name=f"paho relay, QoS {qos}",
                    target=THROUGHPUT_GOAL,
                    digits=0,
                )
            )
            for stat, target in (("p50", None), ("p99", LATENCY_GOAL)):
                figures.append(
                    figure(
                        f"MQTT hop latency {stat}, QoS {qos}, {RATE:,.0f} msg/s",
                        latency["jet"][f"{stat}_ms"],
                        "ms",
                        baseline=latency["relay"][f"{stat}_ms"],
                        baseline_name=f"paho relay, QoS {qos}",
                        target=target,
                    )
                )
    return {
        "description": "pack subprocess with one gadget between two topics vs a paho relay",
        "figures": figures,
        "raw": raw,
    }
