"""The hub's state file: node circuits and their wires, kept across restarts.

JSON, written atomically (temporary file + rename) after every change, so a
hub killed at any moment leaves either the old or the new state behind:

    {"version": 1,
     "nodes": [{"uid": 21205, "group": 212, "node": 5, "app": "heater",
                "definition": {... circuit map as sent with load, or null ...},
                "wires": [{"gadget": 1, "input": 0, "topic": "pack/control/thermostat/0",
                           "qos": 1}]}]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

VERSION = 1


class StateFileError(ValueError):
    """The state file cannot be read."""


@attrs.frozen
class SavedWire:
    gadget: int
    input: int
    topic: str
    qos: int = 1


@attrs.frozen
class SavedNode:
    uid: int
    group: int
    node: int
    app: str | None
    definition: Mapping[str, Any] | None
    wires: tuple[SavedWire, ...] = ()


def save_state(path: str | Path, nodes: Sequence[SavedNode]) -> None:
    path = Path(path)
    data = {
        "version": VERSION,
        "nodes": [
            {
                "uid": n.uid,
                "group": n.group,
                "node": n.node,
                "app": n.app,
                "definition": n.definition,
                "wires": [attrs.asdict(w) for w in n.wires],
            }
            for n in nodes
        ],
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def load_state(path: str | Path) -> list[SavedNode]:
    """The saved nodes; [] when the file does not exist yet."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StateFileError(f"{path}: {exc}") from exc
    try:
        data = json.loads(text)
        if data.get("version") != VERSION:
            raise StateFileError(f"{path}: unknown version {data.get('version')!r}")
        return [
            SavedNode(
                uid=int(n["uid"]),
                group=int(n["group"]),
                node=int(n["node"]),
                app=n.get("app"),
                definition=n.get("definition"),
                wires=tuple(
                    SavedWire(int(w["gadget"]), int(w["input"]), str(w["topic"]),
                              int(w.get("qos", 1)))
                    for w in n.get("wires", ())
                ),
            )
            for n in data["nodes"]
        ]
    except StateFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StateFileError(f"{path}: not a hub state file: {exc}") from exc
