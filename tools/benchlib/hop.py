"""Figure 2: one MQTT hop (in topic -> process -> out topic), JET beside its peers.

Every system runs the whole time on one private mosquitto, each on its own
topics, and one load generator (this process, :class:`Driver`) measures them
the same way in interleaved rounds (the order rotates every round, so
machine drift hits all alike):

==========  ==============================================  ==============================
system      what relays                                     topics (QoS q)
==========  ==============================================  ==============================
relay       a plain paho-mqtt relay (:mod:`benchlib.relay`)  bench/relay/in/q -> .../out/q
jet         a ``jet pack`` with one forwarding gadget        bench/jet/in/q -> pack/fwd-qq/f/0
            (``jet.lib.ChangeOnly``; every payload differs)
nodered     Node-RED: mqtt in -> function -> mqtt out        bench/nodered/in/q -> .../out/q
            (only when installed, see :data:`NODE_RED`)
floor       nothing: the driver reads what it publishes      bench/floor/q
==========  ==============================================  ==============================

Per system, QoS and round: windowed throughput (N messages, 500 in flight end
to end), burst throughput (N messages open loop), latency at 2,000 msg/s
(p50/p99 after a warm-up), and the CPU of the relaying process (with its
children) and of mosquitto over each measurement.  Payloads are msgpack
``[perf_counter() at send, "padpadpad"]``, 20 bytes.  The figures are the
medians of the rounds.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import msgpack
import psutil

from jet import address
from jet.definition.model import CircuitDef, GadgetDef, circuit_to_msgpack
from jet.transport import broker as jet_broker
from jet.transport.client import Session

from .common import (
    TOOLS,
    BenchError,
    Child,
    Mosquitto,
    figure,
    free_port,
    goal,
    mosquitto,
    pack_process,
    stop_process,
)
from .common import percentile as pct
from .wire import MiniMqtt

PACK_ID = "bench"
WINDOW = 500  # messages in flight end to end during the windowed run
RATE = 2000.0  # offered rate of the latency run, msg/s
PAD = "padpadpad"  # with the timestamp: a 20-byte msgpack payload
#: Where ``npm install --prefix ~/.cache/jet-peers node-red`` puts Node-RED (env NODE_RED).
NODE_RED = Path(
    os.environ.get("NODE_RED", Path.home() / ".cache" / "jet-peers" / "node_modules" / "node-red")
)
NODE_RED_HINT = "npm install --prefix ~/.cache/jet-peers node-red"

VS_RELAY_GOAL = goal("JET >= the paho relay's throughput", ">=", 1.0, on="ratio")
VS_NODERED_GOAL = goal("JET >= 1.5x Node-RED's throughput", ">=", 1.5, on="ratio")
CPU_GOAL = goal("JET CPU/msg <= Node-RED's", "<=", 1.0, on="ratio")
P99_GOALS = {
    0: goal("p99 <= 2 ms at 2,000 msg/s", "<=", 2.0),
    1: goal("p99 <= 3 ms at 2,000 msg/s", "<=", 3.0),
}


#: A payload with its send time in it, and how that time is read back, by format.
PAYLOADS: dict[str, tuple[Callable[[float], bytes], Callable[[bytes], float]]] = {
    "msgpack": (lambda t: msgpack.packb([t, PAD]), lambda p: float(msgpack.unpackb(p)[0])),
    # what a device sends: one JSON object (about 40 bytes)
    "json": (lambda t: json.dumps({"t": t, "pad": PAD}, separators=(",", ":")).encode(),
             lambda p: float(json.loads(p)["t"])),
}


class Driver:
    """Producer and consumer on one connection and one thread (one clock for latency)."""

    def __init__(self, port: int, name: str, src: str, dst: str, qos: int,
                 payload: str = "msgpack") -> None:
        self.src, self.qos = src.encode(), qos
        self.received = 0
        self.last = 0.0
        self.latencies: list[float] | None = None
        #: the payload sent (its send time in it) and how its send time is read back
        self.pack, self._sent_at = PAYLOADS[payload]
        self.client = MiniMqtt(port, name, self._on_message)
        self.client.subscribe(dst, qos)

    def _on_message(self, _topic: bytes, payload: bytes, now: float) -> None:
        self.received += 1
        self.last = now
        if self.latencies is not None:
            self.latencies.append(now - self._sent_at(payload))

    def close(self) -> None:
        self.client.close()

    def probe(self, timeout: float = 60.0) -> bool:
        """One message every 0.2 s until one comes back (the hop is up)."""
        base = self.received
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.client.publish(self.src, self.pack(time.perf_counter()), self.qos)
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                self.client.poll(0.05)
            if self.received > base:
                self.drain(0.3)
                return True
        return False

    def drain(self, quiet: float) -> None:
        """Read until nothing arrives for ``quiet`` seconds (bounded by the run's size)."""
        for _ in range(1_000_000):
            if not self.client.poll(quiet):
                return

    def _wait(self, target: int, stall: float, deadline: float) -> bool:
        """Wait for ``target`` arrivals; False after ``stall`` s without one or at ``deadline``."""
        while self.received < target:
            if not self.client.poll(stall) or time.perf_counter() > deadline:
                return False
        return True

    def throughput(
        self, n: int, window: int, stall: float = 5.0, max_s: float = 60.0
    ) -> dict[str, Any]:
        base = self.received
        client, pack, clock = self.client, self.pack, time.perf_counter
        src, qos = self.src, self.qos
        sent = 0
        start = clock()
        while sent < n:
            room = min(n - sent, window - (sent - (self.received - base)))
            for _ in range(max(0, room)):
                client.publish(src, pack(clock()), qos)
            sent += max(0, room)
            if not client.poll(stall) and sent - (self.received - base) >= window:
                break  # stalled: count what came
            if clock() - start > max_s:
                break
        complete = self._wait(base + n, stall, start + max_s)
        got = self.received - base
        elapsed = (self.last - start) if got else 0.0
        return {
            "sent": n,
            "received": got,
            "complete": complete,
            "seconds": round(elapsed, 4),
            "msg_per_s": round(got / elapsed, 1) if elapsed > 0 else 0.0,
        }

    def latency(self, rate: float, seconds: float, stall: float = 5.0) -> dict[str, Any]:
        self.latencies = []
        base = self.received
        total = int(rate * seconds)
        client, pack, clock = self.client, self.pack, time.perf_counter
        src, qos = self.src, self.qos
        sent = 0
        start = clock()
        while sent < total:
            due = min(total, int((clock() - start) * rate) + 1)
            while sent < due:
                client.publish(src, pack(clock()), qos)
                sent += 1
            client.poll(max(0.0, start + sent / rate - clock()))
        offered = total / (clock() - start)
        complete = self._wait(base + total, stall, clock() + 30.0)
        samples = sorted(1000 * x for x in self.latencies)
        self.latencies = None
        return {
            "offered_msg_per_s": round(offered, 1),
            "sent": total,
            "received": len(samples),
            "complete": complete,
            "p50_ms": round(pct(samples, 50), 3),
            "p90_ms": round(pct(samples, 90), 3),
            "p99_ms": round(pct(samples, 99), 3),
            "max_ms": round(samples[-1], 3) if samples else None,
            "mean_ms": round(statistics.fmean(samples), 3) if samples else None,
        }


class Peer:
    """A relaying system: its topics per QoS and the CPU of its process tree."""

    def __init__(self, name: str, topics: Callable[[int], tuple[str, str]], pid: int | None):
        self.name = name
        self.topics = topics
        self._ps = psutil.Process(pid) if pid is not None else None

    def cpu_seconds(self) -> float:
        if self._ps is None:
            return 0.0
        total = 0.0
        for proc in [self._ps, *self._ps.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total


async def _load_forwarders(url: str) -> None:
    """One forwarding circuit per QoS, its input wired to the driver's topic."""
    async with Session(jet_broker.parse(url), name="bench") as session:
        for qos in (0, 1):
            circuit = CircuitDef(f"fwd-q{qos}", gadgets=(GadgetDef("f", "jet.lib.ChangeOnly"),))
            await session.request(
                address.container_conf("pack", PACK_ID),
                {
                    "cmd": "load",
                    "app": "bench",
                    "definition": circuit_to_msgpack(circuit),
                    # The bench's consumer reads f.out at this QoS, as a wire would.
                    "exports": {"f.out": {"bench.consumer": qos}},
                },
            )
            await session.request(
                address.circuit_conf("pack", circuit.name),
                {"cmd": "wire", "input": "f.in", "topic": f"bench/jet/in/{qos}", "qos": qos},
            )


def node_red_missing() -> str | None:
    """Why Node-RED cannot run here, or None."""
    if shutil.which("node") is None:
        return f"node is not installed (apt-get install nodejs), then {NODE_RED_HINT}"
    if not (NODE_RED / "red.js").exists():
        return f"Node-RED is not installed in {NODE_RED}: {NODE_RED_HINT}"
    return None


@contextmanager
def node_red(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Node-RED with tools/benchlib/nodered/flows.json on the broker at ``port``."""
    with tempfile.TemporaryDirectory(prefix="jet-bench-nodered-") as tmp:
        folder = Path(tmp)
        source = TOOLS / "benchlib" / "nodered"
        flows = (source / "flows.json").read_text().replace("__PORT__", str(port))
        (folder / "flows.json").write_text(flows)
        shutil.copy(source / "settings.js", folder / "settings.js")
        log = folder / "node-red.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    "node",
                    str(NODE_RED / "red.js"),
                    "--userDir",
                    tmp,
                    "--settings",
                    str(folder / "settings.js"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp,
                env=dict(os.environ, NR_PORT=str(free_port())),
            )
            try:
                yield proc
            finally:
                stop_process(proc)


def _measure(
    broker: Mosquitto, peer: Peer, qos: int, tag: str, action: Callable[[Driver], dict[str, Any]],
    payload: str = "msgpack",
) -> dict[str, Any]:
    """Run ``action`` with a fresh driver; add the CPU the relaying process and broker used."""
    broker_ps = psutil.Process(broker.proc.pid)
    driver = Driver(broker.port, f"bench-{peer.name}-{qos}-{tag}", *peer.topics(qos), qos,
                    payload)
    try:
        if tag == "latency":  # warm-up at the same rate, not recorded
            driver.latency(RATE, 0.5)
            driver.drain(0.2)
        cpu0, bcpu0 = peer.cpu_seconds(), sum(broker_ps.cpu_times()[:2])
        wall0 = time.perf_counter()
        result = action(driver)
        wall = time.perf_counter() - wall0
        cpu, bcpu = peer.cpu_seconds() - cpu0, sum(broker_ps.cpu_times()[:2]) - bcpu0
        driver.drain(0.3)
    finally:
        driver.close()
    got = max(1, result["received"])
    result["wall_s"] = round(wall, 3)
    result["cpu_pct"] = round(100 * cpu / wall, 1)
    result["cpu_us_per_msg"] = round(1e6 * cpu / got, 1)
    result["broker_cpu_pct"] = round(100 * bcpu / wall, 1)
    return result


def warm_up(broker: Mosquitto, peers: list[Peer], qos: int, n: int,
            payload: str = "msgpack") -> None:
    """Each peer up and warm: a probe until one message comes back, then ``n`` unrecorded."""
    for peer in peers:
        driver = Driver(broker.port, f"bench-{peer.name}-{qos}-warm", *peer.topics(qos), qos,
                        payload)
        try:
            if not driver.probe():
                raise BenchError(f"{peer.name} QoS {qos}: no message came back in 60 s")
            driver.throughput(n, WINDOW)
        finally:
            driver.close()


def _round(broker: Mosquitto, peer: Peer, qos: int, n: int, seconds: float) -> dict[str, Any]:
    return {
        "windowed": _measure(broker, peer, qos, "windowed", lambda d: d.throughput(n, WINDOW)),
        "burst": _measure(broker, peer, qos, "burst", lambda d: d.throughput(n, n)),
        "latency": _measure(broker, peer, qos, "latency", lambda d: d.latency(RATE, seconds)),
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def med(kind: str, field: str) -> float:
        return float(statistics.median(row[kind][field] for row in rows))

    return {
        "rounds": len(rows),
        "windowed_msg_per_s": med("windowed", "msg_per_s"),
        "burst_msg_per_s": med("burst", "msg_per_s"),
        "burst_all_delivered": all(r["burst"]["received"] == r["burst"]["sent"] for r in rows),
        "p50_ms": med("latency", "p50_ms"),
        "p99_ms": med("latency", "p99_ms"),
        "p99_ms_range": [
            min(r["latency"]["p99_ms"] for r in rows),
            max(r["latency"]["p99_ms"] for r in rows),
        ],
        "cpu_pct_at_2k": med("latency", "cpu_pct"),
        "cpu_us_per_msg_at_2k": med("latency", "cpu_us_per_msg"),
        "cpu_us_per_msg_windowed": med("windowed", "cpu_us_per_msg"),
        "broker_cpu_pct_at_2k": med("latency", "broker_cpu_pct"),
    }


def peer_table(summary: dict[str, dict[str, Any]]) -> str:
    """The issue's table: one row per system, medians of the rounds."""
    names = {
        "relay": "plain paho relay (Python)",
        "nodered": "Node-RED (mqtt in -> function -> mqtt out)",
        "jet": "JET pack, one forwarding gadget",
        "floor": "floor (broker and load generator only)",
    }
    lines = [
        f"{'hop (in topic -> process -> out topic)':<44} {'QoS 0 msg/s':>11} {'QoS 1 msg/s':>11}"
        f" {'p99 @2k q0/q1 ms':>17} {'CPU @2k q0/q1':>14} {'us/msg @2k q0/q1':>17}"
    ]
    for system, label in names.items():
        q0, q1 = summary.get(f"{system}/q0"), summary.get(f"{system}/q1")
        if q0 is None or q1 is None:
            continue
        lines.append(
            f"{label:<44} {q0['windowed_msg_per_s']:>11,.0f} {q1['windowed_msg_per_s']:>11,.0f}"
            f" {q0['p99_ms']:>8.2f}/{q1['p99_ms']:<8.2f}"
            f" {q0['cpu_pct_at_2k']:>6.0f}%/{q1['cpu_pct_at_2k']:.0f}%".ljust(15)
            + f" {q0['cpu_us_per_msg_at_2k']:>8.0f}/{q1['cpu_us_per_msg_at_2k']:.0f}"
        )
    return "\n".join(lines)


def run(quick: bool) -> dict[str, Any]:
    n = 3_000 if quick else 10_000
    rounds = 2 if quick else 8
    latency_seconds = 1.5 if quick else 4.0
    raw: dict[str, Any] = {
        "window": WINDOW,
        "throughput_values": n,
        "rounds": rounds,
        "latency_rate": RATE,
        "latency_seconds": latency_seconds,
        "payload_bytes": len(msgpack.packb([time.perf_counter(), PAD])),
        "statistic": "median of the rounds",
    }
    missing = node_red_missing()
    if missing:
        raw["nodered_skipped"] = missing
    with ExitStack() as stack:
        broker = stack.enter_context(mosquitto())
        pack = stack.enter_context(pack_process(broker.url, PACK_ID))
        asyncio.run(_load_forwarders(broker.url))
        relay = stack.enter_context(
            Child(
                [
                    str(TOOLS / "benchlib" / "relay.py"),
                    str(broker.port),
                    "bench/relay/in",
                    "bench/relay/out",
                ],
                name="relay",
                ready="ready",
            )
        )
        peers = [
            Peer("relay", lambda q: (f"bench/relay/in/{q}", f"bench/relay/out/{q}"), relay.pid),
            Peer(
                "jet",
                lambda q: (f"bench/jet/in/{q}", address.output("pack", f"fwd-q{q}", "f", 0)),
                pack.pid,
            ),
        ]
        if not missing:
            nodered = stack.enter_context(node_red(broker.port))
            peers.append(
                Peer(
                    "nodered",
                    lambda q: (f"bench/nodered/in/{q}", f"bench/nodered/out/{q}"),
                    nodered.pid,
                )
            )
        peers.append(Peer("floor", lambda q: (f"bench/floor/{q}", f"bench/floor/{q}"), None))
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {p.name: {0: [], 1: []} for p in peers}
        for qos in (0, 1):
            warm_up(broker, peers, qos, n // 5)
            for number in range(rounds):
                shift = number % len(peers)
                for peer in peers[shift:] + peers[:shift]:
                    row = {"round": number, **_round(broker, peer, qos, n, latency_seconds)}
                    runs[peer.name][qos].append(row)
                    print(
                        f"  q{qos} round {number + 1}/{rounds} {peer.name:8s}"
                        f" {row['windowed']['msg_per_s']:>9,.0f} msg/s"
                        f"  p99 {row['latency']['p99_ms']:.2f} ms"
                        f"  cpu@2k {row['latency']['cpu_pct']:.0f}%",
                        flush=True,
                    )
    summary = {
        f"{name}/q{qos}": _summary(rows[qos]) for name, rows in runs.items() for qos in (0, 1)
    }
    raw["runs"] = runs
    figures: list[dict[str, Any]] = []
    for qos in (0, 1):
        jet, relay_sum = summary[f"jet/q{qos}"], summary[f"relay/q{qos}"]
        red = summary.get(f"nodered/q{qos}")
        figures.append(
            figure(
                f"MQTT hop throughput, QoS {qos}",
                jet["windowed_msg_per_s"],
                "msg/s",
                baseline=relay_sum["windowed_msg_per_s"],
                baseline_name="paho relay",
                target=VS_RELAY_GOAL,
                digits=0,
            )
        )
        if red is not None:
            figures.append(
                figure(
                    f"MQTT hop throughput vs Node-RED, QoS {qos}",
                    jet["windowed_msg_per_s"],
                    "msg/s",
                    baseline=red["windowed_msg_per_s"],
                    baseline_name="Node-RED",
                    target=VS_NODERED_GOAL,
                    digits=0,
                )
            )
            figures.append(
                figure(
                    f"MQTT hop CPU per message at 2,000 msg/s, QoS {qos}",
                    jet["cpu_us_per_msg_at_2k"],
                    "us/msg",
                    baseline=red["cpu_us_per_msg_at_2k"],
                    baseline_name="Node-RED",
                    target=CPU_GOAL,
                )
            )
        figures.append(
            figure(
                f"MQTT hop latency p99, QoS {qos}, {RATE:,.0f} msg/s",
                jet["p99_ms"],
                "ms",
                baseline=relay_sum["p99_ms"],
                baseline_name="paho relay",
                target=P99_GOALS[qos],
            )
        )
    return {
        "description": "one hop through mosquitto: JET pack vs paho relay vs Node-RED",
        "figures": figures,
        "summary": summary,
        "peer_table": peer_table(summary),
        "raw": raw,
    }
