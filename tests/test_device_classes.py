"""Device classes in YAML and XML (docs/devices.md "Device classes and plug-n-process"):
the schemas' errors as plain unit tests, then through real processes: mosquitto,
`jet devices serve --classes DIR` on a real SQLite file, `jet device-sim`,
mosquitto_pub and mosquitto_sub as devices, `jet devices send`."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import JetProcess, assert_no_traceback
from conftest import Mosquitto
from test_devices import WAIT, devices, jet, pub, serve, until

from jet.devices.classes import XSD, ClassError, from_record, load_class, load_classes

PLUG_YAML = """\
class: plug
silence: 60
grace: 2
posts:
  power: {format: json, path: ENERGY.Power}
  relay: {format: text, command: true, window: 1, confirm: {post: relay}}
  open: {format: text, command: true, window: 3, confirm: {post: result, value: done}}
"""
PLUG_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<class name="plug" silence="60" grace="2">
  <post name="power" format="json" path="ENERGY.Power"/>
  <post name="relay" format="text" command="true" window="1">
    <confirm post="relay"/>
  </post>
  <post name="open" format="text" command="true" window="3">
    <confirm post="result" value="done"/>
  </post>
</class>
"""


# -- the files, without processes --------------------------------------------------------


def test_an_xml_class_says_exactly_what_the_yaml_one_does(tmp_path: Path) -> None:
    (tmp_path / "plug.yaml").write_text(PLUG_YAML)
    (tmp_path / "plug.xml").write_text(PLUG_XML)
    from_yaml, from_xml = load_class(tmp_path / "plug.yaml"), load_class(tmp_path / "plug.xml")
    assert (from_yaml.kind, from_xml.kind) == ("yaml", "xml")
    for field in ("name", "silence", "template", "grace", "posts"):
        assert getattr(from_yaml, field) == getattr(from_xml, field), field
    relay = from_xml.posts["relay"]
    assert (relay.command, relay.window, relay.confirm_post) == (True, 1.0, "relay")
    assert from_xml.posts["power"].read(b'{"ENERGY": {"Power": 42.5}}') == 42.5
    assert not from_xml.posts["power"].command
    # the class as the registry records it (with a template after it) reads back the same
    recorded = from_record("xml", from_xml.text + "\n---\napp: x\ncircuits: {}\n", "rec")
    assert recorded.posts == from_xml.posts and recorded.silence == 60
    assert from_record("yaml", "# a class\n---\n" + PLUG_YAML + "\n---\napp: x\n",
                       "rec").posts == from_yaml.posts
    assert XSD.is_file() and XSD.name == "device-class.xsd"


def test_commands_as_a_class_says(tmp_path: Path) -> None:
    (tmp_path / "plug.yaml").write_text(PLUG_YAML + "  level: {format: json, path: dimmer,"
                                        " command: true}\n")
    plug = load_class(tmp_path / "plug.yaml")
    relay = plug.command("relay", "ON")
    assert (relay.payload, relay.window, relay.confirm.name) == (b"ON", 1.0, "relay")
    assert relay.confirms(b"ON") and not relay.confirms(b"OFF")
    opening = plug.command("open", "1")
    assert opening.confirm.name == "result" and opening.confirms(b"done")
    assert not opening.confirms(b"1")
    level = plug.command("level", "40")  # written in its format, under its path
    assert level.payload == b'{"dimmer":40}' and level.confirms(b'{"dimmer": 40}')
    assert level.window is None  # (jet devices send's default)
    with pytest.raises(ValueError, match=r"^power is not a command \(.*plug.yaml\)$"):
        plug.command("power", "1")
    other = plug.command("heater", "ON")  # a post type the class does not describe
    assert other.payload == b"ON" and other.confirms(b"ON") and other.window is None


XML_ERRORS = [
    ('<class name="plug">\n  <post name="x">\n</class>\n',
     ":3: not well-formed XML: mismatched tag"),
    ('<class name="plug">\n  <post name="x" format="txt"/>\n</class>\n',
     ":2: /class/post: attribute format='txt': value must be one of"),
    ('<?xml version="1.0"?>\n<class name="plug" silence="-1"/>\n',
     ":2: /class: attribute silence='-1.0': value has to be greater than 0.0"),
    ('<class name="plug">\n  <post name="x"/>\n\n  <thing/>\n</class>\n',
     ":4: /class: Unexpected child with tag 'thing'"),
    ('<class name="plug">\n  <post name="x"/>\n  <post name="x"/>\n</class>\n',
     ":3: /class/post[2]: duplicated value ('x',)"),
    ('<class silence="3"/>\n', ":1: /class: missing required attribute 'name'"),
    ('<device name="plug"/>\n', ":1: /device: 'device' is not an element of the schema"),
    ('<class name="plug">\n  <post name="x" format="text" path="a.b"/>\n</class>\n',
     ":2: posts.x.path: a path needs format json or msgpack, not text"),
    ('<class name="plug">\n\n  <post name="x" window="2"/>\n</class>\n',
     ":3: posts.x.window: window is for a command (command: true)"),
    ('<class name="plug">\n  <post name="x" command="yes"/>\n</class>\n',
     ":2: /class/post: attribute command='yes'"),
]
YAML_ERRORS = [
    ("class: plug\nposts:\n  x: {format: txt}\n", ":3: posts.x.format: 'txt' is not one of"),
    ("class: plug\nposts:\n  x:\n    format: text\n    confirm: {post: x}\n",
     ":5: posts.x.confirm: confirm is for a command (command: true)"),
    ("class: plug\nposts:\n  x: {command: true, confirm: {topic: y}}\n",
     ":3: posts.x.confirm: Additional properties are not allowed ('topic' was unexpected)"),
    ("class: plug\nposts:\n  x: {command: true, window: 0}\n",
     ":3: posts.x.window: 0 is less than or equal to the minimum of 0"),
    ("class: plug\nposts:\n  a/+: {}\n", ":2: posts: 'a/+' does not match"),
]


@pytest.mark.parametrize(("name", "text", "said"), [
    *(("plug.xml", text, said) for text, said in XML_ERRORS),
    *(("plug.yaml", text, said) for text, said in YAML_ERRORS),
])
def test_an_invalid_class_file_is_refused_with_its_file_and_line(
        tmp_path: Path, name: str, text: str, said: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ClassError) as caught:
        load_class(path)
    error = str(caught.value)
    assert error.startswith(f"{path}{said}"), error
    assert "\n" not in error


def test_a_refused_xml_file_keeps_the_class_it_held(tmp_path: Path) -> None:
    (tmp_path / "plug.xml").write_text(PLUG_XML)
    (tmp_path / "plug-app.yaml").write_text("app: x\ncircuits: {}\n")  # a template: let be
    before, errors = load_classes(tmp_path)
    assert list(before) == ["plug"] and errors == []
    (tmp_path / "plug.xml").write_text(PLUG_XML.replace('silence="60"', 'silence="soon"'))
    after, errors = load_classes(tmp_path, before)
    assert after["plug"] is before["plug"]
    assert len(errors) == 1 and errors[0].startswith(f"{tmp_path / 'plug.xml'}:2: /class:")


# -- through real processes --------------------------------------------------------------


def show(db: Path, uid: str) -> dict[str, Any]:
    code, out, err = jet("devices", "show", uid, "--db", str(db))
    assert code == 0, err
    found: dict[str, Any] = json.loads(out)
    return found


def configs(db: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(db) as database:
        return database.execute(
            "SELECT name, type, version FROM configs ORDER BY name, version").fetchall()


def test_xml_classes_apply_at_start_and_as_saved_and_an_invalid_one_is_refused(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    classes = tmp_path / "classes"
    classes.mkdir()
    (classes / "meter.xml").write_text(
        '<?xml version="1.0"?>\n<class name="meter" silence="600">\n'
        '  <post name="energy" format="json" path="total"/>\n</class>\n')
    db = tmp_path / "registry.sqlite"
    server = serve(mosquitto, db, "--classes", str(classes))
    try:
        # applied at start: its post type decoded per its format; others as before
        pub(mosquitto.port, "plant/hall/meter/m1/energy", '{"total": 12.5, "unit": "kWh"}')
        pub(mosquitto.port, "plant/hall/meter/m1/diag/rssi", "-70")
        until(lambda: "diag" in show(db, "plant/meter/m1")["data"], "the meter's data")
        data = show(db, "plant/meter/m1")["data"]
        assert data["energy"]["value"] == 12.5 and data["diag"]["value"] == {"rssi": -70}
        # a payload that does not read in its format: said, and kept as it came
        pub(mosquitto.port, "plant/hall/meter/m1/energy", "oops")
        until(lambda: show(db, "plant/meter/m1")["data"]["energy"]["value"] == "oops",
              "the unreadable reading kept")
        server.wait_for_line("does not read as class meter's energy", WAIT)
        pub(mosquitto.port, "plant/hall/plug/p1/power", "5")
        until(lambda: show(db, "plant/plug/p1")["online"], "the plug online")
        # a class saved while it runs: applied within 2 s, without a restart
        saved = time.monotonic()
        (classes / "plug.xml").write_text('<class name="plug" silence="1"/>\n')
        server.wait_for_line(f"class plug: version 1 applied ({classes / 'plug.xml'})", 2.0)
        applied = time.monotonic() - saved
        until(lambda: not show(db, "plant/plug/p1")["online"], "the plug offline after 1 s")
        assert show(db, "plant/plug/p1")["reason"] == "silent for 1 s"
        print(f"plug.xml applied {applied:.2f} s after it was saved")
        # invalid: not well-formed, then failing the XSD; each refused in one line, the
        # version before stays in force
        (classes / "plug.xml").write_text('<class name="plug" silence="600">\n</clas>\n')
        server.wait_for_line(f"{classes / 'plug.xml'}:2: not well-formed XML: mismatched tag",
                             WAIT)
        (classes / "plug.xml").write_text('<class name="plug"\n  silence="soon"/>\n')
        server.wait_for_line(f"{classes / 'plug.xml'}:1: /class: attribute silence='soon'",
                             WAIT)
        pub(mosquitto.port, "plant/hall/plug/p1/power", "6")
        until(lambda: show(db, "plant/plug/p1")["online"], "the plug back")
        until(lambda: not show(db, "plant/plug/p1")["online"],
              "offline again after 1 s: the version in force")
        # a changed valid file: its next version
        (classes / "plug.xml").write_text('<class name="plug" silence="600"/>\n')
        server.wait_for_line("class plug: version 2 applied", WAIT)
        assert configs(db) == [("meter", "xml", 1), ("plug", "xml", 1), ("plug", "xml", 2)]
        assert_no_traceback(server.output)
    finally:
        server.stop()


def test_send_follows_the_class_of_the_device(mosquitto: Mosquitto, tmp_path: Path) -> None:
    classes = tmp_path / "classes"
    classes.mkdir()
    (classes / "plug.yaml").write_text(PLUG_YAML)
    db = tmp_path / "registry.sqlite"
    server = serve(mosquitto, db, "--classes", str(classes))
    sim = JetProcess("device-sim", "--broker", mosquitto.url, "--count", "3", "--zones", "1",
                     "--period", "0.5", "--host", "plant")
    broker = ("--db", str(db), "--broker", mosquitto.url)
    try:
        sim.wait_for_line("3 simulated site devices of plant", WAIT)
        # p9 is a plug that never confirms anything
        pub(mosquitto.port, "yard/gate/plug/p9/power", '{"ENERGY": {"Power": 42}}')
        until(lambda: len(devices(db)) == 4, "the 3 simulated devices and p9")
        assert show(db, "yard/plug/p9")["data"]["power"]["value"] == 42
        # the class's window (1 s), not the default 5 s
        started = time.monotonic()
        code, out, err = jet("devices", "send", "yard/plug/p9", "relay", "ON", *broker)
        took = time.monotonic() - started
        assert code == 1 and "yard/plug/p9 did not confirm relay ON within 1 s" in err, err
        assert took < 4.5, took
        # --window overrides it
        code, out, err = jet("devices", "send", "yard/plug/p9", "relay", "OFF", *broker,
                             "--window", "0.5")
        assert code == 1 and "did not confirm relay OFF within 0.5 s" in err, err
        # a simulated plug confirms (it says the value on .../relay): within the window
        code, out, err = jet("devices", "send", "plant/plug/d00001", "relay", "ON", *broker)
        assert code == 0 and out.strip() == "plant/plug/d00001: relay ON confirmed", err
        # not a command: refused in one line, nothing sent, no use recorded
        code, out, err = jet("devices", "send", "plant/plug/d00001", "power", "5", *broker)
        assert code == 1, err
        refusal = [line for line in err.splitlines() if "refused" in line]
        assert refusal == ["jet devices send: error: plant/plug/d00001: power is not a"
                           " command (class plug version 1) (refused)"], err
        # another post type confirms, with another value: a device of mosquitto_sub and _pub
        answered = answer(mosquitto, "yard/gate/plug/p9/set/open", "yard/gate/plug/p9/result",
                          "done")
        code, out, err = jet("devices", "send", "yard/plug/p9", "open", "1", *broker)
        answered.join(WAIT)
        assert code == 0 and out.strip() == "yard/plug/p9: open 1 confirmed", err
        p9 = show(db, "yard/plug/p9")
        assert [(u["command"], u["failed"]) for u in p9["uses"]] == [
            ("open 1", 0), ("relay OFF", 1), ("relay ON", 1)]
        assert p9["statistics"]["today"]["failures"] == 2
        d1 = show(db, "plant/plug/d00001")
        assert [(u["command"], u["failed"]) for u in d1["uses"]] == [("relay ON", 0)]
        assert d1["statistics"]["today"]["failures"] == 0
        assert configs(db) == [("plug", "yaml", 1)]
        assert_no_traceback(server.output)
    finally:
        sim.stop()
        server.stop()


def answer(mosquitto: Mosquitto, command: str, confirmation: str, value: str
           ) -> threading.Thread:
    """A device: once subscribed to ``command``, it answers its first message with
    ``value`` on ``confirmation``."""
    exe = shutil.which("mosquitto_sub")
    assert exe is not None, "mosquitto_sub (Debian's mosquitto-clients) is needed"
    # (stdbuf: its -d lines are said as they come, not when a buffer is full)
    sub = subprocess.Popen([shutil.which("stdbuf") or "stdbuf", "-oL", exe, "-h", "127.0.0.1",
                            "-p", str(mosquitto.port), "-q", "1", "-t", command, "-C", "1",
                            "-d"], stdout=subprocess.PIPE, text=True)
    assert sub.stdout is not None
    for line in sub.stdout:  # (-d: it says when its subscription is acknowledged)
        if "SUBACK" in line:
            break

    def respond() -> None:
        try:
            sub.wait(WAIT)
            pub(mosquitto.port, confirmation, value)
        finally:
            sub.kill()

    thread = threading.Thread(target=respond, daemon=True)
    thread.start()
    return thread
