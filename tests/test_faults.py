"""Faults with a QoS 1 stream flowing: nothing may be lost, duplicates are counted.

Each test pushes a numbered stream through a pack circuit (src -> dst over
MQTT) and accounts for every number at the far end: sent, delivered, lost,
duplicated.  The figures are printed in the fault report at the end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import jet_background, stop
from conftest import Mosquitto
from helpers import Collector, account, run

from jet.containers.pack import Pack
from jet.definition.files import load_app
from jet.loader import Loader
from jet.transport import broker, codec
from jet.transport.client import Session
from jet.transport.link import REDELIVERY_PAUSE, Link, Redeliver

APP = """
app: relay
circuits:
  src:
    gadgets:
      s: {type: jet.lib.Scale, params: {factor: 1}}
  dst:
    gadgets:
      d: {type: jet.lib.Offset, params: {offset: 0}}
wires:
  - src.s.out -> dst.d.in
"""


def persistent_link(url: str, name: str) -> Link:
    # A consumer that must not lose anything keeps a persistent session and
    # acknowledges only what it has recorded, like a pack does.
    return Link(broker.parse(url), name, ack_after_handling=True)


async def stream(producer: Link, total: int, per_batch: int = 20, pause: float = 0.005) -> None:
    for n in range(total):
        producer.publish_nowait("pack/src/s/0", codec.encode(n), qos=1)
        if n % per_batch == 0:
            await asyncio.sleep(pause)
    await producer.flush()


def test_broker_killed_mid_stream_loses_nothing(tmp_path: Path) -> None:
    mq = Mosquitto(tmp_path, persistent=True)
    app_path = tmp_path / "relay.yaml"
    app_path.write_text(APP)
    total = 1500

    async def scenario() -> list[Any]:
        url = broker.parse(mq.url)
        async with (
            Pack(url, "p1", keepalive=2) as pack,
            Session(url) as session,
            Link(url, "producer", clean_session=False) as producer,
            persistent_link(mq.url, "consumer") as consumer,
        ):
            await Loader(session, pack="p1").load(load_app(app_path))
            out = await Collector(consumer).watch("pack/dst/d/0")
            flowing = asyncio.create_task(stream(producer, total))
            await out.wait_for(lambda c: len(c.values()) >= total // 3, timeout=20)
            mq.kill()  # kill -9, mid-stream
            await asyncio.sleep(0.5)  # the outage: publishers keep queueing meanwhile
            mq.start()
            await asyncio.wait_for(flowing, 60)
            # The stream ends with a sentinel; once it is through, whatever the
            # broker still redelivers comes within a bounded wait.
            await producer.publish("pack/src/s/0", codec.encode(-1), qos=1)
            await out.wait_for(lambda c: -1 in c.values(), timeout=60)
            with contextlib.suppress(AssertionError):
                await out.wait_for(lambda c: set(c.values()) >= set(range(total)), timeout=5)
            assert pack.link.stats.reconnects >= 1
            return out.values()

    try:
        values = run(scenario(), timeout=120)
    finally:
        mq.stop()
    row = account("broker kill -9 mid-stream", total, values)
    # mosquitto acknowledges a QoS 1 publish before it writes it to disk, so a
    # kill -9 can take the one or two messages acknowledged since its last save
    # (docs/reliability.md).  Anything lost on JET's side (the outbox, the
    # retry queue, acknowledgements) would show as many more.
    assert row["lost"] <= 2, row


def test_pack_killed_and_restarted_comes_back(tmp_path: Path) -> None:
    mq = Mosquitto(tmp_path, persistent=True)
    app_path = tmp_path / "relay.yaml"
    app_path.write_text(APP)
    state = tmp_path / "pack.state"
    keepalive = 2
    args = ("pack", "--broker", mq.url, "--id", "p1", "--state", str(state),
            "--keepalive", str(keepalive))
    pack = jet_background(*args)
    total = 600

    async def scenario() -> tuple[list[Any], float]:
        nonlocal pack
        url = broker.parse(mq.url)
        async with (
            Session(url) as session,
            Link(url, "producer", clean_session=False) as producer,
            persistent_link(mq.url, "consumer") as consumer,
        ):
            presence = await Collector(consumer).watch("jet/pack/p1/status")
            await presence.wait_for(
                lambda c: bool(c.values()) and c.values()[-1]["state"] == "online", timeout=15
            )
            await Loader(session, pack="p1").load(load_app(app_path))
            out = await Collector(consumer).watch("pack/dst/d/0")
            flowing = asyncio.create_task(stream(producer, total, pause=0.01))
            await out.wait_for(lambda c: len(c.values()) >= total // 4, timeout=20)
            os.kill(pack.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            await presence.wait_for(
                lambda c: bool(c.values()) and c.values()[-1]["state"] == "offline",
                timeout=keepalive * 1.5 + 3,
            )
            seen_offline = time.monotonic() - killed_at
            pack = jet_background(*args)  # comes back from its state file
            await asyncio.wait_for(flowing, 60)
            await out.wait_for(lambda c: set(c.values()) >= set(range(total)), timeout=60)
            statuses = await session.retained("pack/+/status")
            assert {t for t, s in statuses.items() if s["state"] == "online"} == {
                "pack/src/status", "pack/dst/status"
            }
            return out.values(), seen_offline

    try:
        values, seen_offline = run(scenario(), timeout=120)
    finally:
        stop(pack)
        mq.stop()
    row = account("pack kill -9 and restart", total, values)
    row["offline_seen_ms"] = round(seen_offline * 1000)
    assert row["lost"] == 0, row
    # MQTT: the broker declares a silent client dead after 1.5 x keepalive.
    assert seen_offline <= keepalive * 1.5 + 1.0, row


def test_reload_100_times_under_stream(mosquitto: Any, tmp_path: Path) -> None:
    v1 = tmp_path / "v1.yaml"
    v1.write_text(APP)
    v2 = tmp_path / "v2.yaml"
    v2.write_text(
        APP.replace(
            "      d: {type: jet.lib.Offset, params: {offset: 0}}\n",
            "      d: {type: jet.lib.Offset, params: {offset: 0}}\n"
            "      c: {type: jet.lib.Counter}\n",
        )
        + "  - src.s.out -> dst.c.in\n"
    )
    total = 3000

    async def scenario() -> tuple[list[Any], int]:
        url = broker.parse(mosquitto.url)
        async with (
            Pack(url, "p1"),
            Session(url) as session,
            Link(url, "producer", clean_session=False) as producer,
            persistent_link(mosquitto.url, "consumer") as consumer,
        ):
            loader = Loader(session, pack="p1")
            await loader.load(load_app(v1))
            apps = [load_app(v2), load_app(v1)]
            out = await Collector(consumer).watch("pack/dst/d/0")
            flowing = asyncio.create_task(stream(producer, total, pause=0.01))
            reloads = 0
            for i in range(100):
                await loader.reload(apps[i % 2])
                reloads += 1
            await asyncio.wait_for(flowing, 60)
            await out.wait_for(lambda c: set(c.values()) >= set(range(total)), timeout=30)
            return out.values(), reloads

    values, reloads = run(scenario(), timeout=180)
    row = account("100 reloads under stream", total, values)
    row["reloads"] = reloads
    assert reloads == 100
    assert row["lost"] == 0, row


@pytest.mark.parametrize("mqtt", ["5", "3.1.1"])
def test_a_message_a_handler_refuses_comes_back_until_it_is_handled(mosquitto: Any,
                                                                     mqtt: str) -> None:
    """A handler that cannot handle a message yet (a database down) raises Redeliver: the
    message is not acknowledged, the link reconnects and the broker sends it again, while
    the other messages are handled once each; once handled, it does not come back.  On
    either connection (MQTT 5, paho's MQTT 3.1.1)."""
    topic = "test/redeliver"
    where = mosquitto.url + ("?mqtt=3.1.1" if mqtt == "3.1.1" else "")

    async def scenario() -> None:
        url = broker.parse(where)
        refusals = 2
        got: list[bytes] = []

        def handler(_topic: str, payload: bytes) -> None:
            nonlocal refusals
            if payload == b"refused" and refusals:
                refusals -= 1
                raise Redeliver
            got.append(payload)

        async def until_got(payload: bytes) -> None:
            while payload not in got:
                await asyncio.sleep(0.05)

        async with Link(url, "producer", clean_session=False) as producer:
            consumer = persistent_link(where, "refuser")
            await consumer.subscribe(f"{topic}/#", 1, handler)
            async with consumer:
                for payload in (b"first", b"refused", b"after"):
                    producer.publish_nowait(f"{topic}/{payload.decode()}", payload, qos=1)
                await producer.flush()
                # two refusals, each followed by a reconnection a pause later
                await asyncio.wait_for(until_got(b"refused"), 10 * REDELIVERY_PAUSE + 10)
                assert consumer.stats.redeliveries == 2
                assert consumer.stats.reconnects == 2
                assert consumer.stats.handler_errors == 0
            # The same session again: anything not acknowledged would come before the end.
            consumer = persistent_link(where, "refuser")
            await consumer.subscribe(f"{topic}/#", 1, handler)
            async with consumer:
                await producer.publish(f"{topic}/end", b"end", qos=1)
                await asyncio.wait_for(until_got(b"end"), 10)
        assert sorted(got) == [b"after", b"end", b"first", b"refused"], got

    run(scenario(), timeout=60)
