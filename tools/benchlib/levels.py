"""Levels: machine messages over level daemons beside mosquitto bridges, and level calls.

Two chains of three mosquittos each, top <- middle <- bottom:

- **JET**: a ``jet level`` process per level (middle's parent is top,
  bottom's parent is middle), each carrying ``machine/functions/#`` down;
- **bridge** (the baseline): the middle mosquitto bridges ``machine/functions/#``
  in from the top one, the bottom from the middle (``connection`` /
  ``topic ... in 1``), which is how mosquitto alone would do it.

One driver (this process, :class:`benchlib.wire.MiniMqtt`: one thread, one
clock) publishes at QoS 1 on a top broker and receives on a lower one:

- latency over two levels (top -> bottom) at a fixed 1,000 msg/s: p50/p99;
- throughput of one level (top -> middle), 500 in flight: msg/s.

Then level calls, from a caller connected to the bottom broker (one session,
as a device keeps it): concurrent and sequential (``all_levels``) calls of a
trivial function over 1, 2 and 3 levels, median round trip of N calls.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import msgpack

from jet.levels import calls
from jet.transport import broker as jet_broker
from jet.transport.client import Session

from .common import TOOLS, BenchError, Child, Mosquitto, figure
from .common import percentile as pct
from .wire import MiniMqtt

RATE = 1000.0
WINDOW = 500
TOPIC = "machine/functions/bench"


class TwoBrokerDriver:
    """Publishes on one broker, receives on another; one thread and one clock."""

    def __init__(self, src_port: int, dst_port: int, name: str) -> None:
        self.received = 0
        self.last = 0.0
        self.latencies: list[float] | None = None
        self.pub = MiniMqtt(src_port, f"{name}-pub", lambda *_: None)
        self.sub = MiniMqtt(dst_port, f"{name}-sub", self._on_message)
        self.sub.subscribe(TOPIC, 1)

    def _on_message(self, _topic: bytes, payload: bytes, now: float) -> None:
        self.received += 1
        self.last = now
        if self.latencies is not None:
            self.latencies.append(now - msgpack.unpackb(payload)[0])

    def close(self) -> None:
        self.pub.close()
        self.sub.close()

    def poll(self, timeout: float) -> int:
        self.pub.poll(0.0)
        return self.sub.poll(timeout)

    def probe(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pub.publish(TOPIC.encode(), msgpack.packb([time.perf_counter(), "p"]), 1)
            end = time.monotonic() + 0.2
            while time.monotonic() < end:
                self.poll(0.05)
            if self.received:
                for _ in range(100_000):  # drain (bounded)
                    if not self.poll(0.3):
                        break
                return True
        return False

    def latency(self, seconds: float) -> dict[str, Any]:
        self.latencies = []
        base, total = self.received, int(RATE * seconds)
        clock, sent, start = time.perf_counter, 0, time.perf_counter()
        while sent < total:
            due = min(total, int((clock() - start) * RATE) + 1)
            while sent < due:
                self.pub.publish(TOPIC.encode(), msgpack.packb([clock(), "padpadpad"]), 1)
                sent += 1
            self.poll(max(0.0, start + sent / RATE - clock()))
        deadline = clock() + 30.0
        while self.received < base + total and clock() < deadline:
            if not self.poll(5.0):
                break
        samples = sorted(1000 * x for x in self.latencies)
        self.latencies = None
        return {"sent": total, "received": len(samples), "p50_ms": round(pct(samples, 50), 3),
                "p99_ms": round(pct(samples, 99), 3),
                "max_ms": round(samples[-1], 3) if samples else None}

    def throughput(self, n: int) -> dict[str, Any]:
        base, clock, sent = self.received, time.perf_counter, 0
        start = clock()
        while sent < n and clock() - start < 60.0:
            room = min(n - sent, WINDOW - (sent - (self.received - base)))
            for _ in range(max(0, room)):
                self.pub.publish(TOPIC.encode(), msgpack.packb([clock(), "padpadpad"]), 1)
            sent += max(0, room)
            if not self.poll(5.0) and sent - (self.received - base) >= WINDOW:
                break
        while self.received < base + n and clock() - start < 60.0:
            if not self.poll(5.0):
                break
        got = self.received - base
        elapsed = self.last - start if got else 0.0
        return {"sent": n, "received": got,
                "msg_per_s": round(got / elapsed, 1) if elapsed > 0 else 0.0}


@contextmanager
def chains(workdir: Path) -> Iterator[dict[str, list[Mosquitto]]]:
    """Two chains of three brokers: JET's (with level daemons) and the bridged one."""
    with ExitStack() as stack:
        jet = [Mosquitto(workdir) for _ in range(3)]
        for b in jet:
            stack.callback(b.stop)
        top = Mosquitto(workdir)
        stack.callback(top.stop)
        bridged = [top]
        for i in (1, 2):
            above = bridged[-1]
            conf = (f"connection up{i}\naddress 127.0.0.1:{above.port}\n"
                    f"topic {TOPIC.rsplit('/', 1)[0]}/# in 1\ncleansession true\n")
            b = Mosquitto(workdir, extra=conf)
            stack.callback(b.stop)
            bridged.append(b)
        names = ["top", "middle", "bottom"]
        for i, b in enumerate(jet):
            parent = ["--parent", jet[i - 1].url] if i else []
            child = Child([str(TOOLS / "benchlib" / "levelfuncs.py"), "level", names[i],
                           "--broker", b.url, *parent], name=f"level-{names[i]}",
                          ready=f"level {names[i]} on ")
            stack.callback(child.stop)
        yield {"jet": jet, "bridge": bridged}


async def _call_round_trips(bottom_url: str, n: int) -> dict[str, Any]:
    names = ["bottom", "middle", "top"]
    out: dict[str, Any] = {}
    async with Session(jet_broker.parse(bottom_url), name="bench-call") as session:
        for mode in ("concurrent", "sequential"):
            for count in (1, 2, 3):
                levels = names[:count]
                times = []
                for _ in range(n):
                    started = time.perf_counter()
                    results = [r async for r in calls(
                        session.link.broker, "echo", [1], mode=mode,
                        levels=levels, all_levels=True, timeout=5.0, session=session)]
                    if not all(r["ok"] for r in results) or len(results) != count:
                        raise BenchError(f"call {mode} over {levels}: {results}")
                    times.append(1000 * (time.perf_counter() - started))
                out[f"{mode}_{count}"] = {"median_ms": round(statistics.median(times), 3),
                                          "p90_ms": round(pct(sorted(times), 90), 3), "n": n}
    return out


def run(quick: bool) -> dict[str, Any]:
    seconds = 1.5 if quick else 4.0
    n = 3_000 if quick else 10_000
    calls_n = 20 if quick else 100
    raw: dict[str, Any] = {"rate": RATE, "latency_seconds": seconds, "throughput_values": n}
    with tempfile.TemporaryDirectory(prefix="jet-bench-levels-") as tmp, chains(Path(tmp)) as c:
        for system in ("jet", "bridge"):
            top, middle, bottom = c[system]
            two = TwoBrokerDriver(top.port, bottom.port, f"bench-{system}-2")
            try:
                if not two.probe():
                    raise BenchError(f"{system}: nothing came through two levels in 30 s")
                raw[f"{system}_latency"] = two.latency(seconds)
            finally:
                two.close()
            one = TwoBrokerDriver(top.port, middle.port, f"bench-{system}-1")
            try:
                if not one.probe():
                    raise BenchError(f"{system}: nothing came through one level in 30 s")
                raw[f"{system}_throughput"] = one.throughput(n)
            finally:
                one.close()
        raw["calls"] = asyncio.run(_call_round_trips(c["jet"][2].url, calls_n))
    jl, bl = raw["jet_latency"], raw["bridge_latency"]
    jt, bt = raw["jet_throughput"], raw["bridge_throughput"]
    figures = [
        figure("machine message latency p50, two levels, 1,000 msg/s", jl["p50_ms"], "ms",
               baseline=bl["p50_ms"], baseline_name="mosquitto bridges"),
        figure("machine message latency p99, two levels, 1,000 msg/s", jl["p99_ms"], "ms",
               baseline=bl["p99_ms"], baseline_name="mosquitto bridges"),
        figure("one level daemon's forwarding throughput, QoS 1", jt["msg_per_s"], "msg/s",
               baseline=bt["msg_per_s"], baseline_name="mosquitto bridge"),
    ]
    for count in (1, 2, 3):
        conc = raw["calls"][f"concurrent_{count}"]["median_ms"]
        seq = raw["calls"][f"sequential_{count}"]["median_ms"]
        figures.append(figure(f"level call round trip over {count} level(s), concurrent", conc,
                              "ms", baseline=seq, baseline_name="sequential (all levels)"))
    return {"description": "machine messages over level daemons vs mosquitto bridges; "
            "level calls", "raw": raw, "figures": figures}


if __name__ == "__main__":
    sys.exit("run through tools/bench --only levels")
