"""What a container refuses, and that refusing costs it nothing (issue 9, classes 1, 2, 12).

Every definition reaches a real `jet pack` as a raw ``load`` or ``reload`` over MQTT, the way a
stranger on the broker would send it, or from a state file; each must be refused in one line,
quickly, and the pack must go on answering its other commands.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import jet, jet_background, stop
from helpers import Collector, run

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
