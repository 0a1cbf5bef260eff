"""A faulty gadget never stops a pack (issue 9, classes 3 to 5).

Each test runs a real `jet pack` subprocess against a real mosquitto, loads
circuits with the real CLI, and talks raw MQTT to it:

- a stuck async gadget whose queue is full under ``block`` holds back only its
  own wire: commands, statuses and other circuits keep flowing; drain and
  reload are bounded and say what they could not finish;
- a synchronous handler slower than the keepalive does not get the pack
  dropped by its broker, and is named in the log; one that outlasts the
  connection every time is dropped after a bounded number of deliveries;
- SystemExit (and any BaseException) from a gadget loses one message and is
  reported, the first time with the gadget's own frames, then rate-limited.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import REPO, JetProcess, jet_async, jet_ok
from helpers import Collector, link, run

from jet.definition.model import CircuitDef, GadgetDef, circuit_to_msgpack
from jet.transport import broker, codec
from jet.transport.client import CommandFailed, Session

ALLOW = "tests.gadgets_for_tests"


class PackProcess(JetProcess):
    """A `jet pack` subprocess (id ``pack_id``, gadgets of ``allow``), started and serving."""

    def __init__(
        self, url: str, *extra: str, pack_id: str = "p1", allow: str | None = ALLOW
    ) -> None:
        self.url = url
        allowing = ["--allow", allow] if allow else []
        super().__init__("pack", "--broker", url, "--id", pack_id, *allowing, *extra)
        self.wait_for_line(f"pack {pack_id} on", 20)


@pytest.fixture
def packs(mosquitto: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[PackProcess]]:
    """Start packs with ``PackProcess(mosquitto.url, ...)``, appended here to be stopped."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the test gadgets, for the pack subprocess
    started: list[PackProcess] = []
    yield started
    for pack in started:
        pack.stop()


def write_app(path: Path, circuits: dict[str, dict[str, str]]) -> Path:
    """An app file: ``{circuit: {gadget: type}}``, no wires (tests wire raw topics)."""
    lines = ["app: faults", "circuits:"]
    for circuit, gadgets in circuits.items():
        lines += [f"  {circuit}:", "    gadgets:"]
        lines += [f"      {g}: {{type: {t}}}" for g, t in gadgets.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def wire(session: Session, circuit: str, input_: str, topic: str, **options: Any) -> None:
    await session.request(
        f"pack/{circuit}/conf", {"cmd": "wire", "input": input_, "topic": topic, **options}
    )


# -- 3. one stuck gadget does not make the pack deaf ----------------------------------------

JAMMED = 30  # messages sent to a stuck gadget behind a queue of 2 (policy block)


async def jam(url: str, app: Path, session: Session, producer: Any) -> None:
    """Load the app, wire jam.g.in (a Stuck gadget) with queue=2 policy=block, fill it."""
    await jet_ok("load", str(app), "--broker", url, "--pack", "p1", "--allow", ALLOW)
    await wire(session, "jam", "g.in", "ext/jam", queue=2, policy="block")
    await wire(session, "free", "p.in", "ext/free")
    for n in range(JAMMED):
        producer.publish_nowait("ext/jam", codec.encode(n), qos=1)
    await producer.flush()
    # 0 is being handled (for ever), 1 and 2 are queued, 3 waits for room and
    # 4..29 wait on the wire: all of them show as queued.
    for _ in range(200):  # bounded: each round is a request/reply
        status = await session.request("pack/jam/conf", {"cmd": "status"})
        if status["counters"]["queued"] == JAMMED - 1:
            return
    raise AssertionError(f"jam never showed {JAMMED - 1} queued: {status['counters']}")


def test_a_stuck_gadget_leaves_commands_statuses_and_other_circuits_flowing(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    app = write_app(tmp_path / "app.yaml", {
        "jam": {"g": f"{ALLOW}.Stuck"}, "free": {"p": f"{ALLOW}.Pass"},
    })
    app_v2 = write_app(tmp_path / "app2.yaml", {
        "jam": {"g": f"{ALLOW}.Pass"}, "free": {"p": f"{ALLOW}.Pass"},
    })
    packs.append(PackProcess(mosquitto.url))
    url = mosquitto.url

    async def go() -> None:
        async with (
            Session(broker.parse(url)) as session,
            link(url, "producer") as producer,
            link(url, "observer") as observer,
        ):
            out = await Collector(observer).watch("pack/+/+/0")
            await jam(url, app, session, producer)

            # The pack answers its own commands and the other circuit's at once ...
            presence = await session.request("jet/pack/p1/conf", {"cmd": "status"})
            assert presence["state"] == "online"
            assert "jam" in await jet_ok("ls", "--broker", url)
            # ... and the other circuit's messages flow.
            producer.publish_nowait("ext/free", codec.encode("still here"), qos=1)
            await out.wait_for(lambda c: "still here" in c.values("pack/free/p/0"), timeout=5)

            # A drain of the stuck circuit is bounded and says what is left.
            started = time.monotonic()
            with pytest.raises(CommandFailed) as refused:
                await session.request("pack/jam/conf", {"cmd": "drain", "timeout": 1})
            assert time.monotonic() - started < 4
            assert "not drained after 1 s" in str(refused.value)
            assert "g.in" in str(refused.value)

            # A reload replacing the stuck gadget is bounded too; what it had not
            # finished goes to the new gadget (the message it was stuck on is lost).
            said = await jet_ok(
                "reload", str(app_v2), "--broker", url, "--pack", "p1", "--allow", ALLOW
            )
            assert "reloaded jam (not finished in time: g: 2 queued messages handed to the" \
                " new gadget, 1 lost)" in said, said
            await out.wait_for(lambda c: len(c.values("pack/jam/g/0")) >= JAMMED - 1, timeout=10)
            assert out.values("pack/jam/g/0") == list(range(1, JAMMED)), "nothing else lost"

    run(go(), timeout=60)
    log = packs[0].stop()
    assert "jam.g: not finished 3 s into the reload: 2 queued messages handed to the new g," \
        " 1 lost" in log


def test_unloading_a_stuck_circuit_completes_and_reports_the_drain(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    app = write_app(tmp_path / "app.yaml", {
        "jam": {"g": f"{ALLOW}.Stuck"}, "free": {"p": f"{ALLOW}.Pass"},
    })
    packs.append(PackProcess(mosquitto.url))
    url = mosquitto.url

    async def go() -> str:
        async with (
            Session(broker.parse(url)) as session,
            link(url, "producer") as producer,
        ):
            await jam(url, app, session, producer)
            said = await jet_ok("unload", "jam", "--broker", url, timeout=30)
            presence = await session.request("jet/pack/p1/conf", {"cmd": "status"})
            assert presence["circuits"] == ["free"]
            return said

    said = run(go(), timeout=60)
    assert "drain: jam: not drained after 10 s (27 messages still wait for room in the queue" \
        " of g.in)" in said
    assert "unloading it anyway" in said
    assert "unloaded jam" in said


def nap_app(tmp_path: Path, seconds: int, *, free: bool = False) -> Path:
    """A circuit ``nap`` whose Sleepy gadget ``s`` holds each message ``seconds``
    (with ``free``: a second circuit ``free`` beside it)."""
    app = tmp_path / "nap.yaml"
    text = (
        "app: nap\ncircuits:\n  nap:\n    gadgets:\n"
        f"      s: {{type: {ALLOW}.Sleepy, params: {{seconds: {seconds}}}}}\n"
    )
    if free:
        text += f"  free:\n    gadgets:\n      p: {{type: {ALLOW}.Pass}}\n"
    app.write_text(text)
    return app


# -- 4. a slow synchronous handler does not starve the keepalive ---------------------------


def test_a_handler_slower_than_the_keepalive_keeps_the_pack_connected_and_is_named(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    # keepalive 2 s: the broker drops a silent client after 3 s; the handler takes 4 s.
    app = nap_app(tmp_path, 4)
    packs.append(PackProcess(mosquitto.url, "--keepalive", "2"))
    url = mosquitto.url

    async def go() -> tuple[list[Any], list[Any]]:
        async with (
            Session(broker.parse(url)) as session,
            link(url, "producer") as producer,
            link(url, "observer") as observer,
        ):
            await jet_ok("load", str(app), "--broker", url, "--pack", "p1", "--allow", ALLOW)
            await wire(session, "nap", "s.in", "ext/nap")
            presence = await Collector(observer).watch("jet/pack/p1/status")
            out = await Collector(observer).watch("pack/nap/s/0")
            producer.publish_nowait("ext/nap", codec.encode("first"), qos=1)
            producer.publish_nowait("ext/nap", codec.encode("second"), qos=1)
            # Had the broker dropped the pack, "first" (never acknowledged) would
            # come back before "second" and be handled again.
            await out.wait_for(lambda c: "second" in c.values(), timeout=20)
            return out.values(), [v["state"] for v in presence.values() if v]

    values, states = run(go(), timeout=60)
    assert values == ["first", "second"], "each message handled once"
    assert "offline" not in states, "the broker never dropped the pack"
    log = packs[0].stop()
    assert "lost MQTT broker" not in log
    assert "the event loop is held by nap.s (tests.gadgets_for_tests.Sleepy) on input in" in log
    assert "keeping the MQTT connection alive meanwhile" in log


def test_a_message_whose_handling_always_outlasts_the_connection_is_not_redelivered_forever(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    # The pack keeps its connection alive for 1 s of a 10 s handler only (--stuck-limit):
    # the broker drops it each time (keepalive 2 s), and the message comes back
    # unacknowledged.
    app = nap_app(tmp_path, 10, free=True)
    pack = PackProcess(mosquitto.url, "--keepalive", "2", "--stuck-limit", "1")
    packs.append(pack)
    url = mosquitto.url

    async def go() -> list[Any]:
        async with (
            Session(broker.parse(url)) as session,
            link(url, "producer") as producer,
            link(url, "observer") as observer,
        ):
            await jet_ok("load", str(app), "--broker", url, "--pack", "p1", "--allow", ALLOW)
            await wire(session, "nap", "s.in", "ext/nap")
            await wire(session, "free", "p.in", "ext/free")
            out = await Collector(observer).watch("pack/+/+/0")
            producer.publish_nowait("ext/nap", codec.encode("poison"), qos=1)
            await producer.flush()
            await pack.line("dropped unhandled", timeout=45)
            # Afterwards the pack serves everything again.
            producer.publish_nowait("ext/free", codec.encode("after"), qos=1)
            await out.wait_for(lambda c: "after" in c.values("pack/free/p/0"), timeout=10)
            presence = await session.request("jet/pack/p1/conf", {"cmd": "status"})
            assert presence["state"] == "online"
            return out.values("pack/nap/s/0")

    handled = run(go(), timeout=90)
    assert len(handled) <= 2, "handled at most twice, then refused"
    log = pack.stop()
    assert "ext/nap: message of 7 bytes dropped unhandled: its handling outlasted the MQTT" \
        " connection 2 times (held by nap.s (tests.gadgets_for_tests.Sleepy) on input in)" in log
    assert "no longer keeping jet-pack-p1's MQTT connection alive" in log


# -- 5. SystemExit or any BaseException from a gadget never ends the pack -------------------


def test_systemexit_from_a_gadget_loses_one_message_and_is_reported_once(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    app = write_app(tmp_path / "quit.yaml", {"quit": {
        "e": f"{ALLOW}.Exiting", "a": f"{ALLOW}.AsyncExiting", "r": f"{ALLOW}.ExitingRun",
    }})
    pack = PackProcess(mosquitto.url)
    packs.append(pack)
    url = mosquitto.url

    async def go() -> dict[str, Any]:
        async with (
            Session(broker.parse(url)) as session,
            link(url, "producer") as producer,
            link(url, "observer") as observer,
        ):
            await jet_ok("load", str(app), "--broker", url, "--pack", "p1", "--allow", ALLOW)
            await wire(session, "quit", "e.in", "ext/e")
            await wire(session, "quit", "a.in", "ext/a")
            out = await Collector(observer).watch("pack/quit/+/0")
            for value in ["exit", "interrupt", "exit", "ok"]:
                producer.publish_nowait("ext/e", codec.encode(value), qos=1)
            for value in ["exit", "exit", "ok"]:
                producer.publish_nowait("ext/a", codec.encode(value), qos=1)
            await out.wait_for(
                lambda c: c.values("pack/quit/e/0") == c.values("pack/quit/a/0") == ["ok"],
                timeout=10,
            )
            status: dict[str, Any] = await session.request("pack/quit/conf", {"cmd": "status"})
            return status

    status = run(go(), timeout=60)
    assert pack.proc.poll() is None, "the pack is still running"
    assert status["counters"]["errors"] == 3 + 2 + 1  # e, a, and r's run()
    log = pack.stop()
    assert "quit.e.in: SystemExit: 3 (message lost; further errors of this gadget are" \
        " counted" in log
    assert "quit.a.in: SystemExit: 4 (message lost" in log
    assert "quit.r.run(): SystemExit: 5 (run() ended" in log
    # The first error shows the gadget's own line; the next ones are counted, not logged.
    assert log.count("raise SystemExit(3)") == 1
    assert "KeyboardInterrupt" not in log


def test_a_gadget_module_that_exits_on_import_is_refused_in_one_line(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    pack = PackProcess(mosquitto.url, "--allow", "tests.gadget_module_that_exits")
    packs.append(pack)
    definition = CircuitDef(
        "boom", gadgets=(GadgetDef("g", "tests.gadget_module_that_exits.Anything"),)
    )

    async def go() -> str:
        async with Session(broker.parse(mosquitto.url)) as session:
            with pytest.raises(CommandFailed) as refused:
                load = {"cmd": "load", "definition": circuit_to_msgpack(definition)}
                await session.request("jet/pack/p1/conf", load)
            presence = await session.request("jet/pack/p1/conf", {"cmd": "status"})
            assert presence["state"] == "online"
            return str(refused.value)

    error = run(go(), timeout=30)
    assert "importing 'tests.gadget_module_that_exits' failed: SystemExit: 7" in error
    assert pack.proc.poll() is None

    app = tmp_path / "boom.yaml"
    app.write_text(
        "app: boom\ncircuits:\n  boom:\n    gadgets:\n"
        "      g: {type: tests.gadget_module_that_exits.Anything}\n"
    )
    checked = run(jet_async("check", "--allow", "tests.gadget_module_that_exits", str(app)))
    code, out, err = checked
    assert code == 1
    assert "importing 'tests.gadget_module_that_exits' failed: SystemExit: 7" in out + err
