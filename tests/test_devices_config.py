"""`jet devices serve --config FILE`: several brokers, every form of login, topics and
layouts of one's own, through real processes: three real mosquittos (anonymous, TLS with
client certificates, passwords), mosquitto_pub on each, a real SQLite file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cli_helpers import JetProcess, assert_no_traceback
from conftest import Mosquitto
from test_devices import WAIT, devices, jet, until
from tls_helpers import Certs, SecureMosquitto, password_file

PASSWORD = "s3cret:/@pw"


def pub(port: int, topic: str, payload: str, *login: str) -> None:
    exe = shutil.which("mosquitto_pub")
    assert exe is not None, "mosquitto_pub (Debian's mosquitto-clients) is needed"
    subprocess.run([exe, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                    "-m", payload, *login], check=True, timeout=WAIT)


def test_one_registry_on_three_brokers_with_every_login(mosquitto: Mosquitto,
                                                       tmp_path: Path) -> None:
    certs = Certs.make(tmp_path / "certs")
    (tmp_path / "tls").mkdir()
    (tmp_path / "pw").mkdir()
    passwd = password_file(tmp_path / "passwd", {"registry": PASSWORD})
    tls = SecureMosquitto(tmp_path / "tls", [
        f"cafile {certs.ca}", f"certfile {certs.server_cert}",
        f"keyfile {certs.server_key}", "require_certificate true", "allow_anonymous true"])
    pw = SecureMosquitto(tmp_path / "pw", ["allow_anonymous false", f"password_file {passwd}"])
    db = tmp_path / "registry.sqlite"
    config = tmp_path / "registry.yaml"
    shutil.copy(certs.ca, tmp_path / "ca.pem")
    config.write_text(f"""\
name: central
db: registry.sqlite
silence: 600
brokers:
  - url: {mosquitto.url}
    topics: ["acme/#", "site/#"]
  - url: mqtts://127.0.0.1:{tls.port}
    ca: ca.pem
    cert: {certs.client_cert}
    key: {certs.client_key}
  - url: mqtt://127.0.0.1:{pw.port}
    username: registry
    password_env: JET_TEST_REGISTRY_PASSWORD
layouts:
  - name: acme
    pattern: "acme/{{zone}}/{{type}}/{{id}}/{{post_type}}"
""")
    with tls, pw:
        proc = JetProcess("devices", "serve", "--config", str(config),
                          env={"JET_TEST_REGISTRY_PASSWORD": PASSWORD})
        try:
            proc.wait_for_line("device registry central on", WAIT)
            pub(mosquitto.port, "acme/line-1/press/p7/pressure", "3.5")
            pub(mosquitto.port, "site/hall/thermo/t1/temperature", "20.5")
            pub(mosquitto.port, "homie/ignored/node/prop", "1")  # not in its topics there
            pub(tls.port, "plant/dock/meter/m1/energy", "12",
                "--cafile", str(certs.ca), "--cert", str(certs.client_cert),
                "--key", str(certs.client_key))
            pub(pw.port, "homie/lamp/light/on", "true", "-u", "registry", "-P", PASSWORD)
            until(lambda: len(devices(db)) == 4, "a device from each broker, and acme's")
            found = {d["uid"]: d for d in devices(db)}
            assert sorted(found) == ["acme/press/p7", "homie/lamp", "plant/meter/m1",
                                     "site/thermo/t1"]
            assert found["acme/press/p7"]["zone"] == "line-1"
            assert found["acme/press/p7"]["layout"] == "acme"
            code, out, err = jet("devices", "show", "acme/press/p7", "--db", str(db))
            assert code == 0, err
            assert '"pressure"' in out and "3.5" in out
        finally:
            proc.stop()
        assert_no_traceback(proc.output)


def test_a_configuration_mistake_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "registry.yaml"
    cases = {
        "brokers:\n  - url: mqtt://127.0.0.1:1\n    passwd: x\n": ":3: brokers[0]: unknown key",
        "brokers:\n  - url: ftp://127.0.0.1\n": ":2: broker URL 'ftp://127.0.0.1'",
        "brokers:\n  - url: mqtt://127.0.0.1:1\n    ca: ca.pem\n": ":3: ca needs an mqtts:// URL",
        "brokers:\n  - url: mqtts://127.0.0.1:1\n    ca: nowhere.pem\n": ":3: ca ",
        "brokers:\n  - url: mqtt://127.0.0.1:1\n    password_env: JET_NOT_SET_X\n":
            ":3: environment variable JET_NOT_SET_X is not set",
        "brokers:\n  - url: mqtt://127.0.0.1:1\nlayouts:\n  - name: x\n"
        "    pattern: \"x/{zone}/{data...}/{id}\"\n": ":5: pattern",
        "name: a\n": ":1: top level: missing required key 'brokers'",
    }
    for text, expected in cases.items():
        config.write_text(text)
        code, out, err = jet("devices", "serve", "--config", str(config))
        assert code == 1, (text, out, err)
        assert err.count("\n") == 1 and f"{config}{expected}" in err, (text, err)
        assert_no_traceback(err)
