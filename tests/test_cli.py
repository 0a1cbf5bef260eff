"""The `jet` command as a user types it, against a real mosquitto and real processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_helpers import REPO, jet, jet_background, read_until, stop
from helpers import Collector, link, run

from jet.transport import codec

APP = """
app: pair
circuits:
  src:
    gadgets:
      s: {type: jet.lib.Scale, params: {factor: 2}}
  dst:
    gadgets:
      d: {type: jet.lib.Offset, params: {offset: 10}}
      c: {type: jet.lib.Counter}
    wires:
      - d.out -> c.in
wires:
  - src.s.out -> dst.d.in
"""

APP_V2 = APP.replace("offset: 10", "offset: 100")


@pytest.fixture
def pack(mosquitto: Any) -> Any:
    proc = jet_background("pack", "--broker", mosquitto.url, "--id", "default")
    read_until(proc, "pack default on")
    yield proc
    stop(proc)


def test_check_accepts_the_heater_example() -> None:
    result = jet("check", "circuits/heater.yaml")
    assert result.returncode == 0, result.stderr
    assert "circuits/heater.yaml: ok" in result.stdout


def test_check_reports_broken_yaml_as_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("app: x\ncircuits:\n  a:\n    gadgets: {g: {type: jet.lib.Scale}\n")
    result = jet("check", str(bad))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"jet check: error: {bad}:")


def test_check_names_unknown_gadget_with_line(tmp_path: Path) -> None:
    bad = tmp_path / "unknown.yaml"
    bad.write_text(APP.replace("jet.lib.Counter", "jet.lib.Nope"))
    result = jet("check", str(bad))
    assert result.returncode == 1
    assert f"{bad}:10:" in result.stderr and "jet.lib.Nope" in result.stderr


def test_load_inject_tap_ls_reload_unload(mosquitto: Any, pack: Any, tmp_path: Path) -> None:
    app = tmp_path / "pair.yaml"
    app.write_text(APP)
    loaded = jet("load", str(app), "--broker", mosquitto.url)
    assert loaded.returncode == 0, loaded.stderr
    assert "wired src.s.out -> dst.d.in" in loaded.stdout

    # d.out feeds c inside dst, so it is published only while tapped.
    tap = jet_background("tap", "dst.d.out", "-n", "1", "--for", "15", "--broker", mosquitto.url)

    async def publish_until_tapped() -> None:
        async with link(mosquitto.url, "observer") as observer:
            seen = await Collector(observer).watch("pack/dst/d/0")
            for _ in range(50):  # bounded: the tap takes a moment to start
                await observer.publish("pack/src/s/0", codec.encode(5), qos=1)
                try:
                    await seen.wait_for(lambda c: bool(c.values()), timeout=0.3)
                    return
                except AssertionError:
                    continue
            raise AssertionError("tapped output never published")

    run(publish_until_tapped())
    tap.wait(15)  # -n 1: it exits by itself after the first message
    out = stop(tap)
    assert "pack/dst/d/0 15" in out

    injected = jet("inject", "src.s.in", "21", "--broker", mosquitto.url)
    assert injected.returncode == 0, injected.stderr

    listing = jet("ls", "--broker", mosquitto.url)
    assert listing.returncode == 0, listing.stderr
    assert "jet/pack/default" in listing.stdout and "online" in listing.stdout
    assert "pack/src" in listing.stdout and "pack/dst" in listing.stdout

    app.write_text(APP_V2)
    reloaded = jet("reload", str(app), "--broker", mosquitto.url)
    assert reloaded.returncode == 0, reloaded.stderr
    assert "reloaded dst" in reloaded.stdout

    async def offset_changed() -> None:
        async with link(mosquitto.url, "observer2") as observer:
            seen = await Collector(observer).watch("pack/dst/d/0")
            tapped = jet_background("tap", "dst.d.out", "--for", "10", "--broker", mosquitto.url)
            try:
                for _ in range(50):
                    await observer.publish("pack/src/s/0", codec.encode(1), qos=1)
                    try:
                        await seen.wait_for(lambda c: 101 in c.values(), timeout=0.3)
                        return
                    except AssertionError:
                        continue
                raise AssertionError(f"new offset not in effect: {seen.values()}")
            finally:
                stop(tapped)

    run(offset_changed())

    unloaded = jet("unload", str(app), "--broker", mosquitto.url)
    assert unloaded.returncode == 0, unloaded.stderr
    listing = jet("ls", "--broker", mosquitto.url)
    assert "pack/src" not in listing.stdout and "pack/dst" not in listing.stdout
    assert pack.poll() is None, "the pack must keep running"


def test_load_without_pack_fails_clearly(mosquitto: Any) -> None:
    result = jet("load", "circuits/demo.yaml", "--broker", mosquitto.url, "--timeout", "1")
    assert result.returncode == 1
    assert "no reply on jet/pack/default/conf" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreachable_broker_is_one_line() -> None:
    result = jet("ls", "--broker", "mqtt://127.0.0.1:9", timeout=30)
    assert result.returncode == 1
    assert "cannot reach MQTT broker mqtt://127.0.0.1:9" in result.stderr


@pytest.mark.parametrize("flavour", ["amqtt", "mosquitto"])
def test_run_demo_on_embedded_broker(flavour: str) -> None:
    result = jet("run", "circuits/demo.yaml", "--for", "4", "--embedded", flavour, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert "app demo running" in out
    averages = [line for line in out.splitlines() if "average:" in line]
    assert len(averages) >= 3, out
    assert any("above 5: True" in line for line in out.splitlines()), out


def test_graph_writes_svg(tmp_path: Path) -> None:
    out = tmp_path / "heater.svg"
    result = jet("graph", str(REPO / "circuits/heater.yaml"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_text().lstrip().startswith(("<?xml", "<svg"))
