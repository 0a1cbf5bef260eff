"""The web container and its page, on a real mosquitto, a real pack and headless Chromium.

Browser tests skip when /usr/bin/chromium is absent; the protocol and
robustness tests need no browser.  Every wait is on an event or a selector
with a timeout; a failing browser test leaves a screenshot in its tmp dir.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cli_helpers import REPO, read_until
from conftest import free_port
from helpers import Collector, link, run
from web_helpers import browser_page, loaded_app, now, require_chromium
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from jet.containers.pack import Pack
from jet.definition.files import load_app
from jet.definition.model import circuit_to_msgpack
from jet.loader import Loader
from jet.transport import broker, codec
from jet.transport.client import CommandFailed, Session
from jet.web import serving
from jet.web.cli import add_web_parser
from jet.web.jsonvalue import dumps, to_json
from jet.web.pages import Page

APP = """
app: plant
circuits:
  control:
    container: pack
    gadgets:
      history: {type: jet.lib.TimeSeries, params: {window: 3600}}
      echo:    {type: jet.lib.Scale, params: {factor: 1}}
      double:  {type: jet.lib.Scale, params: {factor: 2}}
      plus:    {type: jet.lib.Offset, params: {offset: 1}}
    wires:
      - double.out -> plus.in
  panel:
    container: web
    gadgets:
      chart:    {type: web.Chart, params: {label: "water"}}
      gauge:    {type: web.Gauge, params: {min: 0, max: 100}}
      label:    {type: web.Label}
      setpoint: {type: web.Slider, params: {min: 30, max: 80}}
      heat:     {type: web.Switch}
      reset:    {type: web.Button, params: {label: "Reset"}}
wires:
  - control.history.out -> panel.chart.in
  - control.plus.out -> panel.gauge.in
  - control.plus.out -> panel.label.in
  - panel.setpoint.value -> control.echo.in
"""

HISTORY = "pack/control/history/0"


async def publish(url: str, topic: str, values: list[Any]) -> None:
    async with link(url, "webtest-pub") as pub:
        for value in values:
            pub.publish_nowait(topic, codec.encode(value), qos=1)
        await pub.flush()


# -- panels: web circuits in the browser ------------------------------------------------------


def test_chart_gets_points_and_slider_reaches_the_pack(mosquitto: Any, tmp_path: Path) -> None:
    require_chromium()

    async def scenario() -> None:
        async with (
            loaded_app(mosquitto.url, tmp_path, APP) as stack,
            link(mosquitto.url, "webtest-watch") as watcher,
            browser_page(tmp_path, "panel") as page,
        ):
            seen = await Collector(watcher).watch("web/panel/#")
            await seen.watch("pack/control/echo/0")
            await page.goto(stack.page_url)
            chart = page.locator('[data-gadget="panel.chart"] [data-points]')
            await chart.wait_for()
            t = now()
            await publish(mosquitto.url, HISTORY, [[t - 4 + i, 50 + i % 3] for i in range(5)])
            await page.wait_for_selector('[data-gadget="panel.chart"] [data-points="5"]')
            line = await page.get_attribute('[data-gadget="panel.chart"] polyline', "points")
            assert line is not None and len(line.split()) == 5

            await page.fill('[data-gadget="panel.setpoint"] input[type=range]', "70")
            await seen.wait_for(lambda c: 70 in c.values("web/panel/setpoint/0"))
            await seen.wait_for(lambda c: 70 in c.values("pack/control/echo/0"))
            await page.click('[data-gadget="panel.heat"] input')
            await page.click('[data-gadget="panel.reset"] button')
            await seen.wait_for(lambda c: c.values("web/panel/heat/0") == [True])
            await seen.wait_for(lambda c: c.values("web/panel/reset/0") == [True])

            # values wired from the pack reach the gauge and the label
            await stack.session.request(
                "pack/control/conf", {"cmd": "inject", "input": "double.in", "value": 21}
            )
            await page.wait_for_selector('[data-gadget="panel.gauge"] svg[data-value="43"]')
            label = page.locator('[data-gadget="panel.label"] output')
            await label.filter(has_text="43").wait_for()
            await page.screenshot(path=str(tmp_path / "panel.png"), full_page=True)

            # a page opened later shows the same chart and slider
            browser = page.context.browser
            assert browser is not None
            late = await browser.new_page()
            await late.goto(stack.page_url)
            await late.wait_for_selector('[data-gadget="panel.chart"] [data-points="5"]')
            slider = late.locator('[data-gadget="panel.setpoint"] input[type=range]')
            assert await slider.input_value() == "70"
            await late.close()

            # a reload redraws the panel on open pages and keeps what it showed
            panel = load_app(tmp_path / "app.yaml").circuit("panel")
            assert panel is not None
            definition = circuit_to_msgpack(panel)
            definition["gadgets"].append({"name": "extra", "type": "web.Label"})
            exports = {"setpoint.value": ["control.echo.in"]}
            await stack.session.request(
                "web/panel/conf", {"cmd": "reload", "definition": definition, "exports": exports}
            )
            await page.wait_for_selector('[data-gadget="panel.extra"]')
            await page.wait_for_selector('[data-gadget="panel.chart"] [data-points="5"]')
        print(f"panel screenshot: {tmp_path / 'panel.png'}")

    run(scenario(), timeout=30)


# -- operator view ------------------------------------------------------------------------------


HEATER = """
app: heater
circuits:
  control:
    container: pack
    gadgets:
      thermostat: {type: jet.lib.Thermostat, params: {setpoint: 55.0, hysteresis: 2.0}}
  panel:
    container: web
    gadgets:
      setpoint: {type: web.Slider, params: {min: 30, max: 80, value: 55}}
wires:
  - panel.setpoint.value -> control.thermostat.setpoint
"""


def test_heater_slider_starts_at_the_thermostat_setpoint() -> None:
    app = load_app(REPO / "circuits" / "heater.yaml")
    panel, control = app.circuit("panel"), app.circuit("control")
    assert panel is not None and control is not None
    slider, thermostat = panel.gadget("setpoint"), control.gadget("thermostat")
    assert slider is not None and thermostat is not None
    assert slider.params["value"] == thermostat.params["setpoint"]


def test_slider_shows_the_value_in_force_also_after_restarts(
    mosquitto: Any, tmp_path: Path
) -> None:
    """First its `value`; once moved, its retained output, which a restarted
    web container shows and a restarted thermostat gets."""
    require_chromium()
    path = tmp_path / "app.yaml"
    path.write_text(HEATER)
    app = load_app(path)
    panel = app.circuit("panel")
    assert panel is not None
    slider_css = '[data-gadget="panel.setpoint"] input[type=range]'
    shown_css = '[data-gadget="panel.setpoint"] output'

    async def scenario() -> None:
        async with (
            Pack(broker.parse(mosquitto.url), "default", stats_interval=0.5),
            Session(broker.parse(mosquitto.url), name="webtest") as session,
            link(mosquitto.url, "webtest-watch") as watcher,
            browser_page(tmp_path, "heater") as page,
        ):
            seen = await Collector(watcher).watch("web/panel/setpoint/0")
            await seen.watch("pack/control/thermostat/0")
            loader = Loader(session)
            async with serving(mosquitto.url, connect_timeout=5.0) as url:
                await loader.load(app)
                await page.goto(url)
                slider = page.locator(slider_css)
                await slider.wait_for()
                assert await slider.input_value() == "55"  # not min (30)
                assert await page.locator(shown_css).text_content() == "55"
                await page.fill(slider_css, "62")
                await seen.wait_for(lambda c: 62 in c.values("web/panel/setpoint/0"))

            # a restarted web container, loading the panel again, shows 62
            async with serving(mosquitto.url, connect_timeout=5.0) as url:
                load = {
                    "cmd": "load",
                    "definition": circuit_to_msgpack(panel),
                    "exports": {"setpoint.value": ["control.thermostat.setpoint"]},
                }
                await session.request("jet/web/web/conf", load)
                await page.goto(url)
                await page.locator(shown_css).filter(has_text="62").wait_for()
                assert await page.locator(slider_css).input_value() == "62"

                # a thermostat loaded again gets 62 as its setpoint: 58 is cold
                await loader.unload_id("control")
                await loader.reload(app)
                await session.request(
                    "pack/control/conf", {"cmd": "inject", "input": "thermostat.temp", "value": 58}
                )
                await seen.wait_for(lambda c: c.values("pack/control/thermostat/0") == [True])

    run(scenario())


def test_operator_view_shows_live_status_graph_and_rates(mosquitto: Any, tmp_path: Path) -> None:
    require_chromium()

    async def scenario() -> None:
        async with (
            loaded_app(mosquitto.url, tmp_path, APP) as stack,
            browser_page(tmp_path, "operator") as page,
        ):
            await page.goto(stack.page_url + "#operator")
            for circuit in ("pack/control", "web/panel"):
                await page.wait_for_selector(
                    f'#circuits tr[data-circuit="{circuit}"] td[data-state="online"]'
                )
            for container in ("jet/pack/default", "jet/web/web"):
                await page.wait_for_selector(
                    f'#containers tr[data-container="{container}"] td[data-state="online"]'
                )
            await page.wait_for_selector('#graph g.circuit[data-circuit="pack/control"]')
            # (a straight wire has an empty bounding box: "attached", not "visible")
            for wire in (
                f'external[data-topic="{HISTORY}"]',
                'internal[data-topic="pack/control/double/0"]',
            ):
                await page.wait_for_selector(f"#graph path.wire.{wire}", state="attached")

            # live message rate on a wire while values flow on it
            async def feed() -> None:
                async with link(mosquitto.url, "webtest-feed") as pub:
                    while True:
                        pub.publish_nowait(HISTORY, codec.encode([now(), 1.0]), qos=0)
                        await asyncio.sleep(0.02)

            feeder = asyncio.create_task(feed())
            try:
                await page.wait_for_function(
                    """topic => {
                        const label = document.querySelector(`text.rate[data-topic="${topic}"]`);
                        return label && parseFloat(label.textContent) >= 5;
                    }""",
                    arg=HISTORY,
                )
            finally:
                feeder.cancel()
            await page.screenshot(path=str(tmp_path / "operator.png"), full_page=True)

            # a container going away is seen at once (its status goes offline)
            async with Pack(broker.parse(mosquitto.url), "spare"):
                await page.wait_for_selector(
                    '#containers tr[data-container="jet/pack/spare"] td[data-state="online"]'
                )
            await page.wait_for_selector(
                '#containers tr[data-container="jet/pack/spare"] td[data-state="offline"]'
            )
            # an unloaded circuit leaves the view
            await stack.loader.unload_id("control")
            await page.wait_for_selector(
                '#circuits tr[data-circuit="pack/control"]', state="detached"
            )
            await page.wait_for_selector(
                '#graph g.circuit[data-circuit="pack/control"]', state="detached"
            )
        print(f"operator screenshot: {tmp_path / 'operator.png'}")

    run(scenario(), timeout=30)


def test_tap_panel_shows_values_and_inject_reaches_the_pack(mosquitto: Any, tmp_path: Path) -> None:
    require_chromium()

    async def scenario() -> None:
        async with (
            loaded_app(mosquitto.url, tmp_path, APP) as stack,
            link(mosquitto.url, "webtest-watch") as watcher,
            browser_page(tmp_path, "tap") as page,
        ):
            plus = await Collector(watcher).watch("pack/control/plus/0")
            await page.goto(stack.page_url + "#operator")
            await page.wait_for_selector('#circuits tr[data-circuit="pack/control"]')

            # double.out feeds plus.in inside the circuit: published only while tapped
            await page.fill("#tap-target", "control.double.out")
            await page.click("#tap-start")
            tap = page.locator('[data-tap="control.double.out"]')
            await tap.locator("code", has_text="pack/control/double/0").wait_for()
            # the tap lease is in the pack circuit's status
            status = await stack.session.request("pack/control/conf", {"cmd": "status"})
            assert "double.out" in status["taps"]

            await page.fill("#inject-target", "control.double.in")
            await page.fill("#inject-value", "21")
            await page.click("#inject-send")
            await page.locator(
                "#inject-result", has_text="injected 21 into control.double.in"
            ).wait_for()
            await tap.locator(".tap-values .value").get_by_text("42", exact=True).wait_for()
            await plus.wait_for(lambda c: 43 in c.values())

            # tapping by clicking an output in the graph; a topic filter works too
            await page.click('#graph circle[data-port="control.history.out"]')
            await page.wait_for_selector('[data-tap="control.history.out"]')
            await page.fill("#tap-target", "web/panel/#")
            await page.click("#tap-start")
            await page.locator('[data-tap="web/panel/#"] code', has_text="web/panel/#").wait_for()
            await page.click("#tab-panels")
            await page.fill('[data-gadget="panel.setpoint"] input[type=range]', "55")
            await page.click("#tab-operator")
            # (the filter also catches web/panel/status, whose text may hold "55" too)
            setpoint = page.locator('[data-tap="web/panel/#"] li', has_text="web/panel/setpoint/0")
            await setpoint.locator(".value").get_by_text("55", exact=True).wait_for()

            # errors are shown, not thrown
            await page.fill("#inject-target", "control.nothing.in")
            await page.click("#inject-send")
            await page.locator("#inject-result.error", has_text="no gadget 'nothing'").wait_for()
            await page.fill("#tap-target", "nope.x.out")
            await page.click("#tap-start")
            await page.locator("#tap-result.error", has_text="no circuit 'nope'").wait_for()
            await page.screenshot(path=str(tmp_path / "tap.png"), full_page=True)

            await tap.locator("button.close").click()
            await tap.wait_for(state="detached")
        print(f"tap screenshot: {tmp_path / 'tap.png'}")

    run(scenario(), timeout=30)


# -- the page server's protocol and its robustness -------------------------------------------


async def reply_to(ws: ClientConnection, frame: str | bytes) -> dict[str, Any]:
    """Send one frame and return the server's reply to it (other frames are skipped)."""
    await ws.send(frame)
    while True:
        answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if answer["op"] == "reply":
            return dict(answer)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_bad_frames_get_error_replies_and_the_server_keeps_serving(mosquitto: Any) -> None:
    async def scenario() -> None:
        async with serving(mosquitto.url, connect_timeout=5.0, operator_view=True) as page_url:
            ws_url = page_url.replace("http://", "ws://") + "ws"
            async with connect(ws_url, max_size=None) as ws:
                hello = json.loads(await ws.recv())
                assert hello["op"] == "hello" and hello["max_frame"] == 65536
                bad: list[tuple[str | bytes, str]] = [
                    ("\x00\xff garbage", "not JSON"),
                    ("{not json", "not JSON"),
                    ("[1, 2]", "expected a JSON object"),
                    ('{"op": 5}', "no 'op' string"),
                    ('{"op": "launch", "ref": 1}', "unknown op 'launch'"),
                    ('{"op": "emit", "ref": 2}', "missing field 'circuit'"),
                    ('{"op": "tap", "target": 7}', "field 'target' must be a str"),
                    ('{"op": "ping", "extra": 1}', "unknown field 'extra'"),
                    (
                        '{"op": "emit", "circuit": "x", "gadget": "g", "port": "p", "value": 1}',
                        "no web circuit 'x'",
                    ),
                    ('{"op": "inject", "target": "a.b.c", "value": 1}', "no circuit 'a'"),
                    ('{"op": "tap", "target": "justaname"}', "expected circuit.gadget.port"),
                    ('{"op": "untap", "target": "a.b.c"}', "is not tapped"),
                    (b"\x00\x01binary", "binary frames"),
                    ("[" * 20000 + "]" * 20000, "not JSON"),
                    ('{"op": "ping", "pad": "' + "x" * 100_000 + '"}', "exceeds 65536"),
                ]
                for frame, expected in bad:
                    answer = await reply_to(ws, frame)
                    assert answer["ok"] is False, answer
                    assert expected in answer["error"], (expected, answer["error"])
                answer = await reply_to(ws, '{"op": "emit", "ref": 2}')
                assert answer["ref"] == 2
                assert (await reply_to(ws, '{"op": "ping", "ref": "p"}'))["result"] == "pong"

            # past the WebSocket limit the connection is closed (1009), not the server
            async with connect(ws_url, max_size=None) as ws:
                await ws.send("x" * (2 << 20))
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            async with connect(ws_url) as ws:
                assert (await reply_to(ws, '{"op": "ping", "ref": 1}'))["ok"] is True
            status, _, body = await asyncio.to_thread(http_get, page_url)
            assert status == 200 and "app.js" in body

    run(scenario(), timeout=30)


def test_server_refuses_other_origins_and_hosts_and_keeps_secrets(mosquitto: Any) -> None:
    secret = "s3cret-pw"
    url = f"mqtt://operator:{secret}@127.0.0.1:{mosquitto.port}"

    async def scenario() -> None:
        async with serving(url, connect_timeout=5.0) as page_url:
            assert page_url.startswith("http://127.0.0.1:")
            port = int(page_url.rstrip("/").rsplit(":", 1)[1])
            ws_url = page_url.replace("http://", "ws://") + "ws"
            with pytest.raises(InvalidStatus) as refused:
                await connect(ws_url, origin="http://evil.example")  # type: ignore[arg-type]
            assert refused.value.response.status_code == 403
            status, _, _ = await asyncio.to_thread(
                http_get, page_url, {"Host": f"evil.example:{port}"}
            )
            assert status == 403  # DNS rebinding: a foreign Host is refused
            status, headers, body = await asyncio.to_thread(http_get, page_url)
            assert status == 200
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff"
            for path in ("app.js", "style.css"):
                status, _, text = await asyncio.to_thread(http_get, page_url + path)
                assert status == 200 and secret not in text
                body += text
            assert (await asyncio.to_thread(http_get, page_url + "../etc/passwd"))[0] == 404
            assert secret not in body and "mqtt://" not in body
            # what a page receives: hello, board (statuses of every container)
            async with connect(ws_url, origin=f"http://127.0.0.1:{port}") as ws:  # type: ignore[arg-type]
                frames = [await asyncio.wait_for(ws.recv(), 5) for _ in range(2)]
                frames.append(json.dumps(await reply_to(ws, '{"op": "ping"}')))
            text = "".join(str(f) for f in frames)
            assert secret not in text and "operator@" not in text and "mqtt://" not in text

    run(scenario(), timeout=30)


# -- the web container's MQTT side --------------------------------------------------------------


def test_web_container_answers_conf_commands(mosquitto: Any, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            loaded_app(mosquitto.url, tmp_path, APP) as stack,
            link(mosquitto.url, "webtest-watch") as watcher,
        ):
            session = stack.session
            container = await session.retained("jet/web/web/status")
            assert container["jet/web/web/status"]["state"] == "online"
            assert container["jet/web/web/status"]["circuits"] == ["panel"]
            status = await session.request("web/panel/conf", {"cmd": "status"})
            assert status["type"] == "web" and status["container"] == "jet/web/web"
            assert status["inputs"]["chart.in"] == [{"topic": HISTORY, "qos": 1}]
            assert status["exports"] == {"setpoint.value": ["control.echo.in"]}
            assert await session.request("jet/web/web/conf", {"cmd": "status"})

            with pytest.raises(CommandFailed, match=r"unknown web gadget type 'web\.Nope'"):
                bad = {
                    "name": "bad",
                    "container": "web",
                    "gadgets": [{"name": "x", "type": "web.Nope"}],
                }
                await session.request("jet/web/web/conf", {"cmd": "load", "definition": bad})
            with pytest.raises(CommandFailed, match=r"has no input 'chart\.nope'"):
                await session.request(
                    "web/panel/conf", {"cmd": "wire", "input": "chart.nope", "topic": "a/b/c/0"}
                )

            # inject, tap and drain as for any circuit
            await session.request(
                "web/panel/conf", {"cmd": "inject", "input": "label.in", "value": "hi"}
            )
            await session.request("web/panel/conf", {"cmd": "tap", "output": "heat.value"})
            await session.request("web/panel/conf", {"cmd": "drain"})

            # a page can set only values its gadgets could produce
            async with connect(stack.page_url.replace("http://", "ws://") + "ws") as ws:
                for value, expected in (("hot", "must be a number"), (500, "outside 30..80")):
                    frame: dict[str, Any] = {"op": "emit", "circuit": "panel", "value": value}
                    frame.update(gadget="setpoint", port="value")
                    answer = await reply_to(ws, json.dumps(frame))
                    assert not answer["ok"] and expected in answer["error"], answer
                frame = {"op": "emit", "circuit": "panel", "gadget": "heat", "port": "value"}
                answer = await reply_to(ws, json.dumps({**frame, "value": 1}))
                assert "true or false" in answer["error"]
                answer = await reply_to(ws, json.dumps({**frame, "value": True}))
                assert answer["result"] == {"topic": "web/panel/heat/0"}

            # reload: a new gadget, the kept wire keeps its subscription
            app = load_app(tmp_path / "app.yaml")
            panel = app.circuit("panel")
            assert panel is not None
            definition = circuit_to_msgpack(panel)
            definition["gadgets"].append({"name": "extra", "type": "web.Label"})
            await session.request(
                "web/panel/conf", {"cmd": "reload", "definition": definition, "exports": {}}
            )
            status = await session.request("web/panel/conf", {"cmd": "status"})
            assert [g["name"] for g in status["definition"]["gadgets"]][-1] == "extra"
            assert status["inputs"]["chart.in"] == [{"topic": HISTORY, "qos": 1}]

            # unload clears the retained status
            gone = await Collector(watcher).watch("web/panel/status")
            await stack.loader.unload_id("panel")
            await gone.wait_for(lambda c: c.messages and c.messages[-1][1] is None)
            container = await session.retained("jet/web/web/status")
            assert container["jet/web/web/status"]["circuits"] == []

    run(scenario(), timeout=30)


BAD_COMMANDS: list[tuple[str, dict[str, Any], str]] = [
    ("jet/web/web/conf", {"cmd": "nope"}, "unknown command 'nope'"),
    ("jet/web/web/conf", {"cmd": "load", "definition": {"x": 1}}, "bad definition"),
    ("jet/web/web/conf", {"cmd": "load", "definition": {"name": "p"}}, "is for a pack"),
    (
        "jet/web/web/conf",
        {"cmd": "load", "definition": {"name": "Bad Name", "container": "web"}},
        "must match",
    ),
    (
        "jet/web/web/conf",
        {"cmd": "load", "definition": {"name": "w", "container": "web", "gadgets": [5]}},
        "bad definition",
    ),
    (
        "jet/web/web/conf",
        {"cmd": "load", "definition": {"name": "w", "container": "web", "wires": [{"from": 5}]}},
        "bad definition",
    ),
    (
        "jet/web/web/conf",
        {
            "cmd": "load",
            "definition": {
                "name": "w",
                "container": "web",
                "gadgets": [{"name": "a", "type": "web.Slider", "params": {"min": "low"}}],
            },
        },
        "must be a number",
    ),
    (
        "jet/web/web/conf",
        {
            "cmd": "load",
            "definition": {
                "name": "w",
                "container": "web",
                "gadgets": [{"name": "a", "type": "web.Label"}],
                "wires": [{"from": "a.x\nevil", "to": "a.in"}],
            },
        },
        "no output",
    ),
    ("jet/web/web/conf", {"cmd": "load", "definition": {"name": "panel", "container": "web"}}, ""),
    ("web/panel/conf", {"cmd": "wire", "input": "chart.in"}, "missing field 'topic'"),
    ("web/panel/conf", {"cmd": "wire", "input": "chart.in", "topic": "a/b", "qos": 7}, "qos"),
    ("web/panel/conf", {"cmd": "tap", "output": "chart.in"}, "no output 'chart.in'"),
    ("web/panel/conf", {"cmd": "inject", "input": "setpoint.value", "value": 1}, "no input"),
    ("web/panel/conf", {"cmd": "export", "output": "nope", "by": "x"}, "bad port 'nope'"),
    (
        "web/panel/conf",
        {"cmd": "reload", "definition": {"name": "other", "container": "web"}},
        "named 'other'",
    ),
]


def test_bad_conf_commands_get_one_line_errors(mosquitto: Any, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with loaded_app(mosquitto.url, tmp_path, APP) as stack:
            for topic, command, expected in BAD_COMMANDS:
                with pytest.raises(CommandFailed) as failed:
                    await stack.session.request(topic, command)
                message = str(failed.value)
                assert message.startswith(f"{topic}: ") and expected in message, message
                assert "\n" not in message, message
            status = await stack.session.request("web/panel/conf", {"cmd": "status"})
            assert status["state"] == "online" and len(status["definition"]["gadgets"]) == 6

    run(scenario(), timeout=30)


def test_jet_web_command_serves_and_its_will_says_offline(mosquitto: Any) -> None:
    parser = __import__("argparse").ArgumentParser()
    args = add_web_parser(parser.add_subparsers()).parse_args(["--port", "1"])
    assert (args.host, args.id, args.port) == ("127.0.0.1", "web", 1)

    port = free_port()
    argv = [sys.executable, "-m", "jet.web", "--broker", mosquitto.url, "--port", str(port)]
    argv += ["--id", "w2"]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = read_until(proc, "web w2 on")
        assert f"http://127.0.0.1:{port}/" in lines[-1] and mosquitto.url in lines[-1]
        status, _, body = http_get(f"http://127.0.0.1:{port}/")
        assert status == 200 and "<title>JET</title>" in body

        async def will() -> None:
            async with Session(broker.parse(mosquitto.url), name="webtest") as session:
                found = await session.retained("jet/web/w2/status")
                assert found["jet/web/w2/status"]["state"] == "online"
                watch = await Collector(session.link).watch("jet/web/w2/status")
                os.kill(proc.pid, signal.SIGKILL)  # a crash: no clean goodbye
                await watch.wait_for(
                    lambda c: c.messages and c.messages[-1][1]["state"] == "offline", timeout=10
                )

        run(will(), timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


# -- small parts ----------------------------------------------------------------------------------


def test_msgpack_values_become_json_a_page_can_parse() -> None:
    nested: Any = 1
    for _ in range(100):
        nested = [nested]
    value = {1: b"\x00\xff", "x": [math.nan, math.inf, 1.5], "e": msgpack.ExtType(5, b"\x01")}
    text = dumps({"v": to_json(value), "deep": to_json(nested)})
    back = json.loads(text)
    assert back["v"] == {
        "1": {"$bytes": "00ff"},
        "x": [None, None, 1.5],
        "e": {"$ext": 5, "data": "01"},
    }
    assert "nested too deep" in text


def test_a_slow_page_loses_frames_and_is_told() -> None:
    async def scenario() -> None:
        written: list[dict[str, Any]] = []
        go, told = asyncio.Event(), asyncio.Event()

        async def slow_send(text: str) -> None:
            await go.wait()
            written.append(json.loads(text))
            if written[-1]["op"] == "dropped":
                told.set()

        page = Page(slow_send, limit=10)
        for i in range(25):  # no await in between: the writer has not taken any yet
            page.send({"op": "value", "i": i})
        go.set()
        await asyncio.wait_for(told.wait(), 5)
        await page.close()
        assert page.dropped == 15
        assert [f["i"] for f in written[:-1]] == list(range(10))
        assert written[-1]["count"] == 15

    run(scenario(), timeout=10)
