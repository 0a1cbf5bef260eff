"""The device registry through real processes: mosquitto, `jet devices serve` on a real
SQLite file, `jet device-sim`, devices' messages from mosquitto_pub, and kill -9."""

from __future__ import annotations

import asyncio
import json
import select
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cli_helpers import REPO, JetProcess, assert_no_traceback, jet_async
from conftest import Mosquitto

WAIT = 15.0


def pub(port: int, topic: str, payload: str, *options: str) -> None:
    exe = shutil.which("mosquitto_pub")
    assert exe is not None, "mosquitto_pub (Debian's mosquitto-clients) is needed"
    subprocess.run([exe, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                    "-m", payload, *options], check=True, timeout=WAIT)


def jet(*args: str) -> tuple[int, str, str]:
    return asyncio.run(jet_async(*args))


def devices(db: Path, *options: str) -> list[dict[str, Any]]:
    code, out, err = jet("devices", "ls", "--db", str(db), "--json", *options)
    assert code == 0, err
    found: list[dict[str, Any]] = json.loads(out)
    return found


def device(db: Path, uid: str) -> dict[str, Any]:
    code, out, err = jet("devices", "show", uid, "--db", str(db))
    assert code == 0, err
    found: dict[str, Any] = json.loads(out)
    return found


def until(check: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Ask again (each time a real `jet devices` call) until ``check`` holds, bounded."""
    deadline = time.monotonic() + timeout
    for _ in range(200):
        if check():
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def serve(mosquitto: Mosquitto, db: Path | str, *extra: str, name: str = "reg1") -> JetProcess:
    """A `jet devices serve` process, once it says it is serving."""
    proc = JetProcess("devices", "serve", "--broker", mosquitto.url, "--db", str(db),
                      "--name", name, *extra)
    proc.wait_for_line(f"device registry {name} on", WAIT)
    return proc


def test_simulated_devices_are_found_listed_by_zone_and_shown(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite"
    server = serve(mosquitto, db)
    sim = JetProcess("device-sim", "--broker", mosquitto.url, "--count", "12", "--zones", "3",
                     "--period", "0.5", "--host", "plant")
    try:
        sim.wait_for_line("12 simulated site devices of plant", WAIT)
        until(lambda: len(devices(db)) == 12, "12 devices in the registry")
        zone = devices(db, "--zone", "zone-1")
        assert len(zone) == 4 and all(d["zone"] == "zone-1" for d in zone)
        assert {d["class"] for d in devices(db)} == {"thermo", "plug", "meter"}
        assert len(devices(db, "--class", "plug")) == 4
        code, out, err = jet("devices", "zones", "--db", str(db), "--json")
        assert code == 0, err
        assert [(z["zone"], len(z["devices"])) for z in json.loads(out)] == [
            ("zone-0", 4), ("zone-1", 4), ("zone-2", 4)]
        until(lambda: all(d["online"] for d in devices(db)), "every device online")
        code, out, _ = jet("devices", "ls", "--db", str(db))
        assert code == 0 and out.splitlines()[0].split()[:4] == ["DEVICE", "CLASS", "ZONE",
                                                                  "STATE"]
        assert "plant/thermo/d00000" in out and "zone-0" in out
        code, out, _ = jet("devices", "show", "plant/thermo/d00000", "--db", str(db))
        shown = json.loads(out)
        assert shown["host"] == "plant" and shown["focus"].startswith("plant/zone-0/thermo/")
        assert isinstance(shown["data"]["temperature"]["value"], float)
        assert shown["statistics"]["today"]["attempts"] >= 2
        assert set(shown["statistics"]) == {"today", "daily", "weekly", "monthly", "yearly"}
        # A command: sent to the device's zone, confirmed by the device, counted.
        code, out, err = jet("devices", "send", "plant/thermo/d00000", "setpoint", "21.5",
                             "--db", str(db), "--broker", mosquitto.url)
        assert code == 0 and out.strip() == "plant/thermo/d00000: setpoint 21.5 confirmed", err
        sim.stop()
        # ... and with nobody to confirm it: a failure, counted too.
        code, out, err = jet("devices", "send", "plant/thermo/d00000", "setpoint", "22",
                             "--db", str(db), "--broker", mosquitto.url, "--window", "0.5")
        assert code == 1 and "did not confirm setpoint 22 within 0.5 s" in err, err
        code, out, _ = jet("devices", "show", "plant/thermo/d00000", "--db", str(db))
        shown = json.loads(out)
        assert [(u["command"], u["failed"]) for u in shown["uses"]] == [
            ("setpoint 22", 1), ("setpoint 21.5", 0)]
        assert shown["statistics"]["today"]["failures"] == 1
        # (the command topic is no device's: nothing new was discovered from it)
        assert len(devices(db)) == 12
    finally:
        sim.stop()
        server.stop()
    # The simulator said each device's will as it stopped; the registry, stopped after it,
    # had them offline... or, stopped at once, finds them offline when it starts again.
    server = serve(mosquitto, db)
    try:
        until(lambda: not any(d["online"] for d in devices(db)), "every device offline")
        assert devices(db)[0]["reason"] == "state: offline"
    finally:
        server.stop()
    code, _out, err = jet("devices", "show", "plant/thermo/nope", "--db", str(db))
    assert code == 1 and err.strip() == (f"jet devices show: error: no device "
                                         f"'plant/thermo/nope' in {db}")


def test_simulated_homie_devices_join_at_their_rate_and_confirm_commands(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite"
    server = serve(mosquitto, db)
    sim = JetProcess("device-sim", "--broker", mosquitto.url, "--count", "8", "--layout",
                     "homie", "--join-rate", "4", "--period", "0.5", "--host", "lab")
    try:
        sim.wait_for_line("8 simulated homie devices of lab", WAIT)
        started = time.monotonic()
        until(lambda: len(devices(db)) == 8, "8 Homie devices in the registry")
        joined = time.monotonic() - started
        assert 1.0 < joined < 8.0, f"8 devices at 4/s joined in {joined:.1f} s"
        assert {d["layout"] for d in devices(db)} == {"homie"}
        code, out, err = jet("devices", "send", "homie/lab-d00003", "sensor/led", "on",
                             "--db", str(db), "--broker", mosquitto.url)
        assert code == 0 and out.strip() == "homie/lab-d00003: sensor/led on confirmed", err
    finally:
        sim.stop()
        server.stop()
    server = serve(mosquitto, db)
    try:  # their $state said lost as the simulator stopped
        until(lambda: not any(d["online"] for d in devices(db)), "every device offline")
        assert devices(db)[0]["reason"] == "$state: lost"
    finally:
        server.stop()


def test_homie_home_assistant_and_unknown_post_types(mosquitto: Mosquitto,
                                                     tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite"
    server = serve(mosquitto, db, "--silence", "2")
    try:
        pub(mosquitto.port, "homie/boiler/$state", "ready", "-r")
        pub(mosquitto.port, "homie/boiler/water/temperature", "54")
        pub(mosquitto.port, "homeassistant/sensor/hall/temperature/config",
            '{"name": "Hall temperature", "state_topic": "hall/temperature",'
            ' "unique_id": "hall-t", "device_class": "temperature"}', "-r")
        pub(mosquitto.port, "yard/gate/lock/l1/battery", "87")
        # a post type no class describes, with data subtopics: kept as a dictionary
        pub(mosquitto.port, "yard/gate/lock/l1/diag/rssi", "-71")
        pub(mosquitto.port, "yard/gate/lock/l1/diag/uptime/s", "3600")
        until(lambda: len(devices(db)) == 3, "3 devices")

        def show(uid: str) -> dict[str, Any]:
            code, out, err = jet("devices", "show", uid, "--db", str(db))
            assert code == 0, err
            found: dict[str, Any] = json.loads(out)
            return found

        until(lambda: "water" in show("homie/boiler")["data"], "homie data")
        assert show("homie/boiler")["data"]["water"]["value"] == {"temperature": 54}
        hall = show("hass/sensor/hall/temperature")
        assert hall["description"]["unique_id"] == "hall-t" and hall["class"] == "sensor"
        until(lambda: "uptime/s" in show("yard/lock/l1")["data"].get("diag", {}).get(
            "value", {}), "diag subtopics")
        lock = show("yard/lock/l1")
        assert lock["data"]["diag"]["value"] == {"rssi": -71, "uptime/s": 3600}
        assert lock["data"]["battery"]["value"] == 87 and lock["zone"] == "gate"
        # Homie says lost: offline at once; the lock says nothing: offline after 2 s.
        pub(mosquitto.port, "homie/boiler/$state", "lost", "-r")
        until(lambda: not show("homie/boiler")["online"], "homie offline")
        assert show("homie/boiler")["reason"] == "$state: lost"
        until(lambda: not show("yard/lock/l1")["online"], "the silent lock offline")
        assert show("yard/lock/l1")["reason"] == "silent for 2 s"
        # ... and back when it speaks again.
        pub(mosquitto.port, "yard/gate/lock/l1/battery", "86")
        until(lambda: show("yard/lock/l1")["online"], "the lock online again")
    finally:
        server.stop()


def test_nothing_is_lost_across_a_kill_9_of_the_registry(mosquitto: Mosquitto,
                                                        tmp_path: Path) -> None:
    """Its session is persistent: what devices say while it is dead waits in the broker,
    and what it had acknowledged is in the SQLite file."""
    db = tmp_path / "registry.sqlite"
    server = serve(mosquitto, db)
    for n in range(5):
        pub(mosquitto.port, f"site/a/thermo/t{n}/temperature", str(20 + n))
    until(lambda: len(devices(db)) == 5, "the first five")
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(WAIT)
    assert_no_traceback(server.output)
    for n in range(5, 10):  # while it is dead
        pub(mosquitto.port, f"site/b/thermo/t{n}/temperature", str(20 + n))
    server = serve(mosquitto, db)
    try:
        until(lambda: len(devices(db)) == 10, "all ten, five of them said while it was dead")
        assert sorted(d["zone"] for d in devices(db)) == ["a"] * 5 + ["b"] * 5
    finally:
        server.stop()


def test_a_message_the_database_cannot_take_is_stored_once_it_can(mosquitto: Mosquitto,
                                                                  tmp_path: Path) -> None:
    """A store write that fails (the SQLite file locked by another process) leaves the
    message unacknowledged: the broker sends it again, and it is stored once the lock
    is gone; the server says so in one line and goes on."""
    db = tmp_path / "registry.sqlite"
    server = serve(mosquitto, db)
    try:
        pub(mosquitto.port, "site/a/thermo/t0/temperature", "20")
        until(lambda: len(devices(db)) == 1, "the first device")
        locker = sqlite3.connect(db, isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")  # every writer waits, then fails (5 s)
            pub(mosquitto.port, "site/b/thermo/t1/temperature", "21.5")
            line = server.wait_for_line("site/b/thermo/t1/temperature from site/thermo/t1"
                                        " not stored", WAIT)
            assert "database is locked" in line and "not acknowledged" in line, line
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        until(lambda: len(devices(db)) == 2, "the device said while the database was locked")
        shown = device(db, "site/thermo/t1")
        assert shown["zone"] == "b" and shown["data"]["temperature"]["value"] == 21.5
        assert server.proc.poll() is None, "the server went on"
        assert server.output.count("not stored") == 1, server.output
        pub(mosquitto.port, "site/a/thermo/t0/temperature", "19")  # and it goes on storing
        until(lambda: device(db, "site/thermo/t0")["data"]["temperature"]["value"] == 19,
              "a later message stored")
        assert_no_traceback(server.output)
    finally:
        server.stop()


def test_two_servers_share_the_work_and_the_survivor_takes_a_killed_ones_share(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Two `jet devices serve --group` on one broker and one SQLite file: every message is
    handled by exactly one of them (each counts once in the devices' attempts).  After a
    kill -9 of one, the survivor takes its share (what waits in its session, and what
    keeps coming) within seconds; when it is back, it takes its session again: nothing
    lost, nothing twice."""
    db = tmp_path / "registry.sqlite"

    def start(name: str) -> JetProcess:
        return serve(mosquitto, db, "--group", "registry", name=name)

    servers = [start("r1"), start("r2")]
    try:
        def attempts() -> int:
            return sum(d["today"]["attempts"] for d in devices(db))

        for n in range(40):
            pub(mosquitto.port, f"site/a/meter/m{n % 10}/energy", str(n))
        until(lambda: attempts() == 40, "40 messages, each counted once")
        servers[0].proc.send_signal(signal.SIGKILL)
        servers[0].proc.wait(WAIT)
        killed = time.monotonic()
        assert_no_traceback(servers[0].output)
        for n in range(40, 80):
            pub(mosquitto.port, f"site/a/meter/m{n % 10}/energy", str(n))
        until(lambda: attempts() == 80, "all 80: the survivor took the dead one's share", 10.0)
        taken = time.monotonic() - killed
        assert taken < 8.0, f"the share was taken {taken:.1f} s after the kill"
        servers[1].wait_for_line("r2 holds r1's share", WAIT)
        code, out, err = jet("devices", "fellows", "--db", str(db), "--json")
        assert code == 0, err
        assert {f["id"]: f["active"] for f in json.loads(out)} == {"r1": 0, "r2": 1}
        servers[0] = start("r1")
        servers[1].wait_for_line("r2 let go of r1's share", WAIT)
        for n in range(80, 120):  # (had any come twice, or been lost, this would show it)
            pub(mosquitto.port, f"site/a/meter/m{n % 10}/energy", str(n))
        until(lambda: attempts() == 120, "120 messages, 120 counted")
        assert "r1 holds" not in servers[0].output
    finally:
        for server in servers:
            server.stop()


def stream_killing(client: paho.Client, victim: JetProcess) -> None:
    """600 QoS 1 messages at 200/s, each from a new device (`site/s/meter/k<n>`), and
    ``victim`` killed with SIGKILL a quarter of the way in."""
    started = time.monotonic()
    for n in range(600):
        due = started + n / 200 - time.monotonic()
        if due > 0:
            time.sleep(due)  # (the stream's pace, not a wait for an outcome)
        client.publish(f"site/s/meter/k{n:03d}/energy", str(n), qos=1)
        if n == 150:
            victim.proc.send_signal(signal.SIGKILL)


def test_a_kill_9_in_a_stream_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """Two servers in a group under a QoS 1 stream (600 messages, each from a new device, at
    about 200/s); one is killed with SIGKILL a quarter of the way in.  Every device is in
    the registry (nothing lost); what was handled twice (stored, then killed before its
    acknowledgement left) is counted and bounded."""
    db = tmp_path / "registry.sqlite"

    def start(name: str) -> JetProcess:
        return serve(mosquitto, db, "--group", "stream", name=name)

    servers = [start("s1"), start("s2")]
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="stream")
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        stream_killing(client, servers[0])
        until(lambda: len(devices(db)) == 600, "all 600 devices: nothing lost", 20.0)
        attempts = sum(d["today"]["attempts"] for d in devices(db))
        print(f"kill -9 in a stream of 600: 0 lost, {attempts - 600} handled twice")
        assert 600 <= attempts <= 610
    finally:
        client.loop_stop()
        client.disconnect()
        for server in servers:
            server.stop()


def test_a_partition_without_shared_subscriptions_loses_nothing_across_a_kill_9(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    """`--group G --partition` (for brokers with no shared subscriptions, as NATS): each
    server gets every message and handles its devices'.  Under a QoS 1 stream of 600 new
    devices one is killed with SIGKILL: the survivor handles what the dead one had not
    stored (it kept the others' messages for a while), so all 600 are there; back, the
    dead one handles nothing twice."""
    db = tmp_path / "registry.sqlite"

    def start(name: str) -> JetProcess:
        return serve(mosquitto, db, "--group", "part", "--partition", name=name)

    def attempts() -> int:
        return sum(d["today"]["attempts"] for d in devices(db))

    servers = [start("p1"), start("p2")]
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="stream")
    client.connect("127.0.0.1", mosquitto.port)
    client.loop_start()
    try:
        for n in range(40):
            client.publish(f"site/a/meter/m{n % 10}/energy", str(n), qos=1)
        until(lambda: attempts() == 40, "40 messages, each handled by one server")
        assert all("(partition)" in s.output for s in servers)
        stream_killing(client, servers[0])
        until(lambda: len(devices(db)) == 610, "all 600 new devices: nothing lost", 20.0)
        twice = attempts() - 640
        print(f"partition, kill -9 in a stream of 600: 0 lost, {twice} handled twice")
        assert 0 <= twice <= 10
        servers[1].wait_for_line("p1 gone; p2 handles its devices", WAIT)
        servers[0] = start("p1")
        before = attempts()
        for n in range(100):
            client.publish(f"site/a/meter/m{n % 10}/energy", str(n), qos=1)
        until(lambda: attempts() == before + 100, "100 more, each handled once")
    finally:
        client.loop_stop()
        client.disconnect()
        for server in servers:
            server.stop()


# The thermo class and its template, as shipped (`tools/bench --only devices` runs it too).
THERMO_CLASS = (REPO / "circuits" / "classes" / "thermo.yaml").read_text(encoding="utf-8")
THERMO_APP = (REPO / "circuits" / "classes" / "thermo-app.yaml").read_text(encoding="utf-8")


def test_plug_n_process_runs_a_circuit_per_device_as_devices_come_and_go(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    classes = tmp_path / "classes"
    classes.mkdir()
    (classes / "thermo.yaml").write_text(THERMO_CLASS)
    (classes / "thermo-app.yaml").write_text(THERMO_APP)
    (classes / "bad.yaml").write_text("class: meter\nsilence: -1\n")
    db = tmp_path / "registry.sqlite"
    pack = JetProcess("pack", "--broker", mosquitto.url)
    pack.wait_for_line("pack default on ", WAIT)
    server = JetProcess("devices", "serve", "--broker", mosquitto.url, "--db", str(db),
                        "--name", "reg1", "--classes", str(classes))
    watcher = subprocess.Popen([shutil.which("mosquitto_sub") or "mosquitto_sub", "-h",
                                "127.0.0.1", "-p", str(mosquitto.port), "-t", "+/+/+/+/set/#",
                                "-v"], stdout=subprocess.PIPE, text=True)

    others: list[JetProcess] = []

    def circuits() -> str:
        code, out, err = jet("ls", "--broker", mosquitto.url)
        assert code == 0, err
        return out

    try:
        server.wait_for_line("device registry reg1 on", WAIT)
        assert f"{classes / 'bad.yaml'}:2: silence:" in server.output  # refused, one line
        pub(mosquitto.port, "house/hall/thermo/t1/temperature", "18.5")
        pub(mosquitto.port, "house/attic/thermo/t2/temperature", "23")
        until(lambda: "heat-t1" in circuits() and "heat-t2" in circuits(),
              "a circuit for each thermo")
        # each circuit is the device's: it reads its temperature and commands its heater
        pub(mosquitto.port, "house/hall/thermo/t1/temperature", "18.0")
        assert watcher.stdout is not None
        ready, _, _ = select.select([watcher.stdout], [], [], WAIT)
        assert ready, "no command to the heater"
        assert watcher.stdout.readline().strip() == "house/hall/thermo/t1/set/heater ON"
        # t2 leaves: after its grace (1 s) its circuit is unloaded; t1's stays
        pub(mosquitto.port, "house/attic/thermo/t2/state", "offline")
        until(lambda: "heat-t2" not in circuits(), "t2's circuit unloaded")
        assert "heat-t1" in circuits()
        # a restart of the registry: reconciled, nothing loaded twice, nothing orphaned
        server.stop()
        pub(mosquitto.port, "house/attic/thermo/t2/temperature", "22")  # back while away
        server = JetProcess("devices", "serve", "--broker", mosquitto.url, "--db", str(db),
                            "--name", "reg1", "--classes", str(classes))
        until(lambda: "heat-t2" in circuits(), "t2's circuit back")
        listed = circuits()
        assert listed.count("heat-t1") == 1 and listed.count("heat-t2") == 1, listed
        # the pack killed -9, another started: the devices' circuits run there, unasked
        pack.proc.send_signal(signal.SIGKILL)
        pack.proc.wait(WAIT)
        others.append(JetProcess("pack", "--broker", mosquitto.url, "--id", "other"))
        other = others[0]
        other.wait_for_line("pack other on ", WAIT)
        try:
            until(lambda: all(any(c in line and "online" in line and "other" in line
                                  for line in circuits().splitlines())
                              for c in ("heat-t1", "heat-t2")), "both circuits in pack other")
        except AssertionError:
            raise AssertionError(circuits() + "\n----\n" + server.output[-3000:]) from None
        server.wait_for_line("pack default is offline", WAIT)
        assert_no_traceback(server.output)
    finally:
        watcher.kill()
        server.stop()
        pack.stop()
        for other in others:
            other.stop()


def test_class_files_apply_as_they_are_saved_and_each_version_is_recorded(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    classes = tmp_path / "classes"
    classes.mkdir()
    (classes / "meter.yaml").write_text("class: meter\nsilence: 600\n")
    db = tmp_path / "registry.sqlite"
    server = JetProcess("devices", "serve", "--broker", mosquitto.url, "--db", str(db),
                        "--name", "reg1", "--classes", str(classes))

    def meter() -> dict[str, Any]:
        code, out, err = jet("devices", "show", "plant/meter/m1", "--db", str(db))
        assert code == 0, err
        found: dict[str, Any] = json.loads(out)
        return found

    try:
        server.wait_for_line("device registry reg1 on", WAIT)
        pub(mosquitto.port, "plant/hall/meter/m1/energy", "1.5")
        until(lambda: len(devices(db)) == 1 and meter()["online"], "the meter online")
        # A new version: a meter is offline after 1 s of silence now, without a restart.
        (classes / "meter.yaml").write_text("class: meter\nsilence: 1\n")
        until(lambda: not meter()["online"], "the meter offline after 1 s of silence")
        assert meter()["reason"] == "silent for 1 s"
        # A broken version is refused in one line; the one before stays in force.
        (classes / "meter.yaml").write_text("class: meter\nsilence: soon\n")
        server.wait_for_line(f"{classes / 'meter.yaml'}:2: silence: 'soon' is not of type",
                             WAIT)
        pub(mosquitto.port, "plant/hall/meter/m1/energy", "1.6")
        until(lambda: meter()["online"], "the meter back")
        until(lambda: not meter()["online"], "offline again after 1 s: the version in force")
        with sqlite3.connect(db) as database:
            versions = database.execute(
                "SELECT name, version, data FROM configs ORDER BY version").fetchall()
        assert [(name, version) for name, version, _ in versions] == [("meter", 1),
                                                                      ("meter", 2)]
        assert "silence: 1" in versions[1][2]
        assert_no_traceback(server.output)
    finally:
        server.stop()


def test_a_template_parsed_once_gives_the_app_its_filled_in_text_gives() -> None:
    """Plug-n-process parses a class's template once and fills in the parsed file for each
    device (jet.definition.files.AppTemplate): the same app as parsing the filled-in
    text, also where a value filled in would read as a number (then it parses the text)."""
    import string

    from jet.definition.files import AppTemplate, loads_app

    values = {"id": "t1", "uid": "house/thermo/t1", "host": "house", "zone": "hall",
              "class": "thermo", "topic": "house/hall/thermo/t1"}
    for text, filled in ((THERMO_APP, values),
                         (THERMO_APP.replace("setpoint: 21.0", "setpoint: ${zone}"),
                          {**values, "zone": "19.5"}),
                         (THERMO_APP.replace("heat-${id}", "${id}"), {**values, "id": "42"})):
        template = AppTemplate(text, "thermo-app.yaml")
        expected = loads_app(string.Template(text).safe_substitute(filled), "thermo-app.yaml")
        assert template.fill(filled) == expected


def test_a_device_row_is_the_device_without_its_data_uses_and_statistics(
        tmp_path: Path) -> None:
    """Store.device_row: what plug-n-process and a partition's replay read per device."""
    from jet.devices import SqliteStore

    store = SqliteStore(tmp_path / "registry.sqlite")
    try:
        fields = {"host": "site", "id": "t1", "type": "thermo", "zone": "a"}
        assert store.seen("site/thermo/t1", fields, "site", "site/a/thermo/t1", 1.0e9) == "new"
        store.record("site/thermo/t1", "temperature", 21.5, 1.0e9 + 1)
        store.seen("site/thermo/t1", {**fields, "zone": "b"}, "site", "site/b/thermo/t1",
                   1.0e9 + 2)
        device = store.device("site/thermo/t1")
        assert device is not None and device["data"]["temperature"]["value"] == 21.5
        row = store.device_row("site/thermo/t1")
        assert row == {k: v for k, v in device.items()
                       if k not in ("description", "data", "uses", "statistics")}, row
        assert row["last_seen"] == 1.0e9 + 2 and row["zone"] == "b" and row["online"] == 1
        assert store.device_row("site/thermo/nope") is None
    finally:
        store.close()
