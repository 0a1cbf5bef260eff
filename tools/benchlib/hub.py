"""Figure 5: the hub driver, by running tools/bench_hub.py (written for the hub) as is.

Its JSON goes under ``raw`` unchanged.  The hub's baseline is the radio:
the packets per second the dongle's 57,600 baud serial line can carry at
all, computed by bench_hub from a typical line.  Its goal (from the issue):
under 5% of one core at that full rate.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import REPO, TOOLS, BenchError, figure, goal, subprocess_env

SCRIPT = TOOLS / "bench_hub.py"


def available() -> bool:
    return SCRIPT.exists()


def run(quick: bool) -> dict[str, Any]:
    packets, seconds = (2000, 3.0) if quick else (20000, 10.0)
    with tempfile.TemporaryDirectory(prefix="jet-bench-hub-") as tmp:
        out = Path(tmp) / "hub.json"
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--out", str(out),
             "--packets", str(packets), "--seconds", str(seconds)],
            capture_output=True, text=True, env=subprocess_env(), cwd=REPO,
            timeout=120 + 2 * seconds, check=False,
        )
        # bench_hub exits 1 when a goal is missed; that is a result, not a failure.
        if not out.exists():
            raise BenchError(
                f"bench_hub.py exited {proc.returncode}: {proc.stderr.strip()[-500:]}"
            )
        raw: dict[str, Any] = json.loads(out.read_text())
    throughput, full = raw["throughput"], raw["full_rate"]
    radio = raw["radio"]["max_packets_per_s"]
    limit = full["cpu_limit_percent"]
    return {
        "description": "tools/bench_hub.py: RF12 lines on a pty -> hub driver -> MQTT",
        "figures": [
            figure(
                "hub throughput",
                throughput["packets_per_s"], "packets/s",
                baseline=radio, baseline_name="57,600 baud serial line, typical packet",
                digits=1,
            ),
            figure(
                "hub CPU at full radio rate",
                full["cpu_percent_one_core"], "% of a core",
                baseline=limit, baseline_name=f"the issue's limit, {limit:g}% of one core",
                target=goal(f"< {limit:g}% of one core at full radio rate", "<", limit),
                digits=2,
            ),
        ],
        "raw": raw,
        "exit_code": proc.returncode,
    }
