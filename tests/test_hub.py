"""The hub driver against the node simulator over a real pty and a real mosquitto."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
import tty
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import msgpack
import pytest
from conftest import Mosquitto

from jet.transport.codec import encode
from jet_rf12 import BoilerNode, DeclaredNode, DongleSpec, Hub, NodeSim, parse_port
from jet_rf12.payload import PortCodec
from jet_rf12.rf12demo import HDR_ACK, HDR_CTL, HDR_DST
from jet_rf12.sim_nodes import SimGadget
from jet_rf12.tags import encode_tag

TEST_TIMEOUT = 15.0
WAIT = 5.0

BOILER = {
    "name": "boiler",
    "container": "node",
    "node": 5,
    "gadgets": [
        {"name": "water", "outputs": ["celsius"]},
        {"name": "relay", "inputs": ["on"]},
    ],
}

Check = Callable[[str, Any], bool]


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run one test scenario, bounded: a hung test fails instead of hanging the suite."""

    async def bounded() -> None:
        async with asyncio.timeout(TEST_TIMEOUT):
            await coro

    asyncio.run(bounded())


def unpack(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception:
        return payload


def topic_matches(topic: str, pattern: str) -> bool:
    return aiomqtt.Topic(topic).matches(pattern)


class Probe:
    """A test MQTT client that records everything it receives and waits on it."""

    _ids = itertools.count()

    def __init__(self, broker: Mosquitto) -> None:
        self.client = aiomqtt.Client("127.0.0.1", broker.port,
                                     identifier=f"probe-{next(self._ids)}")
        self.messages: list[tuple[str, bytes]] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Probe:
        await self.client.__aenter__()
        self._task = asyncio.create_task(self._read())
        await self.client.subscribe("#", qos=1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            assert isinstance(payload, bytes | bytearray)
            self.messages.append((message.topic.value, bytes(payload)))
            self._arrived.set()

    def mark(self) -> int:
        return len(self.messages)

    async def wait(self, pattern: str, check: Check | None = None, *, since: int = 0,
                   timeout: float = WAIT) -> tuple[str, Any]:
        """The first message on ``pattern`` (after ``since``) whose value passes ``check``."""
        index = since
        async with asyncio.timeout(timeout):
            while True:
                while index < len(self.messages):
                    topic, payload = self.messages[index]
                    index += 1
                    if topic_matches(topic, pattern):
                        value = unpack(payload)
                        if check is None or check(topic, value):
                            return topic, value
                self._arrived.clear()
                await self._arrived.wait()

    async def command(self, topic: str, cmd: dict[str, Any]) -> dict[str, Any]:
        cmd_id = str(next(self._ids))
        since = self.mark()
        await self.client.publish(topic, encode({**cmd, "id": cmd_id,
                                                 "reply_to": "jet/reply/probe"}), qos=1)
        _, reply = await self.wait("jet/reply/probe", lambda _, r: r.get("id") == cmd_id,
                                   since=since)
        assert isinstance(reply, dict)
        return reply

    async def publish(self, topic: str, value: Any, retain: bool = False) -> None:
        await self.client.publish(topic, encode(value), qos=1, retain=retain)


@asynccontextmanager
async def rig(mosquitto: Mosquitto, tmp_path: Path, *nodes: Any, speed: float = 1.0,
              sim_args: dict[str, Any] | None = None,
              **hub_args: Any) -> AsyncIterator[tuple[NodeSim, Hub, Probe]]:
    """Simulator on a pty behind a symlink, a hub reading it, and a probe client."""
    sim_nodes = nodes or (BoilerNode(5, interval=0.05),)
    hub_args.setdefault("status_interval", 0.1)
    async with (
        Probe(mosquitto) as probe,
        NodeSim(sim_nodes, link=tmp_path / "ttyJEE0", speed=speed, **(sim_args or {})) as sim,
        Hub(mosquitto.url, ports=[sim.path], **hub_args) as hub,
    ):
        await asyncio.wait_for(sim.wait_opened(), WAIT)
        yield sim, hub, probe


async def load_boiler(probe: Probe, definition: dict[str, Any] | None = None) -> None:
    reply = await probe.command("jet/node/hub/conf",
                                {"cmd": "load", "definition": definition or BOILER,
                                 "app": "heater"})
    assert reply == {"id": reply["id"], "ok": True, "result": {"circuit_id": "21205"}}


@contextmanager
def raw_pty() -> Iterator[tuple[int, str]]:
    """A pty written by the test as a dongle would (no simulator): its master end (non-
    blocking) and the path the hub opens."""
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    try:
        yield master, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def counters_at_least(**expected: int) -> Check:
    def check(_: str, status: Any) -> bool:
        counters = status["counters"]
        return all(counters[k] >= v for k, v in expected.items())

    return check


# -- tests -------------------------------------------------------------------------------


def test_node_outputs_are_published(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(mosquitto, tmp_path) as (_, _hub, probe):
            await load_boiler(probe)
            _, status = await probe.wait("node/21205/status")
            # Shaped like a pack circuit's status, so the loader and `jet ls` read it.
            assert status["state"] == "online" and status["type"] == "node"
            assert status["id"] == "21205" and status["container"] == "jet/node/hub"
            assert status["definition"]["name"] == "boiler" and status["app"] == "heater"
            assert status["node"] == 5 and status["group"] == 212
            assert [g["name"] for g in status["gadgets"]] == ["water", "relay"]
            since = probe.mark()
            await probe.wait("node/21205/0/0", since=since)
            _, payload = next(m for m in probe.messages[since:] if m[0] == "node/21205/0/0")
            # The node's own msgpack bytes, forwarded as they are.
            assert payload == encode(20.0)
            _, hub_status = await probe.wait("jet/node/hub/status",
                                             lambda _, s: "21205" in s["circuits"])
            assert hub_status["state"] == "online" and hub_status["type"] == "node"
            # Counters and rates are refreshed in the retained node status.
            await probe.wait("node/21205/status", lambda _, s: s["counters"]["published"] > 0
                             and s["rates"]["out"] > 0)

    run(scenario())


def test_wire_command_becomes_a_send_command(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(mosquitto, tmp_path) as (sim, _hub, probe):
            await load_boiler(probe)
            reply = await probe.command("node/21205/conf", {
                "cmd": "wire", "input": "relay.on", "topic": "pack/control/thermostat/0"})
            assert reply["ok"] and reply["result"] == {
                "input": "1.0", "topic": "pack/control/thermostat/0"}
            await probe.publish("pack/control/thermostat/0", True)
            sent = await asyncio.wait_for(sim.commands.get(), WAIT)
            assert sent.text == "8,195,5s"  # tag 1.0, msgpack true, node 5, no ack
            await asyncio.wait_for(sim.wait_delivered(1), WAIT)
            assert sim.node(5).inputs[1, 0] is True

            # Numeric ports name the same input; a second wire to another topic adds to it.
            reply = await probe.command("node/21205/conf",
                                        {"cmd": "wire", "input": "1.0", "topic": "manual/relay"})
            assert reply["ok"]
            await probe.publish("manual/relay", False)
            sent = await asyncio.wait_for(sim.commands.get(), WAIT)
            assert sent.text == "8,194,5s"

            reply = await probe.command("node/21205/conf", {
                "cmd": "unwire", "input": "1.0", "topic": "pack/control/thermostat/0"})
            assert reply["ok"] and reply["result"] == {"unwired": 1}
            await probe.publish("pack/control/thermostat/0", True)  # no longer wired
            await probe.publish("manual/relay", 1)
            sent = await asyncio.wait_for(sim.commands.get(), WAIT)
            assert sent.text == "8,1,5s"

            reply = await probe.command("node/21205/conf",
                                        {"cmd": "inject", "input": "relay.on", "value": 0})
            assert reply["ok"]
            assert (await asyncio.wait_for(sim.commands.get(), WAIT)).text == "8,0,5s"

            for bad in ({"cmd": "wire", "input": "relay.off", "topic": "x"},
                        {"cmd": "wire", "input": "0.7", "topic": "x"},
                        {"cmd": "wire", "input": "relay.on"},
                        {"cmd": "inject", "input": "9.0", "value": 1}):
                reply = await probe.command("node/21205/conf", bad)
                assert reply["ok"] is False and reply["error"], bad
            # The retained node status lists what is still wired.
            await probe.wait("node/21205/status", lambda _, s: s["inputs"] == {
                "1.0": [{"topic": "manual/relay", "qos": 1, "name": "relay.on"}]})

    run(scenario())


def test_node_commands_are_forwarded_and_stop_unloads(mosquitto: Mosquitto,
                                                     tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(mosquitto, tmp_path) as (sim, _hub, probe):
            await load_boiler(probe)
            node = sim.node(5)
            reply = await probe.command("node/21205/conf", {"cmd": "blink", "times": 3})
            assert reply["ok"] and reply["result"]["forwarded"] > 0
            sent = await asyncio.wait_for(sim.commands.get(), WAIT)
            assert sent.ack and sent.dest == 5 and sent.data[0] == 0x07  # gadget 0 input 7
            await asyncio.wait_for(sim.wait_delivered(1), WAIT)
            assert node.commands[-1] == {"cmd": "blink", "times": 3}

            reply = await probe.command("node/21205/conf", {"cmd": "status"})
            assert reply["result"]["id"] == "21205"

            since = probe.mark()
            reply = await probe.command("node/21205/conf", {"cmd": "stop"})
            assert reply["ok"] and reply["result"]["circuit_id"] == "21205"
            await asyncio.wait_for(sim.commands.get(), WAIT)
            await asyncio.wait_for(sim.wait_delivered(2), WAIT)
            assert node.commands[-1] == {"cmd": "stop"} and not node.running
            # The retained status is cleared (an empty retained message).
            await probe.wait("node/21205/status", lambda _, v: v == b"", since=since)
            await probe.wait("jet/node/hub/status", lambda _, s: s["circuits"] == [],
                             since=since)
            # Container commands: status, and an unknown one answered with an error.
            reply = await probe.command("jet/node/hub/conf", {"cmd": "status"})
            assert reply["ok"] and reply["result"]["id"] == "hub"
            reply = await probe.command("jet/node/hub/conf", {"cmd": "frobnicate"})
            assert reply["ok"] is False and "frobnicate" in reply["error"]
            reply = await probe.command("jet/node/hub/conf",
                                        {"cmd": "load", "definition": {"name": "x"}})
            assert reply["ok"] is False and "node" in reply["error"]

    run(scenario())


def test_noise_and_unknown_nodes_are_counted(mosquitto: Mosquitto, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def scenario() -> None:
        async with rig(mosquitto, tmp_path) as (sim, _hub, probe):
            await load_boiler(probe)
            sim.write_raw(b"\x00\xff\xfe garbage \x80\r\n")  # garbage
            sim.write_raw(b"OK 5 0 1 300\r\n")  # garbage: not a byte
            sim.write_raw(b" ? 5 0 203 1\r\n")  # bad CRC
            sim.write_raw(b"OK 5 " + b"1 " * 400 + b"\r\n")  # garbage: far too long
            for _ in range(3):
                sim.send_packet(9, encode_output(0, 0, 1.5))  # unknown node, 3 packets
            sim.send_packet(5, bytes(70))  # oversized
            sim.send_packet(5, b"\x00\xc1")  # msgpack 0xc1 is never valid
            sim.send_packet(5, b"\xff\x01")  # truncated escaped tag
            sim.send_packet(5, b"", HDR_CTL)  # an ack: counted, not published
            await probe.client.publish("node/21205/conf", b"\xc1", qos=1)  # bad command
            await probe.client.publish("jet/node/hub/conf", encode([1, 2]), qos=1)
            _, status = await probe.wait("jet/node/hub/status", counters_at_least(
                garbage=3, bad_packets=1, unknown_nodes=1, unknown_packets=3,
                oversized=1, decode_errors=2, acks=1, bad_commands=2))
            assert status["counters"]["unknown_nodes"] == 1
            assert status["unknown"] == [{"group": 212, "node": 9, "uid": 21209, "packets": 3}]
            # Unknown nodes are still published, under their default uid.
            await probe.wait("node/21209/0/0", lambda _, v: v == 1.5)
            # ... and the hub keeps working.
            since = probe.mark()
            await probe.wait("node/21205/0/0", since=since)
            reply = await probe.command("jet/node/hub/conf", {"cmd": "status"})
            assert reply["ok"]
        unknown_lines = [r for r in caplog.records if "unknown node 9" in r.getMessage()]
        assert len(unknown_lines) == 1  # reported once
        assert any("garbage line" in r.getMessage() and "ttyJEE0" in r.getMessage()
                   for r in caplog.records)

    run(scenario())


def encode_output(gadget: int, port: int, value: Any) -> bytes:
    return encode_tag(gadget, port) + encode(value)


def test_unplug_and_replug_is_survived(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(mosquitto, tmp_path, reopen_backoff_max=0.5) as (sim, hub, probe):
            await load_boiler(probe)
            await probe.command("node/21205/conf",
                                {"cmd": "wire", "input": "1.0", "topic": "manual/relay"})
            since = probe.mark()
            # A line cut by the unplug: the node is quiet so nothing completes it.
            sim.node(5).running = False
            line = hub.dongles[0].line
            read_before = line.bytes_in
            sim.write_raw(b"OK 5 0 20")
            async with asyncio.timeout(WAIT):
                while line.bytes_in < read_before + 9:
                    await asyncio.sleep(0.01)
            sim.unplug()
            sim.node(5).running = True
            await probe.wait("jet/node/hub/status",
                             lambda _, s: s["dongles"][0]["state"] == "waiting", since=since)
            await asyncio.sleep(0.3)  # stays unplugged across a few reopen attempts
            await sim.replug()
            await asyncio.wait_for(sim.wait_opened(), WAIT)
            _, status = await probe.wait(
                "jet/node/hub/status",
                lambda _, s: s["dongles"][0]["state"] == "open" and s["counters"]["reopens"],
                since=since)
            assert status["counters"]["reopens"] == 1
            assert status["dongles"][0]["open_failures"] >= 1
            since = probe.mark()
            await probe.wait("node/21205/0/0", since=since)  # readings flow again
            await probe.publish("manual/relay", True)  # and sends reach the new pty
            sent = await asyncio.wait_for(sim.commands.get(), WAIT)
            assert sent.text == "8,195,5s"
            _, status = await probe.wait("jet/node/hub/status", counters_at_least(partial=1))

    run(scenario())


def test_boiler_heats_and_cools_with_the_relay(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async def scenario() -> None:
        boiler = BoilerNode(5, interval=0.05)
        async with rig(mosquitto, tmp_path, boiler, speed=20.0) as (_sim, _hub, probe):
            await load_boiler(probe)
            await probe.command("node/21205/conf",
                                {"cmd": "wire", "input": "relay.on", "topic": "manual/relay"})
            _, start = await probe.wait("node/21205/0/0", since=probe.mark())
            assert start == pytest.approx(20.0, abs=0.5)
            await probe.publish("manual/relay", True)
            _, hot = await probe.wait("node/21205/0/0", lambda _, t: t > start + 5.0,
                                      since=probe.mark())
            await probe.publish("manual/relay", False)
            since = probe.mark()
            # Once the relay is off, the water cools toward (never below) ambient.
            _, cooled = await probe.wait("node/21205/0/0", lambda _, t: t < hot - 2.0,
                                         since=since)
            assert cooled > 20.0
            readings = [unpack(p) for t, p in probe.messages[since:] if t == "node/21205/0/0"]
            peak = readings.index(max(readings))
            tail = readings[peak:]
            assert all(a >= b for a, b in itertools.pairwise(tail))

    run(scenario())


def test_struct_codec_and_declared_nodes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    # Legacy firmware: a little-endian short in hundredths.
    meter = DeclaredNode(
        7,
        [SimGadget("meter", outputs=("watts",), out_codecs={0: PortCodec("<h", 0.01)}),
         SimGadget("led", inputs=("on",))],
        interval=0.05,
        values={"meter.watts": {"constant": 21.57}},
    )
    definition = {
        "name": "meter", "container": "node", "node": 7,
        "gadgets": [
            {"name": "meter", "outputs": ["watts"],
             "params": {"codecs": {"watts": {"codec": "<h", "scale": 0.01}}}},
            {"name": "led", "inputs": ["on"]},
        ],
    }

    async def scenario() -> None:
        async with rig(mosquitto, tmp_path, meter) as (sim, _hub, probe):
            since = probe.mark()
            reply = await probe.command("jet/node/hub/conf",
                                        {"cmd": "load", "definition": definition})
            assert reply["result"] == {"circuit_id": "21207"}
            # Legacy struct payload <h 2157 becomes the msgpack float 21.57.
            _, value = await probe.wait("node/21207/0/0", since=since)
            assert value == 21.57
            reply = await probe.command("node/21207/conf",
                                        {"cmd": "inject", "input": "led.on", "value": True})
            assert reply["ok"]
            sent = await asyncio.wait_for(sim.commands.get(), WAIT)
            assert sent.text == "8,195,7s"

    run(scenario())


def test_state_file_restores_nodes_and_wires(mosquitto: Mosquitto, tmp_path: Path) -> None:
    state = tmp_path / "hub-state.json"

    async def scenario() -> None:
        async with rig(mosquitto, tmp_path, state_file=state) as (_sim, _hub, probe):
            await load_boiler(probe)
            await probe.command("node/21205/conf",
                                {"cmd": "wire", "input": "relay.on", "topic": "manual/relay"})
        assert state.exists()
        async with rig(mosquitto, tmp_path, state_file=state) as (sim, hub, probe):
            assert list(hub.nodes) == [21205]
            _, status = await probe.wait("node/21205/status",
                                         lambda _, s: s["state"] == "online")
            assert status["definition"]["name"] == "boiler"
            assert status["inputs"]["1.0"][0]["topic"] == "manual/relay"
            await probe.publish("manual/relay", True)
            sent = await asyncio.wait_for(sim.commands.get(), WAIT)
            assert sent.text == "8,195,5s"

    run(scenario())


def test_own_pty_acceptance(mosquitto: Mosquitto) -> None:
    """A pty written by hand (no simulator): the issue's acceptance test."""

    async def scenario() -> None:
        with raw_pty() as (master, path):
            async with (
                Probe(mosquitto) as probe,
                Hub(mosquitto.url, ports=[path], status_interval=0.1),
            ):
                await probe.wait("jet/node/hub/status",
                                 lambda _, s: s["dongles"][0]["state"] == "open")
                # 21.5 as msgpack float64 from node 5 gadget 0 output 0; 1.0 -> gadget 1 out 0.
                os.write(master, b"OK 5 0 203 64 53 128 0 0 0 0 0\r\nOK 5 8 1\r\n")
                await probe.wait("node/21205/0/0", lambda _, v: v == 21.5)
                await probe.wait("node/21205/1/0", lambda _, v: v == 1)
                reply = await probe.command("node/21205/conf",
                                            {"cmd": "wire", "input": "1.0", "topic": "in/relay"})
                assert reply["ok"]
                await probe.publish("in/relay", 55.0)
                data = bytes([8]) + encode(55.0)
                assert await read_lines(master, 1) == [",".join(map(str, [*data, 5])) + "s"]

    run(scenario())


NODES_YAML = """\
group: 212
nodes:
  - node: 5
    model: boiler
    interval: 0.05
  - node: 7
    interval: 0.05
    gadgets:
      - {name: meter, outputs: [watts]}
      - {name: led, inputs: [on]}
    values:
      meter.watts: {ramp: [100.0, 5.0]}
    echo:
      led.on: meter.watts
"""


def test_command_line_daemons(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """`node-sim` and `hub` as the processes a user starts, stopped with SIGTERM."""
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(NODES_YAML)
    link = tmp_path / "ttyJEE0"

    async def scenario() -> None:
        cli = [sys.executable, "-m", "jet_rf12.cli"]
        sim = await asyncio.create_subprocess_exec(
            *cli, "node-sim", "--nodes", str(nodes), "--link", str(link), "--speed", "10",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        hub = None
        try:
            assert sim.stdout is not None
            banner = await asyncio.wait_for(sim.stdout.readline(), WAIT)
            assert b"RF12demo simulator on /dev/pts/" in banner and str(link).encode() in banner
            async with Probe(mosquitto) as probe:
                hub = await asyncio.create_subprocess_exec(
                    *cli, "hub", "--port", str(link), "--broker", mosquitto.url, "--id", "cli",
                    "--state", str(tmp_path / "state.json"), "--status-interval", "0.2",
                    stderr=asyncio.subprocess.DEVNULL)
                await probe.wait("node/21205/0/0", lambda _, v: isinstance(v, float))
                await probe.wait("node/21207/0/0", lambda _, v: v >= 100.0)  # the ramp
                reply = await probe.command("node/21207/conf",
                                            {"cmd": "inject", "input": "1.0", "value": -1.0})
                assert reply["ok"]
                await probe.wait("node/21207/0/0", lambda _, v: v == -1.0)  # echoed back
                since = probe.mark()
                hub.terminate()
                assert await asyncio.wait_for(hub.wait(), WAIT) == 143  # 128 + SIGTERM
                await probe.wait("jet/node/cli/status", lambda _, s: s["state"] == "offline",
                                 since=since)
        finally:
            for proc in (hub, sim):
                if proc is not None and proc.returncode is None:
                    proc.terminate()
            assert await asyncio.wait_for(sim.wait(), WAIT) == 143  # 128 + SIGTERM
        assert not link.exists()  # the simulator removes its symlink

    run(scenario())


def test_several_dongles_each_on_its_group(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            Probe(mosquitto) as probe,
            NodeSim([BoilerNode(5, interval=0.05)], link=tmp_path / "ttyA") as a,
            NodeSim([BoilerNode(5, interval=0.05, start=60.0)], link=tmp_path / "ttyB",
                    group=100) as b,
            # B is given without @GROUP: the group its banner reports wins.
            Hub(mosquitto.url, ports=[a.path, b.path], status_interval=0.1),
        ):
            await asyncio.wait_for(asyncio.gather(a.wait_opened(), b.wait_opened()), WAIT)
            _, status = await probe.wait("jet/node/hub/status", lambda _, s: [
                d["group"] for d in s["dongles"]] == [212, 100])
            assert status["dongles"][1]["radio"] == {"node_id": 31, "group": 100, "band": 868}
            _, cold = await probe.wait("node/21205/0/0")
            await probe.wait("node/10005/0/0", lambda _, v: v > 50)  # its own boiler
            assert cold == pytest.approx(20.0)
            reply = await probe.command("node/10005/conf",
                                        {"cmd": "wire", "input": "1.0", "topic": "b/relay"})
            assert reply["ok"]
            await probe.publish("b/relay", True)
            sent = await asyncio.wait_for(b.commands.get(), WAIT)
            await asyncio.wait_for(b.wait_delivered(1), WAIT)
            assert sent.text == "8,195,5s" and b.node(5).inputs[1, 0] is True
            assert a.commands.empty() and (1, 0) not in a.node(5).inputs

    run(scenario())


def test_port_arguments() -> None:
    assert parse_port("/dev/ttyUSB0") == DongleSpec("/dev/ttyUSB0", 212)
    assert parse_port("/dev/ttyUSB1@100", 212) == DongleSpec("/dev/ttyUSB1", 100)
    assert parse_port("socket://host:7000@5") == DongleSpec("socket://host:7000", 5)
    assert parse_port("/dev/serial/by-id/usb-JeeLabs@x", 7).group == 7
    with pytest.raises(ValueError):
        parse_port("/dev/ttyUSB0@300")


def test_broker_restart_is_survived(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            NodeSim([BoilerNode(5, interval=0.05)], link=tmp_path / "ttyJEE0") as sim,
            Hub(mosquitto.url, ports=[sim.path], status_interval=0.1),
        ):
            async with Probe(mosquitto) as probe:
                await load_boiler(probe)
                await probe.command("node/21205/conf",
                                    {"cmd": "wire", "input": "1.0", "topic": "manual/relay"})
            mosquitto.kill()  # no persistence: retained statuses and sessions are gone
            await asyncio.to_thread(mosquitto.start)
            async with Probe(mosquitto) as probe:
                # The hub reconnects, restates its retained statuses, resubscribes its wires.
                await probe.wait("jet/node/hub/status", lambda _, s: s["state"] == "online",
                                 timeout=10)
                await probe.wait("node/21205/status", lambda _, s: "1.0" in s["inputs"])
                await probe.wait("node/21205/0/0")
                await probe.publish("manual/relay", True)
                sent = await asyncio.wait_for(sim.commands.get(), WAIT)
                assert sent.text == "8,195,5s"

    run(scenario())


# -- the hub against what RF12demo 12 really prints (issue 11) ---------------------------


async def read_lines(fd: int, count: int, timeout: float = WAIT) -> list[str]:
    """``count`` lines from a pty opened by the test (no hub), without their \\r\\n."""
    loop = asyncio.get_running_loop()
    buf = b""
    async with asyncio.timeout(timeout):
        while buf.count(b"\n") < count:
            ready = asyncio.Event()
            loop.add_reader(fd, ready.set)
            try:
                await ready.wait()
            finally:
                loop.remove_reader(fd)
            buf += os.read(fd, 4096)
    return [line.rstrip("\r") for line in buf.decode().split("\n")[:count]]


def test_the_simulator_prints_what_the_sketch_prints(tmp_path: Path) -> None:
    """Banner, help, configuration; echo; value limits; confirmation after the air time;
    ` -> ack`; the reset when the port is opened again."""

    async def scenario() -> None:
        async with NodeSim([BoilerNode(5, interval=60.0)], radio_delay=0.2) as sim:
            fd = os.open(sim.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                tty.setraw(fd)
                start = await read_lines(fd, 15)
                assert start[0] == "" and start[1] == "[RF12demo.12] _ i31 g212 @ 868 MHz q1"
                assert start[3] == "Available commands:"
                assert start[-2:] == ["Current configuration:", " _ i31 g212 @ 868 MHz q1"]
                # A word per number (70000 wraps to 4464), a byte per stack entry.
                loop = asyncio.get_running_loop()
                typed = loop.time()
                os.write(fd, b"300,70000,5s\n")
                echo, confirmed = await read_lines(fd, 2)
                assert echo == "> 44,112,5s"
                assert confirmed == " -> 2 b" and loop.time() - typed >= 0.2
                await asyncio.wait_for(sim.wait_delivered(1), WAIT)
                assert sim.sent[0].data == bytes([44, 112]) and sim.sent[0].dest == 5
                assert sim.node(5).received_values[-1] == (5, 4, 112)  # tag 44: 5.4
                # A packet asking for an ack: RF12demo acknowledges it.
                sim.send_packet(7, b"\x08\x01", HDR_ACK)
                assert await read_lines(fd, 2) == ["OK 39 8 1", " -> ack"]
                os.write(fd, b"8,1")  # half a command when the port closes
            finally:
                os.close(fd)
            await asyncio.sleep(3 * 0.05)  # the simulator sees the port closed
            fd = os.open(sim.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            try:
                tty.setraw(fd)
                await read_lines(fd, 15)  # it restarted: banner and help again
                os.write(fd, b"5s\n")
                assert await read_lines(fd, 1) == ["> 5s"]  # the typed half is gone
            finally:
                os.close(fd)

    run(scenario())


def test_two_sends_survive_an_ack_request_between_them(mosquitto: Mosquitto,
                                                      tmp_path: Path) -> None:
    """While the hub waits for its send to go on air, a node asks for an ack and
    RF12demo says ` -> ack`: the hub must not type its next command then (it would
    overwrite the pending send); both values reach the node, in order."""

    async def scenario() -> None:
        async with rig(mosquitto, tmp_path, BoilerNode(5, interval=60.0),
                       sim_args={"radio_delay": 0.3}) as (sim, hub, probe):
            await load_boiler(probe)
            reply = await probe.command("node/21205/conf",
                                        {"cmd": "wire", "input": "relay.on", "topic": "t/relay"})
            assert reply["ok"]
            await probe.publish("t/relay", True)
            await probe.publish("t/relay", False)
            first = await asyncio.wait_for(sim.commands.get(), WAIT)
            # The node's packet arrives before the first send has gone on air.
            sim.send_packet(5, encode_tag(0, 0) + encode(21.0), HDR_ACK)
            second = await asyncio.wait_for(sim.commands.get(), WAIT)
            await asyncio.wait_for(sim.wait_delivered(2), WAIT)
            assert (first.text, second.text) == ("8,195,5s", "8,194,5s")
            assert [p.data for p in sim.sent] == [bytes([8, 195]), bytes([8, 194])]
            assert list(sim.node(5).received_values) == [(1, 0, True), (1, 0, False)]
            assert hub.dongles[0].unconfirmed == 0
            # The packet itself was published as the node's output.
            await probe.wait("node/21205/0/0", lambda _, v: v == 21.0)

    run(scenario())


@pytest.mark.parametrize("mode", [1, 2])
def test_hex_and_rf69_output_is_read_and_rssi_kept(mosquitto: Mosquitto, tmp_path: Path,
                                                   mode: int) -> None:
    async def scenario() -> None:
        async with rig(mosquitto, tmp_path,
                       sim_args={"hex_output": mode, "rf69": True, "rssi": -71}) as (
                           _sim, _hub, probe):
            await load_boiler(probe)
            await probe.wait("node/21205/0/0", lambda _, v: v == pytest.approx(20.0, abs=5))
            _, status = await probe.wait("node/21205/status", lambda _, s: s["rssi"] is not None)
            assert status["rssi"] == -71  # people place nodes by it
            _, hub_status = await probe.wait("jet/node/hub/status", counters_at_least(published=2))
            assert hub_status["counters"]["garbage"] == 0
            assert hub_status["dongles"][0]["rf12demo"] == 12

    run(scenario())


def test_directed_packets_are_counted_not_published(mosquitto: Mosquitto,
                                                    tmp_path: Path) -> None:
    """DST set: the id is the destination (nodes 7 and 5 here) and the sender is not on
    the air: counted as node-to-node traffic, never an output of the addressed node."""

    async def scenario() -> None:
        async with rig(mosquitto, tmp_path) as (sim, _hub, probe):
            await load_boiler(probe)
            since = probe.mark()
            sim.send_packet(7, encode_tag(0, 0) + encode(99.0), HDR_DST)
            sim.send_packet(5, encode_tag(0, 0) + encode(99.0), HDR_DST)
            _, status = await probe.wait("jet/node/hub/status", counters_at_least(directed=2),
                                         since=since)
            await probe.wait("node/21205/0/0", since=since)  # node 5's own reports go on
            assert not any(topic.startswith("node/21207/") for topic, _ in probe.messages)
            assert all(unpack(p) != 99.0 for t, p in probe.messages[since:]
                       if t == "node/21205/0/0")
            assert all(entry["node"] != 7 for entry in status["unknown"])  # not a sender

    run(scenario())


def test_the_hub_waits_for_the_banner_before_sending(mosquitto: Mosquitto,
                                                     tmp_path: Path) -> None:
    """A JeeLink resets when the port opens: what is typed before the sketch runs is lost."""

    async def scenario() -> None:
        async with (
            Probe(mosquitto) as probe,
            NodeSim([BoilerNode(5, interval=0.05)], link=tmp_path / "ttyJEE0",
                    boot_delay=2.0) as sim,
            Hub(mosquitto.url, ports=[sim.path], status_interval=0.1),
        ):
            await load_boiler(probe)
            reply = await probe.command("node/21205/conf",
                                        {"cmd": "wire", "input": "relay.on", "topic": "t/relay"})
            assert reply["ok"] and not sim.opened.is_set()  # still booting
            await probe.publish("t/relay", True)
            await asyncio.wait_for(sim.wait_delivered(1), WAIT)
            assert sim.node(5).received_values[-1] == (1, 0, True)
            assert sim.input_lost == 0

    run(scenario())


def test_no_banner_is_logged_once_and_sending_goes_on(mosquitto: Mosquitto,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        with raw_pty() as (master, path):
            async with (
                Probe(mosquitto) as probe,
                Hub(mosquitto.url, ports=[path], status_interval=0.1),
            ):
                reply = await probe.command("node/21205/conf",
                                            {"cmd": "wire", "input": "1.0", "topic": "in/r"})
                assert reply["ok"]
                await probe.publish("in/r", 1)
                # Silent line: the command goes out after the banner timeout (3 s).
                assert await read_lines(master, 1, timeout=6.0) == ["8,1,5s"]

    with caplog.at_level(logging.WARNING, logger="jet.rf12.dongle"):
        run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "no RF12demo banner" in r.getMessage()]
    assert len(warnings) == 1 and "sending anyway" in warnings[0]


def test_old_okg_group_zero_lines_are_read(mosquitto: Mosquitto) -> None:
    """Sketches before version 10 on group 0 print `OKG <group> <hdr> ...` (newer: `OK G212`)."""

    async def scenario() -> None:
        with raw_pty() as (master, path):
            async with (
                Probe(mosquitto) as probe,
                Hub(mosquitto.url, ports=[f"{path}@0"], status_interval=0.1),
            ):
                await probe.wait("jet/node/hub/status",
                                 lambda _, s: s["dongles"][0]["state"] == "open")
                os.write(master, b"[RF12demo.8] _ i31 g0 @ 868 MHz\r\n"
                         b"OKG 212 5 0 203 64 53 128 0 0 0 0 0\r\n"
                         b"OK G100 5 0 203 64 54 0 0 0 0 0 0\r\n")
                await probe.wait("node/21205/0/0", lambda _, v: v == 21.5)
                await probe.wait("node/10005/0/0", lambda _, v: v == 22.0)
                _, status = await probe.wait("jet/node/hub/status",
                                             counters_at_least(published=2))
                assert status["counters"]["garbage"] == 0

    run(scenario())
