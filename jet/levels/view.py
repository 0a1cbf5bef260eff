"""The tree as a level sees it: each level's report of its subtree, and its picture.

Every level daemon keeps ``levels/<name>/subtree`` (retained) on its own broker
and on its parent's: itself, and each child as that child last reported its
own subtree, marked with what this level knows now (a child whose presence
went ``offline`` by its will is ``offline`` since the moment this level saw
it, and everything below it ``unreachable``: cut off from here, not known
dead).  Reports flow up only, so the root sees the whole tree and a leaf its
own corner; ``jet levels`` prints the view from the broker it is given, with
the path up and whether that path is cut.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

#: A level's report: {"level", "state", "since", "children": [report, ...]}.
Report = dict[str, Any]


#: A report deeper or larger than this is refused (no real tree of levels is).
MAX_DEPTH = 16
MAX_LEVELS = 1000
STATES = ("online", "offline", "unreachable", "broker lost")


def checked(report: Any, *, budget: list[int] | None = None, depth: int = 0) -> Report | None:
    """A report as it may be trusted (read from a broker: anyone may have written it):
    its level a name, its state one of :data:`STATES`, ``since`` a finite time, its
    children reports; None when it is not one, or too deep or too large."""
    budget = [MAX_LEVELS] if budget is None else budget
    budget[0] -= 1
    if not isinstance(report, Mapping) or depth > MAX_DEPTH or budget[0] < 0:
        return None
    level, state, since = report.get("level"), report.get("state"), report.get("since")
    children = report.get("children", [])
    if not isinstance(level, str) or state not in STATES or not isinstance(children, list):
        return None
    kept = []
    for child in children:
        good = checked(child, budget=budget, depth=depth + 1)
        if good is None:
            return None
        kept.append(good)
    return {"level": level, "state": state, "since": _finite(since), "children": kept}


def _finite(stamp: Any) -> float | None:
    if isinstance(stamp, bool) or not isinstance(stamp, int | float):
        return None
    return float(stamp) if 0 <= stamp < 1e11 else None  # (before the year 5138)


def subtree(name: str, since: float, children: Mapping[str, Report]) -> Report:
    return {"level": name, "state": "online", "since": since,
            "children": [children[child] for child in sorted(children)]}


def child_report(name: str, presence: Mapping[str, Any] | None, reported: Report | None,
                 seen_change: float) -> Report:
    """A child as its parent describes it: its own report while it is online; else
    its last report, itself ``offline`` and all below it ``unreachable``."""
    online = presence is not None and presence.get("state") == "online"
    if online and reported is not None:
        return reported
    base = reported or {"level": name, "children": []}
    state = "online" if online else "offline"
    return {**base, "level": name, "state": state, "since": seen_change,
            "children": [_cut(c, seen_change) for c in base.get("children", [])]
            if not online else base.get("children", [])}


def broker_lost(report: Report, when: float) -> Report:
    """A level whose own broker is gone: itself still up, all below it cut off."""
    return {**report, "state": "broker lost", "since": when,
            "children": [_cut(c, when) for c in report.get("children", [])]}


def _cut(report: Report, when: float) -> Report:
    return {**report, "state": "unreachable", "since": when,
            "children": [_cut(c, when) for c in report.get("children", [])]}


def render(report: Report, here: Mapping[str, Any] | None, uplink: Mapping[str, Any] | None,
           now: float | None = None) -> str:
    """The picture ``jet levels`` prints."""
    now = time.time() if now is None else now
    lines = []
    name = report.get("level", "?")
    path_seen = here.get("path") if here else None
    path = [str(p) for p in path_seen] if isinstance(path_seen, list) else [name]
    if uplink is not None and not isinstance(uplink.get("parent_level") or {}, Mapping):
        uplink = {**uplink, "parent_level": None}
    lines.append(f"seen from {name}; the way up: {' -> '.join(path)}")
    if uplink is not None:
        state = uplink.get("state")
        parent = path[1] if len(path) > 1 else uplink.get("parent")
        parent_level = uplink.get("parent_level") or {}
        if state == "online" and parent_level.get("state") == "offline":
            lines.append(f"uplink to {parent}: its broker is reached, but its level daemon is "
                         f"offline since {_when(parent_level.get('since'), now)}")
            lines.append(f"  this side of the cut: {name} and everything below it; "
                         f"beyond it: {', '.join(path[1:])}")
        elif state == "online":
            lines.append(f"uplink to {parent}: online since {_when(uplink.get('since'), now)}")
        else:
            lines.append(f"uplink to {parent}: {state} since {_when(uplink.get('since'), now)}"
                         f"{': ' + str(uplink['reason']) if uplink.get('reason') else ''}")
            lines.append(f"  this side of the cut: {name} and everything below it; "
                         f"beyond it: {', '.join(path[1:]) or 'nothing'}")
    _draw(report, "", "", lines, now)
    return "\n".join(lines)


def _draw(report: Report, first: str, rest: str, lines: list[str], now: float) -> None:
    state = report.get("state", "?")
    note = "  (cut off from here)" if state == "unreachable" else ""
    lines.append(f"{first}{report.get('level', '?')}  {state} since "
                 f"{_when(report.get('since'), now)}{note}")
    children = report.get("children") or []
    for i, child in enumerate(children):
        last = i == len(children) - 1
        _draw(child, rest + ("└─ " if last else "├─ "), rest + ("   " if last else "│  "),
              lines, now)


def _when(stamp: Any, now: float) -> str:
    stamp = _finite(stamp)
    if stamp is None:
        return "?"
    ago = max(0.0, now - stamp)
    clock = time.strftime("%H:%M:%S", time.localtime(stamp))
    return f"{clock} ({ago:.0f} s ago)"
