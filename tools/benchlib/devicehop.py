"""The JSON hop: a device's topic -> a gadget -> a device's topic, beside a paho relay
of the same bytes (issue 13).

==========  ===============================================  ==============================
system      what relays                                      topics (QoS q)
==========  ===============================================  ==============================
relay       the plain paho relay (:mod:`benchlib.relay`)     bench/jsonrelay/in/q -> out/q
jet         a ``jet pack``: a wire reading JSON               bench/json/in/q ->
            (``format: json``) into ``jet.lib.ChangeOnly``,   bench/json/out/q
            its output written as JSON to a device's topic
==========  ===============================================  ==============================

Payloads are what a device sends: one JSON object, ``{"t": <send time>, "pad":
"padpadpad"}`` (about 40 bytes).  JET reads it into a value, the gadget passes
it on, JET writes it as JSON again; the relay moves the bytes.  Per QoS, in
interleaved rounds: windowed throughput (500 in flight), latency at 2,000 msg/s
and CPU, the medians of the rounds (the same driver and measures as the MQTT hop).
"""

from __future__ import annotations

import asyncio
from contextlib import ExitStack
from typing import Any

from jet import address
from jet.definition.model import CircuitDef, GadgetDef, circuit_to_msgpack
from jet.transport import broker as jet_broker
from jet.transport.client import Session

from .common import TOOLS, Child, figure, goal, mosquitto, pack_process
from .hop import RATE, WINDOW, Peer, _measure, _summary, warm_up

PACK_ID = "bench"
VS_RELAY_GOAL = goal("JSON hop >= 0.6x the paho relay's throughput", ">=", 0.6, on="ratio")


async def _load(url: str) -> None:
    """One circuit per QoS: a device's JSON in, through a gadget, JSON out."""
    async with Session(jet_broker.parse(url), name="bench") as session:
        for qos in (0, 1):
            circuit = CircuitDef(f"json-q{qos}", gadgets=(GadgetDef("f", "jet.lib.ChangeOnly"),))
            await session.request(address.container_conf("pack", PACK_ID), {
                "cmd": "load", "app": "bench", "definition": circuit_to_msgpack(circuit),
                "foreign": {"f.out": [{"topic": f"bench/json/out/{qos}", "qos": qos,
                                       "format": "json"}]},
            })
            await session.request(address.circuit_conf("pack", circuit.name), {
                "cmd": "wire", "input": "f.in", "topic": f"bench/json/in/{qos}", "qos": qos,
                "payload": {"format": "json"},
            })


def run(quick: bool) -> dict[str, Any]:
    n = 3_000 if quick else 10_000
    rounds = 2 if quick else 5
    seconds = 1.5 if quick else 3.0
    raw: dict[str, Any] = {"window": WINDOW, "throughput_values": n, "rounds": rounds,
                           "latency_rate": RATE, "latency_seconds": seconds,
                           "statistic": "median of the rounds"}
    with ExitStack() as stack:
        broker = stack.enter_context(mosquitto())
        pack = stack.enter_context(pack_process(broker.url, PACK_ID))
        asyncio.run(_load(broker.url))
        relay = stack.enter_context(Child(
            [str(TOOLS / "benchlib" / "relay.py"), str(broker.port), "bench/jsonrelay/in",
             "bench/jsonrelay/out"], name="relay", ready="ready"))
        peers = [
            Peer("relay", lambda q: (f"bench/jsonrelay/in/{q}", f"bench/jsonrelay/out/{q}"),
                 relay.pid),
            Peer("jet", lambda q: (f"bench/json/in/{q}", f"bench/json/out/{q}"), pack.pid),
        ]
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {p.name: {0: [], 1: []} for p in peers}
        for qos in (0, 1):
            warm_up(broker, peers, qos, n // 5, "json")
            for number in range(rounds):
                for peer in peers if number % 2 == 0 else peers[::-1]:
                    row = {
                        "round": number,
                        "windowed": _measure(broker, peer, qos, "windowed",
                                             lambda d: d.throughput(n, WINDOW), "json"),
                        "latency": _measure(broker, peer, qos, "latency",
                                            lambda d: d.latency(RATE, seconds), "json"),
                    }
                    row["burst"] = row["windowed"]  # (the summary reads one; not measured)
                    runs[peer.name][qos].append(row)
                    print(f"  json q{qos} round {number + 1}/{rounds} {peer.name:6s}"
                          f" {row['windowed']['msg_per_s']:>9,.0f} msg/s"
                          f"  p99 {row['latency']['p99_ms']:.2f} ms", flush=True)
    summary = {f"{name}/q{qos}": _summary(rows[qos]) for name, rows in runs.items()
               for qos in (0, 1)}
    raw["runs"] = runs
    figures = []
    for qos in (0, 1):
        jet, relay_sum = summary[f"jet/q{qos}"], summary[f"relay/q{qos}"]
        figures.append(figure(
            f"JSON hop throughput (device topic -> gadget -> device topic), QoS {qos}",
            jet["windowed_msg_per_s"], "msg/s", baseline=relay_sum["windowed_msg_per_s"],
            baseline_name="paho relay, same bytes", target=VS_RELAY_GOAL, digits=0))
        figures.append(figure(
            f"JSON hop latency p99, QoS {qos}, {RATE:,.0f} msg/s", jet["p99_ms"], "ms",
            baseline=relay_sum["p99_ms"], baseline_name="paho relay, same bytes"))
    return {
        "description": "a device's JSON in, through a gadget, JSON out: JET pack vs paho relay",
        "figures": figures,
        "summary": summary,
        "raw": raw,
    }
