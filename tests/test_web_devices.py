"""The Devices tab of the web page: the registry of a real `jet devices serve`, shown by a real
`jet web --devices FILE` in headless Chromium; devices are mosquitto_pub's messages.

Every wait is on the page's content (or a printed line) with a timeout, never a sleep.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from cli_helpers import JetProcess, jet_async
from conftest import Mosquitto, free_port
from helpers import run
from test_devices import THERMO_APP, THERMO_CLASS
from web_helpers import browser_page, require_chromium
from websockets.asyncio.client import connect

from jet.web import serving
from jet.web.devices import shown_store

WAIT = 15.0
WAIT_MS = int(WAIT * 1000)
#: What the circuit column shows for a device with no circuit running (an en dash).
NO_CIRCUIT = "\u2013"



def pub(port: int, topic: str, payload: str) -> None:
    exe = shutil.which("mosquitto_pub")
    assert exe is not None, "mosquitto_pub (Debian's mosquitto-clients) is needed"
    subprocess.run([exe, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", topic,
                    "-m", payload], check=True, timeout=WAIT)


def test_devices_tab_shows_zones_devices_states_counts_and_circuits(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    require_chromium()
    from playwright.async_api import expect

    classes = tmp_path / "classes"
    classes.mkdir()
    (classes / "thermo.yaml").write_text(THERMO_CLASS)
    (classes / "thermo-app.yaml").write_text(THERMO_APP)
    db = tmp_path / "registry.sqlite"
    port = free_port()
    procs: list[JetProcess] = []
    try:
        procs.append(JetProcess("pack", "--broker", mosquitto.url))
        procs[-1].wait_for_line("pack default on ", WAIT)
        procs.append(JetProcess("devices", "serve", "--broker", mosquitto.url, "--db", str(db),
                                "--name", "regweb", "--classes", str(classes)))
        procs[-1].wait_for_line("device registry regweb on", WAIT)
        procs.append(JetProcess("web", "--broker", mosquitto.url, "--port", str(port),
                                "--devices", str(db)))
        assert f"devices of {db}" in procs[-1].wait_for_line("web web on", WAIT)
        pub(mosquitto.port, "house/hall/thermo/t1/state", "online")
        for value in ("20.5", "20.0", "19.5"):
            pub(mosquitto.port, "house/hall/thermo/t1/temperature", value)
        pub(mosquitto.port, "house/hall/meter/m1/energy", "3")
        pub(mosquitto.port, "house/attic/plug/p1/power", "12")

        async def scenario() -> None:
            async with browser_page(tmp_path, "devices") as page:
                await page.goto(f"http://127.0.0.1:{port}/#devices")
                hall = page.locator('[data-zone="hall"]')
                attic = page.locator('[data-zone="attic"]')
                t1 = page.locator('tr[data-device="house/thermo/t1"]')
                await expect(hall.locator("h2")).to_contain_text("hall", timeout=WAIT_MS)
                await expect(attic.locator("tr[data-device]")).to_have_count(1)
                await expect(hall.locator("tr[data-device]")).to_have_count(2)
                await expect(attic.locator('tr[data-device="house/plug/p1"] td.class')
                             ).to_have_text("plug")
                await expect(t1.locator("td.state")).to_have_text("online")
                await expect(t1.locator("td.class")).to_have_text("thermo")
                await expect(t1.locator("td.seen")).to_contain_text("s ago")
                # one state message and three temperatures: four attempts today, no failure
                await expect(t1.locator("td.attempts")).to_have_text("4", timeout=WAIT_MS)
                await expect(t1.locator("td.failures")).to_have_text("0")
                # plug-n-process runs t1's circuit in the pack: its app and pack are shown
                circuit = t1.locator("td.circuit")
                await expect(circuit).to_contain_text("pnp-house-thermo-t1", timeout=WAIT_MS)
                await expect(circuit).to_contain_text("heat-t1 in pack default")
                await page.screenshot(path=str(tmp_path / "devices-running.png"), full_page=True)
                await expect(hall.locator('tr[data-device="house/meter/m1"] td.circuit')
                             ).to_have_text(NO_CIRCUIT)

                # a command nobody confirms: one more attempt, one failure
                code, _, err = await jet_async("devices", "send", "house/thermo/t1", "heater",
                                               "ON", "--db", str(db), "--broker",
                                               mosquitto.url, "--window", "0.3")
                assert code == 1 and "did not confirm" in err, err
                await expect(t1.locator("td.failures")).to_have_text("1", timeout=WAIT_MS)
                await expect(t1.locator("td.attempts")).to_have_text("5")

                # t1 says offline: the row turns offline, and after its grace its circuit goes
                await asyncio.to_thread(pub, mosquitto.port, "house/hall/thermo/t1/state",
                                        "offline")
                await expect(t1).to_have_attribute("data-state", "offline", timeout=WAIT_MS)
                await expect(t1.locator("td.state")).to_have_text("offline")
                await expect(circuit).to_have_text(NO_CIRCUIT, timeout=WAIT_MS)

                # a device comes in a new zone: it appears without reloading the page
                await asyncio.to_thread(pub, mosquitto.port, "house/cellar/meter/m2/energy",
                                        "7")
                cellar = page.locator('[data-zone="cellar"]')
                await expect(cellar.locator('tr[data-device="house/meter/m2"] td.state')
                             ).to_have_text("online", timeout=WAIT_MS)
                await expect(page.locator("#devices-note")).to_have_text(
                    re.compile(r"^\d+ devices in \d+ zones \(registry .*registry.sqlite\)$"))
                zones = await page.locator("[data-zone]").evaluate_all(
                    "sections => sections.map((s) => s.dataset.zone)")
                assert zones[:3] == ["attic", "cellar", "hall"], zones  # (JET's own: no zone)
                await page.screenshot(path=str(tmp_path / "devices.png"), full_page=True)

                # a web server without --devices says in one line how to turn the tab on
                async with serving(mosquitto.url, connect_timeout=5.0,
                                   server_id="plain") as plain_url:
                    await page.goto(plain_url + "#devices")
                    note = page.locator("#devices-note")
                    await expect(note).to_contain_text("jet web --devices FILE")
                    await expect(page.locator("#zones tr")).to_have_count(0)

        run(scenario(), timeout=90)
    finally:
        for proc in reversed(procs):
            proc.stop()


async def _devices_frame(url: str, want: Any) -> dict[str, Any]:
    """The first ``devices`` frame of a new page for which ``want(frame)`` holds (bounded)."""
    ws_url = url.replace("http://", "ws://") + "ws"
    async with connect(ws_url) as ws:
        async with asyncio.timeout(WAIT):
            async for text in ws:
                frame = json.loads(text)
                if frame["op"] == "devices" and want(frame):
                    return frame  # type: ignore[no-any-return]
    raise AssertionError("the page was closed before the frame came")


def test_a_registry_that_cannot_be_read_is_one_line_and_the_server_goes_on(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite"
    broken = tmp_path / "broken.sqlite"
    broken.write_bytes(b"this is not a SQLite database" * 200)

    async def scenario() -> None:
        async with serving(mosquitto.url, connect_timeout=5.0) as url:
            frame = await _devices_frame(url, lambda f: True)
            assert frame["enabled"] is False and frame["zones"] == []
        for where, said in ((missing, "no device registry here"), (broken, "not a database")):
            async with serving(mosquitto.url, connect_timeout=5.0, devices=str(where)) as url:
                frame = await _devices_frame(url, lambda f: bool(f["error"]))
                error = frame["error"]
                assert frame["enabled"] is True and said in error, error
                assert error.startswith(f"device registry {where}: ") and "\n" not in error
                # the server goes on: another page is served, and told the same
                again = await _devices_frame(url, lambda f: bool(f["error"]))
                assert again["error"] == error

    run(scenario(), timeout=40)


def test_a_store_url_is_shown_without_its_credentials() -> None:
    assert shown_store("postgresql://me:secret@db:5432/jet") == "postgresql://db:5432/jet"
    assert shown_store("postgresql://db/jet") == "postgresql://db/jet"
    assert shown_store("/var/lib/jet/registry.sqlite") == "/var/lib/jet/registry.sqlite"
