"""Shared fixtures: real brokers on free loopback ports, started and stopped per test session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class Mosquitto:
    """A real mosquitto process on a free loopback port (restartable, for fault tests)."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.conf = workdir / "mosquitto.conf"
        # persistent: sessions and queued QoS 1 messages survive a kill -9,
        # saved after every change (slow, but a fault test wants nothing lost).
        # As root, mosquitto would switch to the "mosquitto" user, which cannot
        # write its database into the test's private directory.
        stay_root = "user root\n" if os.geteuid() == 0 else ""
        persistence = (
            f"{stay_root}persistence true\npersistence_location {workdir}/\n"
            "autosave_interval 1\nautosave_on_changes true\n"
            if persistent
            else "persistence false\n"
        )
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            f"{persistence}"
            "max_queued_messages 100000\n"
            "sys_interval 1\n"
            "set_tcp_nodelay true\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen(
            [exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    yield broker
    broker.stop()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[Any]:
    """A real 3-server NATS cluster (JetStream, MQTT) on loopback (tests/nats_helpers.py)."""
    from nats_helpers import NatsCluster

    cluster = NatsCluster(tmp_path / "nats")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server (tests/pg_helpers.py), one for the test session."""
    from pg_helpers import Postgres  # (psycopg imported only by the tests that need it)

    server = Postgres()
    yield server
    server.stop()


@pytest.fixture
def postgres(postgres_server: Any) -> str:
    """The URL of a new, empty database on the tests' PostgreSQL server."""
    url: str = postgres_server.database()
    return url


#: Fault tests add their message accounting here; printed at the end of the run.
FAULT_REPORT: dict[str, dict[str, int]] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FAULT_REPORT:
        return
    terminalreporter.section("fault report (QoS 1 messages)")
    for name, row in FAULT_REPORT.items():
        figures = "  ".join(f"{k}={v}" for k, v in row.items())
        terminalreporter.write_line(f"{name:<40} {figures}")
