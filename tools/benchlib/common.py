"""Shared helpers: a private mosquitto, a pack subprocess, figures and goals."""

from __future__ import annotations

import contextlib
import os
import platform
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypedDict

import psutil

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "tools"
HOST = "127.0.0.1"


class BenchError(RuntimeError):
    """A measurement could not be made (a process did not start, messages were lost...)."""


# -- figures and goals ----------------------------------------------------------------


class Goal(TypedDict):
    """A goal from the issue: ``on`` ("value" or "ratio") ``op`` ``threshold``."""

    text: str
    on: str
    op: str
    threshold: float


def goal(text: str, op: str, threshold: float, on: str = "value") -> Goal:
    return {"text": text, "on": on, "op": op, "threshold": threshold}


def judge(target: Goal | None, value: float, ratio: float | None) -> bool | None:
    """True/False against the goal; None when the issue sets no goal for the figure."""
    if target is None:
        return None
    measured = value if target["on"] == "value" else ratio
    if measured is None:
        return False
    ops = {
        ">=": measured >= target["threshold"],
        "<=": measured <= target["threshold"],
        "<": measured < target["threshold"],
        ">": measured > target["threshold"],
    }
    return ops[target["op"]]


def figure(
    name: str,
    value: float,
    unit: str,
    *,
    baseline: float | None,
    baseline_name: str,
    target: Goal | None = None,
    ratio: float | None = None,
    digits: int = 3,
) -> dict[str, Any]:
    """One row of results: the value, its baseline, value/baseline, the goal, pass/fail.

    ``ratio`` defaults to value / baseline; pass it when the baseline is
    expressed in another unit than the value.
    """
    if ratio is None and baseline:
        ratio = value / baseline
    return {
        "name": name,
        "value": round(value, digits),
        "unit": unit,
        "baseline": round(baseline, digits) if baseline is not None else None,
        "baseline_name": baseline_name,
        "ratio": round(ratio, 4) if ratio is not None else None,
        "goal": target,
        "pass": judge(target, value, ratio),
    }


def percentile(ordered: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) of an already sorted sequence, nearest rank."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# -- machine ---------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "not installed"


def source_info() -> dict[str, Any]:
    """The commit measured, and which runtime files differ from it (read-only git)."""
    info: dict[str, Any] = {"commit": None, "modified": []}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO, timeout=10
        )
        info["commit"] = head.stdout.strip() or None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "jet", "drivers"],
            capture_output=True, text=True, cwd=REPO, timeout=10,
        )
        info["modified"] = [line[3:] for line in status.stdout.splitlines()]
    return info


def machine_info() -> dict[str, Any]:
    exe = mosquitto_path()
    mosquitto_version = "not installed"
    if exe:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([exe, "-h"], capture_output=True, text=True, timeout=5)
            mosquitto_version = (out.stdout or out.stderr).splitlines()[0].strip()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_mb": round(psutil.virtual_memory().total / 2**20),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "mosquitto": mosquitto_version,
        "packages": {m: _version(m) for m in ("aiomqtt", "paho-mqtt", "msgpack", "psutil")},
    }


# -- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"nothing listening on {HOST}:{port} after {timeout}s") from None
            time.sleep(0.02)


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


def subprocess_env() -> dict[str, str]:
    """The environment for child Python processes: this checkout first on the path."""
    env = dict(os.environ)
    paths = [str(REPO), str(REPO / "drivers"), str(TOOLS)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class Mosquitto:
    """A private mosquitto on a free loopback port, for one section of the bench.

    Defaults as shipped, except: no persistence; ``max_queued_messages``
    raised so that a burst is never dropped by the broker (a lost message
    would stall a windowed measurement); ``set_tcp_nodelay true``, without
    which every small packet mosquitto sends waits on Nagle's algorithm and
    the peer's delayed ACK (40 ms on Linux), which would measure the broker's
    configuration rather than JET or the relay (docs/performance.md).
    """

    def __init__(self, workdir: Path, extra: str = "") -> None:
        exe = mosquitto_path()
        if exe is None:
            raise BenchError("mosquitto is not installed (apt-get install mosquitto)")
        self.port = free_port()
        conf = workdir / f"mosquitto-{self.port}.conf"
        conf.write_text(
            f"listener {self.port} {HOST}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 1000000\n"
            "set_tcp_nodelay true\n"
            f"{extra}"
        )
        self.proc = subprocess.Popen(
            [exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_port(self.port)
        except BenchError:
            stop_process(self.proc)
            raise

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    def stop(self) -> None:
        stop_process(self.proc)


@contextlib.contextmanager
def mosquitto() -> Iterator[Mosquitto]:
    with tempfile.TemporaryDirectory(prefix="jet-bench-") as tmp:
        broker = Mosquitto(Path(tmp))
        try:
            yield broker
        finally:
            broker.stop()


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The next line of a child's stdout, or BenchError after ``timeout``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise BenchError(f"{proc.args!r}: no output after {timeout}s")
    line = proc.stdout.readline().decode(errors="replace").strip()
    if not line and proc.poll() is not None:
        raise BenchError(f"{proc.args!r} exited with {proc.returncode}")
    return line


class Child:
    """A Python child process that says one line when it is ready; CPU and RSS by psutil."""

    def __init__(self, argv: list[str], *, name: str, ready: str, timeout: float = 20.0) -> None:
        self.name = name
        # stderr goes to a file kept (and closed) with the child: read on failure.
        self._log = tempfile.TemporaryFile(prefix=f"jet-bench-{name}-")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=subprocess_env(),
            cwd=REPO,
        )
        self.ps = psutil.Process(self.proc.pid)
        try:
            line = read_line(self.proc, timeout)
            if not line.startswith(ready):
                raise BenchError(f"{name}: expected {ready!r}, got {line!r}")
        except BenchError as exc:
            self.stop()
            raise BenchError(f"{exc}; stderr: {self.stderr()[-500:]}") from None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stderr(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def pack_process(url: str, pack_id: str) -> Child:
    """``jet pack --broker URL --id ID`` (this checkout's jet), ready once it prints its line."""
    return Child(
        ["-m", "jet.cli", "pack", "--broker", url, "--id", pack_id],
        name=f"pack-{pack_id}",
        ready=f"pack {pack_id} on ",
    )


class Stopwatch:
    """Seconds since creation, by ``time.perf_counter``."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
