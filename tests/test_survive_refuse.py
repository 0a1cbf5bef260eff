"""What a container refuses, and that refusing costs it nothing (issue 9, classes 1, 2, 12).

Every definition reaches a real `jet pack` as a raw ``load`` or ``reload`` over MQTT, the way a
stranger on the broker would send it, or from a state file; each must be refused in one line,
quickly, and the pack must go on answering its other commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import jet, jet_background, read_until, stop
from conftest import free_port
from helpers import Collector, run
from websockets.asyncio.client import connect

from jet.transport import broker, codec
from jet.transport.client import CommandFailed, Session

PACK = "refuser"
CONF = f"jet/pack/{PACK}/conf"
#: How long a refusal, or a command right after one, may take: a pack that
#: recursed or expanded would take minutes, or never answer.
PROMPT = 3.0


def offset(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "gadgets": [{"name": "d", "type": "jet.lib.Offset", "params": {"offset": 1}}],
    }


def delay_free_cycle(name: str) -> dict[str, Any]:
    """A constant that emits at start into a thermostat whose output triggers it again."""
    return {
        "name": name,
        "gadgets": [
            {"name": "c", "type": "jet.lib.Constant", "params": {"value": 1}},
            {"name": "t", "type": "jet.lib.Thermostat", "params": {}},
        ],
        "wires": [
            {"from": "c.out", "to": "t.temp", "qos": 1},
            {"from": "t.heat", "to": "c.trigger", "qos": 1},
        ],
    }


def two_wires_into_one_input(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "gadgets": [
            {"name": "a", "type": "jet.lib.Scale", "params": {}},
            {"name": "b", "type": "jet.lib.Scale", "params": {}},
            {"name": "log", "type": "jet.lib.Logger", "params": {}},
        ],
        "wires": [
            {"from": "a.out", "to": "log.in", "qos": 1},
            {"from": "b.out", "to": "log.in", "qos": 1},
        ],
    }


def nested(name: str, depth: int, uses: int = 2) -> dict[str, Any]:
    """Sub-circuits nested ``depth`` deep, each using the next ``uses`` times (a few KB)."""

    def sub(level: int) -> dict[str, Any]:
        inner = f"s{level + 1}" if level + 1 < depth else "jet.lib.Scale"
        gadgets = [{"name": f"g{k}", "type": inner, "params": {}} for k in range(uses)]
        wires = [
            {"from": f"g{k}.out", "to": f"g{k + 1}.in", "qos": 1} for k in range(uses - 1)
        ]
        return {
            "name": f"s{level}",
            "gadgets": gadgets,
            "wires": wires,
            "inputs": {"in": "g0.in"},
            "outputs": {"out": f"g{uses - 1}.out"},
            "subcircuits": {inner: sub(level + 1)} if level + 1 < depth else {},
        }

    return {
        "name": name,
        "gadgets": [{"name": "top", "type": "s0", "params": {}}],
        "subcircuits": {"s0": sub(0)},
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def pack_process(url: str, *extra: str) -> Iterator[subprocess.Popen[str]]:
    proc = jet_background("pack", "--broker", url, "--id", PACK, *extra)
    try:
        yield proc
    finally:
        stop(proc)


@contextlib.asynccontextmanager
async def session_with_pack(url: str) -> AsyncIterator[tuple[Session, Collector]]:
    """A command session once the pack says it is online, and a watch on its outputs."""
    async with Session(broker.parse(url), timeout=PROMPT) as session:
        presence = await Collector(session.link).watch(f"jet/pack/{PACK}/status")
        await presence.wait_for(
            lambda c: any(v and v.get("state") == "online" for v in c.values()), timeout=20
        )
        outputs = await Collector(session.link).watch("pack/+/+/+")
        yield session, outputs


async def refused(session: Session, topic: str, command: dict[str, Any]) -> tuple[str, float]:
    """The one-line refusal of ``command`` and how long it took."""
    started = time.monotonic()
    with pytest.raises(CommandFailed) as failure:
        await session.request(topic, command)
    message = str(failure.value)
    assert "\n" not in message, message
    return message, time.monotonic() - started


async def answers_promptly(session: Session) -> None:
    started = time.monotonic()
    status = await session.request(CONF, {"cmd": "status"})
    assert status["state"] == "online"
    assert time.monotonic() - started < PROMPT


async def still_works(session: Session, outputs: Collector, circuit: str, value: int) -> None:
    """An injected value comes out of ``circuit`` (an offset of 1)."""
    inject = {"cmd": "inject", "input": "d.in", "value": value}
    await session.request(f"pack/{circuit}/conf", inject)
    topic = f"pack/{circuit}/d/0"
    await outputs.wait_for(lambda c: value + 1 in c.values(topic), timeout=PROMPT)


# -- 1. a pack checks every definition it receives as `jet check` does ---------------------------


def test_pack_refuses_a_load_or_reload_that_jet_check_refuses(mosquitto: Any) -> None:
    async def scenario() -> None:
        async with session_with_pack(mosquitto.url) as (session, outputs):
            await session.request(CONF, {"cmd": "load", "definition": offset("alive")})
            message, took = await refused(
                session, CONF, {"cmd": "load", "definition": delay_free_cycle("loop")}
            )
            assert "cycle without a delay through c, t" in message, message
            assert took < PROMPT
            message, took = await refused(
                session, CONF, {"cmd": "load", "definition": two_wires_into_one_input("twice")}
            )
            assert "input twice.log.in has two wires: the wire twice.a.out" in message, message
            # A reload is checked the same way, and the running circuit stays as it was.
            cyclic = {**delay_free_cycle("alive"), "gadgets": [
                *delay_free_cycle("alive")["gadgets"], *offset("alive")["gadgets"]
            ]}
            message, _ = await refused(
                session, "pack/alive/conf", {"cmd": "reload", "definition": cyclic}
            )
            assert "cycle without a delay" in message, message
            await answers_promptly(session)
            await still_works(session, outputs, "alive", 41)
            loaded = (await session.request(CONF, {"cmd": "status"}))["circuits"]
            assert loaded == ["alive"]

    with pack_process(mosquitto.url):
        run(scenario(), timeout=60)


def test_pack_refuses_a_state_file_circuit_that_jet_check_refuses(
    mosquitto: Any, tmp_path: Path
) -> None:
    state = tmp_path / "pack.state"

    def saved(definition: dict[str, Any]) -> dict[str, Any]:
        return {"app": "", "definition": definition, "exports": {}, "wires": [], "args": {}}

    state.write_bytes(codec.encode({
        "version": 2,
        "kind": "pack",
        "circuits": {"loop": saved(delay_free_cycle("loop")), "alive": saved(offset("alive"))},
    }))

    async def scenario() -> None:
        async with session_with_pack(mosquitto.url) as (session, outputs):
            await answers_promptly(session)
            await still_works(session, outputs, "alive", 1)
            assert (await session.request(CONF, {"cmd": "status"}))["circuits"] == ["alive"]

    proc = jet_background("pack", "--broker", mosquitto.url, "--id", PACK, "--state", str(state))
    try:
        run(scenario(), timeout=60)
    finally:
        log = stop(proc)
    refusal = [line for line in log.splitlines() if "cannot restore circuit loop" in line]
    assert refusal and "cycle without a delay" in refusal[0], log[-2000:]


# -- 2. nesting depth and expanded size are bounded, refused in milliseconds ---------------------


def test_nested_subcircuits_are_refused_in_milliseconds_by_the_pack(mosquitto: Any) -> None:
    deep = nested("deep", depth=22)  # 2**22 gadgets once expanded
    wide = nested("wide", depth=14)  # within the depth, 2**15 gadgets expanded
    assert len(codec.encode(deep)) < 4096

    async def scenario(pid: int) -> None:
        async with session_with_pack(mosquitto.url) as (session, outputs):
            await session.request(CONF, {"cmd": "load", "definition": offset("alive")})
            before = rss_kib(pid)
            message, took = await refused(session, CONF, {"cmd": "load", "definition": deep})
            assert "nested more than 16 deep" in message, message
            assert took < 1.0
            message, took = await refused(session, CONF, {"cmd": "load", "definition": wide})
            assert "gadgets once its sub-circuits are expanded" in message, message
            assert "at most 10000" in message, message
            assert took < 1.0
            reload = {"cmd": "reload", "definition": {**deep, "name": "alive"}}
            message, _ = await refused(session, "pack/alive/conf", reload)
            assert "nested more than 16 deep" in message, message
            await answers_promptly(session)
            await still_works(session, outputs, "alive", 5)
            assert rss_kib(pid) - before < 50_000, "the refused definitions were expanded"
            # Within both bounds a nested definition still loads.
            await session.request(CONF, {"cmd": "load", "definition": nested("fine", depth=8)})

    with pack_process(mosquitto.url) as proc:
        run(scenario(proc.pid), timeout=60)


def test_jet_check_refuses_nested_subcircuits_in_milliseconds(tmp_path: Path) -> None:
    lines = ["app: deep", "subcircuits:"]
    depth = 22
    for level in range(depth):
        inner = f"s{level + 1}" if level + 1 < depth else "jet.lib.Scale"
        lines += [
            f"  s{level}:",
            "    inputs: {in: a.in}",
            "    outputs: {out: b.out}",
            f"    gadgets: {{a: {{type: {inner}}}, b: {{type: {inner}}}}}",
            "    wires: [a.out -> b.in]",
        ]
    lines += ["circuits:", "  top:", "    gadgets:", "      g: {type: s0}"]
    path = tmp_path / "deep.yaml"
    path.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    done = jet("check", str(path), timeout=30)
    took = time.monotonic() - started
    assert done.returncode == 1
    assert f"{path}:" in done.stderr and "nested more than 16 deep" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert took < 10  # the interpreter's start; the check itself takes milliseconds


# -- 12. safety limits --------------------------------------------------------------------------


ABSURD_YAML = """\
app: absurd
circuits:
  c:
    gadgets:
      fast:  {type: jet.lib.Ticker, params: {interval: 1e-9}}
      never: {type: jet.lib.Ticker, params: {interval: .inf}}
      hot:   {type: jet.lib.Thermostat, params: {setpoint: .inf}}
      avg:   {type: jet.lib.MovingAverage, params: {size: 1000000000}}
  panel:
    container: web
    gadgets:
      knob:  {type: web.Slider, params: {min: 0, max: .inf}}
"""


def test_absurd_parameters_and_queues_are_refused_by_jet_check_and_the_pack(
    mosquitto: Any, tmp_path: Path
) -> None:
    path = tmp_path / "absurd.yaml"
    path.write_text(ABSURD_YAML)
    done = jet("check", str(path))
    assert done.returncode == 1
    for line, words in (
        (5, "'interval' must be from 0.001 to 31536000 seconds, got 1e-09"),
        (6, "'interval' must be from 0.001 to 31536000 seconds, got inf"),
        (7, "'setpoint' must be finite, got inf"),
        (8, "'size' must be from 1 to 100000, got 1000000000"),
        (12, "web.Slider: parameter 'max' must be a number, got inf"),  # a range of nothing
    ):
        assert f"{path}:{line}: " in done.stderr and words in done.stderr, done.stderr
    path.write_text(ABSURD_YAML.split("    gadgets:")[0] + (
        "    gadgets: {a: {type: jet.lib.Scale}, b: {type: jet.lib.Scale}}\n"
        "    wires: [a.out -> b.in queue=1000000000]\n"
    ))
    done = jet("check", str(path))
    assert done.returncode == 1 and "queue must be a whole number from 1 to 100000" in done.stderr

    def ticker(interval: float) -> dict[str, Any]:
        gadget = {"name": "t", "type": "jet.lib.Ticker", "params": {"interval": interval}}
        return {"name": "tick", "gadgets": [gadget]}

    async def scenario() -> None:
        async with session_with_pack(mosquitto.url) as (session, outputs):
            await session.request(CONF, {"cmd": "load", "definition": offset("alive")})
            for interval, words in ((1e-9, "must be from 0.001"), (float("inf"), "got inf")):
                message, took = await refused(
                    session, CONF, {"cmd": "load", "definition": ticker(interval)}
                )
                assert "gadget tick.t: Ticker: parameter 'interval' " in message, message
                assert words in message and took < PROMPT, message
            nan = {**offset("nan"), "gadgets": [
                {"name": "d", "type": "jet.lib.Offset", "params": {"offset": float("nan")}}
            ]}
            message, _ = await refused(session, CONF, {"cmd": "load", "definition": nan})
            assert "parameter 'offset' must be a number, got nan" in message, message
            long_queue = {**two_wires_into_one_input("q"), "wires": [
                {"from": "a.out", "to": "log.in", "qos": 1, "queue": 10**9}
            ]}
            message, _ = await refused(session, CONF, {"cmd": "load", "definition": long_queue})
            assert "queue must be a whole number from 1 to 100000" in message, message
            wire = {"cmd": "wire", "input": "d.in", "topic": "x/y", "queue": 10**9}
            message, _ = await refused(session, "pack/alive/conf", wire)
            assert "queue must be a whole number from 1 to 100000" in message, message
            await answers_promptly(session)
            await still_works(session, outputs, "alive", 7)
            assert (await session.request(CONF, {"cmd": "status"}))["circuits"] == ["alive"]

    with pack_process(mosquitto.url):
        run(scenario(), timeout=60)


NODES_YAML = """\
group: 212
nodes:
  - node: 5
    model: boiler
    interval: 0.2
"""

BOILER = {
    "name": "boiler",
    "container": "node",
    "node": 5,
    "gadgets": [{"name": "water", "outputs": ["celsius"]}, {"name": "relay", "inputs": ["on"]}],
}


def test_a_radio_node_input_takes_one_topic_never_a_wildcard(
    mosquitto: Any, tmp_path: Path
) -> None:
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(NODES_YAML)
    link = tmp_path / "ttyJEE0"
    sim = jet_background("node-sim", "--nodes", str(nodes), "--link", str(link))
    hub = None
    try:
        read_until(sim, "RF12demo simulator on")
        hub = jet_background("hub", "--port", str(link), "--broker", mosquitto.url)

        async def scenario() -> None:
            async with Session(broker.parse(mosquitto.url), timeout=PROMPT) as session:
                presence = await Collector(session.link).watch("jet/node/hub/status")
                await presence.wait_for(
                    lambda c: any(v and v.get("state") == "online" for v in c.values()),
                    timeout=20,
                )
                await session.request("jet/node/hub/conf", {"cmd": "load", "definition": BOILER})
                for topic in ("#", "pack/+/relay/0", "boiler/#"):
                    wire = {"cmd": "wire", "input": "relay.on", "topic": topic}
                    message, _ = await refused(session, "node/21205/conf", wire)
                    assert "input 1.0 of node circuit 21205 takes one topic, not a filter" in (
                        message
                    ), message
                # A node never loaded is refused the same, and no circuit is made for it.
                wire = {"cmd": "wire", "input": "1.0", "topic": "#"}
                message, _ = await refused(session, "node/21209/conf", wire)
                assert "wildcard" in message, message
                status = await session.request("jet/node/hub/conf", {"cmd": "status"})
                assert status["circuits"] == ["21205"]
                # One topic is what a node input takes.
                wire = {"cmd": "wire", "input": "relay.on", "topic": "pack/control/t/0"}
                await session.request("node/21205/conf", wire)
                node = await session.request("node/21205/conf", {"cmd": "status"})
                assert [w["topic"] for w in node["inputs"]["1.0"]] == ["pack/control/t/0"]

        run(scenario(), timeout=60)
    finally:
        if hub is not None:
            stop(hub)
        stop(sim)


PANEL_APP = """\
app: panel
circuits:
  control:
    gadgets:
      thermostat: {type: jet.lib.Thermostat, params: {setpoint: 50}}
  panel:
    container: web
    gadgets:
      setpoint: {type: web.Slider, params: {min: 20, max: 70}}
      pump:     {type: web.Switch}
      reset:    {type: web.Button}
wires:
  - panel.setpoint.value -> control.thermostat.setpoint
"""


async def reply_to(ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps(frame))
    while True:
        answer = json.loads(await asyncio.wait_for(ws.recv(), PROMPT))
        if answer["op"] == "reply":
            return dict(answer)


async def hello(ws: Any) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), PROMPT))
        if frame["op"] == "hello":
            return dict(frame)


def test_a_page_sets_only_its_own_gadgets_within_range_unless_the_operator_view_is_on(
    mosquitto: Any, tmp_path: Path
) -> None:
    app = tmp_path / "panel.yaml"
    app.write_text(PANEL_APP)
    emit = {"op": "emit", "circuit": "panel"}
    inject = {"op": "inject", "target": "control.thermostat.setpoint", "value": 1e308}

    async def panels_only(page: str) -> None:
        async with connect(page.replace("http://", "ws://") + "ws") as ws:
            greeting = await hello(ws)
            for gadget, port, value, words in (
                ("setpoint", "value", 1e308, "outside 20..70"),
                ("setpoint", "value", "hot", "must be a number"),
                ("pump", "value", 1, "true or false"),
                ("reset", "press", 99, "a button's press is true"),
            ):
                answer = await reply_to(ws, {**emit, "gadget": gadget, "port": port,
                                             "value": value})
                assert answer["ok"] is False and words in answer["error"], answer
            answer = await reply_to(ws, inject)
            assert answer["ok"] is False and "the operator view is off" in answer["error"]
            answer = await reply_to(ws, {**emit, "gadget": "setpoint", "port": "value",
                                         "value": 60})
            assert answer["ok"] is True, answer
            assert greeting["operator"] is False  # (the page greys its inject form)

    async def operator_view(page: str) -> None:
        async with connect(page.replace("http://", "ws://") + "ws") as ws:
            assert (await hello(ws))["operator"] is True
            answer = await reply_to(ws, {**inject, "value": 55})
            assert answer["ok"] is True, answer

    def start_web(web_id: str, *args: str) -> str:
        web = jet_background("web", "--broker", mosquitto.url, "--port", str(free_port()),
                             "--id", web_id, *args)
        procs.append(web)
        line = read_until(web, f"web {web_id} on http://")[-1]
        assert ("operator view on" in line) == bool(args), line
        return line.split(" on ")[1].split()[0]

    procs = [jet_background("pack", "--broker", mosquitto.url)]
    try:
        page = start_web("web")
        loaded = jet("load", str(app), "--broker", mosquitto.url)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        run(panels_only(page), timeout=60)
        run(operator_view(start_web("op", "--operator")), timeout=60)
    finally:
        for proc in procs:
            stop(proc)


def test_jet_run_turns_the_operator_view_on_only_with_its_own_broker(
    mosquitto: Any, tmp_path: Path
) -> None:
    app = tmp_path / "panel.yaml"
    app.write_text(PANEL_APP)

    async def operator_view(page: str) -> bool:
        async with connect(page.replace("http://", "ws://") + "ws") as ws:
            return bool((await hello(ws))["operator"])

    for extra, expected in ((("--broker", mosquitto.url), False), ((), True)):
        demo = jet_background("run", str(app), *extra)
        try:
            line = read_until(demo, "web page http://")[-1]
            page = line.split("web page ")[1].split()[0]
            assert run(operator_view(page), timeout=30) is expected, extra
        finally:
            stop(demo)
