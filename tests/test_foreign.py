"""Circuits wired to the MQTT devices people own: a real mosquitto, a real `jet pack`,
`jet load`, and the devices' messages published with the real mosquitto_pub and paho,
shaped as Zigbee2MQTT, Tasmota, Shelly, ESPHome and Homie document them
(tests/data/device-payloads.yaml)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from cli_helpers import JetProcess, assert_no_traceback, jet_argv, jet_ok
from conftest import Mosquitto

from jet.transport.codec import decode

REPO = Path(__file__).resolve().parent.parent
SAMPLES = yaml.safe_load((REPO / "tests" / "data" / "device-payloads.yaml").read_text())
WAIT = 10.0


class Device:
    """A paho client standing in for the devices: publishes as they do and records
    everything on the broker (`#`), with a wait on a condition."""

    def __init__(self, port: int) -> None:
        self.seen: list[tuple[str, bytes, bool]] = []
        self._changed = threading.Condition()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="devices")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("#", qos=1)
        self.client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        with self._changed:
            self.seen.append((message.topic, bytes(message.payload), bool(message.retain)))
            self._changed.notify_all()

    def publish(self, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT)

    def wait_for(self, topic: str, *, check: Any = None, since: int = 0) -> bytes:
        def found() -> bytes | None:
            for t, payload, _retain in self.seen[since:]:
                if t == topic and (check is None or check(payload)):
                    return payload
            return None

        with self._changed:
            if not self._changed.wait_for(lambda: found() is not None, WAIT):
                raise AssertionError(f"nothing on {topic} within {WAIT} s; saw "
                                     f"{[t for t, _, _ in self.seen[since:]][-10:]}")
            payload = found()
            assert payload is not None
            return payload

    def values(self, topic: str) -> list[Any]:
        with self._changed:
            return [decode(p) for t, p, _ in self.seen if t == topic]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def mosquitto_pub(port: int, topic: str, payload: str, *retain: str) -> None:
    exe = shutil.which("mosquitto_pub")
    assert exe is not None, "mosquitto_pub (Debian's mosquitto-clients) is needed"
    subprocess.run([exe, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                    "-m", payload, *retain], check=True, timeout=WAIT)


@pytest.fixture
def pack(mosquitto: Mosquitto) -> Iterator[JetProcess]:
    proc = JetProcess("pack", "--broker", mosquitto.url, "--allow", "gadgets_for_tests",
                      cwd=REPO / "tests")
    proc.wait_for_line("pack default on ", WAIT)
    yield proc
    proc.stop()


@pytest.fixture
def device(mosquitto: Mosquitto) -> Iterator[Device]:
    made = Device(mosquitto.port)
    yield made
    made.close()


def write_app(path: Path, wires: list[dict[str, Any]], gadgets: int) -> Path:
    app = {
        "app": "devices",
        "circuits": {"probe": {"gadgets": {f"g{i}": {"type": "gadgets_for_tests.Pass"}
                                           for i in range(gadgets)}}},
        "wires": wires,
    }
    path.write_text(yaml.safe_dump(app, sort_keys=False))
    return path


def load(path: Path, broker_url: str) -> str:
    return asyncio.run(jet_ok("load", str(path), "--broker", broker_url, "--allow",
                              "gadgets_for_tests", cwd=REPO / "tests"))


def test_device_payloads_reach_gadgets_and_commands_go_out_as_devices_take_them(
        mosquitto: Mosquitto, pack: JetProcess, device: Device, tmp_path: Path) -> None:
    reads, writes = SAMPLES["reads"], SAMPLES["writes"]
    wires: list[dict[str, Any]] = [
        {"from": {"topic": r["topic"], **r["end"]}, "to": f"probe.g{i}.in"}
        for i, r in enumerate(reads)
    ]
    first_write = len(reads)
    wires += [{"from": f"probe.g{first_write + i}.out", "to": w["end"]}
              for i, w in enumerate(writes)]
    out = load(write_app(tmp_path / "devices.yaml", wires, len(reads) + len(writes)),
               mosquitto.url)
    assert "wired zigbee2mqtt/living_room_sensor -> probe.g0.in" in out
    # Each device message, once with mosquitto_pub and once with paho.
    for i, sample in enumerate(reads):
        for publish in ("mosquitto_pub", "paho"):
            since = len(device.seen)
            if publish == "paho":
                device.publish(sample["topic"], sample["payload"])
            else:
                mosquitto_pub(mosquitto.port, sample["topic"], sample["payload"])
            # (a gadget on the same topic as an earlier sample may still be reporting it)
            got = decode(device.wait_for(f"pack/probe/g{i}/0", since=since,
                                         check=lambda p, v=sample["value"]: decode(p) == v))
            assert type(got) is type(sample["value"]), (sample["family"], sample["topic"], got)
    # Each command, given by a gadget (`jet inject`), as the device takes it.
    for i, sample in enumerate(writes):
        since = len(device.seen)
        asyncio.run(jet_ok("inject", f"probe.g{first_write + i}.in", str(sample["value"])
                           .lower() if isinstance(sample["value"], bool) else
                           str(sample["value"]), "--broker", mosquitto.url))
        payload = device.wait_for(sample["end"]["topic"], since=since)
        assert payload == sample["payload"].encode(), (sample["family"], payload)


def test_a_filter_gives_the_topic_and_a_retained_value_comes_at_once(
        mosquitto: Mosquitto, pack: JetProcess, device: Device, tmp_path: Path) -> None:
    """One gadget serves every Zigbee2MQTT sensor (`zigbee2mqtt/+`), and a thermostat knows
    the temperature as soon as it is wired: the retained state is delivered."""
    mosquitto_pub(mosquitto.port, "zigbee2mqtt/bedroom", '{"temperature": 18.5}', "-r")
    mosquitto_pub(mosquitto.port, "zigbee2mqtt/attic", '{"temperature": 12.0}', "-r")
    reads = {"format": "json", "path": "temperature"}
    wires = [{"from": {"topic": "zigbee2mqtt/+", **reads}, "to": "probe.g0.in"},
             # the same device twice more in one pack: each wire gets the value at once
             {"from": {"topic": "zigbee2mqtt/bedroom", **reads}, "to": "probe.g1.in"},
             {"from": {"topic": "zigbee2mqtt/bedroom", **reads}, "to": "probe.g2.in"}]
    load(write_app(tmp_path / "one.yaml", wires, 3), mosquitto.url)
    for gadget in ("g0", "g1", "g2"):
        device.wait_for(f"pack/probe/{gadget}/0")
    device.wait_for("pack/probe/g0/0", check=lambda p: decode(p)["value"] == 12.0)
    # A live value after them (what a wire made later replayed came before it): each wire
    # had the retained one once, a wire made later gave the earlier ones nothing again.
    device.publish("zigbee2mqtt/bedroom", '{"temperature": 19.0}')
    for gadget in ("g1", "g2"):
        device.wait_for(f"pack/probe/{gadget}/0", check=lambda p: decode(p) == 19.0)
        assert device.values(f"pack/probe/{gadget}/0") == [18.5, 19.0]
    device.wait_for("pack/probe/g0/0", check=lambda p: decode(p)["value"] == 19.0)
    assert sorted(v["value"] for v in device.values("pack/probe/g0/0")) == [12.0, 18.5, 19.0]
    since = len(device.seen)
    device.publish("zigbee2mqtt/kitchen", '{"temperature": 22.0, "humidity": 40}')
    got = decode(device.wait_for("pack/probe/g0/0", since=since))
    assert got == {"topic": "zigbee2mqtt/kitchen", "value": 22.0}


def test_messages_a_wire_cannot_read_are_counted_in_jet_ls_and_the_circuit_goes_on(
        mosquitto: Mosquitto, pack: JetProcess, device: Device, tmp_path: Path) -> None:
    wires = [{"from": {"topic": "zigbee2mqtt/hall", "format": "json", "path": "temperature"},
              "to": "probe.g0.in"}]
    load(write_app(tmp_path / "one.yaml", wires, 1), mosquitto.url)
    for bad in ("not json", '{"humidity": 40}', b"\xff\xfe"):
        device.publish("zigbee2mqtt/hall", bad)
    since = len(device.seen)
    device.publish("zigbee2mqtt/hall", '{"temperature": 19.25}')
    assert decode(device.wait_for("pack/probe/g0/0", since=since)) == 19.25
    out = ""
    for _ in range(50):  # until the status with the count is published (bounded)
        out = asyncio.run(jet_ok("ls", "--broker", mosquitto.url))
        if "messages not read" in out:
            break
        device.wait_for("pack/probe/status", since=len(device.seen) - 1)
    assert "probe.g0.in <- zigbee2mqtt/hall: 3 messages not read as json" in out, out
    # One warning for the burst, naming the topic and the wire; no traceback.
    lines = [line for line in pack.output.splitlines() if "zigbee2mqtt/hall:" in line]
    assert len(lines) == 1, lines
    assert "wire to g0.in of probe" in lines[0] and "not JSON" in lines[0]
    assert_no_traceback(pack.output)


@pytest.mark.parametrize(("wire", "message"), [
    ({"from": {"topic": "zigbee2mqtt/+/x", "format": "yaml"}, "to": "probe.g0.in"},
     "format"),
    ({"from": "probe.g0.out", "to": {"topic": "cmnd/+/POWER"}},
     "bad topic (no wildcards: one topic is written) 'cmnd/+/POWER'"),
    ({"from": {"topic": "a/b", "format": "text", "path": "x"}, "to": "probe.g0.in"},
     "a path needs format json or msgpack, not text"),
    ({"from": {"topic": "a/b"}, "to": {"topic": "c/d"}},
     "a wire joins a port and a topic, not two topics"),
    ({"from": {"topic": "a/b", "retain": True}, "to": "probe.g0.in"},
     "retain is for a topic written by an output"),
    ({"from": {"topic": "a/b"}, "to": "probe.g0.nope"}, "has no input 'nope'"),
])
def test_jet_check_refuses_a_bad_device_wire_naming_its_line(
        tmp_path: Path, wire: dict[str, Any], message: str) -> None:
    path = write_app(tmp_path / "bad.yaml", [wire], 1)
    done = subprocess.run(jet_argv("check", str(path), "--allow", "gadgets_for_tests"),
                          capture_output=True, text=True, timeout=30, cwd=REPO / "tests")
    assert done.returncode != 0 and done.stdout == ""
    assert_no_traceback(done.stderr)
    assert done.stderr.startswith(f"jet check: error: {path}:") or done.stderr.startswith(
        f"{path}:"), done.stderr
    assert message in done.stderr, done.stderr


def test_plug_heater_demo_switches_the_plug_around_the_setpoint() -> None:
    """`jet run circuits/plug-heater.yaml --simulate`: the simulated sensor's JSON reaches the
    thermostat, its ON/OFF reaches the simulated Tasmota plug, and the room follows."""
    demo = JetProcess("run", "circuits/plug-heater.yaml", "--simulate", "--for", "12")
    try:
        demo.wait_for_line("simulated device zigbee2mqtt/living_room_sensor", WAIT)
        demo.wait_for_line("app plug-heater running", WAIT)
        demo.wait_for_line("heater plug says: ON", WAIT)  # 19 degrees: below 21 - 0.5
        demo.wait_for_line("heater plug says: OFF", 20)  # warmed past 21.5
        code = demo.proc.wait(30)
    finally:
        demo.stop()
    assert code == 0, demo.output
    temps = [float(line.rsplit(":", 1)[1]) for line in demo.lines if "living room:" in line]
    assert temps[0] < 20.5 < max(temps), temps
    assert "temperature sensor is online" in demo.output


def test_reload_moves_device_wires(mosquitto: Mosquitto, pack: JetProcess, device: Device,
                                   tmp_path: Path) -> None:
    """A reload that reads another sensor and writes another plug: the old wire and the
    old command topic are gone, the new ones work."""
    path = tmp_path / "move.yaml"
    old = [{"from": {"topic": "sensors/a", "format": "text"}, "to": "probe.g0.in"},
           {"from": "probe.g0.out", "to": {"topic": "plugs/a/set", "format": "text"}}]
    load(write_app(path, old, 1), mosquitto.url)
    device.publish("sensors/a", "1")
    assert device.wait_for("plugs/a/set") == b"1"
    new = [{"from": {"topic": "sensors/b", "format": "text"}, "to": "probe.g0.in"},
           {"from": "probe.g0.out", "to": {"topic": "plugs/b/set", "format": "text"}}]
    out = asyncio.run(jet_ok("reload", str(write_app(path, new, 1)), "--broker", mosquitto.url,
                             "--allow", "gadgets_for_tests", cwd=REPO / "tests"))
    assert "unwired probe.g0.in from sensors/a" in out, out
    since = len(device.seen)
    device.publish("sensors/a", "2")  # no longer read
    device.publish("sensors/b", "3")
    assert device.wait_for("plugs/b/set", since=since) == b"3"
    assert not any(t == "plugs/a/set" for t, _, _ in device.seen[since:])
    assert not any(t.startswith("plugs/") and p == b"2" for t, p, _ in device.seen[since:])


def test_device_wires_come_back_with_a_pack_restarted_from_its_state_file(
        mosquitto: Mosquitto, device: Device, tmp_path: Path) -> None:
    state = tmp_path / "pack.state"

    def start() -> JetProcess:
        proc = JetProcess("pack", "--broker", mosquitto.url, "--allow", "gadgets_for_tests",
                          "--state", str(state), cwd=REPO / "tests")
        proc.wait_for_line("pack default on ", WAIT)
        return proc

    pack = start()
    try:
        wires = [{"from": {"topic": "tele/plug/SENSOR", "format": "json",
                           "path": "ENERGY.Power"}, "to": "probe.g0.in"},
                 {"from": "probe.g0.out",
                  "to": {"topic": "cmnd/plug/POWER", "format": "text", "retain": True,
                         "map": {"true": "ON", "false": "OFF"}}}]
        load(write_app(tmp_path / "restart.yaml", wires, 1), mosquitto.url)
    finally:
        pack.stop()
    pack = start()
    try:
        since = len(device.seen)
        device.publish("tele/plug/SENSOR", '{"ENERGY": {"Power": 1480}}')
        assert device.wait_for("cmnd/plug/POWER", since=since) == b"1480"
        since = len(device.seen)
        asyncio.run(jet_ok("inject", "probe.g0.in", "true", "--broker", mosquitto.url))
        assert device.wait_for("cmnd/plug/POWER", since=since) == b"ON"
        # written retained: a plug that comes later reads it (the real mosquitto_sub)
        exe = shutil.which("mosquitto_sub")
        assert exe is not None
        late = subprocess.run([exe, "-h", "127.0.0.1", "-p", str(mosquitto.port), "-t",
                               "cmnd/plug/POWER", "-C", "1", "-W", "5", "-v"],
                              capture_output=True, text=True, timeout=WAIT)
        assert late.stdout.strip() == "cmnd/plug/POWER ON", late
    finally:
        pack.stop()


def test_a_wire_made_later_and_a_changed_format_on_one_topic(
        mosquitto: Mosquitto, pack: JetProcess, device: Device, tmp_path: Path) -> None:
    """Wire A is made before the sensor ever says anything; it then says 21 (retained) and
    22 (not). Wire B, added later by a reload, gets 21 at once; A does not get 21 again
    after 22. Then A's format changes on the same topic: the new one reads."""
    path = tmp_path / "later.yaml"
    reads = {"topic": "sensors/s", "format": "json", "path": "temperature"}
    load(write_app(path, [{"from": reads, "to": "probe.g0.in"}], 2), mosquitto.url)
    device.publish("sensors/s", '{"temperature": 21, "humidity": 50}', retain=True)
    device.publish("sensors/s", '{"temperature": 22, "humidity": 51}')
    device.wait_for("pack/probe/g0/0", check=lambda p: decode(p) == 22)

    def reload(wires: list[dict[str, Any]]) -> str:
        return asyncio.run(jet_ok("reload", str(write_app(path, wires, 2)), "--broker",
                                  mosquitto.url, "--allow", "gadgets_for_tests",
                                  cwd=REPO / "tests"))

    reload([{"from": reads, "to": "probe.g0.in"}, {"from": reads, "to": "probe.g1.in"}])
    assert decode(device.wait_for("pack/probe/g1/0")) == 21
    device.publish("sensors/s", '{"temperature": 23, "humidity": 52}')
    device.wait_for("pack/probe/g1/0", check=lambda p: decode(p) == 23)
    device.wait_for("pack/probe/g0/0", check=lambda p: decode(p) == 23)
    assert device.values("pack/probe/g0/0") == [21, 22, 23]  # (21 live: it was wired then)

    humidity = {**reads, "path": "humidity"}
    reload([{"from": humidity, "to": "probe.g0.in"}, {"from": reads, "to": "probe.g1.in"}])
    since = len(device.seen)
    device.publish("sensors/s", '{"temperature": 24, "humidity": 53}')
    assert decode(device.wait_for("pack/probe/g0/0", since=since)) == 53
