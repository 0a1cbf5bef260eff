"""`jet load --watch DIR`: a directory of circuit files kept live, through real processes
(mosquitto, `jet pack`, `jet load --watch`), files written as an editor or git would."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import JetProcess, jet_ok
from conftest import Mosquitto

WAIT = 20.0


def app_text(name: str, factor: float, interval: float = 0.2) -> str:
    return f"""\
app: {name}
circuits:
  {name}-src:
    gadgets:
      tick: {{type: jet.lib.Ticker, params: {{interval: {interval}}}}}
  {name}-scale:
    gadgets:
      x: {{type: jet.lib.Scale, params: {{factor: {factor}}}}}
wires:
  - {name}-src.tick.out -> {name}-scale.x.in
"""


def write(path: Path, text: str) -> None:
    """As editors save: a temporary file renamed over the old one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@pytest.fixture
def pack(mosquitto: Mosquitto) -> Iterator[JetProcess]:
    proc = JetProcess("pack", "--broker", mosquitto.url)
    proc.wait_for_line("pack default on ", WAIT)
    yield proc
    proc.stop()


def circuits_listed(url: str) -> str:
    return asyncio.run(jet_ok("ls", "--broker", url))


def test_a_watched_directory_loads_reloads_refuses_and_unloads(
        mosquitto: Mosquitto, pack: JetProcess, tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    write(apps / "a.yaml", app_text("a", 2))
    (apps / "notes.txt").write_text("not a circuit file: never read")
    watch = JetProcess("load", "--watch", str(apps), "--broker", mosquitto.url)
    try:
        watch.wait_for_line(f"{apps / 'a.yaml'}: app a loaded (2 circuits)", WAIT)
        watch.wait_for_line(f"watching {apps} (1 apps running)", WAIT)

        # A new file is loaded.
        write(apps / "b.yaml", app_text("b", 3))
        watch.wait_for_line(f"{apps / 'b.yaml'}: app b loaded", WAIT)

        # A changed file: only the changed circuit is replaced.
        mark = len(watch.lines)
        write(apps / "a.yaml", app_text("a", 5))
        watch.wait_for_line(f"{apps / 'a.yaml'}: app a reloaded", WAIT)
        after = watch.lines[mark:]
        assert "reloaded a-scale" in after and "reloaded a-src" not in after, after

        # A file `jet check` refuses: its error with file:line, and what runs stays.
        mark = len(watch.lines)
        write(apps / "a.yaml", app_text("a", 5).replace("jet.lib.Scale", "jet.lib.Nope"))
        watch.wait_for_line(f"{apps / 'a.yaml'}: refused; app a runs as it was", WAIT)
        errors = [line for line in watch.lines[mark:] if line.startswith(f"{apps / 'a.yaml'}:")]
        assert any(":8: " in line and "jet.lib.Nope" in line for line in errors), errors
        write(apps / "c.yaml", "app: c\ncircuits:\n  c: {gadgets: {t: {type: jet.lib.Ticker}}\n")
        watch.wait_for_line(f"{apps / 'c.yaml'}: refused; nothing of it runs", WAIT)
        listed = circuits_listed(mosquitto.url)
        assert "a-scale" in listed and "a-src" in listed

        # A burst of saves is read once, as its last version.
        mark = len(watch.lines)
        for factor in range(10, 20):
            write(apps / "b.yaml", app_text("b", factor))
        watch.wait_for_line(f"{apps / 'b.yaml'}: app b reloaded", WAIT)
        # (anything the burst still had to say comes before what follows it)
        (apps / "c.yaml").unlink()
        write(apps / "d.yaml", app_text("d", 1))
        watch.wait_for_line(f"{apps / 'd.yaml'}: app d loaded", WAIT)
        reloads = [line for line in watch.lines[mark:] if "app b reloaded" in line]
        assert len(reloads) == 1, watch.lines[mark:]

        # A renamed file: its app goes on running, untouched.
        mark = len(watch.lines)
        os.replace(apps / "d.yaml", apps / "e.yaml")
        watch.wait_for_line(f"{apps / 'e.yaml'}: app d was {apps / 'd.yaml'}'s", WAIT)
        assert not any("unloaded" in line or "reloaded d-" in line
                       for line in watch.lines[mark:]), watch.lines[mark:]

        # A deleted file: its app is unloaded.
        (apps / "b.yaml").unlink()
        watch.wait_for_line(f"{apps / 'b.yaml'}: deleted: app b unloaded", WAIT)
        listed = circuits_listed(mosquitto.url)
        assert "b-src" not in listed and "b-scale" not in listed and "d-src" in listed
    finally:
        code = watch.signal(signal.SIGINT)
    assert code == 130
    # Stopping the watch leaves the apps running, as after `jet load`.
    assert "a-src" in circuits_listed(mosquitto.url)
