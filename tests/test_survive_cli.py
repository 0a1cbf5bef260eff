"""The CLI answers every mistake in one line, whatever is on the broker (issue 9, classes 7,
10 and one of 13).

Every test runs real `jet` subprocesses against a real mosquitto, and real `jet pack`
processes hosting circuits built from a user's own gadget module (written to a folder of
the test's own: the pack and `jet load` get it on PYTHONPATH, `jet tap`, `jet inject`,
`jet ls` and `jet unload` do not).  Strangers' garbage is published as raw MQTT (paho).

- 7: malformed retained statuses and definitions are skipped with one warning line naming
  the topic, by `jet ls`, `jet tap`, `jet unload`, the loader and the operator view's board;
  `jet unload` either completes or puts back what it had unwired, and says so.
- 10: ports come from the retained status, not from importing the gadget class; `jet tap`
  takes any topic filter (and refuses a bad one in one line); `jet inject` reads values as
  circuit files do (YAML 1.2) and refuses what msgpack cannot carry; `jet check` refuses such
  parameters; `jet tap | head -1` and Ctrl-C end quietly.
- 13: `jet load` starts circuits once they are wired, so a consumer sees a fast source's
  first value.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cli_helpers import REPO, assert_no_traceback, jet, jet_argv, read_until, stop
from helpers import Collector, link, run

from jet.containers.status import Statuses
from jet.transport import broker, codec
from jet.transport.client import Session
from jet.web.board import StatusBoard

USER_MODULE = "usergadgets"
USER_GADGETS = '''
"""A user's own gadgets: importable only where PYTHONPATH has this folder."""
import asyncio
from typing import Any

import attrs

from jet import Gadget


@attrs.define
class Tick(Gadget):
    """Counts 0, 1, 2, ... every 50 ms from its start."""

    outputs = ("count",)

    async def run(self) -> None:
        n = 0
        while True:
            self.emit("count", n)
            n += 1
            await asyncio.sleep(0.05)


@attrs.define
class Burst(Gadget):
    """Emits 0 .. n-1 at once when started: a source faster than any wiring."""

    outputs = ("count",)
    n: int = 5

    async def run(self) -> None:
        for i in range(self.n):
            self.emit("count", i)


@attrs.define
class Relay(Gadget):
    inputs = ("value",)
    outputs = ("echo",)

    def on_value(self, value: Any) -> None:
        self.emit("echo", value)
'''

#: src (a ticker) feeds relay; tail (in pack p2) reads relay's echo.
APP = """
app: user
circuits:
  src:
    gadgets:
      tick: {type: usergadgets.Tick}
  relay:
    gadgets:
      r: {type: usergadgets.Relay}
  tail:
    pack: p2
    gadgets:
      r: {type: usergadgets.Relay}
wires:
  - src.tick.count -> relay.r.value
  - relay.r.echo -> tail.r.value
"""


# -- running things -------------------------------------------------------------------------


@pytest.fixture
def gadgets(tmp_path: Path) -> Path:
    """A folder holding the user's gadget module (and nothing the CLI could find)."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / f"{USER_MODULE}.py").write_text(USER_GADGETS)
    return folder


def env_for(gadgets: Path | None) -> dict[str, str]:
    """The environment of a `jet`: with the user's gadget folder, or with none at all."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONUNBUFFERED"] = "1"
    if gadgets is not None:
        env["PYTHONPATH"] = str(gadgets)
    return env


def jet_run(*args: str, gadgets: Path | None = None, timeout: float = 30.0) -> tuple[int, str, str]:
    """`jet ARGS` to completion from the repository (no traceback, ever)."""
    done = jet(*args, timeout=timeout, env=env_for(gadgets))
    return done.returncode, done.stdout, done.stderr


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


class Pack:
    """A real `jet pack` that can import the user's gadgets."""

    def __init__(self, url: str, pack_id: str, gadgets: Path) -> None:
        self.proc = subprocess.Popen(
            jet_argv("pack", "--broker", url, "--id", pack_id, "--allow", USER_MODULE),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            env=env_for(gadgets),
        )
        read_until(self.proc, f"pack {pack_id} on")

    def stop(self) -> str:
        return stop(self.proc)


@pytest.fixture
def packs(mosquitto: Any, gadgets: Path) -> Iterator[dict[str, Pack]]:
    started = {name: Pack(mosquitto.url, name, gadgets) for name in ("p1", "p2")}
    yield started
    for pack in started.values():
        pack.stop()


def load(url: str, gadgets: Path, tmp_path: Path, text: str = APP) -> None:
    app = tmp_path / "app.yaml"
    app.write_text(text)
    code, out, err = jet_run(
        "load", str(app), "--broker", url, "--pack", "p1", "--allow", USER_MODULE,
        gadgets=gadgets,
    )
    assert code == 0, out + err


def publish_retained(url: str, messages: dict[str, bytes]) -> None:
    """A stranger on the broker: raw retained messages, each confirmed (QoS 1)."""
    parsed = broker.parse(url)
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="stranger")
    client.connect(parsed.host, parsed.port)
    client.loop_start()
    try:
        for topic, payload in messages.items():
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()


async def retained_statuses(url: str) -> Statuses:
    async with Session(broker.parse(url)) as session:
        return await Statuses.read(session)


#: What a stranger leaves retained on status and definition topics.
GARBAGE = {
    "jet/pack/x/status": b"garbage",  # not msgpack
    "jet/pack/y/status": codec.encode({"state": 5}),  # a field of the wrong type
    "pack/ghost/status": codec.encode("just text"),  # not a map
    "pack/bad/status": codec.encode(
        {"state": "online", "rates": [1], "inputs": {"r.value": "garbage"}}
    ),
    "pack/bad/definition": codec.encode([1, 2]),
    "pack/worse/status": codec.encode(
        # (not naming a live pack: p1 would clear a status of its own it has no circuit for)
        {"state": "online", "inputs": {"r.value": [{"topic": 7}]}, "container": "jet/pack/p9"}
    ),
}


# -- 7. malformed retained statuses --------------------------------------------------------


def test_malformed_statuses_are_skipped_with_one_warning_naming_the_topic(
    mosquitto: Any, packs: dict[str, Pack], gadgets: Path, tmp_path: Path
) -> None:
    load(mosquitto.url, gadgets, tmp_path)
    publish_retained(mosquitto.url, GARBAGE)
    url = ("--broker", mosquitto.url)

    code, out, err = jet_run("ls", *url)
    assert code == 0, err
    for topic in GARBAGE:
        named = [line for line in err.splitlines() if topic + ":" in line]
        assert len(named) == 1, (topic, err)
    assert len(err.strip().splitlines()) == len(GARBAGE), err
    for circuit in ("pack/src", "pack/relay", "pack/tail"):
        assert circuit in out
    assert "pack/bad " not in out and "ghost" not in out

    code, out, err = jet_run("tap", "src.tick.count", "-n", "1", "--for", "10", *url)
    assert code == 0, err
    assert "pack/src/tick/0" in out

    # The unload of a circuit others feed reads every status first: it completes.
    code, out, err = jet_run("unload", "relay", *url)
    assert code == 0, err
    assert "unloaded relay" in out
    known = run(retained_statuses(mosquitto.url))
    assert "pack/relay" not in known.circuits
    assert known.circuits["pack/tail"].status.inputs == {}  # its wire from relay is gone

    # A circuit whose own status is garbage is refused before anything changes.
    code, out, err = jet_run("unload", "bad", *url)
    assert code == 1
    line = [x for x in err.splitlines() if "error" in x]
    assert len(line) == 1 and "pack/bad/" in line[0] and "nothing was changed" in line[0], err


def test_the_operator_board_skips_malformed_statuses_once_each() -> None:
    warned: list[str] = []
    board = StatusBoard()
    board.statuses._warn = warned.append
    good = {"state": "online", "container": "jet/pack/p1", "inputs": {}}
    assert board.update("pack/fine/status", codec.encode(good))
    for _ in range(3):  # a stranger repeating itself is warned about once
        for topic, payload in GARBAGE.items():
            board.update(topic, payload)
    assert sorted(w.split(":")[0] for w in warned) == sorted(GARBAGE)
    snapshot = board.snapshot()
    assert [c["key"] for c in snapshot["circuits"]] == ["pack/fine"]
    assert snapshot["containers"] == []
    # A topic that becomes valid again is taken, and warned about again if it goes bad.
    assert board.update("pack/bad/status", codec.encode(good))
    assert "pack/bad" in board.circuits
    board.update("pack/bad/status", b"\xc1")
    assert "pack/bad" not in board.circuits
    assert len(warned) == len(GARBAGE) + 1


def test_unload_puts_back_what_it_unwired_when_a_step_fails(
    mosquitto: Any, packs: dict[str, Pack], gadgets: Path, tmp_path: Path
) -> None:
    load(mosquitto.url, gadgets, tmp_path)
    # tail's pack dies: its retained status still says online, so unloading relay
    # must unwire tail from it, and that command is never answered.
    packs["p2"].proc.kill()
    packs["p2"].proc.wait(10)
    code, _out, err = jet_run("unload", "relay", "--broker", mosquitto.url, "--timeout", "2")
    assert code == 1
    line = one_line(err)
    assert "unload of relay failed at 'unwire the circuits it feeds'" in line, line
    assert "rewired the 1 wires it had removed, relay is loaded as before" in line, line
    known = run(retained_statuses(mosquitto.url))
    wires = known.circuits["pack/relay"].status.inputs["r.value"]
    assert [w.topic for w in wires] == ["pack/src/tick/0"]
    # and it works: the ticker's counts come through relay again
    code, _out, err = jet_run("tap", "relay.r.echo", "-n", "2", "--for", "10",
                             "--broker", mosquitto.url)
    assert code == 0, err


# -- 10. CLI tracebacks and surprises ------------------------------------------------------


def test_tap_and_inject_name_ports_of_gadgets_the_cli_cannot_import(
    mosquitto: Any, packs: dict[str, Pack], gadgets: Path, tmp_path: Path
) -> None:
    load(mosquitto.url, gadgets, tmp_path)
    url = ("--broker", mosquitto.url)
    code, out, err = jet_run("tap", "src.tick.count", "-n", "2", "--for", "10", *url)
    assert code == 0, err
    assert out.count("pack/src/tick/0") == 2, out

    code, out, err = jet_run("tap", "relay.r.nothing", "--for", "1", *url)
    assert code == 1 and "relay.r has no output 'nothing'" in one_line(err)

    async def injected() -> list[Any]:
        watcher = link(mosquitto.url, "watch-tail")
        async with watcher:
            echoes = await Collector(watcher).watch("pack/tail/r/0")
            for text in ("on", "0777", "2024-01-01", "[1, {a: yes}]"):
                code, _out, err = await _jet_async(text, *url)
                assert code == 0, err
            expected = ["on", 777, "2024-01-01", [1, {"a": "yes"}]]
            await echoes.wait_for(
                lambda c: all(v in c.values() for v in expected), timeout=10
            )
            return expected

    run(injected())


async def _jet_async(value: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *jet_argv("inject", "tail.r.value", value, *args),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO,
        env=env_for(None),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 25)
    assert_no_traceback(out.decode() + err.decode())
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (str(2**70), "cannot be sent"),
        ("!!timestamp 2024-01-01", "!!timestamp"),
        ("!!binary aGVsbG8=", "!!binary"),
        ("[1, {a: 2", "invalid YAML"),
        ("[" * 3000 + "]" * 3000, "nested too deeply"),
    ],
)
def test_inject_refuses_a_value_it_cannot_send_in_one_line(value: str, says: str) -> None:
    # (refused before any broker is asked: the URL leads nowhere)
    code, _out, err = jet_run("inject", "a.b.c", value, "--broker", "mqtt://127.0.0.1:9")
    assert code == 1
    line = one_line(err)
    assert line.startswith("jet inject: error: value ") and says in line, line


def test_tap_takes_any_topic_filter_and_refuses_a_bad_one_in_one_line(
    mosquitto: Any, packs: dict[str, Pack], gadgets: Path, tmp_path: Path
) -> None:
    load(mosquitto.url, gadgets, tmp_path)
    url = ("--broker", mosquitto.url)
    code, out, err = jet_run("tap", "#", "-n", "3", "--for", "10", *url)
    assert code == 0, err
    assert len(out.splitlines()) == 3
    for bad in ("a/#/b", "a/b+/c", "src.tick"):
        code, out, err = jet_run("tap", bad, "--for", "2", *url)
        assert code == 1
        assert bad in one_line(err)


def test_check_refuses_a_parameter_msgpack_cannot_carry(tmp_path: Path) -> None:
    app = tmp_path / "big.yaml"
    app.write_text(textwrap.dedent(f"""\
        app: big
        circuits:
          c:
            gadgets:
              t: {{type: jet.lib.Offset, params: {{offset: {2**70}}}}}
        """))
    code, _out, err = jet_run("check", str(app))
    assert code == 1
    line = one_line(err)
    assert line.startswith(f"{app}:5: gadget c.t: parameter 'offset' cannot be sent"), line


def test_tap_into_head_ends_quietly(
    mosquitto: Any, packs: dict[str, Pack], gadgets: Path, tmp_path: Path
) -> None:
    load(mosquitto.url, gadgets, tmp_path)
    tap = " ".join(jet_argv("tap", "src.tick.count", "--for", "20", "--broker", mosquitto.url))
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", f'{tap} | head -1; echo "tap exit ${{PIPESTATUS[0]}}" >&2'],
        capture_output=True, text=True, timeout=30, cwd=REPO, env=env_for(None),
    )
    assert time.monotonic() - started < 15  # it ended when head did, not at --for
    assert_no_traceback(done.stdout + done.stderr)
    assert len(done.stdout.splitlines()) == 1
    assert done.stderr.strip() in ("tap exit 141", "tap exit 0"), done.stderr


def test_ctrl_c_ends_tap_quietly_with_130(
    mosquitto: Any, packs: dict[str, Pack], gadgets: Path, tmp_path: Path
) -> None:
    load(mosquitto.url, gadgets, tmp_path)
    proc = subprocess.Popen(
        jet_argv("tap", "src.tick.count", "--broker", mosquitto.url),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env_for(None),
    )
    try:
        assert proc.stdout is not None
        assert "pack/src/tick/0" in proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    assert_no_traceback(err)
    assert code == 130
    assert err.strip() == ""


# -- 13. a fast source's first values --------------------------------------------------------


def test_a_fast_sources_first_value_reaches_a_consumer_in_another_circuit(
    mosquitto: Any, packs: dict[str, Pack], gadgets: Path, tmp_path: Path
) -> None:
    burst = """
app: burst
circuits:
  fast:
    gadgets:
      b: {type: usergadgets.Burst, params: {n: 5}}
  sink:
    gadgets:
      r: {type: usergadgets.Relay}
wires:
  - fast.b.count -> sink.r.value
"""

    async def seen() -> list[Any]:
        watcher = link(mosquitto.url, "watch-sink")
        async with watcher:
            echoes = await Collector(watcher).watch("pack/sink/r/0")
            await asyncio.to_thread(load, mosquitto.url, gadgets, tmp_path, burst)
            await echoes.wait_for(lambda c: len(c.values()) >= 5, timeout=10)
            return echoes.values()

    assert run(seen()) == [0, 1, 2, 3, 4]


