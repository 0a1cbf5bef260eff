"""Security against real brokers: TLS with client certificates, passwords, the ACL of
docs/mosquitto-acl.conf, and the gadget type allow list (no code travels over MQTT).

Every broker is a real mosquitto on a free loopback port, configured by the test
(tests/tls_helpers.py) and stopped at its end.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import REPO, jet, jet_async
from helpers import Collector, run
from tls_helpers import Certs, SecureMosquitto, password_file

from jet.containers.pack import Pack
from jet.runtime.registry import Registry
from jet.transport import broker, codec
from jet.transport.client import CommandFailed, Session
from jet.transport.link import Link

ACL_FILE = REPO / "docs" / "mosquitto-acl.conf"


def offset_circuit(name: str, offset: float = 1.0) -> dict[str, Any]:
    """A one-gadget circuit definition as the loader sends it."""
    return {
        "name": name,
        "container": "pack",
        "gadgets": [{"name": "d", "type": "jet.lib.Offset", "params": {"offset": offset}}],
        "wires": [],
    }


def cannot_connect(code: int, stderr: str, command: str) -> str:
    """The CLI failed to reach the broker with one line on stderr; return it."""
    assert code == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"jet {command}: error: cannot reach MQTT broker "), stderr
    return lines[0]


# --- TLS: mqtts:// with a CA, a client certificate and its key -----------------------------


def tls_broker(tmp_path: Path, certs: Certs) -> SecureMosquitto:
    return SecureMosquitto(
        tmp_path,
        [
            f"cafile {certs.ca}",
            f"certfile {certs.server_cert}",
            f"keyfile {certs.server_key}",
            "require_certificate true",
            "allow_anonymous true",  # the client certificate is the credential here
        ],
    )


def test_tls_with_client_certificate_pack_and_cli(tmp_path: Path) -> None:
    certs = Certs.make(tmp_path / "certs")
    with tls_broker(tmp_path, certs) as mosq:
        url = mosq.url(tls=True, query=certs.query())

        async def scenario() -> None:
            async with (
                Pack(broker.parse(url), "secure") as pack,
                Session(broker.parse(url)) as session,
                Link(broker.parse(url), "observer", clean_session=True) as observer,
            ):
                assert pack.link.broker.tls
                await session.request(
                    "jet/pack/secure/conf", {"cmd": "load", "definition": offset_circuit("tlsc")}
                )
                await session.request(
                    "pack/tlsc/conf", {"cmd": "wire", "input": "d.in", "topic": "in/tls"}
                )
                out = await Collector(observer).watch("pack/tlsc/d/0")
                await observer.publish("in/tls", codec.encode(41), qos=1)
                await out.wait_for(lambda c: c.values() == [42.0])

                code, stdout, stderr = await jet_async("ls", "--broker", url)
                assert code == 0, stderr
                assert "jet/pack/secure" in stdout
                assert "pack/tlsc" in stdout
                assert "online" in stdout

        run(scenario())


def test_tls_refuses_clients_without_certificate_or_trust(tmp_path: Path) -> None:
    certs = Certs.make(tmp_path / "certs")
    with tls_broker(tmp_path, certs) as mosq:
        urls = [
            mosq.url(tls=True, query=certs.query(client=False)),  # no client certificate
            mosq.url(tls=True, query=certs.query(ca=certs.other_ca)),  # server not trusted
            mosq.url(),  # no TLS at all
        ]

        async def attempts() -> list[tuple[int, str, str]]:
            return list(await asyncio.gather(*(jet_async("ls", "--broker", u) for u in urls)))

        results = run(attempts())
        for code, _out, err in results:
            assert f"127.0.0.1:{mosq.port}" in cannot_connect(code, err, "ls")
        # A client that does not trust the server's CA says why.
        assert "certificate verify failed" in results[1][2]


# --- user name and password --------------------------------------------------------------------

PASSWORD = "p@ss:w/rd %41 secret"  # needs percent-encoding in a URL


def test_password_right_works_wrong_is_refused(tmp_path: Path) -> None:
    passwd = password_file(tmp_path / "passwd", {"admin": PASSWORD})
    options = ["allow_anonymous false", f"password_file {passwd}"]
    with SecureMosquitto(tmp_path, options) as mosq:

        async def scenario() -> None:
            good = mosq.url(user="admin", password=PASSWORD)
            async with Pack(broker.parse(good), "pw") as pack:
                code, stdout, stderr = await jet_async("ls", "--broker", good)
                assert code == 0, stderr
                assert "jet/pack/pw" in stdout
                failures = await asyncio.gather(
                    jet_async("ls", "--broker", mosq.url(user="admin", password="wrong-one")),
                    jet_async("ls", "--broker", mosq.url(user="nobody", password=PASSWORD)),
                    jet_async("ls", "--broker", mosq.url()),
                )
                for code, _out, err in failures:
                    line = cannot_connect(code, err, "ls")
                    assert "not authori" in line.lower(), line
                    for secret in ("wrong-one", "p@ss", "p%40ss", "%41"):
                        assert secret not in err, "a password was printed"
                assert pack.link.connected

        run(scenario())


def test_refused_client_certificate_is_named_in_the_error(tmp_path: Path) -> None:
    certs = Certs.make(tmp_path / "certs")
    with tls_broker(tmp_path, certs) as mosq:
        url = mosq.url(tls=True, query=certs.query(client=False))
        code, _out, err = run(jet_async("ls", "--broker", url))
        assert "certificate" in cannot_connect(code, err, "ls").lower()


def test_broker_url_never_shows_the_password() -> None:
    parsed = broker.parse("mqtts://admin:s%40cret@127.0.0.1:8883?ca=/x/ca.pem")
    assert parsed.password == "s@cret"
    assert "cret" not in parsed.url
    assert "cret" not in repr(parsed)


# --- the ACL: each container confined to its own subtree ----------------------------------------

USERS = {"admin": "admin-pw", "default": "default-pw", "kitchen": "kitchen-pw", "hub": "hub-pw"}


def test_acl_confines_each_container_to_its_subtree(tmp_path: Path) -> None:
    passwd = password_file(tmp_path / "passwd", USERS)
    options = ["allow_anonymous false", f"password_file {passwd}", f"acl_file {ACL_FILE}"]
    with SecureMosquitto(tmp_path, options) as mosq:

        def as_user(user: str) -> broker.Broker:
            return broker.parse(mosq.url(user=user, password=USERS[user]))

        async def scenario() -> None:
            async with (
                Pack(as_user("default"), "default") as default,
                Pack(as_user("kitchen"), "kitchen") as kitchen,
                Session(as_user("admin")) as admin,
                Link(as_user("admin"), "admin-watch", clean_session=True) as watch_link,
                Link(as_user("default"), "rogue-default", clean_session=True) as rogue,
                Link(as_user("hub"), "rogue-hub", clean_session=True) as rogue_hub,
            ):
                watch = await Collector(watch_link, raw=True).watch("#")

                # Allowed: the pack reads its own conf, answers on jet/reply/#,
                # subscribes and publishes under pack/#, keeps its retained status.
                await admin.request(
                    "jet/pack/default/conf", {"cmd": "load", "definition": offset_circuit("c1")}
                )
                await admin.request(
                    "pack/c1/conf", {"cmd": "wire", "input": "d.in", "topic": "pack/feed/g/0"}
                )
                await watch_link.publish("pack/feed/g/0", codec.encode(1), qos=1)
                await watch.wait_for(lambda c: codec.encode(2.0) in c.values("pack/c1/d/0"))
                statuses = await admin.retained("jet/pack/+/status")
                assert statuses["jet/pack/default/status"]["state"] == "online"
                assert statuses["jet/pack/kitchen/status"]["state"] == "online"
                await admin.request(
                    "jet/pack/kitchen/conf", {"cmd": "load", "definition": offset_circuit("k1")}
                )

                # Denied: the pack user publishing into node/#, into another pack's
                # conf, into the hub's conf.  MQTT 3.1.1 drops them silently, so the
                # proof is an allowed message sent after them on the same connection
                # (QoS 1, in order) that arrives while they never do.
                denied = {
                    "node/5/0/0": codec.encode(99),
                    "node/5/conf": codec.encode({"cmd": "stop"}),
                    "jet/pack/kitchen/conf": codec.encode(
                        {"cmd": "load", "definition": offset_circuit("evil")}
                    ),
                    "jet/node/hub/conf": codec.encode({"cmd": "status"}),
                }
                watch.messages.clear()
                for topic, payload in denied.items():
                    await rogue.publish(topic, payload, qos=1)
                await rogue.publish("pack/probe/g/0", codec.encode("control"), qos=1)
                # The hub user may not command pack circuits either.
                await rogue_hub.publish("pack/c1/conf", codec.encode({"cmd": "stop"}), qos=1)
                await rogue_hub.publish("node/probe/0/0", codec.encode("hub control"), qos=1)
                await watch.wait_for(
                    lambda c: bool(c.values("pack/probe/g/0")) and bool(c.values("node/probe/0/0"))
                )
                seen = {t for t, _ in watch.messages}
                assert not seen & set(denied), f"denied publishes were delivered: {seen}"
                assert "pack/c1/conf" not in seen
                assert set(kitchen.circuits) == {"k1"}, "another pack's conf obeyed a stranger"
                assert kitchen.conf_errors == 0
                assert "c1" in default.circuits

                # Read side: the pack user hears replies (jet/reply/#) and its own
                # subtree, not another pack's conf topic or retained status.
                heard = await Collector(rogue, raw=True).watch("jet/pack/kitchen/#")
                for topic_filter in ("pack/probe/#", "jet/reply/#", "jet/pack/default/#"):
                    await heard.watch(topic_filter)
                await admin.request("jet/pack/kitchen/conf", {"cmd": "status"})
                await watch_link.publish("pack/probe/g/1", codec.encode("control 2"), qos=1)
                await heard.wait_for(lambda c: bool(c.values("pack/probe/g/1")))
                topics_heard = {t for t, _ in heard.messages}
                assert any(t.startswith("jet/reply/jet-cli-") for t in topics_heard), topics_heard
                assert "jet/pack/default/status" in topics_heard
                assert not [t for t in topics_heard if t.startswith("jet/pack/kitchen/")]

        run(scenario())
        assert "Denied PUBLISH" in mosq.log_text()


# --- the allow list: only installed, allowed gadget types are ever built ---------------------

SENTINEL = "jet_sentinel_evil"
SENTINEL_SOURCE = '''
"""Would run code on import: a pack must never import this module."""
from pathlib import Path
Path(__file__).with_suffix(".imported").write_text("imported")

from jet.gadget import Gadget


class Boom(Gadget):
    inputs = ("in",)
'''

REFUSED_TYPES = [
    "os.system",
    "subprocess.Popen",
    "builtins.eval",
    "builtins.__import__",
    f"{SENTINEL}.Boom",
    SENTINEL,
    "jet_sentinel.Boom",  # allowed prefix, but the module is not installed: not imported either
    ".jet.lib.Scale",
    "jet.libevil.X",
]


@pytest.fixture
def sentinel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A module on sys.path that leaves a file behind when imported."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / f"{SENTINEL}.py").write_text(SENTINEL_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, SENTINEL, raising=False)
    return folder / f"{SENTINEL}.imported"


def test_load_refuses_types_outside_the_allow_list_and_imports_nothing(
    mosquitto: Any, sentinel: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    # "jet_sentinel" is allowed: a name that merely starts with it is not inside it.
    registry = Registry.allowing(["jet_sentinel"])

    async def scenario() -> None:
        async with (
            Pack(broker.parse(mosquitto.url), "guard", registry=registry) as pack,
            Session(broker.parse(mosquitto.url)) as session,
        ):
            for type_name in REFUSED_TYPES:
                definition = offset_circuit("intruder")
                definition["gadgets"][0] = {"name": "g", "type": type_name, "params": {}}
                with pytest.raises(CommandFailed) as refused:
                    await session.request(
                        "jet/pack/guard/conf", {"cmd": "load", "definition": definition}
                    )
                message = str(refused.value)
                assert "\n" not in message
                # the words of `jet check`: a pack checks what it is sent as the check does
                assert message.startswith("jet/pack/guard/conf: load: gadget intruder.g: "), message
                assert repr(type_name) in message
                reasons = ("not allowed", "cannot import", "unknown gadget type")
                assert any(why in message for why in reasons), message
            assert pack.circuits == {}
            # The same refusal for a reload of a running circuit.
            await session.request(
                "jet/pack/guard/conf", {"cmd": "load", "definition": offset_circuit("ok")}
            )
            bad = offset_circuit("ok")
            bad["gadgets"][0]["type"] = f"{SENTINEL}.Boom"
            with pytest.raises(CommandFailed, match="not allowed"):
                await session.request("pack/ok/conf", {"cmd": "reload", "definition": bad})
            assert pack.circuits["ok"].body.network.slots["d"].definition.type == "jet.lib.Offset"

    run(scenario())
    assert SENTINEL not in sys.modules
    assert not sentinel.exists(), "the disallowed module was imported"
    errors = [r for r in caplog.records if r.name == "jet.pack" and r.levelno >= logging.ERROR]
    assert len(errors) == len(REFUSED_TYPES) + 1
    for record in errors:
        assert "\n" not in record.getMessage()
        assert record.exc_info is None
        assert record.getMessage().startswith(("jet/pack/guard/conf: ", "pack/ok/conf: "))


def test_jet_check_does_not_import_a_disallowed_module(
    tmp_path: Path, sentinel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = tmp_path / "evil.yaml"
    app.write_text(
        f"app: evil\ncircuits:\n  c:\n    gadgets:\n      g: {{type: {SENTINEL}.Boom}}\n"
    )
    path = [str(sentinel.parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, path)))
    result = jet("check", str(app))
    assert result.returncode == 1
    assert "not allowed" in result.stderr
    assert not sentinel.exists(), "jet check imported the disallowed module"


def test_allowed_prefix_type_with_newline_gives_one_line() -> None:
    registry = Registry()
    for type_name in ("jet.lib.\nX", "jet.lib.a\nb.C"):
        with pytest.raises(LookupError) as refused:
            registry.resolve(type_name)
        assert "\n" not in str(refused.value)
