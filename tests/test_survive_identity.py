"""State, ghosts, late commands and identity clashes (issue 9, classes 6, 8 and 9).

Each test runs real `jet pack` subprocesses against a real mosquitto, the real
CLI, and raw MQTT:

- a circuit of a state file that cannot be built at a restart (its gadget
  module not allowed this time) is kept in the file, reported, and runs again
  at the next start that allows it;
- a pack restarted without its circuits clears the retained statuses its
  earlier run left, and `jet unload` of one says in one line it is not loaded;
- a `load` that `jet load` reported unanswered (the pack was down) does not
  take effect when the pack comes back: the command was stale;
- a second pack with the same id refuses to start, naming the first's host and
  pid, and the first keeps serving; a pack refuses a circuit another runs.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path
from typing import Any

from cli_helpers import jet_async, jet_ok
from helpers import Collector, link, run
from test_survive_gadgets import ALLOW, PackProcess, packs, write_app

from jet.definition.model import CircuitDef, GadgetDef, circuit_to_msgpack
from jet.transport import broker, codec
from jet.transport.client import CommandFailed, Session

__all__ = ["packs"]  # the fixture, shared with test_survive_gadgets


def saved_circuits(state: Path) -> set[str]:
    data = codec.decode(state.read_bytes())
    return set(data["circuits"])


async def retained(url: str, topic: str) -> Any:
    """The retained message on ``topic`` (None when there is none)."""
    async with Session(broker.parse(url)) as session:
        found = await session.retained(topic)
    return found.get(topic)


def kill(pack: PackProcess) -> None:
    """kill -9: no clean shutdown, the retained statuses stay as they were."""
    pack.proc.send_signal(signal.SIGKILL)
    pack.proc.wait(10)


# -- 6. state that cannot be restored is kept -------------------------------------------------


def test_a_circuit_that_cannot_be_restored_is_kept_reported_and_retried(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    url = mosquitto.url
    state = tmp_path / "p1.state"
    app = write_app(tmp_path / "app.yaml", {"mine": {"p": f"{ALLOW}.Pass"}})
    packs.append(PackProcess(url, "--state", str(state)))
    run(jet_ok("load", str(app), "--broker", url, "--pack", "p1", "--allow", ALLOW))
    assert saved_circuits(state) == {"mine"}
    packs.pop().stop()

    # Restarted without the allow: the circuit cannot be built ...
    again = PackProcess(url, "--state", str(state), allow=None)
    packs.append(again)
    assert saved_circuits(state) == {"mine"}  # (restored and saved before it says "on")
    line = again.wait_for_line("cannot restore", 10)
    assert "mine" in line and ALLOW in line, line

    async def reported() -> None:
        async with Session(broker.parse(url)) as session:
            presence = await session.request("jet/pack/p1/conf", {"cmd": "status"})
            assert presence["circuits"] == []
            assert set(presence["unrestored"]) == {"mine"}
            assert ALLOW in presence["unrestored"]["mine"]
            status = await session.request("pack/mine/conf", {"cmd": "status"})
            assert status["state"] == "unrestored"
            try:
                await session.request("pack/mine/conf", {"cmd": "inject", "input": "p.in",
                                                         "value": 1})
            except CommandFailed as exc:
                assert "not restored" in str(exc), exc
            else:
                raise AssertionError("an unrestored circuit took an inject")
        assert (await retained(url, "pack/mine/status"))["state"] == "unrestored"

    run(reported())
    # ... and is still in the state file, untouched, after its save.
    assert saved_circuits(state) == {"mine"}
    packs.pop().stop()
    assert saved_circuits(state) == {"mine"}

    # Restarted with the allow: it runs again, values flow through it.
    packs.append(PackProcess(url, "--state", str(state)))

    async def runs() -> None:
        async with Session(broker.parse(url)) as session, link(url, "observer") as observer:
            out = await Collector(observer).watch("pack/mine/p/0")
            presence = await session.request("jet/pack/p1/conf", {"cmd": "status"})
            assert presence["circuits"] == ["mine"] and presence["unrestored"] == {}
            await session.request(
                "pack/mine/conf", {"cmd": "inject", "input": "p.in", "value": 42}
            )
            await out.wait_for(lambda c: c.values() == [42])

    run(runs())
    assert saved_circuits(state) == {"mine"}


def test_an_unrestored_circuit_is_replaced_by_a_load_and_removed_by_an_unload(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    url = mosquitto.url
    state = tmp_path / "p1.state"
    app = write_app(tmp_path / "app.yaml", {
        "mine": {"p": f"{ALLOW}.Pass"}, "other": {"p": f"{ALLOW}.Pass"},
    })
    packs.append(PackProcess(url, "--state", str(state)))
    run(jet_ok("load", str(app), "--broker", url, "--pack", "p1", "--allow", ALLOW))
    packs.pop().stop()
    again = PackProcess(url, "--state", str(state), allow=None)
    packs.append(again)
    again.wait_for_line("cannot restore", 10)

    async def go() -> None:
        async with Session(broker.parse(url)) as session:
            # A load of the same id replaces the kept entry (here with a gadget allowed now).
            mine = CircuitDef(name="mine", container="pack",
                              gadgets=(GadgetDef("p", "jet.lib.ChangeOnly"),))
            await session.request(
                "jet/pack/p1/conf", {"cmd": "load", "definition": circuit_to_msgpack(mine)}
            )
            # `jet unload` of the other removes it.
            said = await jet_ok("unload", "other", "--broker", url, "--pack", "p1")
            assert "unloaded other" in said, said
            presence = await session.request("jet/pack/p1/conf", {"cmd": "status"})
            assert presence["circuits"] == ["mine"] and presence["unrestored"] == {}
        assert await retained(url, "pack/other/status") is None

    run(go())
    saved = codec.decode(state.read_bytes())["circuits"]
    assert set(saved) == {"mine"}
    assert saved["mine"]["definition"]["gadgets"][0]["type"] == "jet.lib.ChangeOnly"


# -- 8. ghosts and late commands ----------------------------------------------------------------


def test_a_restarted_pack_clears_the_statuses_of_circuits_it_no_longer_has(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    url = mosquitto.url
    app = write_app(tmp_path / "app.yaml", {"ghost": {"p": f"{ALLOW}.Pass"}})
    first = PackProcess(url)
    packs.append(first)
    run(jet_ok("load", str(app), "--broker", url, "--pack", "p1", "--allow", ALLOW))
    kill(packs.pop())
    assert (run(retained(url, "pack/ghost/status")))["state"] == "online"

    again = PackProcess(url)  # no state file: it comes back without the circuit
    packs.append(again)

    async def cleared() -> None:
        async with link(url, "observer") as observer:
            statuses = await Collector(observer).watch("pack/ghost/+")
            await statuses.wait_for(lambda c: not any(v for _, v in c.messages), timeout=5)
        code, _out, err = await jet_async("unload", "ghost", "--broker", url, "--pack", "p1")
        assert code != 0
        assert err.strip().splitlines() == ["jet unload: error: no circuit 'ghost' is loaded"]

    run(cleared())
    line = again.wait_for_line("left by an earlier run", 10)
    assert "ghost" in line, line


def test_a_load_reported_unanswered_does_not_take_effect_later(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    url = mosquitto.url
    app = write_app(tmp_path / "app.yaml", {"late": {"p": f"{ALLOW}.Pass"}})
    packs.append(PackProcess(url))
    kill(packs.pop())  # its persistent session keeps what is sent to it meanwhile

    code, out, err = run(jet_async(
        "load", str(app), "--broker", url, "--pack", "p1", "--allow", ALLOW, "--timeout", "1"
    ))
    assert code != 0 and "no reply" in err, out + err

    again = PackProcess(url)
    packs.append(again)
    line = again.wait_for_line("stale command", 10)
    assert "jet/pack/p1/conf: load" in line and "expired" in line, line

    async def not_loaded() -> None:
        async with Session(broker.parse(url)) as session:
            presence = await session.request("jet/pack/p1/conf", {"cmd": "status"})
            assert presence["circuits"] == []
        assert await retained(url, "pack/late/status") is None

    run(not_loaded())


def test_a_command_without_a_deadline_still_works(
    mosquitto: Any, packs: list[PackProcess]
) -> None:
    packs.append(PackProcess(mosquitto.url))

    async def go() -> None:
        async with link(mosquitto.url, "raw") as raw:
            replies = await Collector(raw).watch("raw/reply")

            def send(ident: str, **fields: Any) -> None:
                command = {"cmd": "status", "id": ident, "reply_to": "raw/reply", **fields}
                raw.publish_nowait("jet/pack/p1/conf", codec.encode(command), qos=1)

            send("none")
            send("past", deadline=time.time() - 60)
            send("bad", deadline="soon")
            await replies.wait_for(lambda c: len(c.values()) == 3)
            by_id = {r["id"]: r for r in replies.values()}
            assert by_id["none"]["ok"] is True
            assert by_id["past"]["ok"] is False
            assert "stale command, not carried out: its deadline expired 6" in \
                by_id["past"]["error"]
            assert by_id["bad"]["ok"] is False
            assert "deadline must be epoch seconds" in by_id["bad"]["error"]

    run(go())


# -- 9. identity clashes --------------------------------------------------------------------


def test_a_second_pack_with_the_same_id_refuses_to_start(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    url = mosquitto.url
    first = PackProcess(url)
    packs.append(first)
    code, _out, err = run(jet_async("pack", "--broker", url, "--id", "p1", timeout=20))
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"pid {first.proc.pid}" in lines[0] and socket.gethostname() in lines[0], lines

    # The first was never kicked off and keeps serving.
    assert "lost MQTT broker" not in first.output
    app = write_app(tmp_path / "app.yaml", {"still": {"p": f"{ALLOW}.Pass"}})
    run(jet_ok("load", str(app), "--broker", url, "--pack", "p1", "--allow", ALLOW))


def test_a_frozen_pack_is_taken_over_and_stops_when_it_wakes_up(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    url = mosquitto.url
    frozen = PackProcess(url, "--keepalive", "2")
    packs.append(frozen)
    assert run(retained(url, "jet/pack/p1/status"))["pid"] == frozen.proc.pid
    frozen.proc.send_signal(signal.SIGSTOP)  # its presence says online until its will fires
    try:
        second = PackProcess(url)
        packs.append(second)
        # (its will, or 1.5 keepalives and a margin without an answer: whichever first)
        assert f"pid {frozen.proc.pid} on host" in second.wait_for_line("taking over", 10)
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    # Woken up, the first finds the id taken over and stops, in one line, ...
    assert frozen.proc.wait(20) != 0
    assert "was taken over by" in frozen.wait_for_line("jet pack: error:", 5)
    # ... and the second serves on.
    app = write_app(tmp_path / "app.yaml", {"still": {"p": f"{ALLOW}.Pass"}})
    run(jet_ok("load", str(app), "--broker", url, "--pack", "p1", "--allow", ALLOW))
    presence = run(retained(url, "jet/pack/p1/status"))
    assert presence["pid"] == second.proc.pid and presence["circuits"] == ["still"]


def test_a_pack_refuses_a_circuit_another_pack_runs(
    mosquitto: Any, packs: list[PackProcess], tmp_path: Path
) -> None:
    url = mosquitto.url
    packs.append(PackProcess(url, pack_id="a"))
    b = PackProcess(url, pack_id="b")
    packs.append(b)
    app = write_app(tmp_path / "app.yaml", {"shared": {"p": f"{ALLOW}.Pass"}})
    run(jet_ok("load", str(app), "--broker", url, "--pack", "a", "--allow", ALLOW))
    shared = CircuitDef(
        name="shared", container="pack", gadgets=(GadgetDef("p", "jet.lib.ChangeOnly"),)
    )

    async def go() -> None:
        async with Session(broker.parse(url)) as session:
            try:
                await session.request(
                    "jet/pack/b/conf", {"cmd": "load", "definition": circuit_to_msgpack(shared)}
                )
            except CommandFailed as exc:
                assert "already runs in jet/pack/a" in str(exc), exc
                assert len(str(exc).splitlines()) == 1
            else:
                raise AssertionError("pack b loaded a circuit pack a runs")
            presence = await session.request("jet/pack/b/conf", {"cmd": "status"})
            assert presence["circuits"] == []
            status = await session.request("pack/shared/conf", {"cmd": "status"})
            assert status["container"] == "jet/pack/a"

    run(go())
    assert "already runs in jet/pack/a" in b.wait_for_line("already runs", 5)
