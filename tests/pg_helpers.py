"""A real PostgreSQL server for the tests, from Debian's package (`postgresql`).

:class:`Postgres` makes a cluster with ``initdb`` in a directory of its own under /tmp,
starts ``postgres`` on a free 127.0.0.1 port with its unix socket in that directory too,
waits until it takes connections (bounded in count and time), and stops it after.
PostgreSQL refuses to run as root: as root it runs as the ``postgres`` system user that
the package creates (``setpriv``, which execs, so the process started is the server
itself), in a directory made for it and given to that user (pytest's own tmp_path is
0700 root).  Authentication is ``trust`` on loopback: a test database, nothing more.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from conftest import free_port

#: Seconds for the server to take connections, and how many times to ask.
READY_WITHIN = 30.0
READY_TRIES = 300


def postgres_bin() -> Path:
    """The directory of Debian's PostgreSQL programs (the newest, if several)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb):"
                    " tools/setup-tests installs it (apt-get install postgresql)",
                    pytrace=False)
    return Path(found[-1]).parent


class Postgres:
    """One PostgreSQL server of the tests' own; :meth:`database` makes a fresh database
    on it and gives its URL."""

    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="jet-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("no postgres system user (Debian's postgresql package makes it):"
                            " PostgreSQL does not run as root", pytrace=False)
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                        "--init-groups", "--"]
        self.proc: subprocess.Popen[bytes] | None = None
        self._made = 0
        try:
            self._initdb()
            self.start()
        except BaseException:
            self.stop()
            raise

    def _initdb(self) -> None:
        done = subprocess.run(
            [*self._as, str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, timeout=120, cwd=self.dir)
        if done.returncode != 0:
            pytest.fail(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}",
                        pytrace=False)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self._as, str(self.bin / "postgres"), "-D", str(self.data),
                 "-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.dir),
                 "-c", "fsync=off", "-c", "max_connections=50"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        deadline = time.monotonic() + READY_WITHIN
        for _ in range(READY_TRIES):
            if self.proc.poll() is not None:
                pytest.fail(f"postgres ended ({self.proc.returncode}) before taking"
                            f" connections:\n{self.log.read_text()[-3000:]}", pytrace=False)
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        pytest.fail(f"postgres on 127.0.0.1:{self.port} took no connection within"
                    f" {READY_WITHIN:g} s:\n{self.log.read_text()[-3000:]}", pytrace=False)

    def database(self) -> str:
        """A new, empty database: its URL."""
        self._made += 1
        name = f"jet_{self._made}"
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")  # (a name of our own: no injection)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop_server(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL if it has not ended within 15 s; :meth:`start`
        starts it again."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stop(self) -> None:
        """The server stopped and its directory removed."""
        self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)
