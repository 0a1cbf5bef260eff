"""node_uid: the name a radio node has on MQTT (``node/<node_uid>/...``).

An RF12 node is addressed by (group, node id): node ids 1..30 repeat in
every group (a dongle listens to one group).  By default

    node_uid = group * 100 + node_id        # group 212, node 5 -> 21205

which needs no state, so the name of a node is the same after a hub restart,
on another hub, or with another dongle on the same group.  A table can
override it, per (group, node id), e.g. to keep a node's uid when it moves to
another group.  Table file (YAML or JSON), a list of entries:

    - {group: 212, node: 5, uid: 7}
    - {group: 100, node: 3, uid: 21203}

Table uids must be unique; a uid in the table wins over the default mapping
when the hub goes from uid back to (group, node id).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

MAX_NODE_ID = 31


class UidTableError(ValueError):
    """The uid table is malformed or ambiguous."""


def default_uid(group: int, node_id: int) -> int:
    return group * 100 + node_id


class UidMap:
    """(group, node id) <-> node_uid, both ways."""

    def __init__(self, table: Mapping[tuple[int, int], int] | None = None) -> None:
        self._table = dict(table or {})
        self._reverse: dict[int, tuple[int, int]] = {}
        for key, uid in self._table.items():
            if uid in self._reverse:
                raise UidTableError(
                    f"uid {uid} given to both group {self._reverse[uid][0]} node "
                    f"{self._reverse[uid][1]} and group {key[0]} node {key[1]}"
                )
            self._reverse[uid] = key

    def uid(self, group: int, node_id: int) -> int:
        uid = self._table.get((group, node_id))
        return default_uid(group, node_id) if uid is None else uid

    def address(self, uid: int) -> tuple[int, int] | None:
        """(group, node id) for a uid, or None when no node can have it."""
        key = self._reverse.get(uid)
        if key is not None:
            return key
        group, node_id = divmod(uid, 100)
        if not 0 <= group <= 255 or node_id > MAX_NODE_ID:
            return None
        if (group, node_id) in self._table:
            return None  # that node was given another uid by the table
        return group, node_id

    def to_wire(self) -> list[dict[str, int]]:
        return [{"group": g, "node": n, "uid": u} for (g, n), u in self._table.items()]


def table_from_entries(entries: Iterable[Any]) -> dict[tuple[int, int], int]:
    table: dict[tuple[int, int], int] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise UidTableError(f"entry {i}: expected a map with group, node, uid")
        try:
            group, node_id, uid = int(entry["group"]), int(entry["node"]), int(entry["uid"])
        except (KeyError, TypeError, ValueError) as exc:
            raise UidTableError(f"entry {i}: needs integer group, node and uid ({exc})") from exc
        if not 0 <= group <= 255 or not 0 <= node_id <= MAX_NODE_ID or uid < 0:
            raise UidTableError(f"entry {i}: group 0..255, node 0..31, uid >= 0")
        if (group, node_id) in table:
            raise UidTableError(f"entry {i}: group {group} node {node_id} listed twice")
        table[group, node_id] = uid
    return table


def load_uid_map(path: str | Path) -> UidMap:
    """Read a uid table file (YAML or JSON: JSON is YAML)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UidTableError(f"{path}: {exc}") from exc
    if data is None:
        return UidMap()
    if not isinstance(data, list):
        raise UidTableError(f"{path}: expected a list of {{group, node, uid}} entries")
    try:
        return UidMap(table_from_entries(data))
    except UidTableError as exc:
        raise UidTableError(f"{path}: {exc}") from exc
