"""Pack groups: a replicated CPU-bound circuit's throughput with 1, 2 and 4 members.

For each size, a private mosquitto, that many ``jet pack --group`` processes, and
``jet load`` of one circuit with ``pack: <group>`` and ``replicas: <size>``: a
:class:`benchlib.busy.Busy` gadget (``ROUNDS`` SHA-256 hashes per message, about a
millisecond of CPU that holds the GIL, as Python gadget code does) between a device's
topic (each copy takes its share: a shared subscription) and its output topic.

One driver (:class:`benchlib.hop.Driver`: one connection, one thread) publishes at QoS 1
with ``WINDOW`` messages in flight and counts what comes out: msg/s with 1, 2 and 4
members, each against one member.  The work per message alone (no MQTT) is measured in
this process too, to say what one core could do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .busy import burn
from .common import REPO, BenchError, Child, Mosquitto, figure, goal, subprocess_env
from .hop import Driver

ROUNDS = 4000
WINDOW = 200
SIZES = (1, 2, 4)
SOURCE = "bench/groups/in"
OUTPUT = "pack/work/busy/0"
BUSY = "benchlib.busy"

APP = """
app: grouped-bench
circuits:
  work:
    pack: {group}
    replicas: {replicas}
    gadgets:
      busy: {{type: benchlib.busy.Busy, params: {{rounds: {rounds}}}}}
wires:
  - from: {{topic: {source}, format: msgpack}}
    to: work.busy.in
"""


def work_alone(n: int = 200) -> float:
    """Messages per second one core does of the gadget's work alone."""
    started = time.perf_counter()
    for _ in range(n):
        burn(ROUNDS)
    return n / (time.perf_counter() - started)


def one_size(workdir: Path, size: int, n: int) -> dict[str, Any]:
    group = f"bench{size}"
    with ExitStack() as stack:
        mq = Mosquitto(workdir)
        stack.callback(mq.stop)
        members = []
        for i in range(size):
            member = Child(
                ["-m", "jet.cli", "pack", "--broker", mq.url, "--id", f"m{i}", "--group", group,
                 "--allow", BUSY],
                name=f"member-{size}-{i}", ready=f"pack m{i} in group {group} on ",
            )
            stack.callback(member.stop)
            members.append(member)
        app = workdir / f"groups-{size}.yaml"
        app.write_text(APP.format(group=group, replicas=size, rounds=ROUNDS, source=SOURCE))
        deadline = time.monotonic() + 20
        while True:  # the members see each other through their retained presences
            done = subprocess.run(
                [sys.executable, "-m", "jet.cli", "load", str(app), "--broker", mq.url,
                 "--allow", BUSY], capture_output=True, text=True, env=subprocess_env(),
                cwd=REPO, timeout=60,
            )
            if done.returncode == 0:
                break
            if time.monotonic() > deadline or "live members" not in done.stderr:
                raise BenchError(f"jet load ({size} members): {done.stderr.strip()}")
            time.sleep(0.3)
        driver = Driver(mq.port, f"bench-groups-{size}", SOURCE, OUTPUT, 1)
        try:
            if not driver.probe():
                raise BenchError(f"{size} members: nothing came through in 60 s")
            cpu_before = [m.cpu_seconds() for m in members]
            result = driver.throughput(n, WINDOW, max_s=120.0)
            result["member_cpu_s"] = [
                round(m.cpu_seconds() - b, 2) for m, b in zip(members, cpu_before, strict=True)
            ]
            # the cores the members got: on a shared machine, what limits the figure
            result["member_cores"] = round(
                sum(result["member_cpu_s"]) / result["seconds"], 2) if result["seconds"] else 0.0
        finally:
            driver.close()
        if not result["complete"]:
            raise BenchError(f"{size} members: {result['received']} of {n} came through")
        return result


def run(quick: bool) -> dict[str, Any]:
    n = 800 if quick else 4_000
    raw: dict[str, Any] = {"rounds": ROUNDS, "window": WINDOW, "values": n,
                           "work_alone_msg_per_s": round(work_alone(), 1)}
    with tempfile.TemporaryDirectory(prefix="jet-bench-groups-") as tmp:
        for size in SIZES:
            raw[f"members_{size}"] = one_size(Path(tmp), size, n)
    one = raw["members_1"]["msg_per_s"]
    figures = [
        figure("replicated CPU-bound circuit, 1 member", one, "msg/s",
               baseline=raw["work_alone_msg_per_s"], baseline_name="the work alone, one core"),
        figure("replicated CPU-bound circuit, 2 members", raw["members_2"]["msg_per_s"], "msg/s",
               baseline=one, baseline_name="1 member",
               target=goal("about 2x one member on 2 cores (>= 1.6x)", ">=", 1.6, on="ratio")),
        figure("replicated CPU-bound circuit, 4 members", raw["members_4"]["msg_per_s"], "msg/s",
               baseline=one, baseline_name="1 member"),
    ]
    # On a machine shared with other work the members get less than a core each: the
    # throughput per core they got says whether the group itself scales.
    per_core = {size: raw[f"members_{size}"]["msg_per_s"] / raw[f"members_{size}"]["member_cores"]
                for size in SIZES if raw[f"members_{size}"]["member_cores"]}
    if 1 in per_core and 2 in per_core:
        figures.append(figure("2 members, msg/s per core the members got", per_core[2],
                              "msg/s/core", baseline=per_core[1],
                              baseline_name="1 member, per core it got"))
    raw["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return {"description": "a replicated CPU-bound circuit (shared subscription) over 1, 2 and"
            " 4 members of a pack group", "raw": raw, "figures": figures}


if __name__ == "__main__":
    sys.exit("run through tools/bench --only groups")
