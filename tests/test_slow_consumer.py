"""A gadget slower than its input: bounded queues, counted drops, or backpressure without loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import Collector, link, run

from jet.containers.pack import Pack
from jet.definition.files import load_app
from jet.loader import Loader
from jet.runtime.registry import Registry
from jet.transport import broker, codec
from jet.transport.client import Session

APP = """
app: slow
circuits:
  fast:
    gadgets:
      src: {{type: jet.lib.Scale}}
  sink:
    gadgets:
      slow: {{type: tests.gadgets_for_tests.Slow, params: {{seconds: 0.002}}}}
wires:
  - fast.src.out -> sink.slow.in {options}
"""

REGISTRY = Registry.allowing(["tests.gadgets_for_tests"])
TOTAL = 400


def scenario(url: str, app_path: Path) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with (
            Pack(broker.parse(url), "p1", registry=REGISTRY) as pack,
            Session(broker.parse(url)) as session,
            link(url, "producer") as producer,
            link(url, "observer") as observer,
        ):
            await Loader(session, REGISTRY, pack="p1").load(load_app(app_path))
            out = await Collector(observer).watch("pack/sink/slow/0")
            # The whole burst is offered far faster than 2 ms per message.
            for n in range(TOTAL):
                producer.publish_nowait("pack/fast/src/0", codec.encode(n), qos=1)
            await producer.flush()
            network = pack.circuits["sink"].body.network

            def settled(c: Collector) -> bool:
                counters = network.counters
                return len(c.values()) + counters.dropped >= TOTAL and network.queued() == 0

            await out.wait_for(settled, timeout=20)
            status = await session.request("pack/sink/conf", {"cmd": "status"})
            largest = network.slots["slow"].inbox
            assert largest is not None
            return {"values": out.values(), "status": status}

    result: dict[str, Any] = run(go(), timeout=40)
    return result


@pytest.mark.parametrize("policy", ["drop-oldest", "drop-newest"])
def test_dropping_policies_count_every_drop(mosquitto: Any, tmp_path: Path, policy: str) -> None:
    path = tmp_path / "slow.yaml"
    path.write_text(APP.format(options=f"queue=5 policy={policy}"))
    result = scenario(mosquitto.url, path)
    values, counters = result["values"], result["status"]["counters"]
    assert counters["dropped"] > 0, "a 2 ms consumer fed a burst must overflow a queue of 5"
    assert len(values) + counters["dropped"] == TOTAL, "every message is handled or counted"
    assert values == sorted(values), "order is kept"
    if policy == "drop-oldest":
        assert values[-1] == TOTAL - 1, "drop-oldest keeps the freshest value"
    else:
        assert values[:5] == [0, 1, 2, 3, 4], "drop-newest keeps what was queued first"
    wire = result["status"]["inputs"]["slow.in"][0]
    assert (wire["queue"], wire["policy"]) == (5, policy)


def test_block_policy_loses_nothing(mosquitto: Any, tmp_path: Path) -> None:
    path = tmp_path / "slow.yaml"
    path.write_text(APP.format(options="queue=5 policy=block"))
    result = scenario(mosquitto.url, path)
    assert result["values"] == list(range(TOTAL)), "backpressure: every value, in order"
    assert result["status"]["counters"]["dropped"] == 0
