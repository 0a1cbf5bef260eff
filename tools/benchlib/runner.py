"""``tools/bench``: every figure with its baseline, in one run, as JSON and a table."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import devicehop, devices, groups, hop, hub, inproc, levels, loading
from .common import REPO, machine_info, source_info
from .report import table

#: Section names in the JSON, in run order.
SECTIONS = [
    "inproc_hop", "mqtt_hop", "json_hop", "load", "memory", "hub", "levels", "groups",
    "devices",
]
#: --only choices and the sections each one produces.
GROUPS: dict[str, list[str]] = {
    "inproc": ["inproc_hop"],
    "mqtt": ["mqtt_hop"],
    "json": ["json_hop"],
    "load": ["load", "memory"],
    "hub": ["hub"],
    "levels": ["levels"],
    "groups": ["groups"],
    "devices": ["devices"],
}


def _runners(quick: bool) -> dict[str, Callable[[], dict[str, dict[str, Any]]]]:
    def one(name: str, func: Callable[[bool], dict[str, Any]]) -> Callable[[], Any]:
        return lambda: {name: func(quick)}

    def hub_or_skip() -> dict[str, dict[str, Any]]:
        if not hub.available():
            return {"hub": {"skipped": f"{hub.SCRIPT} is not there"}}
        return {"hub": hub.run(quick)}

    return {
        "inproc": one("inproc_hop", inproc.run),
        "mqtt": one("mqtt_hop", hop.run),
        "json": one("json_hop", devicehop.run),
        "load": lambda: loading.run(quick),
        "hub": hub_or_skip,
        "levels": one("levels", levels.run),
        "groups": one("groups", groups.run),
        "devices": one("devices", devices.run),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tools/bench",
        description="Measure JET's performance figures, each against a baseline measured"
        " in the same run (docs/performance.md).",
    )
    parser.add_argument(
        "--out", default=str(REPO / "bench-results" / "bench.json"), help="JSON result file"
    )
    parser.add_argument("--quick", action="store_true", help="reduced run (under a minute)")
    parser.add_argument(
        "--only",
        help=f"comma-separated subset of {','.join(GROUPS)} (default: all)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="only the MQTT hop beside its peers (paho relay, Node-RED when installed)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a goal is missed, not only on errors"
    )
    args = parser.parse_args(argv)
    if args.peers and args.only:
        parser.error("--peers is --only mqtt: give one of them")
    chosen = ["mqtt"] if args.peers else args.only.split(",") if args.only else list(GROUPS)
    unknown = [c for c in chosen if c not in GROUPS]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)} (choose from {', '.join(GROUPS)})")
    args.groups = chosen
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The bench's own sessions log a lost broker when their section's mosquitto
    # stops; only errors are worth showing between the results.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    started = time.perf_counter()
    result: dict[str, Any] = {
        "tool": "tools/bench",
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": machine_info(),
        "source": source_info(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    runners = _runners(args.quick)
    errors = 0
    for group in args.groups:
        print(f"bench: {group} ...", file=sys.stderr, flush=True)
        begin = time.perf_counter()
        try:
            sections = runners[group]()
        except Exception as exc:  # one broken section must not lose the others
            errors += 1
            traceback.print_exc()
            sections = {name: {"error": f"{type(exc).__name__}: {exc}"} for name in GROUPS[group]}
        took = round(time.perf_counter() - begin, 1)
        for name, section in sections.items():
            section["seconds"] = took
            result[name] = section
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["duration_s"] = round(time.perf_counter() - started, 1)
    goals = [
        {"section": name, "figure": fig["name"], "goal": fig["goal"]["text"], "pass": fig["pass"]}
        for name in SECTIONS
        for fig in result.get(name, {}).get("figures", [])
        if fig["goal"] is not None
    ]
    result["goals"] = goals
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result, [s for s in SECTIONS if s in result]))
    met = sum(1 for g in goals if g["pass"])
    print(
        f"\n{met} of {len(goals)} goals met; {errors} section error(s);"
        f" {result['duration_s']:.0f} s; JSON in {out}"
    )
    if errors:
        return 1
    if args.strict and met < len(goals):
        return 1
    return 0
