"""A pack container and the loader against a real mosquitto broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from helpers import Collector, link, run

from jet.containers.pack import Pack
from jet.definition.files import load_app
from jet.loader import Loader
from jet.transport import broker, codec
from jet.transport.client import CommandFailed, Session

TWO_CIRCUITS = """
app: pair
circuits:
  src:
    gadgets:
      s: {type: jet.lib.Scale, params: {factor: 1}}
  dst:
    gadgets:
      d: {type: jet.lib.Offset, params: {offset: 10}}
      c: {type: jet.lib.Counter}
wires:
  - src.s.out -> dst.d.in
  - src.s.out -> dst.c.in
"""

TWO_CIRCUITS_V2 = """
app: pair
circuits:
  src:
    gadgets:
      s: {type: jet.lib.Scale, params: {factor: 1}}
  dst:
    gadgets:
      d: {type: jet.lib.Offset, params: {offset: 10}}
      c: {type: jet.lib.Counter}
      avg: {type: jet.lib.MovingAverage, params: {size: 2}}
wires:
  - src.s.out -> dst.d.in
  - src.s.out -> dst.avg.in
"""


def app_file(tmp_path: Path, text: str, name: str = "app.yaml") -> Any:
    path = tmp_path / name
    path.write_text(text)
    return load_app(path)


async def subscription_count(watch: Collector) -> int:
    values = watch.values("$SYS/broker/subscriptions/count")
    return int(values[-1]) if values else -1


def test_load_wires_circuits_across_mqtt(mosquitto: Any, tmp_path: Path) -> None:
    app = app_file(tmp_path, TWO_CIRCUITS)

    async def scenario() -> None:
        async with (
            Pack(broker.parse(mosquitto.url), "p1", stats_interval=0.5) as pack,
            Session(broker.parse(mosquitto.url)) as session,
            link(mosquitto.url, "observer") as observer,
        ):
            await Loader(session, pack="p1").load(app)
            assert set(pack.circuits) == {"src", "dst"}
            out = await Collector(observer).watch("pack/dst/d/0")
            # Publishing on src's output topic is what src itself would do.
            for n in range(5):
                await observer.publish("pack/src/s/0", codec.encode(n), qos=1)
            await out.wait_for(lambda c: len(c.values()) == 5)
            assert out.values() == [10, 11, 12, 13, 14]
            status = await session.request("pack/dst/conf", {"cmd": "status"})
            assert status["inputs"]["d.in"] == [
                {"topic": "pack/src/s/0", "qos": 1, "queue": 1000, "policy": "block"}
            ]
            assert status["counters"]["received"] == 10  # two wires, five messages each

    run(scenario())


def test_reload_loses_no_message_on_kept_wire(mosquitto: Any, tmp_path: Path) -> None:
    v1 = app_file(tmp_path, TWO_CIRCUITS, "v1.yaml")
    v2 = app_file(tmp_path, TWO_CIRCUITS_V2, "v2.yaml")
    total = 2000

    async def scenario() -> None:
        async with (
            Pack(broker.parse(mosquitto.url), "p1") as pack,
            Session(broker.parse(mosquitto.url)) as session,
            link(mosquitto.url, "producer") as producer,
            link(mosquitto.url, "observer") as observer,
        ):
            loader = Loader(session, pack="p1")
            await loader.load(v1)
            out = await Collector(observer).watch("pack/dst/d/0")

            async def stream() -> None:
                for n in range(total):
                    producer.publish_nowait("pack/src/s/0", codec.encode(n), qos=1)
                    if n % 50 == 0:
                        await asyncio.sleep(0.005)  # spread the stream over the reload
                await producer.flush()

            streaming = asyncio.create_task(stream())
            await out.wait_for(lambda c: len(c.values()) >= 200)
            await loader.reload(v2)
            await streaming
            await out.wait_for(lambda c: len(c.values()) >= total, timeout=15)
            got = sorted(v - 10 for v in out.values())
            assert got == list(range(total)), "gap or duplicate on the kept wire"
            status = await session.request("pack/dst/conf", {"cmd": "status"})
            assert set(status["inputs"]) == {"d.in", "avg.in"}  # c.in unwired, avg.in added
            assert "avg" in pack.circuits["dst"].body.network.slots

    run(scenario(), timeout=60)


def test_unload_leaves_no_subscription(mosquitto: Any, tmp_path: Path) -> None:
    app = app_file(tmp_path, TWO_CIRCUITS)

    async def scenario() -> None:
        async with (
            Pack(broker.parse(mosquitto.url), "p1") as pack,
            Session(broker.parse(mosquitto.url)) as session,
            link(mosquitto.url, "observer") as observer,
        ):
            sys_count = await Collector(observer, raw=True).watch(
                "$SYS/broker/subscriptions/count"
            )
            await sys_count.wait_for(lambda c: len(c.values()) >= 1)
            first = await subscription_count(sys_count)
            # The first figure may predate our own subscription: add one more
            # and wait for the broker to count it, so the baseline is current.
            await observer.subscribe("probe/nothing", 0, lambda t, p: None)
            await sys_count.wait_for(lambda c: int(c.values()[-1]) != first)
            baseline = await subscription_count(sys_count)
            loader = Loader(session, pack="p1")
            await loader.load(app)
            await sys_count.wait_for(lambda c: int(c.values()[-1]) > baseline)
            await loader.unload_app(app)
            assert pack.circuits == {}
            # (the container's own conf, and the census of its kind's statuses)
            assert pack.link.subscribed_topics() == {
                "jet/pack/p1/conf", "pack/+/status", "jet/pack/+/status"
            }
            sys_count.messages.clear()
            await sys_count.wait_for(
                lambda c: bool(c.values()) and int(c.values()[-1]) == baseline
            )
            statuses = await session.retained("pack/+/status")
            assert statuses == {}, "unload must clear the retained circuit status"

    run(scenario())


def test_garbage_conf_gets_error_and_pack_keeps_running(mosquitto: Any, tmp_path: Path) -> None:
    app = app_file(tmp_path, TWO_CIRCUITS)

    async def scenario() -> None:
        async with (
            Pack(broker.parse(mosquitto.url), "p1") as pack,
            Session(broker.parse(mosquitto.url)) as session,
        ):
            await Loader(session, pack="p1").load(app)
            await session.link.publish("pack/dst/conf", b"\xc1 not msgpack", qos=1)
            await session.link.publish("jet/pack/p1/conf", codec.encode([1, 2]), qos=1)
            for bad, expected in (
                ({"cmd": "wire", "input": "d.in"}, "missing field 'topic'"),
                ({"cmd": "wire", "input": "nope.in", "topic": "x/y"}, "no input 'nope.in'"),
                ({"cmd": "launch"}, "unknown command 'launch'"),
                ({"cmd": "tap", "output": "d.out", "ttl": "long"}, "wrong type"),
            ):
                try:
                    await session.request("pack/dst/conf", bad)
                except CommandFailed as exc:
                    assert expected in str(exc)
                    assert str(exc).startswith("pack/dst/conf: ")
                    assert "\n" not in str(exc)
                else:
                    raise AssertionError(f"{bad} was accepted")
            try:
                await session.request("jet/pack/p1/conf", {"cmd": "load", "definition": {"x": 1}})
            except CommandFailed as exc:
                assert "bad definition" in str(exc)
            # Still serving: the circuit answers and data still flows.
            await session.request("pack/dst/conf", {"cmd": "inject", "input": "d.in", "value": 1})
            status = await session.request("pack/dst/conf", {"cmd": "status"})
            assert status["counters"]["emitted"] >= 1
            assert pack.conf_errors >= 7

    run(scenario())


def test_pack_state_survives_restart(mosquitto: Any, tmp_path: Path) -> None:
    app = app_file(tmp_path, TWO_CIRCUITS)
    state = tmp_path / "pack.state"

    async def scenario() -> None:
        url = broker.parse(mosquitto.url)
        async with Pack(url, "p1", state_file=state), Session(url) as session:
            await Loader(session, pack="p1").load(app)
        async with (
            Pack(url, "p1", state_file=state) as again,
            link(mosquitto.url, "observer") as observer,
        ):
            assert set(again.circuits) == {"src", "dst"}
            out = await Collector(observer).watch("pack/dst/d/0")
            await observer.publish("pack/src/s/0", codec.encode(1), qos=1)
            await out.wait_for(lambda c: c.values() == [11])

    run(scenario())
