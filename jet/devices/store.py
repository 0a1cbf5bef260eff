"""The device registry's storage: one interface (:class:`Store`), SQLite behind it.

Tables (docs/devices.md):

- ``devices``: uid, host, id, class, layout, focus (the topic it was last heard on),
  zone, online, since (of that state), first and last seen, the reason it went offline;
- ``data``: the latest value of each of a device's post types (a post type no class
  describes keeps its data subtopics as a dictionary);
- ``uses``: every use of a device (a message from it, a command to it) with its time,
  its command and whether it failed;
- ``daily``: attempts and failures per device and day, from which today's figures and
  the daily, weekly, monthly and yearly averages come;
- ``fellows``: the registry servers that share the inventory (host, id, active, last
  active, role); ``configs``: stored configuration versions (name, type, hash, version,
  data).

SQLite: one file, nothing to install.  Every change is committed before the message
that caused it is acknowledged (the registry handles a message, then its link
acknowledges it), in WAL mode: a kill -9 loses nothing committed.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    uid TEXT PRIMARY KEY, host TEXT NOT NULL, id TEXT NOT NULL, class TEXT NOT NULL,
    layout TEXT NOT NULL, focus TEXT NOT NULL, zone TEXT NOT NULL DEFAULT '',
    online INTEGER NOT NULL DEFAULT 1, since REAL NOT NULL, first_seen REAL NOT NULL,
    last_seen REAL NOT NULL, reason TEXT NOT NULL DEFAULT '', description TEXT
);
CREATE INDEX IF NOT EXISTS devices_zone ON devices (zone);
CREATE TABLE IF NOT EXISTS data (
    uid TEXT NOT NULL, post_type TEXT NOT NULL, value TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (uid, post_type)
);
CREATE TABLE IF NOT EXISTS uses (
    uid TEXT NOT NULL, at REAL NOT NULL, command TEXT NOT NULL, failed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS uses_uid ON uses (uid, at);
CREATE TABLE IF NOT EXISTS daily (
    uid TEXT NOT NULL, day TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (uid, day)
);
CREATE TABLE IF NOT EXISTS fellows (
    host TEXT NOT NULL, id TEXT NOT NULL, active INTEGER NOT NULL, last_active REAL NOT NULL,
    role TEXT NOT NULL, PRIMARY KEY (host, id)
);
CREATE TABLE IF NOT EXISTS configs (
    name TEXT NOT NULL, type TEXT NOT NULL, hash TEXT NOT NULL, version INTEGER NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (name, version)
);
"""

#: Days an average is taken over, by its name.
PERIODS = {"daily": 1, "weekly": 7, "monthly": 30, "yearly": 365}


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


class Store(Protocol):
    """What the registry keeps, whatever the database (see the module doc)."""

    def seen(self, uid: str, fields: Mapping[str, str], layout: str, focus: str,
             at: float) -> str:
        """A device was heard from: ``"new"``, ``"back"`` (it was offline) or ``""``."""
        ...

    def record(self, uid: str, post_type: str, value: Any, at: float,
               subtopic: str = "") -> None:
        """The latest ``value`` of a post type (of one of its ``subtopic``: kept together
        with the others as a dictionary)."""
        ...

    def set_online(self, uid: str, online: bool, at: float, reason: str = "") -> bool:
        """True when the state changed."""
        ...

    def describe(self, uid: str, description: Any) -> None: ...

    def use(self, uid: str, command: str, at: float, *, failed: bool = False) -> None: ...

    def silent(self, older_than: float) -> list[tuple[str, str, float]]:
        """Online devices not heard from since ``older_than``: (uid, class, last seen)."""
        ...

    def devices(self, *, zone: str | None = None, device_class: str | None = None
                ) -> list[dict[str, Any]]: ...

    def device(self, uid: str) -> dict[str, Any] | None: ...

    def fellow(self, host: str, ident: str, *, active: bool, role: str, at: float) -> None: ...

    def record_config(self, name: str, kind: str, digest: str, data: str) -> int:
        """A configuration version applied (a class file): its version number, a new one
        only when ``digest`` differs from the latest's."""
        ...

    def configs(self) -> list[dict[str, Any]]: ...

    def latest_config(self, name: str) -> dict[str, Any] | None:
        """The latest version of one configuration (name, type, hash, version, data)."""
        ...

    def close(self) -> None: ...


class SqliteStore:
    """:class:`Store` in one SQLite file (created with its tables if new)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # (WAL: a process kill loses no commit)
        self.db.execute("PRAGMA busy_timeout=5000")  # (`jet devices ls` reads beside a server)
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        """One transaction, committed before returning."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for sql, args in statements:
                self.db.execute(sql, args)

    def seen(self, uid: str, fields: Mapping[str, str], layout: str, focus: str,
             at: float) -> str:
        row = self.db.execute("SELECT online FROM devices WHERE uid = ?", (uid,)).fetchone()
        host, ident = fields.get("host", ""), fields.get("id", uid)
        device_class = fields.get("type") or fields.get("component") or layout
        zone = fields.get("zone", "")
        count = ("INSERT INTO daily (uid, day, attempts) VALUES (?, ?, 1) ON CONFLICT (uid, day)"
                 " DO UPDATE SET attempts = attempts + 1", (uid, _day(at)))
        if row is None:
            self._write([
                ("INSERT INTO devices (uid, host, id, class, layout, focus, zone, online, since,"
                 " first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)",
                 (uid, host, ident, device_class, layout, focus, zone, at, at, at)),
                count,
            ])
            return "new"
        since = "since" if row["online"] else "?"
        self._write([
            (f"UPDATE devices SET focus = ?, last_seen = ?, online = 1, reason = '',"
             f" since = {since}, zone = CASE WHEN ? = '' THEN zone ELSE ? END WHERE uid = ?",
             (focus, at, *((at,) if not row["online"] else ()), zone, zone, uid)),
            count,
        ])
        return "" if row["online"] else "back"

    def record(self, uid: str, post_type: str, value: Any, at: float,
               subtopic: str = "") -> None:
        if subtopic:  # a post type's data subtopics: one dictionary, each kept in it
            row = self.db.execute("SELECT value FROM data WHERE uid = ? AND post_type = ?",
                                  (uid, post_type)).fetchone()
            kept = json.loads(row["value"]) if row is not None else {}
            value = {**(kept if isinstance(kept, dict) else {}), subtopic: value}
        self._write([(
            "INSERT INTO data (uid, post_type, value, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (uid, post_type) DO UPDATE SET value = excluded.value, at = excluded.at",
            (uid, post_type, json.dumps(value, default=repr), at),
        )])

    def set_online(self, uid: str, online: bool, at: float, reason: str = "") -> bool:
        row = self.db.execute("SELECT online FROM devices WHERE uid = ?", (uid,)).fetchone()
        if row is None or bool(row["online"]) == online:
            return False
        self._write([("UPDATE devices SET online = ?, since = ?, reason = ? WHERE uid = ?",
                      (int(online), at, reason, uid))])
        return True

    def describe(self, uid: str, description: Any) -> None:
        self._write([("UPDATE devices SET description = ? WHERE uid = ?",
                      (json.dumps(description, default=repr), uid))])

    def use(self, uid: str, command: str, at: float, *, failed: bool = False) -> None:
        self._write([
            ("INSERT INTO uses (uid, at, command, failed) VALUES (?, ?, ?, ?)",
             (uid, at, command, int(failed))),
            ("INSERT INTO daily (uid, day, attempts, failures) VALUES (?, ?, 1, ?)"
             " ON CONFLICT (uid, day) DO UPDATE SET attempts = attempts + 1,"
             " failures = failures + excluded.failures", (uid, _day(at), int(failed))),
        ])

    def silent(self, older_than: float) -> list[tuple[str, str, float]]:
        rows = self.db.execute("SELECT uid, class, last_seen FROM devices WHERE online = 1"
                               " AND last_seen < ? AND layout != 'hass'", (older_than,))
        return [(row["uid"], row["class"], row["last_seen"]) for row in rows]

    def devices(self, *, zone: str | None = None, device_class: str | None = None
                ) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM devices WHERE 1 = 1", list[str]()
        if zone is not None:
            sql, args = sql + " AND zone = ?", [*args, zone]
        if device_class is not None:
            sql, args = sql + " AND class = ?", [*args, device_class]
        today = _day(time.time())
        found = []
        for row in self.db.execute(sql + " ORDER BY uid", args):
            device = dict(row)
            day = self.db.execute("SELECT attempts, failures FROM daily WHERE uid = ? AND"
                                  " day = ?", (row["uid"], today)).fetchone()
            device["today"] = {"attempts": day["attempts"] if day else 0,
                               "failures": day["failures"] if day else 0}
            found.append(device)
        return found

    def device(self, uid: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT * FROM devices WHERE uid = ?", (uid,)).fetchone()
        if row is None:
            return None
        device = dict(row)
        if device.get("description"):
            device["description"] = json.loads(device["description"])
        device["data"] = {
            r["post_type"]: {"value": json.loads(r["value"]), "at": r["at"]}
            for r in self.db.execute("SELECT * FROM data WHERE uid = ? ORDER BY post_type",
                                     (uid,))
        }
        device["uses"] = [dict(r) for r in self.db.execute(
            "SELECT at, command, failed FROM uses WHERE uid = ? ORDER BY at DESC LIMIT 20",
            (uid,))]
        device["statistics"] = self.statistics(uid)
        return device

    def statistics(self, uid: str, now: float | None = None) -> dict[str, Any]:
        """Attempts and failures today, and their averages per day over each period
        (days with no use count as zero, from the device's first day on)."""
        now = time.time() if now is None else now
        today = _day(now)
        row = self.db.execute("SELECT attempts, failures FROM daily WHERE uid = ? AND day = ?",
                              (uid, today)).fetchone()
        first = self.db.execute("SELECT first_seen FROM devices WHERE uid = ?",
                                (uid,)).fetchone()
        lived = max(1, int((now - first["first_seen"]) // 86400) + 1) if first else 1
        stats: dict[str, Any] = {"today": {"attempts": row["attempts"] if row else 0,
                                           "failures": row["failures"] if row else 0}}
        for name, days in PERIODS.items():
            start = _day(now - (days - 1) * 86400)
            total = self.db.execute(
                "SELECT COALESCE(SUM(attempts), 0) AS a, COALESCE(SUM(failures), 0) AS f"
                " FROM daily WHERE uid = ? AND day >= ?", (uid, start)).fetchone()
            span = min(days, lived)
            stats[name] = {"attempts": round(total["a"] / span, 2),
                           "failures": round(total["f"] / span, 2)}
        return stats

    def fellow(self, host: str, ident: str, *, active: bool, role: str, at: float) -> None:
        self._write([(
            "INSERT INTO fellows (host, id, active, last_active, role) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (host, id) DO UPDATE SET active = excluded.active,"
            " last_active = excluded.last_active, role = excluded.role",
            (host, ident, int(active), at, role),
        )])

    def record_config(self, name: str, kind: str, digest: str, data: str) -> int:
        row = self.db.execute("SELECT version, hash FROM configs WHERE name = ? ORDER BY"
                              " version DESC LIMIT 1", (name,)).fetchone()
        if row is not None and row["hash"] == digest:
            return int(row["version"])
        version = 1 if row is None else int(row["version"]) + 1
        self._write([("INSERT INTO configs (name, type, hash, version, data) VALUES"
                      " (?, ?, ?, ?, ?)", (name, kind, digest, version, data))])
        return version

    def configs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(
            "SELECT name, type, hash, version FROM configs ORDER BY name, version")]

    def latest_config(self, name: str) -> dict[str, Any] | None:
        row = self.db.execute("SELECT name, type, hash, version, data FROM configs WHERE"
                              " name = ? ORDER BY version DESC LIMIT 1", (name,)).fetchone()
        return None if row is None else dict(row)


def open_store(where: str | Path, *, must_exist: bool = False) -> Store:
    """The registry's store named by ``where``: a SQLite file's path (the default), or a
    PostgreSQL URL (``postgresql://...``) when several servers share one inventory.
    ``must_exist``: a SQLite file that is not there is an error (``jet devices ls``
    should not make an empty registry)."""
    text = str(where)
    if text.startswith(("postgresql://", "postgres://")):
        raise OSError(f"{text}: PostgreSQL stores are not built yet")
    path = Path(text)
    if must_exist and not path.is_file():
        raise OSError(f"{path}: no device registry here (start `jet devices serve --db {path}`)")
    return SqliteStore(path)
