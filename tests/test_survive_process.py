"""Processes stop cleanly, waits are bounded, ids do not clash, small surprises are gone
(issue 9: class 11, the `jet run --broker` part of class 9, and class 13).

Every test runs the real `jet` command in subprocesses against a real mosquitto:

- `jet run` stopped by SIGTERM or SIGHUP (or Ctrl-C) stops its pack and the
  mosquitto it started, removes that broker's temp dir, and exits 128 + the
  signal, without a traceback;
- `jet run` and every client command against a broker that is down return
  within their bound, with one line naming the broker;
- `jet run --broker` next to a running `jet pack` takes a container id of its
  own: neither kicks the other off the broker;
- `jet pack` logs a Logger gadget's lines without -v; -v and -q go after the
  command too; a gadget module in the current directory imports as under
  `python -m`; a circuit's counters go on across a reload.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import REPO, JetProcess, jet_async, jet_ok
from conftest import free_port
from helpers import link, run

from jet.transport import broker, codec
from jet.transport.client import Session

ALLOW = "tests.gadgets_for_tests"


@pytest.fixture
def started() -> Iterator[list[JetProcess]]:
    """`jet` processes appended here are stopped at the end of the test."""
    processes: list[JetProcess] = []
    yield processes
    for process in processes:
        process.stop()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def pass_app(path: Path, circuit: str = "relay", gadgets: str = "p") -> Path:
    """An app of one circuit of Pass gadgets (the test gadgets), no wires."""
    lines = ["app: relay", "circuits:", f"  {circuit}:", "    gadgets:"]
    lines += [f"      {g}: {{type: {ALLOW}.Pass}}" for g in gadgets]
    return write(path, "\n".join(lines) + "\n")


def children(pid: int) -> list[int]:
    """The pids of a process's children (Linux /proc)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> bool:
    """Running, and not a zombie left for its parent to reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# -- 11. processes and waits ----------------------------------------------------------------


@pytest.mark.parametrize("app", ["pass", "circuits/levels-demo.yaml"])
def test_jet_run_killed_with_sigkill_leaves_no_broker_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app: str
) -> None:
    """No chance to clean up: the kernel ends the brokers (their parent-death signal, which
    a broker changing user as root would lose)."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the test gadgets
    path = str(pass_app(tmp_path / "app.yaml")) if app == "pass" else app
    ready = "app relay running" if app == "pass" else "levels of "
    jet_run = JetProcess("run", path, "--embedded", "mosquitto", "--allow", ALLOW)
    brokers: list[int] = []
    try:
        jet_run.wait_for_line(ready)
        brokers = children(jet_run.proc.pid)
        assert brokers, "embedded mosquitto expected"
        jet_run.proc.send_signal(signal.SIGKILL)
        jet_run.proc.wait(5)
        deadline = time.monotonic() + 5.0
        while any(alive(pid) for pid in brokers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(alive(pid) for pid in brokers), "a broker outlived `jet run`"
    finally:
        for pid in brokers:
            if alive(pid):
                os.kill(pid, signal.SIGTERM)


@pytest.mark.parametrize(
    ("signum", "code"),
    [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)],
    ids=["SIGTERM", "SIGHUP", "SIGINT"],
)
def test_jet_run_stopped_by_a_signal_stops_its_broker_and_removes_its_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int, code: int
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the test gadgets
    app = pass_app(tmp_path / "app.yaml")
    jet_run = JetProcess("run", str(app), "--embedded", "mosquitto", "--allow", ALLOW)
    brokers: list[int] = []
    try:
        jet_run.wait_for_line("app relay running")
        brokers = children(jet_run.proc.pid)
        assert len(brokers) == 1, f"one embedded mosquitto expected, got {brokers}"
        cmdline = Path(f"/proc/{brokers[0]}/cmdline").read_text().split("\0")
        conf = Path(cmdline[cmdline.index("-c") + 1])
        assert conf.parent.name.startswith("jet-broker-") and conf.exists()

        assert jet_run.signal(signum) == code
        assert not alive(brokers[0]), "the embedded mosquitto outlived `jet run`"
        assert not conf.parent.exists(), "the embedded broker's temp dir was left behind"
        # Quiet: being asked to stop is not an error.
        assert "error" not in jet_run.output.lower(), jet_run.output
    finally:
        jet_run.stop()
        for pid in brokers:  # the broker a failing `jet run` left behind
            if alive(pid):
                os.kill(pid, signal.SIGTERM)


def test_jet_pack_stopped_by_sigterm_says_its_circuits_are_offline_and_exits_143(
    mosquitto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon under systemd is stopped with SIGTERM: a clean stop, not a crash."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    url = mosquitto.url
    pack = JetProcess("pack", "--broker", url, "--allow", ALLOW)
    try:
        pack.wait_for_line("pack default on")

        async def go() -> None:
            await jet_ok("load", str(pass_app(tmp_path / "app.yaml")), "--broker", url,
                         "--allow", ALLOW)
            async with Session(broker.parse(url)) as session:
                assert (await session.retained("pack/relay/status"))[
                    "pack/relay/status"]["state"] == "online"
                assert pack.signal(signal.SIGTERM) == 143
                statuses = await session.retained("pack/relay/status", "jet/pack/default/status")
            assert statuses["pack/relay/status"]["state"] == "offline", statuses
            assert statuses["jet/pack/default/status"]["state"] == "offline", statuses

        run(go(), timeout=40)
        assert "error" not in pack.output.lower(), pack.output
    finally:
        pack.stop()


def test_jet_run_and_client_commands_against_a_broker_that_is_down_return_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    app = pass_app(tmp_path / "app.yaml")
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    commands = [
        ("run", str(app), "--for", "3", "--allow", ALLOW),
        ("load", str(app), "--allow", ALLOW),
        ("reload", str(app), "--allow", ALLOW),
        ("unload", "relay"),
        ("ls",),
        ("tap", "relay.p.out", "--for", "3"),
        ("inject", "relay.p.in", "1"),
    ]

    async def attempt(args: tuple[str, ...]) -> tuple[tuple[str, ...], float, int, str]:
        began = time.monotonic()
        code, out, err = await jet_async(*args, "--broker", url, timeout=40)
        return args, time.monotonic() - began, code, out + err

    async def go() -> None:
        for args, took, code, said in await asyncio.gather(*map(attempt, commands)):
            assert code == 1, f"jet {' '.join(args)}: exit {code}: {said}"
            # 5 s of --timeout, plus seven Python start-ups at once on a busy machine
            assert took < 30, f"jet {' '.join(args)} took {took:.1f} s"
            lines = said.strip().splitlines()
            assert len(lines) == 1, said
            assert lines[-1].startswith(f"jet {args[0]}: error: cannot reach MQTT broker {url}:")

    run(go(), timeout=60)


# -- 9. `jet run --broker` takes an id of its own -------------------------------------------


def test_jet_run_next_to_a_running_pack_takes_an_id_of_its_own(
    mosquitto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    started: list[JetProcess],
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    url = mosquitto.url
    pack = JetProcess("pack", "--broker", url, "--allow", ALLOW)  # id "default"
    started.append(pack)
    pack.wait_for_line("pack default on")
    jet_run = JetProcess(
        "run", str(pass_app(tmp_path / "run.yaml", "ran")), "--broker", url, "--allow", ALLOW
    )
    started.append(jet_run)
    own = jet_run.wait_for_line("an id of its own").split()[1]
    assert own.startswith("run-"), own
    jet_run.wait_for_line("app relay running")

    async def go() -> None:
        # A circuit loaded for the pack goes to the pack, and both containers are online.
        await jet_ok("load", str(pass_app(tmp_path / "pack.yaml", "kept")), "--broker", url,
                     "--allow", ALLOW)
        listing = await jet_ok("ls", "--broker", url)
        rows = {line.split()[0]: line.split() for line in listing.splitlines() if line.strip()}
        assert rows["jet/pack/default"][1] == "online", listing
        assert rows[f"jet/pack/{own}"][1] == "online", listing
        assert rows["pack/kept"][-1] == "jet/pack/default", listing
        assert rows["pack/ran"][-1] == f"jet/pack/{own}", listing

    run(go(), timeout=40)
    assert jet_run.signal(signal.SIGTERM) == 143
    for process in (pack, jet_run):  # neither was kicked off the broker by the other
        assert "lost MQTT broker" not in process.output, process.output
        assert "reconnected" not in process.output, process.output


# -- 13. small ones a user trips on ---------------------------------------------------------


def test_jet_pack_logs_a_logger_gadget_without_v_and_takes_v_and_q_after_the_command(
    mosquitto: Any, tmp_path: Path, started: list[JetProcess]
) -> None:
    url = mosquitto.url
    app = write(tmp_path / "app.yaml", (
        "app: logs\ncircuits:\n  say:\n    gadgets:\n"
        "      log: {type: jet.lib.Logger, params: {label: 'heard:'}}\n"
    ))
    pack = JetProcess("pack", "--broker", url)
    started.append(pack)
    pack.wait_for_line("pack default on")
    quiet = JetProcess("pack", "--broker", url, "--id", "quiet", "-q")
    started.append(quiet)
    quiet.wait_for_line("pack quiet on")

    async def go() -> None:
        await jet_ok("load", str(app), "--broker", url, "-v")
        await jet_ok("inject", "say.log.in", "42", "--broker", url, "-q")
        await pack.line("heard: 42", timeout=10)

    run(go(), timeout=40)
    assert "serving on" not in quiet.stop(), "-q after the command hides INFO lines"
    assert "serving on" in pack.output


def test_a_gadget_module_in_the_current_directory_loads_like_under_python_m(
    mosquitto: Any, tmp_path: Path, started: list[JetProcess]
) -> None:
    url = mosquitto.url
    write(tmp_path / "shouting.py", (
        "import logging\n"
        "from jet.runtime.gadget import Gadget\n\n"
        "class Shout(Gadget):\n"
        "    inputs = ('in',)\n"
        "    outputs = ('out',)\n\n"
        "    def on_in(self, value):\n"
        "        logging.getLogger('shouting').info('SHOUT %s', str(value).upper())\n"
        "        self.emit('out', str(value).upper())\n"
    ))
    app = write(tmp_path / "app.yaml", (
        "app: loud\ncircuits:\n  loud:\n    gadgets:\n      s: {type: shouting.Shout}\n"
    ))
    # No PYTHONPATH: the module is found because the pack runs in its folder.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    pack = JetProcess("pack", "--broker", url, "--allow", "shouting", cwd=tmp_path, env=env)
    started.append(pack)
    pack.wait_for_line("pack default on")

    async def go() -> None:
        await jet_ok("check", "app.yaml", "--allow", "shouting", cwd=tmp_path)
        await jet_ok("load", str(app), "--broker", url, "--allow", "shouting", cwd=tmp_path)
        async with Session(broker.parse(url)) as session:  # (`jet inject`: class 10)
            await session.request(
                "pack/loud/conf", {"cmd": "inject", "input": "s.in", "value": "hello"}
            )
        await pack.line("SHOUT HELLO", timeout=10)

    run(go(), timeout=40)


def test_circuit_counters_go_on_across_a_reload(
    mosquitto: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    started: list[JetProcess],
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    url = mosquitto.url
    pack = JetProcess("pack", "--broker", url, "--allow", ALLOW)
    started.append(pack)
    pack.wait_for_line("pack default on")
    app = pass_app(tmp_path / "app.yaml", "count", "p")
    app_v2 = pass_app(tmp_path / "app2.yaml", "count", "pq")  # p stays, q is new

    async def counters_reach(session: Session, delivered: int) -> dict[str, int]:
        for _ in range(200):  # bounded: each round is a request/reply
            status = await session.request("pack/count/conf", {"cmd": "status"})
            if status["counters"]["delivered"] >= delivered:
                return dict(status["counters"])
            await asyncio.sleep(0.02)
        raise AssertionError(f"delivered never reached {delivered}: {status['counters']}")

    async def go() -> None:
        async with Session(broker.parse(url)) as session, link(url, "producer") as producer:
            await jet_ok("load", str(app), "--broker", url, "--allow", ALLOW)
            await session.request(
                "pack/count/conf", {"cmd": "wire", "input": "p.in", "topic": "ext/count"}
            )
            for n in range(5):
                producer.publish_nowait("ext/count", codec.encode(n), qos=1)
            await producer.flush()
            before = await counters_reach(session, 5)
            assert (before["delivered"], before["emitted"]) == (5, 5), before

            await jet_ok("reload", str(app_v2), "--broker", url, "--allow", ALLOW)
            after_reload = await counters_reach(session, 0)
            assert after_reload["delivered"] == 5, f"reset by the reload: {after_reload}"
            assert after_reload["emitted"] == 5, f"reset by the reload: {after_reload}"

            for n in range(3):  # the wire into p.in stayed
                producer.publish_nowait("ext/count", codec.encode(n), qos=1)
            await producer.flush()
            later = await counters_reach(session, 8)
            assert (later["delivered"], later["emitted"]) == (8, 8), later

    run(go(), timeout=40)
