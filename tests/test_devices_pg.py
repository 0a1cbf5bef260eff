"""The device registry on PostgreSQL, through real things: a PostgreSQL server of the
tests' own (tests/pg_helpers.py), mosquitto, `jet devices serve --db postgresql://...`,
`jet device-sim`, mosquitto_pub, kill -9; and PostgresStore itself from two threads, each
with its connection, as two registry servers on two machines would be."""

from __future__ import annotations

import json
import signal
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from cli_helpers import JetProcess, assert_no_traceback
from conftest import Mosquitto, free_port
from pg_helpers import Postgres
from test_devices import WAIT, devices, jet, pub, serve, until

from jet.devices import PostgresStore, open_store


def show(url: str, uid: str) -> dict[str, Any]:
    code, out, err = jet("devices", "show", uid, "--db", url)
    assert code == 0, err
    found: dict[str, Any] = json.loads(out)
    return found


def test_a_registry_on_postgresql_finds_lists_and_shows_devices(
        mosquitto: Mosquitto, postgres: str) -> None:
    server = serve(mosquitto, postgres, name="reg1")
    sim = JetProcess("device-sim", "--broker", mosquitto.url, "--count", "6", "--zones", "3",
                     "--period", "0.5", "--host", "plant")
    try:
        server.wait_for_line(f"database {postgres}", WAIT)
        sim.wait_for_line("6 simulated site devices of plant", WAIT)
        # a post type with data subtopics: one dictionary
        pub(mosquitto.port, "yard/gate/lock/l1/battery", "87")
        pub(mosquitto.port, "yard/gate/lock/l1/diag/rssi", "-71")
        pub(mosquitto.port, "yard/gate/lock/l1/diag/uptime/s", "3600")
        until(lambda: len(devices(postgres)) == 7, "7 devices in PostgreSQL")
        zone = devices(postgres, "--zone", "zone-1")
        assert len(zone) == 2 and all(d["zone"] == "zone-1" for d in zone)
        assert len(devices(postgres, "--class", "plug")) == 2
        until(lambda: all(d["online"] for d in devices(postgres)), "every device online")
        assert [d["uid"] for d in devices(postgres)] == sorted(d["uid"]
                                                               for d in devices(postgres))
        until(lambda: "uptime/s" in show(postgres, "yard/lock/l1")["data"].get(
            "diag", {}).get("value", {}), "diag subtopics")
        lock = show(postgres, "yard/lock/l1")
        assert lock["data"]["diag"]["value"] == {"rssi": -71, "uptime/s": 3600}
        assert lock["data"]["battery"]["value"] == 87 and lock["zone"] == "gate"
        assert lock["statistics"]["today"] == {"attempts": 3, "failures": 0}
        assert lock["statistics"]["weekly"] == {"attempts": 3.0, "failures": 0.0}
        thermo = show(postgres, "plant/thermo/d00000")
        assert thermo["host"] == "plant" and thermo["focus"].startswith("plant/zone-0/thermo/")
        assert isinstance(thermo["data"]["temperature"]["value"], float)
        assert set(thermo["statistics"]) == {"today", "daily", "weekly", "monthly", "yearly"}
        # a command, confirmed by the simulated device, recorded as a use
        code, out, err = jet("devices", "send", "plant/thermo/d00000", "setpoint", "21.5",
                             "--db", postgres, "--broker", mosquitto.url)
        assert code == 0 and out.strip() == "plant/thermo/d00000: setpoint 21.5 confirmed", err
        assert [(u["command"], u["failed"]) for u in show(postgres, "plant/thermo/d00000")[
            "uses"]] == [("setpoint 21.5", 0)]
        # the lock falls silent... no: it says it is offline, and comes back
        pub(mosquitto.port, "yard/gate/lock/l1/state", "offline")
        until(lambda: not show(postgres, "yard/lock/l1")["online"], "the lock offline")
        assert show(postgres, "yard/lock/l1")["reason"] == "state: offline"
        pub(mosquitto.port, "yard/gate/lock/l1/battery", "86")
        until(lambda: show(postgres, "yard/lock/l1")["online"], "the lock back")
        code, _out, err = jet("devices", "show", "plant/thermo/nope", "--db", postgres)
        assert code == 1 and err.strip() == (f"jet devices show: error: no device "
                                             f"'plant/thermo/nope' in {postgres}")
    finally:
        sim.stop()
        server.stop()


def test_two_servers_on_one_postgresql_share_the_inventory_across_a_kill_9(
        mosquitto: Mosquitto, postgres: str) -> None:
    """Two `jet devices serve --group` on one broker and one PostgreSQL database, as on
    two machines: every message handled by one of them and counted once; after a kill -9
    of one, nothing it acknowledged is lost and the survivor takes its share (docs/devices.md)."""
    servers = [serve(mosquitto, postgres, "--group", "registry", name="r1"),
               serve(mosquitto, postgres, "--group", "registry", name="r2")]
    try:
        def attempts() -> int:
            return sum(d["today"]["attempts"] for d in devices(postgres))

        for n in range(40):
            pub(mosquitto.port, f"site/a/meter/m{n % 10}/energy", str(n))
        until(lambda: attempts() == 40, "40 messages, each counted once")
        assert len(devices(postgres)) == 10
        servers[0].proc.send_signal(signal.SIGKILL)
        servers[0].proc.wait(WAIT)
        assert_no_traceback(servers[0].output)
        for n in range(40, 80):
            pub(mosquitto.port, f"site/b/meter/m{n % 10}/energy", str(n))
        until(lambda: attempts() > 40, "the survivor handling its share")
        servers[0] = serve(mosquitto, postgres, "--group", "registry", name="r1")
        until(lambda: attempts() == 80, "all 80, the dead one's share when it is back")
        for n in range(80, 90):  # (had any come twice, this would show it)
            pub(mosquitto.port, f"site/c/meter/m{n % 10}/energy", str(n))
        until(lambda: attempts() == 90, "90 messages, 90 counted")
        assert len(devices(postgres)) == 10
        fellows = open_store(postgres, must_exist=True)
        try:
            assert isinstance(fellows, PostgresStore)
            named = {row["id"] for row in fellows._query("SELECT id FROM fellows")}
            assert named == {"r1", "r2"}
        finally:
            fellows.close()
    finally:
        for server in servers:
            server.stop()


def together(stores: list[PostgresStore], call: Callable[[PostgresStore], Any]) -> list[Any]:
    """``call`` on each store in a thread of its own, all let go at once: the results."""
    start = threading.Barrier(len(stores))
    results: list[Any] = [None] * len(stores)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            start.wait(WAIT)
            results[n] = call(stores[n])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not errors, errors
    return results


def test_two_connections_hearing_one_new_device_at_once_find_it_new_once(
        postgres: str) -> None:
    stores = [PostgresStore(postgres) for _ in range(2)]  # (the first makes the tables)
    try:
        fields = {"host": "site", "id": "t", "type": "thermo", "zone": "a"}
        for n in range(30):
            uid, topic = f"site/thermo/t{n}", f"site/a/thermo/t{n}"
            came = together(stores, lambda s, uid=uid, topic=topic: s.seen(
                uid, fields, "site", topic, 1.0e9))
            assert Counter(came) == {"new": 1, "": 1}, (uid, came)
            went = together(stores, lambda s, uid=uid: s.set_online(uid, False, 1.0e9 + 1))
            assert sorted(went) == [False, True], (uid, went)
            came = together(stores, lambda s, uid=uid, topic=topic: s.seen(
                uid, fields, "site", topic, 1.0e9 + 2))
            assert Counter(came) == {"back": 1, "": 1}, (uid, came)
            # two subtopics of one post type at once: both kept in its dictionary
            together(stores, lambda s, uid=uid: s.record(
                uid, "diag", stores.index(s), 1.0e9 + 3, f"k{stores.index(s)}"))
        device = stores[0].device("site/thermo/t29")
        assert device is not None
        assert device["data"]["diag"]["value"] == {"k0": 0, "k1": 1}
        row = stores[1].device_row("site/thermo/t29")  # (the row alone, one query)
        assert row == {k: v for k, v in device.items()
                       if k not in ("description", "data", "uses", "statistics")}, row
        assert row["last_seen"] == 1.0e9 + 2 and row["online"] == 1
        assert stores[1].device_row("site/thermo/nope") is None
        assert stores[1].statistics("site/thermo/t29", now=1.0e9 + 4)["today"] == {
            "attempts": 4, "failures": 0}
        assert len(stores[1].devices()) == 30
        # the same class file applied by both at once: one version
        versions = together(stores, lambda s: s.record_config("meter", "class", "abc", "x"))
        assert versions == [1, 1] and len(stores[0].configs()) == 1
    finally:
        for store in stores:
            store.close()


def test_a_bad_or_unreachable_postgresql_url_is_one_line_naming_it(
        mosquitto: Mosquitto, postgres: str) -> None:
    nobody = f"postgresql://jet@127.0.0.1:{free_port()}/registry"
    for args in (("devices", "ls", "--db", nobody),
                 ("devices", "serve", "--db", nobody, "--broker", mosquitto.url),
                 ("devices", "show", "x/y/z", "--db", nobody)):
        code, out, err = jet(*args)
        assert code == 1 and err.startswith(f"jet devices: error: {nobody}: "), (out, err)
        assert len(err.strip().splitlines()) == 1, err
    secret = f"postgresql://jet:hush@127.0.0.1:{free_port()}/registry"
    code, _out, err = jet("devices", "ls", "--db", secret)
    assert code == 1 and "hush" not in err and "jet:***@127.0.0.1" in err, err
    code, _out, err = jet("devices", "ls", "--db", "postgresql://jet@127.0.0.1:port/registry")
    assert code == 1 and err.startswith("jet devices: error: postgresql://jet@127.0.0.1:port/"
                                        "registry: "), err
    assert len(err.strip().splitlines()) == 1, err
    # a database that is there but holds no registry: ls does not make one
    code, _out, err = jet("devices", "ls", "--db", postgres)
    assert code == 1 and err.strip() == (f"jet devices: error: {postgres}: no device registry"
                                         f" here (start `jet devices serve --db {postgres}`)")


def test_a_store_goes_on_after_postgresql_restarts() -> None:
    """Its connection found broken as a transaction begins is made again; while the
    database is down, each call is one OSError naming the URL."""
    server = Postgres()
    try:
        url = server.database()
        store = PostgresStore(url)
        try:
            assert store.seen("site/thermo/t1", {}, "site", "site/a/thermo/t1", 1.0e9) == "new"
            server.stop_server()
            try:
                store.seen("site/thermo/t2", {}, "site", "site/a/thermo/t2", 1.0e9)
            except OSError as exc:
                assert str(exc).startswith(f"{url}: "), exc
            else:
                raise AssertionError("stored with the database down")
            server.start()
            assert store.seen("site/thermo/t3", {}, "site", "site/a/thermo/t3", 1.0e9) == "new"
            assert [d["uid"] for d in store.devices()] == ["site/thermo/t1", "site/thermo/t3"]
        finally:
            store.close()
    finally:
        server.stop()


def test_a_message_said_while_postgresql_is_down_is_stored_once_it_is_back(
        mosquitto: Mosquitto) -> None:
    """With PostgreSQL stopped, a device's message is not stored, so not acknowledged: the
    broker sends it again until PostgreSQL is back, and then it is stored; the server (its
    silence checks too) goes on."""
    server = Postgres()
    try:
        url = server.database()
        registry = serve(mosquitto, url, "--silence", "3")
        try:
            server.stop_server()
            pub(mosquitto.port, "site/b/thermo/t1/temperature", "21.5")
            line = registry.wait_for_line("site/b/thermo/t1/temperature from site/thermo/t1"
                                          " not stored", WAIT)
            assert url in line and "not acknowledged" in line, line
            registry.wait_for_line("silences not checked", WAIT)
            server.start()
            until(lambda: [d["uid"] for d in devices(url)] == ["site/thermo/t1"],
                  "the device said while PostgreSQL was down")
            assert show(url, "site/thermo/t1")["data"]["temperature"]["value"] == 21.5
            until(lambda: show(url, "site/thermo/t1")["reason"] == "silent for 3 s",
                  "offline after 3 s of silence: the silence checks went on")
            assert registry.proc.poll() is None, "the server went on"
            assert registry.output.count("not stored") == 1, registry.output
            assert_no_traceback(registry.output)
        finally:
            registry.stop()
    finally:
        server.stop()
