"""Devices: 10,000 simulated devices joining, a circuit for each, the registry's rate
(issue 14).

Real processes on one private mosquitto: two ``jet pack``, ``jet devices serve`` on a
SQLite file with a class directory whose classes (thermo, plug, meter) have a circuit
template (plug-n-process: ``pnp-<uid>``, a thermostat reading the device's
temperature and commanding its heater), and ``jet device-sim`` joining N devices in
the site layout at a fixed rate, spread over zones.

1. **Joining**: the time from the first join until every device's circuit runs
   (counted from the packs' retained circuit statuses, followed live by a paho
   subscriber), beside the time the joins themselves take (N / rate), and how far
   after the last join the last circuit ran.
2. **Memory**: the packs' RSS (``/proc/<pid>/status`` VmRSS) before and after, per
   instance; beside a bare process building the same circuits as ``Network`` objects.
3. **Registry rate**: a burst of one message from every device (a post type no circuit
   reads) published at once; the time until the SQLite file holds every one of them,
   for the registry server, then for one server of a group (``--group``) alone and for
   two (the same SQLite file); beside
   the same mosquitto's delivery of the same burst to one paho subscriber, and the
   SQLite store alone (the same calls in a loop, one process).

Every wait is bounded in time; progress is printed as it goes.  ``JET_BENCH_DEVICES``
and ``JET_BENCH_JOIN_RATE`` override N and the rate (development runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import paho.mqtt.client as mqtt
import psutil

from .common import REPO, BenchError, Child, Mosquitto, figure, goal, mosquitto, subprocess_env
from .wire import MiniMqtt

CLASS = """\
class: {name}
silence: 600
template: app.yaml
grace: 5
"""
#: The thermo template the tests run too (tests/test_devices.py).
TEMPLATE = (REPO / "circuits" / "classes" / "thermo-app.yaml").read_text(encoding="utf-8")
HOST = "site"
PACKS = ("p1", "p2")
LAG_GOAL = goal("every instance runs within a minute of the last join", "<=", 60.0)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _vmrss(pid: int) -> int:
    """Bytes of resident memory, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for {pid}")


def _topic(number: int, zones: int, post_type: str) -> str:
    """Device ``number``'s topic, as ``SiteDevices`` names it."""
    kind = ("thermo", "plug", "meter")[number % 3]
    return f"{HOST}/zone-{number % zones}/{kind}/d{number:05d}/{post_type}"


class Instances:
    """The ``pnp-`` circuits online now, from the packs' retained circuit statuses (a
    paho subscriber in its own thread), and when their count first reached each value."""

    def __init__(self, port: int) -> None:
        self.online: set[str] = set()
        self.reached: dict[int, float] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-instances")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("pack/+/status", qos=0)
        self.client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        name = message.topic.split("/")[1]
        state = app = None
        if message.payload:
            with contextlib.suppress(ValueError, msgpack.UnpackException):
                status = msgpack.unpackb(message.payload)
                if isinstance(status, dict):
                    state, app = status.get("state"), str(status.get("app", ""))
        with self._lock:
            if state == "online" and app is not None and app.startswith("pnp-"):
                self.online.add(name)
                self.reached.setdefault(len(self.online), time.time())
            else:
                self.online.discard(name)

    def count(self) -> int:
        with self._lock:
            return len(self.online)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Burst:
    """One QoS 1 message per topic, all queued at once on one connection
    (:class:`benchlib.wire.MiniMqtt`: the publisher costs little, so what is measured
    is the receiver); :meth:`to_subscriber`: the same burst delivered to one paho
    subscriber."""

    def __init__(self, port: int) -> None:
        self.port = port

    def publish(self, topics: list[str], payload: bytes,
                until: threading.Event | None = None) -> tuple[float, float]:
        """Publish every message, then read acknowledgements until ``until`` (bounded);
        (when it began, when every message was written)."""
        client = MiniMqtt(self.port, f"bench-burst-{time.time_ns()}", lambda *_a: None)
        start = time.time()
        try:
            for topic in topics:
                client.publish(topic.encode(), payload, 1)
            deadline = time.monotonic() + 120
            while client._out and time.monotonic() < deadline:
                client.poll(0.05)
            written = time.time()
            while until is not None and not until.is_set() and time.monotonic() < deadline:
                client.poll(0.05)
        finally:
            client.close()
        return start, written

    def to_subscriber(self, count: int, timeout: float = 120.0) -> float:
        """msg/s of ``count`` messages from the first publish to the last delivery."""
        got = [0]
        last = [0.0]
        done = threading.Event()

        def on_message(*_args: Any) -> None:
            got[0] += 1
            if got[0] == count:
                last[0] = time.time()
                done.set()

        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-raw-sub")
        sub.on_message = on_message
        subscribed = threading.Event()
        sub.on_subscribe = lambda *_a: subscribed.set()
        sub.connect("127.0.0.1", self.port)
        sub.subscribe("bench/raw/#", qos=1)
        sub.loop_start()
        try:
            if not subscribed.wait(10):
                raise BenchError("raw subscriber: no SUBACK")
            times: list[tuple[float, float]] = []
            publisher = threading.Thread(target=lambda: times.append(self.publish(
                [f"bench/raw/{i}" for i in range(count)], b"21.5", done)), daemon=True)
            publisher.start()
            if not done.wait(timeout):
                raise BenchError(f"raw subscriber: {got[0]} of {count} in {timeout} s")
            publisher.join(10)
        finally:
            done.set()
            sub.loop_stop()
            sub.disconnect()
        return count / (last[0] - times[0][0])


def _stored(db: Path, post_type: str) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        row = conn.execute("SELECT COUNT(*) FROM data WHERE post_type = ?",
                           (post_type,)).fetchone()
        return int(row[0])


def _registry_rate(db: Path, burst: Burst, n: int, zones: int, post_type: str,
                   servers: list[Child], timeout: float) -> dict[str, Any]:
    """Publish one ``post_type`` message per device; msg/s until the SQLite file holds all."""
    cpu_before = [s.cpu_seconds() for s in servers]
    topics = [_topic(i, zones, post_type) for i in range(n)]
    times: list[tuple[float, float]] = []
    done = threading.Event()
    publisher = threading.Thread(target=lambda: times.append(burst.publish(topics, b"42", done)),
                                 name="burst", daemon=True)
    start = time.time()
    publisher.start()
    deadline = time.monotonic() + timeout
    stored, last_print = 0, 0.0
    while time.monotonic() < deadline:
        stored = _stored(db, post_type)
        now = time.time()
        if stored >= n:
            break
        if now - last_print > 2:
            print(f"  {post_type}: {stored:,} of {n:,} stored", flush=True)
            last_print = now
        time.sleep(0.05)
    took = time.time() - start
    done.set()
    publisher.join(10)
    published = (times[0][1] - start) if times else float("nan")
    if stored < n:
        raise BenchError(f"registry: {stored} of {n} {post_type} messages stored in {timeout} s")
    cpu = [round(s.cpu_seconds() - b, 2) for s, b in zip(servers, cpu_before, strict=True)]
    return {"messages": n, "seconds": round(took, 3), "msg_per_s": round(n / took, 1),
            "all_written_after_s": round(published, 3), "server_cpu_s": cpu,
            "server_cpu_share": [round(c / took, 3) for c in cpu]}


_WRITER = """\
import json, sys, time
from jet.devices.store import SqliteStore
db, first, count, at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
store = SqliteStore(db)
fields = {"host": "site", "type": "thermo", "zone": "zone-0"}
time.sleep(max(0.0, at - time.time()))
cpu = time.process_time()
for i in range(first, first + count):
    uid = f"site/thermo/d{i:05d}"
    store.seen(uid, {**fields, "id": f"d{i:05d}"}, "site", "t", at)
    store.record(uid, "alone", 42, at)
print(json.dumps({"end": time.time(), "cpu_s": time.process_time() - cpu}))
"""


def _store_alone(n: int, writers: int) -> dict[str, Any]:
    """The registry's store with no MQTT: what a message costs it (``seen``, then
    ``record``: two commits), n messages by ``writers`` processes on one SQLite file."""
    from jet.devices.store import SqliteStore

    with tempfile.TemporaryDirectory(prefix="jet-bench-store-") as tmp:
        db = Path(tmp) / "alone.sqlite"
        store = SqliteStore(db)
        fields = {"host": HOST, "type": "thermo", "zone": "zone-0"}
        for i in range(n):
            store.seen(f"{HOST}/thermo/d{i:05d}", {**fields, "id": f"d{i:05d}"}, "site", "t",
                       time.time())
        store.close()
        at = time.time() + 1.5
        share = n // writers
        procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(db), str(w * share),
                                   str(share), str(at)], stdout=subprocess.PIPE, text=True,
                                  env=subprocess_env()) for w in range(writers)]
        done = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    took = max(d["end"] for d in done) - at
    return {"messages": share * writers, "writers": writers, "seconds": round(took, 3),
            "msg_per_s": round(share * writers / took, 1),
            "cpu_s": [round(d["cpu_s"], 3) for d in done]}


def _bare_networks(n: int) -> dict[str, Any]:
    """RSS growth of a bare process building ``n`` of the template's circuits."""
    code = (
        "import gc, json, sys, psutil\n"
        "from jet.definition.files import loads_app\n"
        "from jet.runtime.network import Network\n"
        "from jet.runtime.registry import Registry\n"
        "text, n = sys.stdin.read(), int(sys.argv[1])\n"
        "reg = Registry()\n"
        "def circuit(i):\n"
        "    t = text.replace('${id}', f'd{i:05d}').replace('${topic}', f'x/z/thermo/d{i:05d}')\n"
        "    return loads_app(t, 'template').circuits[0]\n"
        "defs = [circuit(i) for i in range(n + 1)]\n"
        "ignore = lambda *a: None\n"
        "warm = Network(defs[n], reg, ignore, label='warm')\n"
        "gc.collect(); before = psutil.Process().memory_info().rss\n"
        "nets = [Network(d, reg, ignore, label=d.name) for d in defs[:n]]\n"
        "for net in nets: net.activate()\n"
        "gc.collect(); after = psutil.Process().memory_info().rss\n"
        "print(json.dumps({'circuits': n, 'bytes_per_circuit': (after - before) / n}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(n)], input=TEMPLATE, text=True,
                          capture_output=True, env=subprocess_env(), timeout=120, check=False)
    if proc.returncode != 0:
        raise BenchError(f"bare networks: {proc.stderr[-500:]}")
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


@contextlib.contextmanager
def _children() -> Iterator[list[Child]]:
    started: list[Child] = []
    try:
        yield started
    finally:
        for child in reversed(started):
            child.stop()


def _serve(broker: Mosquitto, db: Path, name: str, *extra: str) -> Child:
    return Child(["-m", "jet.cli", "devices", "serve", "--broker", broker.url, "--db", str(db),
                  "--name", name, *extra], name=f"registry-{name}",
                 ready=f"device registry {name} on", timeout=30)


def _restart(broker: Mosquitto, db: Path, classes: Path, registry: Child,
             instances: Instances, n: int, children: list[Child]) -> dict[str, Any]:
    """Restart the registry: its reconcile reads what runs (n instances) and loads
    nothing, unloads nothing; how long that takes.  (And what the first one said of
    its batches.)"""
    batches = [x.strip() for x in registry.stderr().splitlines() if "circuits loaded in" in x]
    registry.stop()
    children.remove(registry)
    began = time.time()
    again = _serve(broker, db, "reg1", "--classes", str(classes))
    children.append(again)
    deadline = time.monotonic() + 180
    line = ""
    while time.monotonic() < deadline and not line:
        line = next((x for x in again.stderr().splitlines() if "reconciled in" in x), "")
        time.sleep(0.2)
    if not line:
        raise BenchError("the restarted registry did not reconcile within 180 s")
    took = time.time() - began
    print(f"  registry restarted: {line.split(': ', 1)[-1]} ({took:.1f} s after its start)",
          flush=True)
    sizes = [int(x.split(": ", 1)[-1].split(" ", 1)[0]) for x in batches]
    return {"seconds_from_start": round(took, 2), "said": line.strip(),
            "batches_before": {"count": len(sizes), "largest": max(sizes, default=0),
                               "first": batches[:2], "last": batches[-2:]},
            "instances_running_after": instances.count(), "instances_expected": n}


def run(quick: bool) -> dict[str, Any]:
    n = int(os.environ.get("JET_BENCH_DEVICES") or (300 if quick else 10_000))
    rate = float(os.environ.get("JET_BENCH_JOIN_RATE") or (100 if quick else 200))
    zones = 10 if quick else 50
    period = 10.0 if quick else 60.0  # seconds between two readings of a device
    join_s = n / rate
    limit = join_s + (60 if quick else 240)  # bound on the wait for every instance
    load_start = [round(x, 2) for x in os.getloadavg()]
    raw: dict[str, Any] = {"devices": n, "join_rate": rate, "zones": zones, "packs": len(PACKS),
                           "reading_period_s": period, "load_average_at_start": load_start,
                           "cpu_count": os.cpu_count()}
    print(f"  {n:,} devices joining at {rate:g}/s ({join_s:.0f} s), {len(PACKS)} packs;"
          f" load average {load_start}", flush=True)
    with tempfile.TemporaryDirectory(prefix="jet-bench-devices-") as tmp, \
            mosquitto() as broker, _children() as children:
        work = Path(tmp)
        classes = work / "classes"
        classes.mkdir()
        (classes / "app.yaml").write_text(TEMPLATE)
        for name in ("thermo", "plug", "meter"):
            (classes / f"{name}.yaml").write_text(CLASS.format(name=name))
        db = work / "registry.sqlite"
        packs = [Child(["-m", "jet.cli", "pack", "--broker", broker.url, "--id", p],
                       name=f"pack-{p}", ready=f"pack {p} on ") for p in PACKS]
        children.extend(packs)
        time.sleep(0.5)
        rss_before = [_vmrss(p.pid) for p in packs]
        instances = Instances(broker.port)
        try:
            registry = _serve(broker, db, "reg1", "--classes", str(classes))
            children.append(registry)
            sim = Child(["-m", "jet.cli", "device-sim", "--broker", broker.url, "--count",
                         str(n), "--host", HOST, "--zones", str(zones), "--period", str(period),
                         "--join-rate", str(rate)], name="device-sim",
                        ready=f"{n} simulated site devices")
            first_join = time.time()
            children.append(sim)
            broker_ps = psutil.Process(broker.proc.pid)
            cpu = {"registry": registry.cpu_seconds(), "sim": sim.cpu_seconds(),
                   "mosquitto": _cpu(broker_ps), **{p.name: p.cpu_seconds() for p in packs}}
            last_join = first_join + (n - 1) / rate
            count, last_print = 0, 0.0
            progress: list[tuple[float, int, int]] = []
            at_last_join: int | None = None
            while time.time() - first_join < limit:
                count = instances.count()
                now = time.time()
                if at_last_join is None and now >= last_join:
                    at_last_join = count
                if now - last_print >= (1 if quick else 5):
                    joined = min(n, int((now - first_join) * rate) + 1)
                    progress.append((round(now - first_join, 1), joined, count))
                    print(f"  {now - first_join:5.0f} s: {joined:,} joined, {count:,} instances"
                          " running", flush=True)
                    last_print = now
                if count >= n:
                    break
                time.sleep(0.1)
            all_running = instances.reached.get(n)
            spent = {"registry": registry.cpu_seconds(), "sim": sim.cpu_seconds(),
                     "mosquitto": _cpu(broker_ps), **{p.name: p.cpu_seconds() for p in packs}}
            wall = time.time() - first_join
            raw["join_cpu_s"] = {k: round(v - cpu[k], 2) for k, v in spent.items()}
            raw["join_cpu_share_of_a_core"] = {k: round((v - cpu[k]) / wall, 3)
                                               for k, v in spent.items()}
            raw["join_wall_s"] = round(wall, 2)
            raw["progress_s_joined_running"] = progress
            raw["instances_running"] = count
            raw["instances_running_at_the_last_join"] = at_last_join
            complete = all_running is not None
            if all_running is None:  # (said, and the rest measured with what runs)
                print(f"  only {count:,} of {n:,} instances ran within {limit:.0f} s of the"
                      f" first join (joins take {join_s:.0f} s)", flush=True)
                all_running = first_join + limit
            raw["every_instance_ran"] = complete
            with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
                seen = conn.execute("SELECT COUNT(*), MIN(first_seen), MAX(first_seen) FROM"
                                    " devices WHERE layout = 'site'").fetchone()
                circuits = conn.execute("SELECT COUNT(*) FROM devices WHERE layout = 'jet'"
                                        ).fetchone()
            raw["registry_jet_devices"] = circuits[0]  # (the packs' circuits, as JET's layout)
            raw["registry_devices"] = seen[0]
            raw["registry_first_last_join_s"] = [round(seen[1] - first_join, 2),
                                                 round(seen[2] - first_join, 2)]
            last_join = max(last_join, seen[2])
            to_all = all_running - first_join
            lag = all_running - last_join
            raw["milestones_s"] = {f"{p}%": round(instances.reached[max(1, n * p // 100)]
                                                 - first_join, 2)
                                   for p in (10, 25, 50, 75, 90, 100)
                                   if max(1, n * p // 100) in instances.reached}
            print(f"  every instance running {to_all:.1f} s after the first join,"
                  f" {lag:.1f} s after the last", flush=True)
            time.sleep(1.0)
            rss_after = [_vmrss(p.pid) for p in packs]
            raw["pack_rss_before"] = rss_before
            raw["pack_rss_after"] = rss_after
            per_instance = (sum(rss_after) - sum(rss_before)) / max(1, count)
            bare = _bare_networks(2000)
            raw["bare_network"] = bare

            raw["reconcile"] = _restart(broker, db, classes, registry, instances, n, children)
            registry = children[-1]
            burst = Burst(broker.port)
            raw["raw_subscriber"] = {"messages": n, "msg_per_s": round(burst.to_subscriber(n),
                                                                       1)}
            print(f"  mosquitto -> one paho subscriber: {raw['raw_subscriber']['msg_per_s']:,.0f}"
                  " msg/s", flush=True)
            one = _registry_rate(db, burst, n, zones, "burst1", [registry], 120)
            raw["registry_1"] = one
            print(f"  1 registry server: {one['msg_per_s']:,.0f} msg/s", flush=True)
            registry.stop()
            children.remove(registry)
            group = [_serve(broker, db, "reg-a", "--group", "bench")]
            children.extend(group)
            time.sleep(1.0)
            alone = _registry_rate(db, burst, n, zones, "burst2", group, 120)
            raw["registry_1_in_a_group"] = alone
            print(f"  1 registry server in a group: {alone['msg_per_s']:,.0f} msg/s", flush=True)
            group.append(_serve(broker, db, "reg-b", "--group", "bench"))
            children.append(group[-1])
            time.sleep(1.0)
            two = _registry_rate(db, burst, n, zones, "burst3", group, 120)
            raw["registry_2"] = two
            print(f"  2 registry servers: {two['msg_per_s']:,.0f} msg/s", flush=True)
            raw["store_alone"] = _store_alone(min(n, 5000), 1)
            raw["store_alone_2_writers"] = _store_alone(min(n, 5000), 2)
            print(f"  SQLite store alone: {raw['store_alone']['msg_per_s']:,.0f} msg/s in one"
                  f" process, {raw['store_alone_2_writers']['msg_per_s']:,.0f} in two",
                  flush=True)
        finally:
            instances.stop()
    raw["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    figures = [
        figure(f"every instance running, {n:,} devices joining at {rate:g}/s" if complete else
               f"NOT every instance running ({count:,} of {n:,}): the bound", to_all, "s",
               baseline=join_s, baseline_name="the joins themselves (N / rate)", digits=2),
        figure("last instance running after the last join", max(lag, 0.01), "s",
               baseline=60.0, baseline_name="a minute", target=LAG_GOAL, digits=2),
        figure("pack RSS per instance", per_instance / 1024, "KB",
               baseline=bare["bytes_per_circuit"] / 1024,
               baseline_name="bare Network of the same circuit", digits=2),
        figure("registry, 1 server", one["msg_per_s"], "msg/s",
               baseline=raw["raw_subscriber"]["msg_per_s"],
               baseline_name="mosquitto -> one paho subscriber, same burst", digits=0),
        figure("registry, 2 servers (--group, one SQLite file)", two["msg_per_s"], "msg/s",
               baseline=alone["msg_per_s"], baseline_name="1 server of the group, alone",
               digits=0),
    ]
    return {
        "description": f"{n:,} devices joining, a circuit each in {len(PACKS)} packs; the"
                       " registry's rate",
        "figures": figures,
        "raw": raw,
    }
