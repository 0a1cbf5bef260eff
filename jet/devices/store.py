"""The device registry's storage: one interface (:class:`Store`), SQLite or PostgreSQL
behind it.

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

The SQL is written once, in :class:`SqlStore`, for both databases: the same tables, and
every write one transaction committed before the method returns (the registry handles a
message, then its link acknowledges it).  Writes are safe when several registry servers
share one inventory: upserts (``ON CONFLICT``), counts incremented in SQL, and whether a
device is new or back decided by the statement that changes it (``INSERT ... ON CONFLICT
DO NOTHING RETURNING``, ``UPDATE ... WHERE online = 0 RETURNING``), so of two servers
hearing one new device at once exactly one finds it new.  What differs is small: how to
connect and run a transaction, the placeholder (``?`` or ``%s``), and PostgreSQL's row
lock (``FOR UPDATE``) where a value is read to be changed.

- :class:`SqliteStore`: one file, nothing to install, in WAL mode (a kill -9 loses
  nothing committed); one machine.
- :class:`PostgresStore` (psycopg 3): ``postgresql://user@host:port/dbname``, one
  inventory for servers on several machines.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    uid TEXT PRIMARY KEY, host TEXT NOT NULL, id TEXT NOT NULL, class TEXT NOT NULL,
    layout TEXT NOT NULL, focus TEXT NOT NULL, zone TEXT NOT NULL DEFAULT '',
    online INTEGER NOT NULL DEFAULT 1, since DOUBLE PRECISION NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL DEFAULT '', description TEXT
);
CREATE INDEX IF NOT EXISTS devices_zone ON devices (zone);
CREATE TABLE IF NOT EXISTS data (
    uid TEXT NOT NULL, post_type TEXT NOT NULL, value TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL, PRIMARY KEY (uid, post_type)
);
CREATE TABLE IF NOT EXISTS uses (
    uid TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, command TEXT NOT NULL,
    failed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS uses_uid ON uses (uid, at);
CREATE TABLE IF NOT EXISTS daily (
    uid TEXT NOT NULL, day TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (uid, day)
);
CREATE TABLE IF NOT EXISTS fellows (
    host TEXT NOT NULL, id TEXT NOT NULL, active INTEGER NOT NULL,
    last_active DOUBLE PRECISION NOT NULL, role TEXT NOT NULL, PRIMARY KEY (host, id)
);
CREATE TABLE IF NOT EXISTS configs (
    name TEXT NOT NULL, type TEXT NOT NULL, hash TEXT NOT NULL, version INTEGER NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (name, version)
);
"""
# (DOUBLE PRECISION: PostgreSQL's REAL has 6 digits, too few for a time; SQLite's is the same.)

#: Days an average is taken over, by its name.
PERIODS = {"daily": 1, "weekly": 7, "monthly": 30, "yearly": 365}

#: How often a configuration version is tried again when another server took its number.
CONFIG_TRIES = 5

T = TypeVar("T")
Row = dict[str, Any]
#: Runs one statement (``?`` placeholders) in the open transaction: the rows it returns.
Run = Callable[[str, Sequence[Any]], list[Row]]


#: What :meth:`Store.device_row` gives: the devices table but its description.
ROW_COLUMNS = ("uid", "host", "id", "class", "layout", "focus", "zone", "online", "since",
               "first_seen", "last_seen", "reason")


def _day(at: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


class Store(Protocol):
    """What the registry keeps, whatever the database (see the module doc)."""

    #: Where it is, as said to people (a path, or a URL without its password).
    where: str

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

    def device(self, uid: str) -> dict[str, Any] | None:
        """Everything of one device: its row, description, data, uses and statistics."""
        ...

    def device_row(self, uid: str) -> dict[str, Any] | None:
        """One device's row alone (``ROW_COLUMNS``: where it is, online, last seen), in
        one query: for what asks per message or per device of a batch."""
        ...

    def fellow(self, host: str, ident: str, *, active: bool, role: str, at: float) -> None: ...

    def fellows(self) -> list[dict[str, Any]]:
        """The registry servers: host, id, active, last active, role."""
        ...

    def record_config(self, name: str, kind: str, digest: str, data: str) -> int:
        """A configuration version applied (a class file): its version number, a new one
        only when ``digest`` differs from the latest's."""
        ...

    def configs(self) -> list[dict[str, Any]]: ...

    def latest_config(self, name: str) -> dict[str, Any] | None:
        """The latest version of one configuration (name, type, hash, version, data)."""
        ...

    def close(self) -> None: ...


class SqlStore:
    """:class:`Store` in SQL both databases speak; a subclass connects and runs it.

    A subclass gives :meth:`_transaction` (one transaction, committed when the block
    ends, yielding a :data:`Run`), :meth:`_query` (one read) and :meth:`close`, and may
    set :attr:`lock` and :attr:`schema_lock`."""

    where = ""
    #: Appended to a SELECT of a row about to be changed from what it holds.
    lock = ""
    #: Run first in the transaction that makes the tables (servers starting together).
    schema_lock = ""

    def _transaction(self) -> contextlib.AbstractContextManager[Run]:
        raise NotImplementedError

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _create_tables(self) -> None:
        with self._transaction() as run:
            if self.schema_lock:
                run(self.schema_lock, ())
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    run(statement, ())

    def seen(self, uid: str, fields: Mapping[str, str], layout: str, focus: str,
             at: float) -> str:
        host, ident = fields.get("host", ""), fields.get("id", uid)
        device_class = fields.get("type") or fields.get("component") or layout
        zone = fields.get("zone", "")
        with self._transaction() as run:
            # Each question answered by the statement that changes the row: of two servers
            # hearing one device at once, one inserts it (new) or brings it back (back).
            if run("INSERT INTO devices (uid, host, id, class, layout, focus, zone, online,"
                   " since, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?)"
                   " ON CONFLICT (uid) DO NOTHING RETURNING uid",
                   (uid, host, ident, device_class, layout, focus, zone, at, at, at)):
                came = "new"
            else:
                back = run("UPDATE devices SET online = 1, since = ? WHERE uid = ?"
                           " AND online = 0 RETURNING uid", (at, uid))
                run("UPDATE devices SET focus = ?, last_seen = ?, reason = '',"
                    " zone = CASE WHEN ? = '' THEN zone ELSE ? END WHERE uid = ?",
                    (focus, at, zone, zone, uid))
                came = "back" if back else ""
            self._count(run, uid, at, failed=None)
        return came

    @staticmethod
    def _count(run: Run, uid: str, at: float, *, failed: bool | None) -> None:
        """One more attempt of ``uid`` today (and a failure, when it failed)."""
        run("INSERT INTO daily (uid, day, attempts, failures) VALUES (?, ?, 1, ?)"
            " ON CONFLICT (uid, day) DO UPDATE SET attempts = daily.attempts + 1,"
            " failures = daily.failures + excluded.failures", (uid, _day(at), int(bool(failed))))

    def record(self, uid: str, post_type: str, value: Any, at: float,
               subtopic: str = "") -> None:
        with self._transaction() as run:
            if subtopic:  # a post type's data subtopics: one dictionary, each kept in it
                run("INSERT INTO data (uid, post_type, value, at) VALUES (?, ?, '{}', ?)"
                    " ON CONFLICT (uid, post_type) DO NOTHING", (uid, post_type, at))
                (row,) = run("SELECT value FROM data WHERE uid = ? AND post_type = ?"
                             + self.lock, (uid, post_type))
                kept = json.loads(row["value"])
                value = {**(kept if isinstance(kept, dict) else {}), subtopic: value}
            run("INSERT INTO data (uid, post_type, value, at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (uid, post_type) DO UPDATE SET value = excluded.value,"
                " at = excluded.at", (uid, post_type, json.dumps(value, default=repr), at))

    def set_online(self, uid: str, online: bool, at: float, reason: str = "") -> bool:
        with self._transaction() as run:
            return bool(run("UPDATE devices SET online = ?, since = ?, reason = ? WHERE uid = ?"
                            " AND online <> ? RETURNING uid",
                            (int(online), at, reason, uid, int(online))))

    def describe(self, uid: str, description: Any) -> None:
        with self._transaction() as run:
            run("UPDATE devices SET description = ? WHERE uid = ?",
                (json.dumps(description, default=repr), uid))

    def use(self, uid: str, command: str, at: float, *, failed: bool = False) -> None:
        with self._transaction() as run:
            run("INSERT INTO uses (uid, at, command, failed) VALUES (?, ?, ?, ?)",
                (uid, at, command, int(failed)))
            self._count(run, uid, at, failed=failed)

    def silent(self, older_than: float) -> list[tuple[str, str, float]]:
        rows = self._query("SELECT uid, class, last_seen FROM devices WHERE online = 1"
                           " AND last_seen < ? AND layout <> 'hass'", (older_than,))
        return [(row["uid"], row["class"], row["last_seen"]) for row in rows]

    def devices(self, *, zone: str | None = None, device_class: str | None = None
                ) -> list[dict[str, Any]]:
        sql = ("SELECT devices.*, COALESCE(daily.attempts, 0) AS today_attempts,"
               " COALESCE(daily.failures, 0) AS today_failures FROM devices LEFT JOIN daily"
               " ON daily.uid = devices.uid AND daily.day = ? WHERE 1 = 1")
        args: list[Any] = [_day(time.time())]
        if zone is not None:
            sql, args = sql + " AND devices.zone = ?", [*args, zone]
        if device_class is not None:
            sql, args = sql + " AND devices.class = ?", [*args, device_class]
        found = []
        for device in self._query(sql, args):
            device["today"] = {"attempts": device.pop("today_attempts"),
                               "failures": device.pop("today_failures")}
            found.append(device)
        return sorted(found, key=lambda d: str(d["uid"]))  # (one order, whatever the collation)

    def device_row(self, uid: str) -> dict[str, Any] | None:
        rows = self._query(f"SELECT {', '.join(ROW_COLUMNS)} FROM devices WHERE uid = ?",
                           (uid,))
        return rows[0] if rows else None

    def device(self, uid: str) -> dict[str, Any] | None:
        rows = self._query("SELECT * FROM devices WHERE uid = ?", (uid,))
        if not rows:
            return None
        device = rows[0]
        if device.get("description"):
            device["description"] = json.loads(device["description"])
        data = self._query("SELECT * FROM data WHERE uid = ?", (uid,))
        device["data"] = {r["post_type"]: {"value": json.loads(r["value"]), "at": r["at"]}
                          for r in sorted(data, key=lambda r: str(r["post_type"]))}
        device["uses"] = self._query("SELECT at, command, failed FROM uses WHERE uid = ?"
                                     " ORDER BY at DESC LIMIT 20", (uid,))
        device["statistics"] = self.statistics(uid)
        return device

    def statistics(self, uid: str, now: float | None = None) -> dict[str, Any]:
        """Attempts and failures today, and their averages per day over each period
        (days with no use count as zero, from the device's first day on)."""
        now = time.time() if now is None else now
        rows = self._query("SELECT attempts, failures FROM daily WHERE uid = ? AND day = ?",
                           (uid, _day(now)))
        first = self._query("SELECT first_seen FROM devices WHERE uid = ?", (uid,))
        lived = max(1, int((now - first[0]["first_seen"]) // 86400) + 1) if first else 1
        stats: dict[str, Any] = {"today": {"attempts": rows[0]["attempts"] if rows else 0,
                                           "failures": rows[0]["failures"] if rows else 0}}
        for name, days in PERIODS.items():
            (total,) = self._query(
                "SELECT COALESCE(SUM(attempts), 0) AS a, COALESCE(SUM(failures), 0) AS f"
                " FROM daily WHERE uid = ? AND day >= ?",
                (uid, _day(now - (days - 1) * 86400)))
            span = min(days, lived)
            stats[name] = {"attempts": round(int(total["a"]) / span, 2),
                           "failures": round(int(total["f"]) / span, 2)}
        return stats

    def fellow(self, host: str, ident: str, *, active: bool, role: str, at: float) -> None:
        with self._transaction() as run:
            run("INSERT INTO fellows (host, id, active, last_active, role) VALUES"
                " (?, ?, ?, ?, ?) ON CONFLICT (host, id) DO UPDATE SET active = excluded.active,"
                " last_active = excluded.last_active, role = excluded.role",
                (host, ident, int(active), at, role))

    def record_config(self, name: str, kind: str, digest: str, data: str) -> int:
        for _ in range(CONFIG_TRIES):  # (another server may take the number first)
            with self._transaction() as run:
                latest = run("SELECT version, hash FROM configs WHERE name = ?"
                             " ORDER BY version DESC LIMIT 1", (name,))
                if latest and latest[0]["hash"] == digest:
                    return int(latest[0]["version"])
                version = int(latest[0]["version"]) + 1 if latest else 1
                if run("INSERT INTO configs (name, type, hash, version, data) VALUES"
                       " (?, ?, ?, ?, ?) ON CONFLICT (name, version) DO NOTHING"
                       " RETURNING version", (name, kind, digest, version, data)):
                    return version
        raise OSError(f"{self.where}: configuration {name}: no version number free after"
                      f" {CONFIG_TRIES} tries")

    def fellows(self) -> list[dict[str, Any]]:
        found = self._query("SELECT host, id, active, last_active, role FROM fellows")
        return sorted(found, key=lambda r: (str(r["id"]), str(r["host"])))

    def configs(self) -> list[dict[str, Any]]:
        found = self._query("SELECT name, type, hash, version FROM configs")
        return sorted(found, key=lambda r: (str(r["name"]), int(r["version"])))

    def latest_config(self, name: str) -> dict[str, Any] | None:
        found = self._query("SELECT name, type, hash, version, data FROM configs WHERE"
                            " name = ? ORDER BY version DESC LIMIT 1", (name,))
        return dict(found[0]) if found else None


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class SqliteStore(SqlStore):
    """:class:`Store` in one SQLite file (created with its tables if new)."""

    def __init__(self, path: str | Path) -> None:
        self.path = self.where = str(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.row_factory = _dict_row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # (WAL: a process kill loses no commit)
        self.db.execute("PRAGMA busy_timeout=5000")  # (`jet devices ls` reads beside a server)
        self._create_tables()

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Run]:
        # BEGIN IMMEDIATE: the write lock first, so what a transaction reads stays true
        # until it commits (one writer at a time, processes included).
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            yield self._query

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = self.db.execute(sql, args).fetchall()
        return rows


def shown(url: str) -> str:
    """``url`` without its password, to be said."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


class PostgresStore(SqlStore):
    """:class:`Store` in a PostgreSQL database (its tables made if missing, unless
    ``create`` is false: then a database without them is an error).

    Autocommit outside transactions, so a read holds no transaction open; every write a
    transaction of its own.  A connection found broken as a transaction begins (the
    server restarted since) is made again; one that breaks within a transaction is an
    error (the transaction rolled back).  Every database error is an :class:`OSError`
    naming the URL (without its password)."""

    lock = " FOR UPDATE"
    schema_lock = "SELECT pg_advisory_xact_lock(1246036514)"  # (a number of JET's own)

    def __init__(self, url: str, *, create: bool = True, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.where = shown(url)
        self.connect_timeout = connect_timeout
        self.db = self._connect()
        if create:
            self._create_tables()
        elif not self._query("SELECT to_regclass('devices') AS t")[0]["t"]:
            self.close()
            raise OSError(f"{self.where}: no device registry here (start `jet devices serve"
                          f" --db {self.where}`)")

    def _connect(self) -> psycopg.Connection[Row]:
        import psycopg
        from psycopg.rows import dict_row

        try:
            return psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                   connect_timeout=max(1, round(self.connect_timeout)))
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def _error(self, exc: Exception) -> OSError:
        said = " ".join(str(exc).split()) or type(exc).__name__
        return OSError(f"{self.where}: {said.replace(self.url, self.where)}")

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Run]:
        import psycopg

        try:
            with contextlib.ExitStack() as stack:
                self._afresh(lambda: stack.enter_context(self.db.transaction()))  # (BEGIN)
                yield self._run
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        import psycopg

        try:
            return self._afresh(lambda: self._run(sql, args))
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def _afresh(self, step: Callable[[], T]) -> T:
        """``step``, a first exchange with the server, once more on a new connection when
        it finds this one broken (the server restarted since the last one)."""
        import psycopg

        try:
            return step()
        except psycopg.OperationalError:
            if not self.db.closed:
                raise
            self.db.close()
            self.db = self._connect()
            return step()

    def _run(self, sql: str, args: Sequence[Any]) -> list[Row]:
        # (the SQL is written with ?, psycopg's placeholder is %s; no value is ever in
        # the SQL's text, so no ? there is anything but a placeholder)
        cursor = self.db.execute(sql.replace("?", "%s"), args)
        return cursor.fetchall() if cursor.description is not None else []


def open_store(where: str | Path, *, must_exist: bool = False) -> Store:
    """The registry's store named by ``where``: a SQLite file's path (the default), or a
    PostgreSQL URL (``postgresql://...``, ``postgres://...``) when several servers share
    one inventory.  ``must_exist``: a registry that is not there is an error (``jet
    devices ls`` should not make an empty one)."""
    text = str(where)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresStore(text, create=not must_exist)
    path = Path(text)
    if must_exist and not path.is_file():
        raise OSError(f"{path}: no device registry here (start `jet devices serve --db {path}`)")
    return SqliteStore(path)
