"""Smoke test of ``tools/bench``: a ``--quick`` run writes every section, with numbers.

Speed is never asserted here: whether a goal is met depends on the machine
and on what else runs on it (docs/performance.md).  The test checks that
every figure was measured (a number above zero), has its baseline and
ratio, and that its pass/fail agrees with its goal.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "tools" / "bench"
SECTIONS = ["inproc_hop", "mqtt_hop", "json_hop", "load", "memory", "hub", "levels", "groups",
            "devices"]
HUB_SCRIPT = REPO / "tools" / "bench_hub.py"


def _mosquitto_installed() -> bool:
    return bool(shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists())


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not _mosquitto_installed():
        pytest.skip("mosquitto is not installed (tools/setup-tests)")
    pytest.importorskip("psutil", reason="tools/bench reads RSS and CPU time with psutil")
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    # Node-RED is an optional peer: pointed nowhere, the run must say it skipped it.
    env = dict(os.environ, NODE_RED=str(out.parent / "no-node-red"))
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False, env=env,
    )
    assert proc.returncode == 0, f"tools/bench:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "goals met" in proc.stdout  # the readable table was printed
    assert "Node-RED skipped: Node-RED is not installed" in proc.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def test_machine_and_timestamp(result: dict[str, Any]) -> None:
    assert result["quick"] is True
    machine = result["machine"]
    assert machine["cpu_count"] >= 1
    assert machine["python"].startswith("3.")
    assert machine["platform"]
    stamp = datetime.datetime.fromisoformat(result["timestamp"])
    assert stamp.tzinfo is not None
    assert _positive(result["duration_s"])


@pytest.mark.parametrize("name", SECTIONS)
def test_section_has_figures_baselines_and_ratios(result: dict[str, Any], name: str) -> None:
    section = result[name]
    if name == "hub" and not HUB_SCRIPT.exists():
        assert "skipped" in section
        return
    assert "error" not in section, section.get("error")
    assert section["raw"], "raw numbers are kept"
    assert section["figures"]
    for figure in section["figures"]:
        where = f"{name}: {figure['name']}"
        assert _positive(figure["value"]), where
        assert figure["unit"], where
        assert _positive(figure["baseline"]), where
        assert figure["baseline_name"], where
        assert _positive(figure["ratio"]), where
        assert math.isclose(
            figure["ratio"], figure["value"] / figure["baseline"], rel_tol=0.05, abs_tol=1e-3
        ), where
        assert "goal" in figure and "pass" in figure, where


def _judge(goal: dict[str, Any], value: float, ratio: float) -> bool:
    measured = value if goal["on"] == "value" else ratio
    verdict: bool = {
        ">=": measured >= goal["threshold"],
        "<=": measured <= goal["threshold"],
        "<": measured < goal["threshold"],
        ">": measured > goal["threshold"],
    }[goal["op"]]
    return verdict


def test_pass_fail_follows_each_goal(result: dict[str, Any]) -> None:
    judged = 0
    for name in SECTIONS:
        for figure in result[name].get("figures", []):
            goal = figure["goal"]
            if goal is None:
                assert figure["pass"] is None
                continue
            assert isinstance(figure["pass"], bool)
            # value and ratio are rounded in the JSON: compare away from the edge only
            measured = figure["value"] if goal["on"] == "value" else figure["ratio"]
            if not math.isclose(measured, goal["threshold"], rel_tol=0.01):
                assert figure["pass"] == _judge(goal, figure["value"], figure["ratio"])
            judged += 1
    listed = [g for g in result["goals"] if g["pass"] is not None]
    assert judged == len(listed) >= 4  # hop rate, MQTT throughput + latency, memory


def test_hop_compares_jet_with_its_peers_in_one_run(result: dict[str, Any]) -> None:
    hop = result["mqtt_hop"]
    assert "npm install" in hop["raw"]["nodered_skipped"]
    for system in ("relay", "jet", "floor"):
        for qos in (0, 1):
            row = hop["summary"][f"{system}/q{qos}"]
            assert row["rounds"] == 2
            assert _positive(row["windowed_msg_per_s"]) and _positive(row["p99_ms"])
            assert row["burst_all_delivered"], f"{system} QoS {qos} lost part of a burst"
    assert "JET pack, one forwarding gadget" in hop["peer_table"]
    assert "Node-RED (mqtt in" not in hop["peer_table"]
